"""Side features: entity keys, point-in-time snapshots, joining into parallel lists."""

import pyarrow as pa
from builders import at, item_snapshots, query_snapshots, requests_table, user_snapshots

from onepiece.assembly.side import (
    DefaultSideSource,
    SnapshotSideSource,
    entity_keys,
    join_side_features,
)
from onepiece.contract import ITEM_FEATURES


def ids_contexts() -> pa.Table:
    req = requests_table([("a", 1, 9, at(0)), ("b", 2, 8, at(1))])
    lists = pa.list_(pa.int64())
    return (
        req.append_column("ih_item_id", pa.array([[10, 11], []], lists))
        .append_column("pa_item_id", pa.array([[11], [12, 10]], lists))
        .append_column("cand_item_id", pa.array([[10, 13], [12]], lists))
    )


def source() -> SnapshotSideSource:
    return SnapshotSideSource(
        item_snapshots([(10, 1.0, at(-5)), (10, 2.0, at(0)), (11, 3.0, at(-1)), (12, 4.0, at(0.5))]),
        user_snapshots([(1, 4, at(-2)), (2, 5, at(2))]),
        query_snapshots([(9, 0.5, at(-1))]),
    )


def test_entity_keys_are_unique_id_as_of_pairs():
    keys = entity_keys(ids_contexts())
    assert keys["items"].to_pylist() == [
        {"item_id": i, "as_of": t}
        for i, t in [(10, at(0)), (10, at(1)), (11, at(0)), (12, at(1)), (13, at(0))]
    ]
    assert keys["users"].num_rows == 2 and keys["queries"].num_rows == 2


def test_snapshot_source_sees_only_rows_strictly_before_as_of():
    side = source()(entity_keys(ids_contexts()))
    prices = {(r["item_id"], r["as_of"]): r["price"] for r in side.items.to_pylist()}
    assert prices[(10, at(0))] == 1.0  # the row stamped exactly at as_of is not visible
    assert prices[(10, at(1))] == 2.0
    assert prices[(12, at(1))] == 4.0
    assert prices[(13, at(0))] == 0.0  # unknown: the contract default
    assert side.unknown == {"items": 1, "users": 1, "queries": 1}


def test_join_fills_parallel_lists_and_scalars():
    ctx = ids_contexts()
    joined, missing = join_side_features(ctx, source()(entity_keys(ctx)))
    assert joined["cand_price"].to_pylist() == [[1.0, 0.0], [4.0]]
    assert joined["pa_price"].to_pylist() == [[3.0], [4.0, 2.0]]
    assert joined["ih_shop_id"].to_pylist() == [[10 % 7, 11 % 7], []]
    assert joined["user_age_bucket"].to_pylist() == [4, -1]
    assert joined["query_popularity_7d"].to_pylist() == [0.5, 0.0]
    for segment in ("ih", "pa", "cand"):
        for spec in ITEM_FEATURES:
            column = joined[f"{segment}_{spec.name}"]
            assert column.type == pa.list_(spec.type)
            assert (pa.compute.list_value_length(column).to_pylist()
                    == pa.compute.list_value_length(ctx[f"{segment}_item_id"]).to_pylist())
    assert set(missing.values()) == {0}


def test_missing_feature_rows_get_defaults_and_are_counted():
    ctx = ids_contexts()
    side = DefaultSideSource()(entity_keys(ctx))
    side.items = side.items.slice(0, 1)  # keep only (10, T0): tokens ih[a][0] and cand[a][0]
    joined, missing = join_side_features(ctx, side)
    assert missing["item_feature_row_missing"] == 8 - 2  # 8 item tokens, 2 still found
    assert joined["cand_price"].to_pylist() == [[0.0, 0.0], [0.0]]
