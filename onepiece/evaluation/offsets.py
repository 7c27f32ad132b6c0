"""How much of a row's AUC is its request-level score offsets?

Global AUC compares candidates of different requests, so a model's click logit is two
things at once: a per-request level (its mean over the request's shown candidates) and
the order within the request. Pre-rank uses only the second. Splitting the two explains
when AUC and GAUC disagree:

- ``within_auc``: AUC with each request's mean logit removed (the order within requests
  only, pooled);
- ``auc_by_scale``: AUC with the request level multiplied by s (s = 1 is the model as it
  is). For a calibrated model the curve peaks at s = 1, because ranking by the true
  probability maximises AUC. A peak below 1 means the request level is too strong
  against the order within requests: either the level overshoots the requests' real
  differences or the within-request scores are too timid (a model barely separating a
  request's candidates); either way the row is not calibrated across requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepiece.evaluation import metrics
from onepiece.model.calibration import logits_of

SCALES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)


@dataclass(frozen=True)
class OffsetProfile:
    within_auc: float
    auc_by_scale: dict[float, float]

    @property
    def best_scale(self) -> float:
        return max(self.auc_by_scale, key=lambda s: self.auc_by_scale[s])

    def to_json(self) -> dict[str, object]:
        return {"within_auc": self.within_auc, "best_scale": self.best_scale,
                "auc_by_scale": {str(k): v for k, v in self.auc_by_scale.items()}}


def split_logits(probabilities: np.ndarray, requests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per-candidate request mean logit, logit minus that mean)."""
    logit = logits_of(np.asarray(probabilities))
    _, inverse = np.unique(requests, return_inverse=True)
    level = (np.bincount(inverse, logit) / np.bincount(inverse))[inverse]
    return level, logit - level


def offset_profile(
    labels: np.ndarray, probabilities: list[np.ndarray], requests: np.ndarray, scales: tuple[float, ...] = SCALES
) -> OffsetProfile:
    """The profile of one row, averaged over its seeds' probabilities (same candidates)."""
    parts = [split_logits(p, requests) for p in probabilities]
    within = float(np.mean([metrics.auc(labels, w) for _, w in parts]))
    by_scale = {s: float(np.mean([metrics.auc(labels, w + s * level) for level, w in parts])) for s in scales}
    return OffsetProfile(within, by_scale)
