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

#: Joined rows (a (query, as_of) key x an anchor event in its window) ranked per DuckDB
#: query (ours): a few hundred MB of aggregate state at most, whatever the log holds.
JOIN_BUDGET = 2_000_000

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
    requests: pa.Table,
    anchor_events: pa.Table,
    config: AssemblyConfig,
    threads: int = 1,
    budget: int = JOIN_BUDGET,
) -> pa.Table:
    """``preference_anchors`` on anchor events (``pa_events`` or ``anchor_counts`` rows).

    The distinct (query_id, as_of) keys are ranked in chunks of at most ``budget`` joined
    rows (key x anchor event in its window; one key alone may exceed it), so memory stays
    bounded when a popular query is asked at many times (training, a crawler's requests)
    or holds a huge window of events.
    """
    rows = pa.table(
        {
            "_row": np.arange(requests.num_rows, dtype=np.int64),
            "query_id": requests["query_id"],
            "as_of": requests["as_of"],
        }
    )
    keys = query(
        connect(threads, rows=rows),
        "SELECT DISTINCT query_id, as_of FROM rows ORDER BY query_id, as_of",
    )
    keys = keys.append_column("since", pc.subtract(keys["as_of"], pa.scalar(config.pa_window)))
    chunk = np.cumsum(window_rows(keys, anchor_events, threads)) // max(int(budget), 1)
    bounds = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1], True])
    found = pa.concat_tables(
        [_ranked(keys.slice(lo, hi - lo), anchor_events, config, threads)
         for lo, hi in zip(bounds[:-1], bounds[1:])]  # at least one chunk, maybe empty
    )
    table = query(
        connect(threads, rows=rows, found=found),
        """
        SELECT coalesce(f.pa_group, []::TINYINT[]) AS pa_group,
               coalesce(f.pa_item_id, []::BIGINT[]) AS pa_item_id
        FROM rows r LEFT JOIN found f ON f.query_id = r.query_id AND f.as_of = r.as_of
        ORDER BY r._row
        """,
    )
    return table.cast(PA_SCHEMA)


def window_rows(keys: pa.Table, anchor_events: pa.Table, threads: int = 1) -> np.ndarray:
    """Per row of ``keys`` (query_id, as_of, since): how many anchor event rows of its
    query lie in [since, as_of). Numbers each query's events in time order and finds the
    two ends by ASOF joins: O(keys + events), never keys x events."""
    con = connect(threads, keys=keys.append_column("_key", pa.array(np.arange(keys.num_rows))),
                  ev=anchor_events)
    sizes = query(
        con,
        """
        WITH numbered AS (
            SELECT query_id, ts, row_number() OVER (PARTITION BY query_id ORDER BY ts) AS n
            FROM ev
        ), last_at AS (
            SELECT query_id, ts, max(n) AS n FROM numbered GROUP BY query_id, ts
        ), hi AS (
            SELECT k._key, coalesce(l.n, 0) AS n FROM keys k
            ASOF LEFT JOIN last_at l ON k.query_id = l.query_id AND l.ts < k.as_of
        ), lo AS (
            SELECT k._key, coalesce(l.n, 0) AS n FROM keys k
            ASOF LEFT JOIN last_at l ON k.query_id = l.query_id AND l.ts < k.since
        )
        SELECT hi.n - lo.n AS n FROM hi JOIN lo USING (_key) ORDER BY _key
        """,
    )
    return sizes["n"].to_numpy().astype(np.int64)


def _ranked(keys: pa.Table, anchor_events: pa.Table, config: AssemblyConfig, threads: int) -> pa.Table:
    """(query_id, as_of, pa_group, pa_item_id) for the keys with any anchor in window."""
    con = connect(threads, k=keys, ev=anchor_events)
    return query(
        con,
        f"""
        WITH counts AS (
            SELECT k.query_id, k.as_of, e.grp, e.item_id, sum(e.n) AS n
            FROM k JOIN ev e
              ON e.query_id = k.query_id AND e.ts < k.as_of AND e.ts >= k.since
            GROUP BY ALL
        ), top AS (
            SELECT * FROM counts
            QUALIFY row_number() OVER (
                PARTITION BY query_id, as_of, grp ORDER BY n DESC, item_id
            ) <= {int(config.pa_top_k)}
        )
        SELECT query_id, as_of,
               list(grp ORDER BY grp, n DESC, item_id) AS pa_group,
               list(item_id ORDER BY grp, n DESC, item_id) AS pa_item_id
        FROM top GROUP BY query_id, as_of
        """,
    )
