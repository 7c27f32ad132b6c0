"""Point-in-time side features through the real Feast SDK (DuckDB offline store)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools

import numpy as np
import pyarrow as pa
import pytest
from feast_fixtures import DAY, T, base_rows, make_repo, snapshot_row

from onepiece.contract.schemas import ITEM_FEATURES
from onepiece.errors import UserError
from onepiece.features import EntityRequest, check_model_service, side_features
from onepiece.features.retrieval import output_schema
from onepiece.features.service import ENTITY_KINDS

ITEM_TTL = dt.timedelta(days=2)  # features/feature_views.py: item_features


def reference(
    rows: list[dict], id_column: str, entity_id: int, as_of: dt.datetime, ttl: dt.timedelta
) -> dict | None:
    """The row a point-in-time lookup must return: the latest stamped strictly before
    as_of and not older than ttl (measured from the last visible instant, as_of - 1 us)."""
    last_visible = as_of - dt.timedelta(microseconds=1)
    visible = [
        r for r in rows
        if r[id_column] == entity_id
        and r["event_timestamp"] <= last_visible
        and r["event_timestamp"] >= last_visible - ttl
    ]
    return max(visible, key=lambda r: r["event_timestamp"]) if visible else None


def as_dicts(table: pa.Table, id_column: str) -> dict[tuple[int, dt.datetime], dict]:
    return {(r[id_column], r["as_of"]): r for r in table.to_pylist()}


def test_one_time_t_dedupes_and_hides_rows_at_or_after_t(applied_repo):
    rows = base_rows()["items"]
    ids = pa.array([3, 1, 1, 2, 3, 3, 1], pa.int64())
    got = side_features(applied_repo, EntityRequest.at(T, item_ids=ids))

    assert got.items.schema == output_schema(ENTITY_KINDS["items"])
    assert got.items["item_id"].to_pylist() == [1, 2, 3]  # one row per unique id, sorted
    for row in got.items.to_pylist():
        expected = reference(rows, "item_id", row["item_id"], T, ITEM_TTL)
        assert expected["event_timestamp"] < T
        for spec in ITEM_FEATURES:
            assert row[spec.name] == pytest.approx(expected[spec.name])
        stamped_at_t = next(
            r for r in rows if r["item_id"] == row["item_id"] and r["event_timestamp"] == T
        )
        assert row["shop_id"] != stamped_at_t["shop_id"]
    assert got.unknown["items"] == 0


def test_past_ttl_and_unknown_ids_get_contract_defaults_and_are_counted(applied_repo):
    got = side_features(applied_repo, EntityRequest.at(T, item_ids=pa.array([4, 99, 99, 1])))
    defaults = {spec.name: spec.default for spec in ITEM_FEATURES}
    by_id = {r["item_id"]: r for r in got.items.to_pylist()}
    assert {k: by_id[4][k] for k in defaults} == defaults  # only row is 3 days old, ttl 2 days
    assert {k: by_id[99][k] for k in defaults} == defaults  # never seen
    assert by_id[1]["shop_id"] != defaults["shop_id"]
    assert got.unknown["items"] == 2

    # The same 3-day-old row is served while it is younger than the ttl.
    inside_ttl = T - 3 * DAY + ITEM_TTL - dt.timedelta(hours=1)
    fresh = side_features(applied_repo, EntityRequest.at(inside_ttl, item_ids=pa.array([4])))
    assert fresh.items["shop_id"].to_pylist() == [77]
    assert fresh.unknown["items"] == 0


def test_two_times_give_the_values_of_their_own_time(applied_repo):
    rows = base_rows()
    early, late = T - DAY + dt.timedelta(hours=1), T + 2 * DAY
    request = EntityRequest(
        item_ids=pa.array([2, 2, 2]),
        item_as_of=pa.array([early, late, early], pa.timestamp("us", tz="UTC")),
        user_ids=pa.array([1, 1]),
        user_as_of=pa.array([T, late], pa.timestamp("us", tz="UTC")),
        query_ids=pa.array([1]),
        query_as_of=late,
    )
    got = side_features(applied_repo, request)
    items = as_dicts(got.items, "item_id")
    assert sorted(items) == [(2, early), (2, late)]
    for (item_id, as_of), row in items.items():
        want = reference(rows["items"], "item_id", item_id, as_of, ITEM_TTL)
        assert row["sales_30d"] == want["sales_30d"]
    assert items[(2, early)]["sales_30d"] != items[(2, late)]["sales_30d"]
    users = as_dicts(got.users, "user_id")
    # The user's row stamped at T is invisible at T.
    assert users[(1, T)]["age_bucket"] == rows["users"][0]["age_bucket"]
    assert users[(1, late)]["age_bucket"] == rows["users"][1]["age_bucket"]
    assert got.queries["query_text"].to_pylist() == [rows["queries"][1]["query_text"]]


def test_matches_the_plain_reference_on_random_snapshots(tmp_path):
    rng = np.random.default_rng(7)
    start = T - 6 * DAY
    items = []
    for item_id in range(1, 31):
        offsets = np.sort(rng.choice(6 * 24 * 60, size=rng.integers(1, 8), replace=False))
        items += [
            snapshot_row("items", item_id, start + dt.timedelta(minutes=int(m)), int(value))
            for m, value in zip(offsets, rng.integers(0, 1000, size=offsets.size))
        ]
    rows = {**base_rows(), "items": items}
    repo = make_repo(tmp_path, rows)
    from onepiece.features.registry import apply

    apply(repo)
    # Ask at random times and exactly at snapshot times (where the row must stay invisible).
    ids = rng.integers(1, 36, size=300)  # ids 31..35 are unknown
    times = [start + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 7 * 24 * 60, size=250)]
    times += [items[int(k)]["event_timestamp"] for k in rng.integers(0, len(items), size=50)]
    request = EntityRequest(
        item_ids=pa.array(ids), item_as_of=pa.array(times, pa.timestamp("us", tz="UTC"))
    )
    got = side_features(repo, request)

    unknown = 0
    for row in got.items.to_pylist():
        expected = reference(items, "item_id", row["item_id"], row["as_of"], ITEM_TTL)
        unknown += expected is None
        want = expected["sales_30d"] if expected else 0
        assert row["sales_30d"] == want, row
    assert got.items.num_rows == len(set(zip(ids.tolist(), times)))
    assert got.unknown["items"] == unknown > 0


def test_unknown_feature_service_and_model_mismatch_are_refused(applied_repo):
    other = dataclasses.replace(applied_repo, feature_service="onepiece_ranker_v9")
    with pytest.raises(UserError, match="onepiece_ranker_v9.*onepiece_ranker_v1"):
        side_features(other, EntityRequest.at(T, item_ids=pa.array([1])))
    with pytest.raises(UserError, match="'onepiece_ranker_v2'.*'onepiece_ranker_v1'"):
        check_model_service("onepiece_ranker_v2", "onepiece_ranker_v1", "runs/m1")
    check_model_service("onepiece_ranker_v1", "onepiece_ranker_v1", "runs/m1")


def test_bad_requests_name_the_problem(applied_repo):
    with pytest.raises(UserError, match="item_id is null at position 1"):
        side_features(applied_repo, EntityRequest.at(T, item_ids=pa.array([1, None])))
    with pytest.raises(UserError, match="2 times for 1 item_ids"):
        side_features(applied_repo, EntityRequest(
            item_ids=pa.array([1]), item_as_of=pa.array([T, T], pa.timestamp("us", tz="UTC"))))


def test_empty_request_gives_empty_typed_tables(applied_repo):
    got = side_features(applied_repo, EntityRequest.at(T))
    for name, kind in ENTITY_KINDS.items():
        table = getattr(got, name)
        assert table.num_rows == 0 and table.schema == output_schema(kind)
    assert got.unknown == {"items": 0, "users": 0, "queries": 0}


TTL = {"items": ITEM_TTL, "users": dt.timedelta(days=365), "queries": dt.timedelta(days=2)}


def random_world(tmp_path, rng) -> tuple:
    """Items, users and queries with 1-6 snapshots each over 6 days (ids 1..20)."""
    start = T - 6 * DAY
    rows: dict[str, list[dict]] = {}
    for name in ("items", "users", "queries"):
        rows[name] = []
        for entity_id in range(1, 21):
            minutes = np.sort(rng.choice(6 * 24 * 60, size=rng.integers(1, 7), replace=False))
            rows[name] += [
                snapshot_row(name, entity_id, start + dt.timedelta(minutes=int(m)), int(v))
                for m, v in zip(minutes, rng.integers(0, 1000, size=minutes.size))
            ]
    repo = make_repo(tmp_path, rows)
    from onepiece.features.registry import apply

    apply(repo)
    return repo, rows, start


def test_every_way_of_asking_feast_gives_the_plain_answer(tmp_path):
    """STACKED (all kinds in one call, small kinds together, one call per kind) equals
    PLAIN and the plain point-in-time reference, for one T and for per-row times, on the
    repository's ASOF offline store and on Feast's own DuckDB store alike."""
    from feast_fixtures import stock_variant

    from onepiece.features import open_store
    from onepiece.features.asof_store import STORE_TYPE
    from onepiece.features.entity_frame import FrameConfig
    from onepiece.features.retrieval import Retrieval

    rng = np.random.default_rng(11)
    repo, rows, start = random_world(tmp_path, rng)
    stores = {"asof": repo, "stock": stock_variant(repo, tmp_path / "features_stock")}
    assert open_store(stores["asof"]).config.offline_store.type == STORE_TYPE
    assert open_store(stores["stock"]).config.offline_store.type == "duckdb"
    stamps = [r["event_timestamp"] for table in rows.values() for r in table]
    # As-of times at random, exactly at snapshot times (those rows must stay hidden) and
    # at the ttl's edges: a row exactly ttl older than the last visible instant is
    # served, one 1 us older is not.
    times = [start + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 7 * 24 * 60, 40)]
    times += [stamps[int(k)] for k in rng.integers(0, len(stamps), 40)]
    edge = [rows["items"][int(k)]["event_timestamp"] + ITEM_TTL for k in rng.integers(
        0, len(rows["items"]), 10)]
    times += [t + dt.timedelta(microseconds=1) for t in edge] + [
        t + dt.timedelta(microseconds=2) for t in edge]
    as_of = pa.array(times, pa.timestamp("us", tz="UTC"))
    # 100 item rows, 40 user and query rows; ids 21..24 are unknown.
    ids = {name: pa.array(rng.integers(1, 25, size=100 if name == "items" else 40))
           for name in rows}
    requests = {
        "one T": EntityRequest.at(stamps[3], item_ids=ids["items"], user_ids=ids["users"],
                                  query_ids=ids["queries"]),
        "per-row times": EntityRequest(
            item_ids=ids["items"], item_as_of=as_of, user_ids=ids["users"],
            user_as_of=as_of[:40], query_ids=ids["queries"], query_as_of=as_of[40:80]),
    }
    ways = {
        "all in one call": FrameConfig(shared_call_max_keys=10_000),
        "users and queries together": FrameConfig(shared_call_max_keys=60),
        "one call per kind": FrameConfig(shared_call_max_keys=0),
    }
    split = EntityRequest.unique_keys  # per-row: items alone, users and queries together
    assert len(split(requests["per-row times"], ENTITY_KINDS["items"])) > 60
    assert len(split(requests["per-row times"], ENTITY_KINDS["users"])) <= 40
    for label, request in requests.items():
        plain = side_features(repo, request, retrieval=Retrieval.PLAIN)
        for (store, variant), (way, frame) in itertools.product(stores.items(), ways.items()):
            asked = [side_features(variant, request, frame=frame)]
            if way == "one call per kind":  # and PLAIN, once per store
                asked.append(side_features(variant, request, retrieval=Retrieval.PLAIN))
            for got in asked:
                for name in rows:
                    assert getattr(got, name).equals(getattr(plain, name)), (
                        label, store, way, name)
                assert got.unknown == plain.unknown and got.unserved == plain.unserved, (
                    label, store, way)
        for name, kind in ENTITY_KINDS.items():
            unknown = 0
            for row in getattr(plain, name).to_pylist():
                want = reference(rows[name], kind.id_column, row[kind.id_column], row["as_of"],
                                 TTL[name])
                unknown += want is None
                for spec in kind.features:
                    value = want[spec.name] if want else spec.default
                    assert row[spec.name] == pytest.approx(value), (label, name, row)
            assert plain.unknown[name] == unknown, (label, name)
        assert plain.unknown["items"] > 0, label
