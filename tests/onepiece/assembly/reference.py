"""The plain implementations the bounded assembly steps replaced, kept as references.

They join each request to every event of its user (or query) in the look-back window,
so their work grows with requests x events: fine for tests, not for a crawler's log.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.assembly.anchors import PA_SCHEMA
from onepiece.assembly.config import AssemblyConfig
from onepiece.assembly.history import IH_SCHEMA, ih_events
from onepiece.assembly.sql import connect, query


def interaction_history(requests: pa.Table, events: pa.Table, config: AssemblyConfig) -> pa.Table:
    """IH per request by joining it to all of its user's events in the window."""
    keys = pa.table(
        {
            "_row": np.arange(requests.num_rows, dtype=np.int64),
            "user_id": requests["user_id"],
            "as_of": requests["as_of"],
            "since": pc.subtract(requests["as_of"], pa.scalar(config.ih_window)),
        }
    )
    con = connect(1, keys=keys, ev=ih_events(events))
    table = query(
        con,
        f"""
        WITH hits AS (
            SELECT k._row, e.item_id, e.code, e.ts
            FROM keys k JOIN ev e
              ON e.user_id = k.user_id AND e.ts < k.as_of AND e.ts >= k.since
            QUALIFY row_number() OVER (
                PARTITION BY k._row ORDER BY e.ts DESC, e.code DESC, e.item_id DESC
            ) <= {int(config.ih_length)}
        ), lists AS (
            SELECT _row,
                   list(item_id ORDER BY ts, code, item_id) AS ih_item_id,
                   list(code ORDER BY ts, code, item_id) AS ih_event_type,
                   list(ts ORDER BY ts, code, item_id) AS ih_ts
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


def preference_anchors_from(requests: pa.Table, anchor_events: pa.Table, config: AssemblyConfig) -> pa.Table:
    """PA per request by joining every distinct (query, as_of) to all its query's events."""
    keys = pa.table(
        {
            "_row": np.arange(requests.num_rows, dtype=np.int64),
            "query_id": requests["query_id"],
            "as_of": requests["as_of"],
            "since": pc.subtract(requests["as_of"], pa.scalar(config.pa_window)),
        }
    )
    con = connect(1, keys=keys, ev=anchor_events)
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
