"""Merge the route's items into the upstream candidates, so the pre-ranker scores both.

Every upstream candidate row is kept exactly once, as it was (an upstream row without a
``recall_source`` gets ``"upstream"``). A retrieved item the upstream already holds for
the request is dropped (the upstream row stands for it); every other retrieved item is
appended with ``recall_source = "onepiece_retrieval"`` and its request's timestamp.
Retrieved rows of requests the upstream does not have are dropped and counted. The
result is ``CANDIDATES_SCHEMA`` rows sorted by request, upstream rows first in their
order, then the route's by rank.

``with_sources`` writes each scored candidate's ``recall_source`` from the candidates the
run scored (merged or not), so the scores say where every row came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract import CANDIDATES_SCHEMA, RETRIEVAL_SOURCE, UPSTREAM_SOURCE, ContractError, conform

__all__ = ["MergeCounts", "UPSTREAM_SOURCE", "merge_candidates", "with_sources"]
_ORDER = "__order"


@dataclass(frozen=True)
class MergeCounts:
    upstream: int  # upstream rows, all kept
    added: int  # retrieved items the upstream did not hold
    already_upstream: int  # retrieved items the upstream held (not repeated)
    unknown_request: int  # retrieved rows of requests the upstream does not have


def merge_candidates(upstream: pa.Table, routed: pa.Table) -> tuple[pa.Table, MergeCounts]:
    """Upstream candidates (``CANDIDATES_SCHEMA``) plus the route's rows
    (``RETRIEVAL_SCHEMA``), de-duplicated by (request_id, item_id)."""
    upstream = conform(upstream, "candidates", "<upstream candidates>")
    routed = conform(routed, "retrieval", "<retrieval rows>")
    source = pc.fill_null(upstream["recall_source"], UPSTREAM_SOURCE)
    upstream = upstream.set_column(upstream.schema.get_field_index("recall_source"), "recall_source", source)
    upstream = upstream.append_column(_ORDER, pa.array(np.arange(upstream.num_rows), pa.int64()))

    requests = upstream.select(["request_id", "request_timestamp"]).group_by(["request_id"]).aggregate(
        [("request_timestamp", "min")]
    ).rename_columns(["request_id", "request_timestamp"])
    keys = upstream.select(["request_id", "item_id"])
    known = routed.join(requests, "request_id", join_type="inner")
    fresh = known.join(keys, ["request_id", "item_id"], join_type="left anti")
    fresh = fresh.sort_by([("request_id", "ascending"), ("rank", "ascending")])
    added = pa.table({
        "request_id": fresh["request_id"],
        "user_id": fresh["user_id"],
        "query_id": fresh["query_id"],
        "request_timestamp": fresh["request_timestamp"],
        "item_id": fresh["item_id"],
        "recall_source": pa.array([RETRIEVAL_SOURCE] * fresh.num_rows, pa.string()),
        # After every upstream row of the request, in rank order.
        _ORDER: pa.array(upstream.num_rows + np.arange(fresh.num_rows), pa.int64()),
    })
    merged = pa.concat_tables([upstream, added.cast(upstream.schema)])
    merged = merged.sort_by([("request_id", "ascending"), (_ORDER, "ascending")]).drop_columns([_ORDER])
    counts = MergeCounts(
        upstream=upstream.num_rows,
        added=fresh.num_rows,
        already_upstream=known.num_rows - fresh.num_rows,
        unknown_request=routed.num_rows - known.num_rows,
    )
    return conform(merged, "candidates", "<merged candidates>").cast(CANDIDATES_SCHEMA), counts


def with_sources(scores: pa.Table, candidates: pa.Table, source: str = "<scores>") -> pa.Table:
    """``scores`` (``SCORES_SCHEMA``, in their order) with ``recall_source`` set from the
    ``candidates`` they scored (``UPSTREAM_SOURCE`` where a candidate names none). A
    scored row without a candidate row is a contract error naming ``source``."""
    sources = candidates.select(["request_id", "item_id", "recall_source"])
    sources = sources.set_column(2, "recall_source", pc.fill_null(sources["recall_source"], UPSTREAM_SOURCE))
    keyed = scores.drop_columns(["recall_source"]).append_column(
        _ORDER, pa.array(np.arange(scores.num_rows), pa.int64()))
    joined = keyed.join(sources, ["request_id", "item_id"], join_type="left outer").sort_by(_ORDER)
    if joined.num_rows != scores.num_rows:
        raise ContractError("scores", source, "a scored (request_id, item_id) has several candidate rows")
    missing = pc.sum(pc.is_null(joined["recall_source"])).as_py() or 0
    if missing:
        first = pc.index(pc.is_null(joined["recall_source"]), True).as_py()
        raise ContractError("scores", source, f"{missing} scored rows are not among the scored candidates",
                            column="item_id", row=first)
    return joined.drop_columns([_ORDER]).select(scores.schema.names).cast(scores.schema)
