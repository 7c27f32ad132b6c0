"""Retrieval evaluation: Recall@100 and Recall@500 of clicked items over the catalogue.

The catalogue is every distinct item that appears as a candidate in the evaluated rows,
with the side features of its first appearance (rows are as-of their request time, so
this is what the system knew then). Each request's user vector r (from the step that
supervises clicks) scores the whole catalogue by <r, z_v>; the targets are the request's
clicked candidates. With a catalogue smaller than K, Recall@K is trivially 1: the
default world has more items than that.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract import ITEM_FEATURES
from onepiece.evaluation import metrics
from onepiece.evaluation.ranking import flat_candidates
from onepiece.model.retrieval import user_vectors

RECALL_KS: tuple[int, ...] = (100, 500)


def catalogue(rows: pa.Table) -> pa.Table:
    """Distinct candidate items with their features: item_id + ITEM_FEATURES columns."""
    rows = rows.combine_chunks()
    flat = {"item_id": pc.list_flatten(rows["cand_item_id"])}
    for f in ITEM_FEATURES:
        flat[f.name] = pc.list_flatten(rows[f"cand_{f.name}"])
    table = pa.table(flat)
    ids = np.asarray(table["item_id"])
    _, first = np.unique(ids, return_index=True)  # sorted ids, first occurrence
    return table.take(pa.array(first))


def retrieval_metrics(model, rows: pa.Table) -> dict[str, float]:
    """{"recall@100": x, "recall@500": y} over requests with at least one click."""
    from onepiece.model import export_item_vectors

    if model.config.mode != "retrieval":
        raise ValueError(f"model '{model.config.name}' is a {model.config.mode} model")
    rows = rows.combine_chunks()
    items = catalogue(rows)
    item_ids, z = export_item_vectors(model, items)  # sorted ids, [N, d]
    flat = flat_candidates(rows)
    clicked = flat.labels["click"] > 0
    has_click = np.bincount(flat.request_row[clicked], minlength=rows.num_rows) > 0
    wanted = np.flatnonzero(has_click)
    r = user_vectors(model, rows.take(pa.array(wanted)))  # [Q, d]
    scores = r @ z.T  # [Q, N]
    targets = np.zeros(scores.shape, dtype=bool)
    row_of = np.full(rows.num_rows, -1)
    row_of[wanted] = np.arange(len(wanted))
    targets[row_of[flat.request_row[clicked]], np.searchsorted(item_ids, flat.item_id[clicked])] = True
    return {f"recall@{k}": metrics.recall_at_k(scores, targets, k) for k in RECALL_KS}
