"""How unique keys become Feast entity frames, and how the answer comes back (no Feast)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from feast_fixtures import T

from onepiece.contract.schemas import TIMESTAMP
from onepiece.features.entity_frame import (
    ROW_COLUMN,
    FrameConfig,
    StackedFrame,
    plan_calls,
)
from onepiece.features.service import ServedView


def keys(id_column: str, ids: list[int]) -> pa.Table:
    return pa.table({id_column: pa.array(ids, pa.int64()),
                     "as_of": pa.array([T] * len(ids), TIMESTAMP)})


SERVED = {
    "items": ServedView("items", "item_features", ("shop_id", "price")),
    "users": ServedView("users", "user_profile", ("age_bucket",)),
    "queries": ServedView("queries", "query_features", ("query_text",)),
}
KEYS = {"items": keys("item_id", [1, 2, 3, 4]), "users": keys("user_id", [7]),
        "queries": keys("query_id", [5, 6])}


def test_small_kinds_share_a_call_and_large_ones_go_alone():
    assert plan_calls(KEYS, SERVED, FrameConfig(shared_call_max_keys=10)) == [
        ("items", "users", "queries")]
    assert plan_calls(KEYS, SERVED, FrameConfig(shared_call_max_keys=2)) == [
        ("users", "queries"), ("items",)]
    assert plan_calls(KEYS, SERVED, FrameConfig(shared_call_max_keys=0)) == [
        ("items",), ("users",), ("queries",)]


def test_kinds_without_keys_or_view_are_not_asked_and_colliding_names_split():
    no_users = {**KEYS, "users": keys("user_id", [])}
    only_items = {"items": SERVED["items"]}
    assert plan_calls(no_users, SERVED, FrameConfig()) == [("items", "queries")]
    assert plan_calls(KEYS, only_items, FrameConfig()) == [("items",)]
    clash = {**SERVED, "queries": ServedView("queries", "query_features", ("price",))}
    assert plan_calls(KEYS, clash, FrameConfig()) == [("items", "users"), ("queries",)]


def test_the_stacked_frame_names_one_entity_per_row_one_microsecond_early():
    frame = StackedFrame(("users", "queries"), (KEYS["users"], KEYS["queries"]))
    df = frame.to_pandas()
    assert df.columns.tolist() == ["user_id", "query_id", "event_timestamp", ROW_COLUMN]
    assert df["user_id"].tolist()[0] == 7 and df["user_id"].isna().tolist() == [False, True, True]
    assert df["query_id"].isna().tolist() == [True, False, False]
    assert df[ROW_COLUMN].tolist() == [0, 1, 2]
    assert (df["event_timestamp"] == T - pa.scalar(1, pa.duration("us")).as_py()).all()


def answer(frame: StackedFrame, order: list[int]) -> pa.Table:
    """A Feast-like answer: the frame's rows in ``order``, with feature columns."""
    table = pa.Table.from_pandas(frame.to_pandas(), preserve_index=False).take(order)
    return (table.append_column("age_bucket", pa.array([10 * r for r in order], pa.int32()))
            .append_column("query_text", pa.array([f"q{r}" for r in order])))


def test_the_answer_comes_back_in_key_order_whatever_order_feast_used():
    frame = StackedFrame(("users", "queries"), (KEYS["users"], KEYS["queries"]))
    parts = frame.split(answer(frame, [2, 0, 1]), SERVED)
    assert parts["users"]["age_bucket"].to_pylist() == [0]
    assert parts["queries"]["query_text"].to_pylist() == ["q1", "q2"]


def test_a_lost_duplicated_or_altered_row_is_refused():
    frame = StackedFrame(("users", "queries"), (KEYS["users"], KEYS["queries"]))
    with pytest.raises(RuntimeError, match="twice"):
        frame.split(answer(frame, [0, 1, 1]), SERVED)
    with pytest.raises(RuntimeError, match="2 rows for 3"):
        frame.split(answer(frame, [0, 1]), SERVED)
    moved = answer(frame, [0, 1, 2])
    shifted = moved.set_column(2, "event_timestamp", pa.array([T] * 3, TIMESTAMP))
    with pytest.raises(RuntimeError, match="other keys"):
        frame.split(shifted, SERVED)
    nulled = moved.set_column(0, "user_id", pa.array([None, None, None], pa.int64()))
    with pytest.raises(RuntimeError, match="other keys"):
        frame.split(nulled, SERVED)
