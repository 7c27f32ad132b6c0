"""The scale profile for real: Feast's Spark offline store (local[2]) and a Redis
online store, against the DuckDB/SQLite local profile on the same rows and T."""

from __future__ import annotations

import pyarrow as pa
import pytest
from feast_fixtures import DAY, T

from onepiece.contract.schemas import TIMESTAMP
from onepiece.features import open_store
from onepiece.features.materialize import materialize
from onepiece.features.retrieval import EntityRequest, side_features
from onepiece.features.service import ENTITY_KINDS

pytestmark = [pytest.mark.scale, pytest.mark.slow]

ITEMS = [1, 2, 3, 4, 99]  # 4: only a row past the ttl; 99: unknown
USERS = [1, 7]
QUERIES = [1, 8]


def assert_same(a, b) -> None:
    for kind in ("items", "users", "queries"):
        assert getattr(a, kind).equals(getattr(b, kind)), kind
    assert a.unknown == b.unknown and a.unserved == b.unserved


def test_spark_point_in_time_features_equal_duckdb_at_one_T(scale_repos):
    local, scale = scale_repos
    request = EntityRequest.at(T, item_ids=ITEMS, user_ids=USERS, query_ids=QUERIES)
    on_spark = side_features(scale, request)
    assert_same(on_spark, side_features(local, request))
    assert on_spark.unknown == {"items": 2, "users": 1, "queries": 1}


def test_spark_point_in_time_features_equal_duckdb_at_per_row_times(scale_repos):
    local, scale = scale_repos
    times = [T - DAY, T, T + DAY, T - 2 * DAY, T]
    as_of = pa.array(times, TIMESTAMP)
    request = EntityRequest(
        item_ids=ITEMS, item_as_of=as_of,
        user_ids=USERS, user_as_of=as_of[:2], query_ids=QUERIES, query_as_of=as_of[1:3],
    )
    assert_same(side_features(scale, request), side_features(local, request))


def test_redis_serves_the_offline_features_as_of_the_materialisation_time(scale_repos):
    _, scale = scale_repos
    done = materialize(scale, T)
    assert {d.view for d in done} == {"item_features", "user_profile", "query_features"}
    offline = side_features(scale, EntityRequest.at(T, item_ids=ITEMS, user_ids=USERS, query_ids=QUERIES))
    store = open_store(scale)
    for kind_name, view, ids, table in (
        ("items", "item_features", ITEMS, offline.items),
        ("users", "user_profile", USERS, offline.users),
        ("queries", "query_features", QUERIES, offline.queries),
    ):
        kind = ENTITY_KINDS[kind_name]
        names = [spec.name for spec in kind.features]
        online = store.get_online_features(
            features=[f"{view}:{name}" for name in names],
            entity_rows=[{kind.id_column: i} for i in ids],
        ).to_dict()
        want = table.to_pydict()
        known = [row for row, i in enumerate(ids) if online[names[0]][row] is not None]
        # Unknown online (None) exactly where the offline store fell back to defaults.
        assert len(ids) - len(known) == offline.unknown[kind_name], kind_name
        for name in names:
            got = [online[name][row] for row in known]
            expected = [want[name][row] for row in known]
            assert got == pytest.approx(expected) if isinstance(expected[0], float) else got == expected, name
