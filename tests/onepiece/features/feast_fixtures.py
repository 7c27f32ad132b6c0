"""Helpers for the Feast tests: a copy of the project's feature repository pointed at
small contract tables in a temporary data root (the project's data/ is never touched)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pyarrow as pa

from onepiece.contract.schemas import (
    ITEM_FEATURES,
    ITEMS_SCHEMA,
    QUERIES_SCHEMA,
    QUERY_FEATURES,
    USER_FEATURES,
    USERS_SCHEMA,
)
from onepiece.features.repo import PROJECT_REPO, FeatureRepoConfig
from onepiece.storage import write_parquet

#: The scoring time most tests ask about.
T = dt.datetime(2026, 11, 5, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)

_SCHEMAS = {"items": ITEMS_SCHEMA, "users": USERS_SCHEMA, "queries": QUERIES_SCHEMA}
_FEATURES = {"items": ITEM_FEATURES, "users": USER_FEATURES, "queries": QUERY_FEATURES}
_IDS = {"items": "item_id", "users": "user_id", "queries": "query_id"}


def snapshot_row(table: str, entity_id: int, at: dt.datetime, value: int) -> dict:
    """A contract row whose every feature encodes ``value`` (so a test can tell rows apart)."""
    row: dict = {_IDS[table]: entity_id, "event_timestamp": at}
    for spec in _FEATURES[table]:
        if pa.types.is_string(spec.type):
            row[spec.name] = f"v{value}"
        elif pa.types.is_floating(spec.type):
            row[spec.name] = value / 8  # exact in float32
        else:
            row[spec.name] = value
    return row


def write_snapshots(root: Path, table: str, rows: list[dict], name: str = "part-0") -> None:
    table_rows = pa.Table.from_pylist(rows, schema=_SCHEMAS[table])
    write_parquet(table_rows, root / table / f"{name}.parquet")


def copy_repo(target: Path) -> Path:
    shutil.copytree(PROJECT_REPO, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def base_rows() -> dict[str, list[dict]]:
    """Items 1..3 with daily snapshots T-3d..T+1d (value = 10*id + day offset + 3);
    item 4 only 3 days before T (past the 2-day ttl); one user and one query."""
    items = [
        snapshot_row("items", i, T + k * DAY, 10 * i + k + 3)
        for i in (1, 2, 3)
        for k in range(-3, 2)
    ]
    items.append(snapshot_row("items", 4, T - 3 * DAY, 77))
    users = [snapshot_row("users", 1, T - 30 * DAY, 5), snapshot_row("users", 1, T, 6)]
    queries = [snapshot_row("queries", 1, T - DAY, 3), snapshot_row("queries", 1, T + DAY, 4)]
    return {"items": items, "users": users, "queries": queries}


def make_repo(base: Path, rows: dict[str, list[dict]] | None = None) -> FeatureRepoConfig:
    data = base / "data"
    for table, table_rows in (rows or base_rows()).items():
        write_snapshots(data, table, table_rows)
    return FeatureRepoConfig(repo_dir=copy_repo(base / "features"), data_root=str(data))


def stock_variant(repo: FeatureRepoConfig, target: Path) -> FeatureRepoConfig:
    """A copy of ``repo`` on Feast's own DuckDB offline store (``type: duckdb``, the
    one-line change the operations guide gives), same data root and registry."""
    from onepiece.features.asof_store import STORE_TYPE

    shutil.copytree(repo.repo_dir, target, ignore=shutil.ignore_patterns("__pycache__"))
    yaml_path = target / "feature_store.yaml"
    text = yaml_path.read_text()
    assert f"type: {STORE_TYPE}" in text
    yaml_path.write_text(text.replace(f"type: {STORE_TYPE}", "type: duckdb"))
    return FeatureRepoConfig(repo_dir=target, data_root=repo.data_root)


SCALE_YAML = "profiles/scale.feature_store.yaml"


def scale_variant(local: FeatureRepoConfig, redis_address: str, registry: Path) -> FeatureRepoConfig:
    """The same repository copy and data root under the scale profile: Spark in
    ``local[2]``, the given Redis node, an SQLite database as the SQL registry."""
    env = {
        "SPARK_MASTER": "local[2]",
        "REDIS_ADDRESS": redis_address,
        "REGISTRY_DB_URL": f"sqlite:///{registry}",
    }
    return FeatureRepoConfig(
        repo_dir=local.repo_dir, data_root=local.data_root, yaml_name=SCALE_YAML, env=env
    )
