"""Training labels: per candidate, whether the request saw each task's event on it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.assembly.sql import connect, query
from onepiece.contract import LABEL_COLUMNS, TASKS

LABELS_SCHEMA = pa.schema([pa.field(name, pa.list_(pa.int8())) for name in LABEL_COLUMNS])


def candidate_labels(requests: pa.Table, events: pa.Table, threads: int = 1) -> pa.Table:
    """LABELS_SCHEMA columns aligned with ``requests`` (request_id, cand_item_id).

    ``label_<task>[i]`` is 1 when the request's events hold a ``<task>`` event on its
    i-th candidate, else 0; lists are parallel to cand_item_id.

    Events meet requests by request_id (one row per request), so the work is
    O(events + candidates): a heavy user's other requests never join each other's events.
    """
    flat = pa.table(
        {
            "_row": pc.list_parent_indices(requests["cand_item_id"]),
            "_pos": np.arange(len(pc.list_flatten(requests["cand_item_id"])), dtype=np.int64),
            "item_id": pc.list_flatten(requests["cand_item_id"]),
        }
    )
    rows = np.arange(requests.num_rows, dtype=np.int64)
    ids = pa.table({"_row": rows, "request_id": requests["request_id"]})
    ev = events.select(["request_id", "item_id", "event_type"])
    con = connect(threads, flat=flat, ids=ids, ev=ev)
    hits = ",\n".join(
        f"max((e.event_type = '{task}')::TINYINT) AS label_{task}" for task in TASKS
    )
    lists = ",\n".join(
        f"list(coalesce(h.label_{task}, 0)::TINYINT ORDER BY f._pos) AS label_{task}"
        for task in TASKS
    )
    empty = ",\n".join(f"coalesce(l.label_{task}, []::TINYINT[]) AS label_{task}" for task in TASKS)
    table = query(
        con,
        f"""
        WITH hit AS (
            SELECT ids._row, e.item_id, {hits}
            FROM ids JOIN ev e ON e.request_id = ids.request_id
            GROUP BY ALL
        ), l AS (
            SELECT f._row, {lists}
            FROM flat f LEFT JOIN hit h ON h._row = f._row AND h.item_id = f.item_id
            GROUP BY f._row
        )
        SELECT {empty} FROM ids LEFT JOIN l USING (_row) ORDER BY ids._row
        """,
    )
    return table.cast(LABELS_SCHEMA)


def has_click(labels: pa.Table) -> pa.Array:
    """Per request, whether any candidate was clicked (training keeps only those)."""
    lists = labels["label_click"].combine_chunks()
    parents = np.asarray(pc.list_parent_indices(lists))
    values = np.asarray(pc.list_flatten(lists))
    mask = np.zeros(len(lists), dtype=bool)
    mask[parents[values == 1]] = True
    return pa.array(mask)
