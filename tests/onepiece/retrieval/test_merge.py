"""Merging the route's items into the upstream candidates."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from onepiece.contract import CANDIDATES_SCHEMA, RETRIEVAL_SCHEMA, RETRIEVAL_SOURCE, SCORES_SCHEMA, ContractError
from onepiece.retrieval.merge import UPSTREAM_SOURCE, merge_candidates, with_sources

T = dt.datetime(2026, 11, 9, tzinfo=dt.UTC)


def _upstream() -> pa.Table:
    return pa.table({
        "request_id": ["r2", "r1", "r1", "r2"], "user_id": [2, 1, 1, 2], "query_id": [20, 10, 10, 20],
        "request_timestamp": [T, T, T, T], "item_id": [5, 7, 8, 6], "recall_source": [None, "bm25", None, None],
    }, schema=CANDIDATES_SCHEMA)


def _routed(rows: list[tuple[str, int, int]]) -> pa.Table:
    n = len(rows)
    return pa.table({
        "request_id": [r[0] for r in rows], "user_id": [1] * n, "query_id": [10] * n,
        "item_id": [r[1] for r in rows], "score": [1.0] * n, "rank": [r[2] for r in rows],
        "recall_source": [RETRIEVAL_SOURCE] * n, "as_of": [T] * n, "model_name": ["m"] * n,
        "model_version": [1] * n,
    }, schema=RETRIEVAL_SCHEMA)


def test_every_upstream_candidate_stays_exactly_once_and_new_items_are_added() -> None:
    routed = _routed([("r1", 9, 1), ("r1", 7, 2), ("r1", 3, 3), ("r9", 4, 1)])
    merged, counts = merge_candidates(_upstream(), routed)
    assert merged.schema.equals(CANDIDATES_SCHEMA)
    rows = list(zip(merged["request_id"].to_pylist(), merged["item_id"].to_pylist(),
                    merged["recall_source"].to_pylist()))
    assert rows == [("r1", 7, "bm25"), ("r1", 8, UPSTREAM_SOURCE), ("r1", 9, RETRIEVAL_SOURCE),
                    ("r1", 3, RETRIEVAL_SOURCE), ("r2", 5, UPSTREAM_SOURCE), ("r2", 6, UPSTREAM_SOURCE)]
    assert (counts.upstream, counts.added, counts.already_upstream, counts.unknown_request) == (4, 2, 1, 1)
    assert pc.all(pc.equal(merged["request_timestamp"], pa.scalar(T, merged["request_timestamp"].type))).as_py()
    # Every upstream (request, item) once: nothing lost, nothing repeated.
    up = set(zip(_upstream()["request_id"].to_pylist(), _upstream()["item_id"].to_pylist()))
    pairs = list(zip(merged["request_id"].to_pylist(), merged["item_id"].to_pylist()))
    assert up <= set(pairs) and len(pairs) == len(set(pairs))


def test_bad_route_rows_are_refused() -> None:
    with pytest.raises(ContractError, match="retrieved item"):
        merge_candidates(_upstream(), _routed([("r1", 9, 1), ("r1", 9, 2)]))


def _scores(pairs: list[tuple[str, int]]) -> pa.Table:
    n = len(pairs)
    columns = {
        "request_id": [p[0] for p in pairs], "user_id": [1] * n, "query_id": [10] * n, "item_id": [p[1] for p in pairs],
        **{f"p_{t}": [0.5] * n for t in ("impression", "click", "add_to_cart", "order")},
        "score": [0.5] * n, "rank": list(range(1, n + 1)), "model_name": ["m"] * n, "model_version": [1] * n,
        "feature_service": ["fs"] * n, "scored_at": [T] * n, "recall_source": [None] * n,
    }
    return pa.table(columns, schema=SCORES_SCHEMA)


def test_scores_take_each_row_source_from_the_scored_candidates_in_their_order() -> None:
    merged, _ = merge_candidates(_upstream(), _routed([("r1", 9, 1)]))
    scores = _scores([("r1", 9), ("r2", 6), ("r1", 7), ("r1", 8), ("r2", 5)])
    sourced = with_sources(scores, merged)
    assert sourced.schema.equals(SCORES_SCHEMA)
    assert sourced.drop_columns(["recall_source"]).equals(scores.drop_columns(["recall_source"]))
    assert sourced["recall_source"].to_pylist() == [RETRIEVAL_SOURCE, UPSTREAM_SOURCE, "bm25", UPSTREAM_SOURCE,
                                                    UPSTREAM_SOURCE]
    with pytest.raises(ContractError, match="1 scored rows are not among the scored candidates"):
        with_sources(_scores([("r1", 7), ("r1", 4)]), merged)
