"""Training rows built in-process from the session's tiny world (no Beam, no Feast):
the same pure assembly functions the Beam trainset job runs, on snapshot tables."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from onepiece import storage

#: A model small enough to train in seconds on a shared CPU.
TINY_MODEL = dict(
    d_model=32, n_heads=2, n_layers=1, id_dim=16, side_dim=8, item_vocab=1024,
    shop_vocab=64, category_vocab=64, user_vocab=512, query_vocab=64, piece_vocab=256,
    ih_max_len=30, pa_per_group=10,
)


@pytest.fixture(scope="session")
def tiny_model() -> dict:
    """ModelConfig overrides for a model that trains in seconds."""
    return dict(TINY_MODEL)


def training_rows(root: Path, days: list) -> pa.Table:
    from onepiece.assembly.config import AssemblyConfig
    from onepiece.assembly.contexts import assemble_local
    from onepiece.assembly.side import SnapshotSideSource

    r = str(root)
    side = SnapshotSideSource(
        storage.read_table(r, "items"), storage.read_table(r, "users"), storage.read_table(r, "queries")
    )
    rows, _ = assemble_local(
        storage.read_table(r, "candidates", days), storage.read_table(r, "events"), side, AssemblyConfig()
    )
    return rows


@pytest.fixture(scope="session")
def tiny_split(tiny_world: Path) -> tuple[pa.Table, pa.Table]:
    """(train rows of all but the last candidates day, eval rows of the last one)."""
    days = storage.list_days(str(tiny_world), "candidates")
    return training_rows(tiny_world, days[:-1]), training_rows(tiny_world, days[-1:])


@pytest.fixture(scope="session")
def tiny_shards(tiny_split, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The split written as Parquet shards (two per set), as the Beam job writes them."""
    base = tmp_path_factory.mktemp("trainset")
    dirs = []
    for name, rows in zip(("train", "eval"), tiny_split):
        half = rows.num_rows // 2
        storage.write_parquet(rows.slice(0, half), base / name / "part-00000.parquet")
        storage.write_parquet(rows.slice(half), base / name / "part-00001.parquet")
        dirs.append(base / name)
    return dirs[0], dirs[1]
