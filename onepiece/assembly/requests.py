"""CIS: one request per row, with its candidate item set, from candidate rows."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from onepiece.assembly.sql import connect, query
from onepiece.contract import TIMESTAMP

#: The request keys every assembly step carries; ``as_of`` is the scoring time T.
REQUEST_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("query_id", pa.int64(), nullable=False),
        pa.field("as_of", TIMESTAMP, nullable=False),
    ]
)
CIS_SCHEMA = pa.schema(list(REQUEST_SCHEMA) + [pa.field("cand_item_id", pa.list_(pa.int64()))])


def select_window(cands: pa.Table, start: dt.datetime, end: dt.datetime) -> pa.Table:
    """The candidate rows whose request_timestamp lies in [start, end)."""
    ts = cands["request_timestamp"]
    keep = pc.and_(
        pc.greater_equal(ts, pa.scalar(start, TIMESTAMP)), pc.less(ts, pa.scalar(end, TIMESTAMP))
    )
    return cands.filter(keep)


def candidate_requests(cands: pa.Table, as_of: dt.datetime | None) -> pa.Table:
    """One row per request with its candidates (CIS_SCHEMA), sorted by (as_of, request_id).

    ``as_of`` is the run's single scoring time T (a refresh), or None to use each
    request's own request_timestamp (training). Candidates are listed by ascending
    item_id: the model gives CIS no position, and the upstream order must not leak.
    """
    con = connect(cands=cands.select(["request_id", "user_id", "query_id", "request_timestamp", "item_id"]))
    as_of_sql = "request_timestamp" if as_of is None else f"TIMESTAMPTZ '{as_of.isoformat()}'"
    table = query(
        con,
        f"""
        SELECT request_id, user_id, query_id, {as_of_sql} AS as_of,
               list(item_id ORDER BY item_id) AS cand_item_id
        FROM cands
        GROUP BY request_id, user_id, query_id, request_timestamp
        ORDER BY as_of, request_id
        """,
    )
    return table.cast(CIS_SCHEMA)


def duplicate_candidates(cands: pa.Table) -> pa.Table:
    """(request_id, item_id, n) for candidate pairs that appear more than once."""
    con = connect(cands=cands.select(["request_id", "item_id"]))
    return query(
        con,
        "SELECT request_id, item_id, count(*) AS n FROM cands GROUP BY ALL HAVING n > 1 "
        "ORDER BY request_id, item_id",
    )


def inconsistent_requests(cands: pa.Table) -> list[str]:
    """Request ids whose candidate rows disagree on user, query or request time."""
    con = connect(cands=cands.select(["request_id", "user_id", "query_id", "request_timestamp"]))
    rows = query(
        con,
        """
        SELECT request_id FROM cands GROUP BY request_id
        HAVING count(DISTINCT (user_id, query_id, request_timestamp)) > 1 ORDER BY request_id
        """,
    )
    return rows["request_id"].to_pylist()


def request_keys(contexts: pa.Table) -> pa.Table:
    """Just the request keys of a table that has them (REQUEST_SCHEMA)."""
    return contexts.select(REQUEST_SCHEMA.names).cast(REQUEST_SCHEMA)
