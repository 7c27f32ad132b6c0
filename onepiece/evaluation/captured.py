"""Which parts of the world's utility has a row learned?

On a generated world the click logit of a shown candidate is a known sum of terms
(taste, query-level popularity, intent match, quality, price, colour; see
``onepiece.world``). Regressing a row's click logit on those terms, over the exposed
test candidates, says how much of each it reproduces: a coefficient of 1 is the term at
the world's own weight, 0 is a term the row ignores (given the others). R^2 says how
much of the row's logit the terms explain at all; the rest is the row's own noise or
what it learned from the set, the position or chance.

A coefficient is a summary, not a proof: terms that move together (a user's taste and
the queries they choose) share credit. Read it beside the AUC gap to ``world_utility``:
a term a row misses is where that gap is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepiece.model.calibration import logits_of


@dataclass(frozen=True)
class CapturedParts:
    coefficients: dict[str, float]  # per utility term: 1 = at the world's weight
    r2: float  # share of the row's logit variance the terms explain

    def to_json(self) -> dict[str, object]:
        return {"coefficients": self.coefficients, "r2": self.r2}


def captured_parts(parts: dict[str, np.ndarray], seed_scores: list[np.ndarray]) -> CapturedParts:
    """Least squares of each seed's click logit on [1, parts...]; the mean over seeds.

    ``parts`` and every ``seed_scores`` entry (probabilities) cover the same candidates.
    """
    names = list(parts)
    design = np.column_stack([np.ones(len(seed_scores[0]))] + [np.asarray(parts[n], np.float64) for n in names])
    coefficients, r2 = [], []
    for probabilities in seed_scores:
        logit = logits_of(np.asarray(probabilities, np.float64))
        fit, *_ = np.linalg.lstsq(design, logit, rcond=None)
        residual = logit - design @ fit
        total = ((logit - logit.mean()) ** 2).sum()
        coefficients.append(fit[1:])
        r2.append(1.0 - (residual**2).sum() / total if total > 0 else 0.0)
    mean = np.mean(coefficients, axis=0)
    return CapturedParts({n: float(c) for n, c in zip(names, mean, strict=True)}, float(np.mean(r2)))


def markdown_captured(captured: dict[str, CapturedParts], spread: dict[str, float]) -> str:
    """The ablation.md section: one row per variant, one column per utility term."""
    names = list(next(iter(captured.values())).coefficients)
    lines = [
        "\n## What each row learned of the world's utility (click)\n",
        "Each row's click logit regressed on the terms of the world's hidden base utility over the exposed "
        "test candidates (`onepiece/evaluation/captured.py`): 1 = the term at the world's own weight, "
        "0 = ignored given the others. R^2: how much of the row's logit the terms explain. Mean over the "
        "training seeds. Standard deviation of each term over these candidates: "
        + ", ".join(f"{n} {spread[n]:.2f}" for n in names) + ".\n",
        "| variant | " + " | ".join(names) + " | R^2 |",
        "| --- | " + " | ".join("---" for _ in names) + " | --- |",
    ]
    for variant, c in captured.items():
        lines.append(f"| {variant} | " + " | ".join(f"{c.coefficients[n]:.2f}" for n in names) + f" | {c.r2:.2f} |")
    return "\n".join(lines) + "\n"
