"""The ``metrics.json`` document of ``onepiece evaluate`` in exactly the issue's shape.

    {"ranking": {"click": {"auc": x, "gauc": y}, "add_to_cart": {...}, "order": {...}},
     "retrieval": {"recall@100": x, "recall@500": y}}

A retrieval document may also hold ``ann_recall@100`` and ``ann_recall@500``: the same
recall with the top K taken from the ANN item index instead of exact search.

A key is absent when its mode was not evaluated. NaN (a task with one class only) is
written as null, because JSON has no NaN.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

RANKING_TASKS: tuple[str, ...] = ("click", "add_to_cart", "order")
RANKING_METRICS: tuple[str, ...] = ("auc", "gauc")
RETRIEVAL_METRICS: tuple[str, ...] = ("recall@100", "recall@500")
ANN_METRICS: tuple[str, ...] = ("ann_recall@100", "ann_recall@500")


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def metrics_document(
    ranking: dict[str, dict[str, float]] | None = None,
    retrieval: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Build the document, checking that every expected key is present and no other."""
    doc: dict[str, Any] = {}
    if ranking is not None:
        if set(ranking) != set(RANKING_TASKS):
            raise ValueError(f"ranking tasks must be {RANKING_TASKS}, got {sorted(ranking)}")
        doc["ranking"] = {}
        for task in RANKING_TASKS:
            if set(ranking[task]) != set(RANKING_METRICS):
                raise ValueError(f"ranking[{task!r}] must hold {RANKING_METRICS}")
            doc["ranking"][task] = {m: _number(ranking[task][m]) for m in RANKING_METRICS}
    if retrieval is not None:
        keys = RETRIEVAL_METRICS + (ANN_METRICS if set(ANN_METRICS) <= set(retrieval) else ())
        if set(retrieval) != set(keys):
            raise ValueError(f"retrieval must hold {RETRIEVAL_METRICS} (and optionally {ANN_METRICS}), "
                             f"got {sorted(retrieval)}")
        doc["retrieval"] = {m: _number(retrieval[m]) for m in keys}
    return doc


def write_json(doc: dict[str, Any], path: str | Path) -> None:
    """Write JSON deterministically (fixed key order, trailing newline)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
