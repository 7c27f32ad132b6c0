"""PA: per query, the top-k exposed, clicked and ordered items before as_of, as groups."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.assembly.config import AssemblyConfig
from onepiece.assembly.sql import connect, query
from onepiece.contract import PA_GROUP_CODE, TIMESTAMP

_MICRO = dt.timedelta(microseconds=1)

#: Which event type feeds which anchor group ("exposed" = impressed).
GROUP_EVENT_TYPE: dict[str, str] = {"exposed": "impression", "clicked": "click", "ordered": "order"}

#: Anchor events: raw (n = 1 each) or pre-aggregated counts (see anchor_counts).
ANCHOR_EVENTS_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.int64()),
        pa.field("item_id", pa.int64()),
        pa.field("grp", pa.int8()),
        pa.field("ts", TIMESTAMP),
        pa.field("n", pa.int64()),
    ]
)

PA_SCHEMA = pa.schema(
    [
        pa.field("pa_group", pa.list_(pa.int8())),
        pa.field("pa_item_id", pa.list_(pa.int64())),
    ]
)


def pa_events(events: pa.Table) -> pa.Table:
    """The events that feed anchor groups as "anchor events" (query_id, item_id, grp, ts, n):
    group codes, and a count n = 1 per event."""
    groups = list(PA_GROUP_CODE)
    types = pa.array([GROUP_EVENT_TYPE[g] for g in groups])
    keep = events.filter(pc.is_in(events["event_type"], types))
    codes = pc.index_in(keep["event_type"], types)  # position in PA_GROUPS order
    return pa.table(
        {
            "query_id": keep["query_id"],
            "item_id": keep["item_id"],
            "grp": pc.cast(codes, pa.int8()),
            "ts": keep["event_timestamp"],
            "n": np.ones(keep.num_rows, dtype=np.int64),
        },
        schema=ANCHOR_EVENTS_SCHEMA,
    )


def anchor_counts(events: pa.Table, as_of: dt.datetime, window: dt.timedelta) -> pa.Table:
    """Anchor events of a refresh at T pre-aggregated: one row per (query, group, item)
    with its count over [T - window, T), stamped T - 1 us (inside the window).

    Every request of a refresh shares T, so the counts can be summed per batch before
    the shuffle; ``preference_anchors_from`` gives the same anchors on this as on the
    raw events, for requests at T.
    """
    raw = pa_events(events)
    ts = raw["ts"]
    keep = pc.and_(
        pc.less(ts, pa.scalar(as_of, TIMESTAMP)),
        pc.greater_equal(ts, pa.scalar(as_of - window, TIMESTAMP)),
    )
    counts = raw.filter(keep).group_by(["query_id", "item_id", "grp"], use_threads=False)
    counts = counts.aggregate([("n", "sum")])
    stamp = pa.array([as_of - _MICRO] * counts.num_rows, TIMESTAMP)
    return pa.table(
        {
            "query_id": counts["query_id"],
            "item_id": counts["item_id"],
            "grp": counts["grp"],
            "ts": stamp,
            "n": counts["n_sum"],
        },
        schema=ANCHOR_EVENTS_SCHEMA,
    )


def preference_anchors(
    requests: pa.Table, events: pa.Table, config: AssemblyConfig, threads: int = 1
) -> pa.Table:
    """PA_SCHEMA columns aligned with the rows of ``requests`` (query_id, as_of).

    Each group holds the query's ``pa_top_k`` items with the most events of its type in
    ``[as_of - pa_window, as_of)``, most first, ties by item_id; groups follow PA_GROUPS
    and are never interleaved. Requests sharing (query_id, as_of) are computed once.
    """
    return preference_anchors_from(requests, pa_events(events), config, threads)


def preference_anchors_from(
    requests: pa.Table, anchor_events: pa.Table, config: AssemblyConfig, threads: int = 1
) -> pa.Table:
    """``preference_anchors`` on anchor events (``pa_events`` or ``anchor_counts`` rows)."""
    keys = pa.table(
        {
            "_row": np.arange(requests.num_rows, dtype=np.int64),
            "query_id": requests["query_id"],
            "as_of": requests["as_of"],
            "since": pc.subtract(requests["as_of"], pa.scalar(config.pa_window)),
        }
    )
    con = connect(threads, keys=keys, ev=anchor_events)
    table = query(
        con,
        f"""
        WITH k AS (SELECT DISTINCT query_id, as_of, since FROM keys),
        counts AS (
            SELECT k.query_id, k.as_of, e.grp, e.item_id, sum(e.n) AS n
            FROM k JOIN ev e
              ON e.query_id = k.query_id AND e.ts < k.as_of AND e.ts >= k.since
            GROUP BY ALL
        ), top AS (
            SELECT * FROM counts
            QUALIFY row_number() OVER (
                PARTITION BY query_id, as_of, grp ORDER BY n DESC, item_id
            ) <= {int(config.pa_top_k)}
        ), lists AS (
            SELECT query_id, as_of,
                   list(grp ORDER BY grp, n DESC, item_id) AS pa_group,
                   list(item_id ORDER BY grp, n DESC, item_id) AS pa_item_id
            FROM top GROUP BY query_id, as_of
        )
        SELECT coalesce(l.pa_group, []::TINYINT[]) AS pa_group,
               coalesce(l.pa_item_id, []::BIGINT[]) AS pa_item_id
        FROM keys r LEFT JOIN lists l ON l.query_id = r.query_id AND l.as_of = r.as_of
        ORDER BY r._row
        """,
    )
    return table.cast(PA_SCHEMA)
