"""Retrieval evaluation: Recall@100 and Recall@500 of clicked items over the catalogue.

The catalogue is every distinct item that appears as a candidate in the evaluated rows,
with the side features of its first appearance (rows are as-of their request time, so
this is what the system knew then). Each request's user vector r (from the step that
supervises clicks) scores the whole catalogue by <r, z_v>; the targets are the request's
clicked candidates. With a catalogue smaller than K, Recall@K is trivially 1: the
default world has more items than that.

With an ``IndexConfig`` the same recall is also measured with the top K from the ANN item
index over the same catalogue (``ann_recall@K``), beside the exact-search figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract import ITEM_FEATURES
from onepiece.evaluation import metrics
from onepiece.evaluation.ranking import flat_candidates
from onepiece.model.retrieval import user_vectors

if TYPE_CHECKING:
    from onepiece.retrieval.index import IndexConfig

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


def retrieval_metrics(model, rows: pa.Table, ann: IndexConfig | None = None) -> dict[str, float]:
    """{"recall@100": x, "recall@500": y} over requests with at least one click; with
    ``ann`` (an ``onepiece.retrieval.index.IndexConfig``) also "ann_recall@100/500"."""
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
    out = {f"recall@{k}": metrics.recall_at_k(scores, targets, k) for k in RECALL_KS}
    if ann is not None:
        from onepiece.retrieval.index import build_index

        index = build_index(item_ids, z, ann)
        for k in RECALL_KS:
            found, _ = index.search(r, min(k, len(item_ids)))
            out[f"ann_recall@{k}"] = ann_recall(found, item_ids, targets)
    return out


def ann_recall(found: np.ndarray, item_ids: np.ndarray, targets: np.ndarray) -> float:
    """Mean share of each query's targets (bool [Q, N] over sorted ``item_ids``) among its
    ``found`` item ids ([Q, k], -1 padded), over queries with a target."""
    n_targets = targets.sum(axis=1)
    has = n_targets > 0
    if not has.any():
        return float("nan")
    valid = found >= 0
    cols = np.searchsorted(item_ids, np.where(valid, found, item_ids[0]))
    hits = (np.take_along_axis(targets, cols, axis=1) & valid).sum(axis=1)
    return float(np.mean(hits[has] / n_targets[has]))
