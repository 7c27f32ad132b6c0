"""Ranking evaluation: score every candidate of held-out requests, then AUC and GAUC.

Scoring follows serving: each request's candidates are split into groups of C (seeded
shuffle, so a rerun gives the same numbers) and every group is one sequence.

The metrics are computed over the EXPOSED candidates only (label_impression = 1): an
unexposed candidate was never shown, so its missing click is not an observed negative.
This is the paper's setting (AUC on the impression log, GAUC per user weighted by the
user's impressions). Users whose impressions hold one class only are skipped by GAUC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract import TASKS
from onepiece.evaluation import metrics
from onepiece.evaluation.metrics_file import RANKING_TASKS

CAND_ID = "cand_item_id"


@dataclass(frozen=True)
class FlatCandidates:
    """Per candidate of a table of request rows, in flattened ``cand_item_id`` order."""

    request_row: np.ndarray  # [N] int64
    user_id: np.ndarray  # [N] int64
    item_id: np.ndarray  # [N] int64
    labels: dict[str, np.ndarray]  # task -> [N] int8


def flat_candidates(rows: pa.Table) -> FlatCandidates:
    rows = rows.combine_chunks()
    parent = np.asarray(pc.list_parent_indices(rows[CAND_ID]), dtype=np.int64)
    labels = {
        task: np.asarray(pc.fill_null(pc.list_flatten(rows[f"label_{task}"]), 0)).astype(np.int8)
        for task in TASKS
    }
    return FlatCandidates(
        request_row=parent,
        user_id=np.asarray(rows["user_id"])[parent],
        item_id=np.asarray(pc.list_flatten(rows[CAND_ID]), dtype=np.int64),
        labels=labels,
    )


def score_candidates(
    model, rows: pa.Table, seed: int = 0, requests_per_chunk: int = 64
) -> dict[str, np.ndarray]:
    """Probabilities per task for every flat candidate of ``rows``: task -> [N] float32."""
    from onepiece.model import score, tensorize

    rows = rows.combine_chunks()
    lengths = np.asarray(pc.fill_null(pc.list_value_length(rows[CAND_ID]), 0), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    out = {task: np.zeros(int(offsets[-1]), dtype=np.float32) for task in TASKS}
    for start in range(0, rows.num_rows, requests_per_chunk):
        chunk = rows.slice(start, requests_per_chunk)
        # One shuffle seed per chunk, derived from the run seed and the chunk's position.
        inputs = tensorize(chunk, model.config, shuffle_seed=seed * 1_000_003 + start)
        if inputs.batch_size == 0:
            continue
        probs = score(model, inputs)
        index = inputs.cand_flat_index.numpy()  # [B, C] flat index inside the chunk
        valid = index >= 0
        target = index[valid] + offsets[start]
        for task in TASKS:
            out[task][target] = probs[task].numpy()[valid]
    return out


def ranking_metrics(
    flat: FlatCandidates, scores: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """AUC and GAUC per reported task, over exposed candidates."""
    exposed = flat.labels["impression"] > 0
    result = {}
    for task in RANKING_TASKS:
        y, s, u = flat.labels[task][exposed], scores[task][exposed], flat.user_id[exposed]
        result[task] = {"auc": metrics.auc(y, s), "gauc": metrics.gauc(y, s, u)}
    return result


def statistic_scores(rows: pa.Table, column: str = "cand_ctr_7d") -> dict[str, np.ndarray]:
    """A one-feature baseline: every task's score is a candidate statistic of ``rows``
    (default the item's 7-day CTR; missing = -1), in ``flat_candidates`` order."""
    values = pc.list_flatten(rows.combine_chunks()[column])
    score = np.asarray(pc.fill_null(values, -1.0), dtype=np.float32)
    return {task: score for task in TASKS}


def popularity_scores(train: pa.Table, flat: FlatCandidates) -> dict[str, np.ndarray]:
    """A popularity baseline: each task's score is the item's count of that task's
    positives in the training rows (the same for every user and request)."""
    train_flat = flat_candidates(train)
    out = {}
    for task in TASKS:
        items, counts = np.unique(train_flat.item_id[train_flat.labels[task] > 0], return_counts=True)
        score = np.zeros(len(flat.item_id), dtype=np.float32)
        if len(items):
            pos = np.minimum(np.searchsorted(items, flat.item_id), len(items) - 1)
            found = items[pos] == flat.item_id
            score[found] = counts[pos[found]]
        out[task] = score
    return out
