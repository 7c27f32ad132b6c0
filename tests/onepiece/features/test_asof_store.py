"""The ASOF offline store against Feast's own DuckDB store and a plain reference.

A small Feast repository built here (real SDK, registry and Parquet FileSources) has
what the project's views lack: a source with a created timestamp and ties on the event
time, a view with ttl 0 (no bound), a projection alias. Both stores answer the same
``get_historical_features`` calls on the same registry.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.infra.offline_stores.ibis import IbisRetrievalJob
from feast.on_demand_feature_view import on_demand_feature_view
from feast.repo_config import RepoConfig
from feast.types import Float64, Int64, String

from onepiece.features.asof_store import STORE_TYPE, AsofRetrievalJob

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
US = dt.timedelta(microseconds=1)
STATS_TTL = dt.timedelta(hours=20)
TS = pa.timestamp("us", tz="UTC")


def stats_rows(rng: np.random.Generator) -> list[dict]:
    """Items 0..11, snapshots on an hourly grid over 3 days: many share an event time
    (told apart by distinct created times, not in created order in the file)."""
    rows = []
    for k in range(12):
        hours = rng.integers(0, 72, size=rng.integers(1, 9))
        for h in hours:
            rows.append({"item": k, "event_timestamp": T0 + int(h) * HOUR})
    order = rng.permutation(len(rows))  # distinct created times, shuffled against the file
    for row, rank in zip(rows, order, strict=True):
        row["created"] = row["event_timestamp"] + int(rank) * dt.timedelta(seconds=1)
        row["value"] = int(rng.integers(0, 10_000))
        row["label"] = f"v{row['value']}"
    return rows


def profile_rows(rng: np.random.Generator) -> list[dict]:
    """Users 0..5, a few profiles each, no created times and no ties."""
    rows = []
    for u in range(6):
        for h in rng.choice(72 * 60, size=rng.integers(1, 4), replace=False):
            rows.append({"user": u, "event_timestamp": T0 + int(h) * dt.timedelta(minutes=1),
                         "score": float(rng.random())})
    return rows


def reference(rows, key, entity_id, at, ttl, created: bool) -> dict | None:
    """Feast's point-in-time rule: latest row with at - ttl <= time <= at (no bound for a
    ttl of 0), ties on time broken by the latest created time."""
    visible = [r for r in rows if r[key] == entity_id and r["event_timestamp"] <= at
               and (not ttl or r["event_timestamp"] >= at - ttl)]
    order = (lambda r: (r["event_timestamp"], r["created"])) if created else (
        lambda r: r["event_timestamp"])
    return max(visible, key=order) if visible else None


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(asof store, stock store, stats rows, profile rows): one registry, two stores."""
    base: Path = tmp_path_factory.mktemp("asof")
    rng = np.random.default_rng(5)
    stats, profiles = stats_rows(rng), profile_rows(rng)
    for name, rows, schema in (
        ("stats", stats, pa.schema([("item", pa.int64()), ("event_timestamp", TS),
                                    ("created", TS), ("value", pa.int64()),
                                    ("label", pa.string())])),
        ("profiles", profiles, pa.schema([("user", pa.int64()), ("event_timestamp", TS),
                                          ("score", pa.float64())])),
    ):
        (base / name).mkdir()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), base / name / "part-0.parquet")
    item = Entity(name="item", join_keys=["item"], value_type=ValueType.INT64)
    user = Entity(name="user", join_keys=["user"], value_type=ValueType.INT64)
    stats_fv = FeatureView(
        name="stats", entities=[item], ttl=STATS_TTL,
        schema=[Field(name="value", dtype=Int64), Field(name="label", dtype=String)],
        source=FileSource(name="stats_source", path=str(base / "stats"),
                          file_format=ParquetFormat(), timestamp_field="event_timestamp",
                          created_timestamp_column="created"),
    )
    profile_fv = FeatureView(
        name="profile", entities=[user], ttl=dt.timedelta(0),  # 0: no bound
        schema=[Field(name="score", dtype=Float64)],
        source=FileSource(name="profile_source", path=str(base / "profiles"),
                          file_format=ParquetFormat(), timestamp_field="event_timestamp"),
    )

    @on_demand_feature_view(sources=[stats_fv], schema=[Field(name="double", dtype=Int64)])
    def doubled(inputs: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"double": inputs["value"] * 2})

    def store(offline_type: str) -> FeatureStore:
        config = RepoConfig(
            project="asof_test", provider="local", registry=str(base / "registry.db"),
            offline_store={"type": offline_type},
            online_store={"type": "sqlite", "path": str(base / "online.db")},
            entity_key_serialization_version=3, repo_path=str(base),
        )
        return FeatureStore(config=config)

    asof, stock = store(STORE_TYPE), store("duckdb")
    asof.apply([item, user, stats_fv, profile_fv, doubled])
    return asof, stock, stats, profiles


def entity_frame(stats, profiles, rng, one_time: dt.datetime | None) -> pd.DataFrame:
    """Rows at random times, exactly at stamps, at the ttl's edge and 1 us past it;
    unknown ids (12.., 6..), duplicates; an extra column; or one time for all."""
    stamps = [r["event_timestamp"] for r in stats]
    times = [T0 + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 80 * 60, 60)]
    times += stamps[:20]  # stamped exactly at the entity time: visible
    times += [s + STATS_TTL for s in stamps[:20]]  # exactly ttl old: still visible
    times += [s + STATS_TTL + US for s in stamps[:20]]  # 1 us too old
    items = rng.integers(0, 14, 60).tolist() + [r["item"] for r in stats[:20]] * 3
    n = len(times)
    frame = pd.DataFrame({
        "item": np.asarray(items, np.int64),
        "user": rng.integers(0, 8, n).astype(np.int64),
        "event_timestamp": pd.Series(pd.to_datetime(times, utc=True)),
        "row": np.arange(n, dtype=np.int64),
    })
    if one_time is not None:
        frame["event_timestamp"] = pd.Timestamp(one_time)
    return pd.concat([frame, frame.iloc[:5]], ignore_index=True)  # duplicate rows


FEATURES = ["stats:value", "stats:label", "profile:score"]


@pytest.mark.parametrize("times", ["per-row times", "one time for all"])
@pytest.mark.parametrize("full_names", [False, True])
def test_asof_store_gives_feasts_answer(world, times, full_names):
    asof, stock, stats, profiles = world
    rng = np.random.default_rng(17)
    one_time = stats[7]["event_timestamp"] if times == "one time for all" else None
    frame = entity_frame(stats, profiles, rng, one_time)

    job = asof.get_historical_features(frame, FEATURES, full_feature_names=full_names)
    assert isinstance(job, AsofRetrievalJob)
    got = job.to_arrow()
    want = stock.get_historical_features(frame, FEATURES, full_feature_names=full_names)
    want = want.to_arrow().sort_by([("row", "ascending")])

    names = ["stats__value", "stats__label", "profile__score"] if full_names else [
        "value", "label", "score"]
    assert got.column_names == list(frame.columns) + names  # entity columns, then features
    assert got["row"].to_pylist() == frame["row"].tolist()  # in the entity frame's order
    assert got["item"].to_pylist() == frame["item"].tolist()
    got_rows = sorted(
        (r["row"], *(r[n] for n in names)) for r in got.to_pylist())
    want_rows = sorted(
        (r["row"], *(r[n] for n in names)) for r in want.to_pylist())
    assert got_rows == want_rows  # Feast's own store, row for row

    served = 0
    for row in got.to_pylist():
        at = row["event_timestamp"]
        expected = reference(stats, "item", row["item"], at, STATS_TTL, created=True)
        assert row[names[0]] == (expected["value"] if expected else None), row
        served += expected is not None
        profile = reference(profiles, "user", row["user"], at, None, created=False)
        assert row[names[2]] == (profile["score"] if profile else None), row
    assert 0 < served < got.num_rows  # some rows past the ttl or unknown
    pdf = job.to_df()
    assert list(pdf.columns) == got.column_names and len(pdf) == got.num_rows


def test_the_edges_are_the_ones_feast_draws(world):
    """Ties go to the latest created time (also stamped exactly at the entity time); the
    last row of an item is served exactly ttl after it and not 1 us later; ttl 0 has no
    bound."""
    asof, stock, stats, profiles = world
    groups: dict[tuple, list[dict]] = {}
    for r in stats:
        groups.setdefault((r["item"], r["event_timestamp"]), []).append(r)
    (tied_item, tied_at), tied = next((k, g) for k, g in groups.items() if len(g) > 1)
    last_at = max(r["event_timestamp"] for r in stats if r["item"] == 0)
    last = max(groups[(0, last_at)], key=lambda r: r["created"])
    user = profiles[0]["user"]
    last_profile = max((r for r in profiles if r["user"] == user),
                       key=lambda r: r["event_timestamp"])
    frame = pd.DataFrame({
        "item": [tied_item, 0, 0, 0],
        "user": [user] * 4,
        "event_timestamp": pd.to_datetime(
            [tied_at, last_at + STATS_TTL, last_at + STATS_TTL + US, T0 + 400 * 24 * HOUR],
            utc=True),
    })
    by_created = sorted(tied, key=lambda r: r["created"])
    assert by_created[-1]["value"] != by_created[0]["value"]  # the tie matters
    for store in (asof, stock):
        got = store.get_historical_features(frame, FEATURES).to_df()
        got = got.sort_values("event_timestamp", ignore_index=True)
        values = got["value"].tolist()
        assert values[0] == by_created[-1]["value"], store.config.offline_store.type
        assert values[1] == last["value"] and pd.isna(values[2]) and pd.isna(values[3])
        assert got["score"].iloc[3] == last_profile["score"]  # 400 days later: ttl 0


def test_what_the_asof_join_does_not_handle_goes_to_feasts_store(world):
    """On-demand views and filter_by_created_timestamp are answered by Feast's join."""
    asof, stock, stats, profiles = world
    frame = entity_frame(stats, profiles, np.random.default_rng(3), None)
    refs = ["stats:value", "doubled:double"]
    job = asof.get_historical_features(frame, refs)
    assert isinstance(job, IbisRetrievalJob)
    got = job.to_df().sort_values("row", ignore_index=True)
    want = stock.get_historical_features(frame, refs).to_df().sort_values("row", ignore_index=True)
    pd.testing.assert_frame_equal(got, want)
    assert (got["double"].dropna() == 2 * got["value"].dropna()).all()
    assert got["double"].notna().any()

    job = asof.get_historical_features(frame, FEATURES, filter_by_created_timestamp=True)
    assert isinstance(job, IbisRetrievalJob)
    got = job.to_df().sort_values("row", ignore_index=True)
    want = stock.get_historical_features(
        frame, FEATURES, filter_by_created_timestamp=True).to_df()
    pd.testing.assert_frame_equal(got, want.sort_values("row", ignore_index=True))
