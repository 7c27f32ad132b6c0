"""IH: the user's last N click / add_to_cart / order events strictly before as_of."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.assembly.config import AssemblyConfig
from onepiece.assembly.sql import connect, query
from onepiece.contract import EVENT_TYPE_CODE, IH_EVENT_TYPES, TIMESTAMP

IH_SCHEMA = pa.schema(
    [
        pa.field("ih_item_id", pa.list_(pa.int64())),
        pa.field("ih_event_type", pa.list_(pa.int8())),
        pa.field("ih_ts", pa.list_(TIMESTAMP)),
    ]
)


def ih_events(events: pa.Table) -> pa.Table:
    """The events that can enter an IH (user_id, item_id, code, ts), with type codes."""
    keep = events.filter(pc.is_in(events["event_type"], pa.array(IH_EVENT_TYPES)))
    codes = pc.index_in(keep["event_type"], pa.array(list(EVENT_TYPE_CODE)))
    return pa.table(
        {
            "user_id": keep["user_id"],
            "item_id": keep["item_id"],
            "code": pc.cast(codes, pa.int8()),
            "ts": keep["event_timestamp"],
        }
    )


def last_ih_events(events: pa.Table, length: int) -> pa.Table:
    """Each user's last ``length`` IH events in ``events`` (contract rows, newest first).

    For a refresh every request shares T and its events are already cut to before T, so
    only these rows can enter any IH: a batch keeps them before the shuffle, and the union
    over batches still holds every user's last ``length``. Order as in the IH lists.
    """
    ih = events.filter(pc.is_in(events["event_type"], pa.array(IH_EVENT_TYPES)))
    if ih.num_rows == 0:
        return ih
    codes = pc.index_in(ih["event_type"], pa.array(list(EVENT_TYPE_CODE)))
    keys = pa.table({"u": ih["user_id"], "t": ih["event_timestamp"], "c": codes, "i": ih["item_id"]})
    order = pc.sort_indices(
        keys, [("u", "ascending"), ("t", "descending"), ("c", "descending"), ("i", "descending")]
    ).to_numpy()
    users = ih["user_id"].to_numpy()[order]
    first = np.r_[True, users[1:] != users[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(users.size), 0))
    rank = np.arange(users.size) - start  # 0 = the user's newest event
    return ih.take(pa.array(order[rank < length]))


def interaction_history(
    requests: pa.Table, events: pa.Table, config: AssemblyConfig, threads: int = 1
) -> pa.Table:
    """IH_SCHEMA columns aligned with the rows of ``requests`` (user_id, as_of).

    For each request: the user's last ``ih_length`` IH events with
    ``as_of - ih_window <= ts < as_of``, oldest first. Ties on time are broken by event
    type code, then item_id, so the lists are the same on every run and worker.
    ``events`` is the contract's events table (any event types; only IH ones are used).

    Work and memory are O(events + requests x ih_length), whatever one user holds: each
    user's events are numbered in time order, an ASOF join finds the number of the last
    one before each request, and the L rows before it are fetched by equality on
    (user, number). Joining a request to all of its user's events instead makes
    requests x events rows: 8.5 GB for the training job on the crawler world of
    tests/beam_jobs/test_bounded_memory.py.
    """
    keys = pa.table(
        {
            "_row": np.arange(requests.num_rows, dtype=np.int64),
            "user_id": requests["user_id"],
            "as_of": requests["as_of"],
            "since": pc.subtract(requests["as_of"], pa.scalar(config.ih_window)),
        }
    )
    length = int(config.ih_length)
    con = connect(threads, keys=keys, ev=ih_events(events))
    table = query(
        con,
        f"""
        WITH numbered AS (
            SELECT user_id, item_id, code, ts,
                   row_number() OVER (PARTITION BY user_id ORDER BY ts, code, item_id) AS n
            FROM ev
        ), last_at AS (  -- one row per (user, ts): the number of its last event
            SELECT user_id, ts, max(n) AS n FROM numbered GROUP BY user_id, ts
        ), upto AS (  -- per request: the number of the user's last event before as_of
            SELECT k._row, k.user_id, k.since, l.n
            FROM keys k ASOF JOIN last_at l ON k.user_id = l.user_id AND l.ts < k.as_of
        ), wanted AS (  -- the L numbers ending there
            SELECT u._row, u.user_id, u.since, u.n - o.back AS n
            FROM upto u CROSS JOIN range({length}) o(back)
            WHERE u.n - o.back >= 1
        ), hits AS (
            SELECT w._row, e.item_id, e.code, e.ts, e.n
            FROM wanted w JOIN numbered e ON e.user_id = w.user_id AND e.n = w.n
            WHERE e.ts >= w.since
        ), lists AS (
            SELECT _row,
                   list(item_id ORDER BY n) AS ih_item_id,
                   list(code ORDER BY n) AS ih_event_type,
                   list(ts ORDER BY n) AS ih_ts
            FROM hits GROUP BY _row
        )
        SELECT coalesce(l.ih_item_id, []::BIGINT[]) AS ih_item_id,
               coalesce(l.ih_event_type, []::TINYINT[]) AS ih_event_type,
               coalesce(l.ih_ts, []::TIMESTAMPTZ[]) AS ih_ts
        FROM keys k LEFT JOIN lists l USING (_row)
        ORDER BY k._row
        """,
    )
    return table.cast(IH_SCHEMA)
