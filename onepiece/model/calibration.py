"""Platt scaling of the task heads: ``p = sigmoid(scale * logit + bias)`` per task.

The heads are trained on the paper's sampling (clicked sessions, random candidate
groups, capped unexposed negatives), which is right for ranking but inflates their base
rates against what the pre-rank scores in serving (every candidate of every request).
The fused pre-rank score multiplies probabilities with prices and bids, so their scale
matters; a per-head affine map of the logit, fitted on traffic shaped like serving,
restores it. ``scale`` is kept positive, so the order of candidates within a head (and
its AUC) never changes.

The parameters live in ``ModelConfig.calibration`` (``config.json``, never pickled) and
``onepiece.model.score`` applies them, so every scoring path (in-process, Beam, Triton)
returns calibrated probabilities. An empty mapping is the identity. The fit data is
assembled by ``onepiece.pipeline.publish_model.calibrate``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: The smallest slope a fit may return: a head that does not rank (or ranks backwards)
#: is flattened towards its base rate instead of being inverted.
MIN_SCALE = 1e-3
#: A head needs this many positives and negatives in the fit data to be calibrated.
MIN_CLASS_COUNT = 20
_EPS = float(np.finfo(np.float32).eps)


def logits_of(probabilities: np.ndarray) -> np.ndarray:
    """The head logits behind raw (uncalibrated) float32 probabilities, in float64."""
    p = np.clip(probabilities.astype(np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def apply(logits: torch.Tensor, params: dict[str, float] | None) -> torch.Tensor:
    """The calibrated logit (identity without parameters)."""
    if not params:
        return logits
    return logits * params["scale"] + params["bias"]


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy."""
    p = np.clip(probabilities.astype(np.float64), 1e-12, 1.0 - 1e-12)
    y = labels.astype(np.float64)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def fit_platt(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> dict[str, float] | None:
    """``{"scale", "bias"}`` minimising the log loss of ``sigmoid(scale * logit + bias)``
    (L-BFGS in float64; the loss is convex in (scale, bias)); None when either class has
    fewer than ``MIN_CLASS_COUNT`` rows (nothing reliable to fit)."""
    y = labels.astype(np.float64)
    positives = float(y.sum())
    if positives < MIN_CLASS_COUNT or y.size - positives < MIN_CLASS_COUNT:
        return None
    x = torch.from_numpy(np.asarray(logits, np.float64))
    target = torch.from_numpy(y)
    # Start at the identity slope with the bias that matches the base rate.
    mean_p = float(np.mean(calibrated(x.numpy(), None)))
    start_bias = float(logits_of(np.array([positives / y.size]))[0] - logits_of(np.array([mean_p]))[0])
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(start_bias, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([scale, bias], max_iter=max_iter, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scale * x + bias, target)
        loss.backward()
        return loss

    optimiser.step(closure)
    if scale.item() < MIN_SCALE:  # keep the order: refit the bias at the smallest slope
        with torch.no_grad():
            scale.fill_(MIN_SCALE)
        scale.requires_grad_(False)
        optimiser = torch.optim.LBFGS([bias], max_iter=max_iter, line_search_fn="strong_wolfe")
        optimiser.step(closure)
    return {"scale": float(scale.item()), "bias": float(bias.item())}


def calibrated(logits: np.ndarray, params: dict[str, float] | None) -> np.ndarray:
    """Calibrated probabilities from float64 logits (numpy twin of ``apply``)."""
    z = logits if not params else logits * params["scale"] + params["bias"]
    return 1.0 / (1.0 + np.exp(-z))


def figures(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Mean predicted against realised rate, and the log loss."""
    mean_p = float(probabilities.mean()) if probabilities.size else float("nan")
    rate = float(labels.mean()) if labels.size else float("nan")
    return {
        "mean_predicted": round(mean_p, 6),
        "realised_rate": round(rate, 6),
        "predicted_over_realised": round(mean_p / rate, 4) if rate else None,
        "log_loss": round(log_loss(probabilities, labels), 6),
    }
