"""The plain implementations the bounded assembly steps replaced, kept as references.

They join each request to every event of its user (or query) in the look-back window,
so their work grows with requests x events: fine for tests, not for a crawler's log.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
