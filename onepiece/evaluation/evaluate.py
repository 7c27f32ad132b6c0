"""Evaluate a model on held-out rows: the metrics.json document for its mode."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from onepiece.evaluation.metrics_file import metrics_document
from onepiece.evaluation.ranking import flat_candidates, ranking_metrics, score_candidates
from onepiece.evaluation.retrieval import retrieval_metrics

if TYPE_CHECKING:
    from onepiece.retrieval.index import IndexConfig


def evaluate_model(model, rows: pa.Table, seed: int = 0, ann: IndexConfig | None = None) -> dict[str, Any]:
    """Ranking AUC/GAUC for a ranking model, Recall@K for a retrieval model (and with
    ``ann``, an ``IndexConfig``, also Recall@K through the ANN item index)."""
    if model.config.mode == "retrieval":
        return metrics_document(retrieval=retrieval_metrics(model, rows, ann))
    return evaluate_ranking(model, rows, seed)[0]


def evaluate_ranking(model, rows: pa.Table, seed: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ranking metrics document and the scores it was computed from (task -> [N],
    in ``flat_candidates(rows)`` order)."""
    scores = score_candidates(model, rows, seed=seed)
    return metrics_document(ranking=ranking_metrics(flat_candidates(rows), scores)), scores


def headline(doc: dict[str, Any]) -> tuple[str, float]:
    """The early-stopping metric of a document: click AUC, else Recall@100 (NaN -> -inf)."""
    if "ranking" in doc:
        name, value = "click_auc", doc["ranking"]["click"]["auc"]
    else:
        name, value = "recall@100", doc["retrieval"]["recall@100"]
    return name, (-math.inf if value is None else float(value))
