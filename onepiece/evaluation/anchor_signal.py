"""How much of the preference anchors' signal has a row left unused?

The PA segment shows, for the request's query, the items recently exposed, clicked and
ordered under it. Whether a candidate is among them is a cheap, strong click predictor,
and it is per query, which no item statistic is. A row that uses its anchors has absorbed
it: adding the three membership flags to the row's click logit in a logistic regression
fitted on other requests does not raise the AUC. The gain that remains is anchor signal
the row did not use (for a row without PA in its input: the signal it could not see).

Two folds by request (even and odd request rows): fit on one, score the other, and
average the two folds' AUCs; the row's own AUC is taken over the same folds. It needs
no world, only the test rows, so it reads the same on a real log export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract.schemas import PA_GROUPS
from onepiece.evaluation import metrics
from onepiece.evaluation.ranking import CAND_ID
from onepiece.model.calibration import logits_of

PA_ITEM, PA_GROUP = "pa_item_id", "pa_group"
#: Ridge on the regression's weights: keeps a flag no positive ever carries finite.
RIDGE = 1e-4


@dataclass(frozen=True)
class AnchorSignal:
    auc: float  # the row's own click AUC, over the folds
    auc_with_anchors: float  # its logit plus the membership flags, fitted on the other fold

    @property
    def unused(self) -> float:
        return self.auc_with_anchors - self.auc

    def to_json(self) -> dict[str, float]:
        return {"auc": self.auc, "auc_with_anchors": self.auc_with_anchors, "unused": self.unused}


def anchor_membership(rows: pa.Table) -> np.ndarray:
    """[candidates, groups] 0/1: is each flat candidate (request-major, the order of
    ``ranking.flat_candidates``) among its request's anchors of each PA group?"""
    rows = rows.combine_chunks()
    cand_request = np.asarray(pc.list_parent_indices(rows[CAND_ID]), dtype=np.int64)
    cand_item = np.asarray(pc.list_flatten(rows[CAND_ID]), dtype=np.int64)
    pa_request = np.asarray(pc.list_parent_indices(rows[PA_ITEM]), dtype=np.int64)
    pa_item = np.asarray(pc.list_flatten(rows[PA_ITEM]), dtype=np.int64)
    pa_group = np.asarray(pc.list_flatten(rows[PA_GROUP]), dtype=np.int64)
    # One int64 key per (request, item): item ids are shifted to be non-negative first.
    low = min(int(cand_item.min(initial=0)), int(pa_item.min(initial=0)))
    span = max(int(cand_item.max(initial=0)), int(pa_item.max(initial=0))) - low + 1
    cand_key = cand_request * span + (cand_item - low)
    pa_key = pa_request * span + (pa_item - low)
    flags = [np.isin(cand_key, pa_key[pa_group == code]) for code in range(len(PA_GROUPS))]
    return np.column_stack(flags).astype(np.float64)


def fit_logistic(features: np.ndarray, labels: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Weights [features + 1 (bias, last)] of a ridge logistic regression (Newton steps)."""
    x = np.column_stack([features, np.ones(len(features))])
    y = labels.astype(np.float64)
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        gradient = x.T @ (p - y) + RIDGE * len(y) * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + RIDGE * len(y) * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return w


def _halves(requests: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(fit on, score on) masks: even request rows against odd ones, and back."""
    even = requests % 2 == 0
    return (even, ~even), (~even, even)


def held_out_auc(features: np.ndarray, labels: np.ndarray, requests: np.ndarray) -> float:
    """AUC of the logistic regression on ``features``, fitted on one half of the requests
    and scored on the other, averaged over the two halves."""
    aucs = []
    for fit_on, score_on in _halves(requests):
        w = fit_logistic(features[fit_on], labels[fit_on])
        aucs.append(metrics.auc(labels[score_on], features[score_on] @ w[:-1]))
    return float(np.mean(aucs))


def anchor_signal(
    labels: np.ndarray, probabilities: list[np.ndarray], requests: np.ndarray, flags: np.ndarray
) -> AnchorSignal:
    """One row's figures, averaged over its seeds' click probabilities (same candidates)."""
    own, with_anchors = [], []
    for p in probabilities:
        logit = logits_of(np.asarray(p))
        own += [metrics.auc(labels[score_on], logit[score_on]) for _, score_on in _halves(requests)]
        with_anchors.append(held_out_auc(np.column_stack([logit, flags]), labels, requests))
    return AnchorSignal(float(np.mean(own)), float(np.mean(with_anchors)))


def anchors_alone_auc(labels: np.ndarray, requests: np.ndarray, flags: np.ndarray) -> float:
    """The membership flags as the only features: how strong the anchors are by themselves."""
    return held_out_auc(flags, labels, requests)


#: The hand IH features of the history diagnostic (``hand_features``): how much of the
#: candidate's category, shop and item the user's history holds, by share and by recency.
HISTORY_FEATURES: tuple[str, ...] = (
    "ih_category_share", "ih_category_recent", "ih_shop_share", "ih_shop_recent", "ih_item_count", "ih_item_recent",
)


def history_features(rows: pa.Table) -> np.ndarray:
    """[candidates, HISTORY_FEATURES] of every flat candidate (``flat_candidates`` order):
    the history's counterpart of ``anchor_membership`` for the same held-out regression,
    so ``anchor_signal(..., history_features(rows))`` is the IH signal a row left unused."""
    from onepiece.evaluation.hand_features import FEATURE_NAMES, hand_features

    features, names = hand_features(rows)
    assert tuple(names) == FEATURE_NAMES
    picked = features[:, [names.index(n) for n in HISTORY_FEATURES]].astype(np.float64)
    return np.log1p(np.nan_to_num(picked, nan=0.0))  # counts and recency sums: heavy-tailed


def markdown_history_signal(signals: dict[str, AnchorSignal], alone: float) -> str:
    """The ablation.md section: per row, the click AUC the hand IH features would still add."""
    lines = [
        "\n## History signal each row leaves unused (click)\n",
        "Each row's click logit plus hand features of the user's interaction history "
        f"({', '.join(HISTORY_FEATURES)}; log1p), the same held-out logistic regression as the anchors'. "
        "`unused` is the AUC they still add: near 0 means the row reads from the history what these "
        f"features say. The features alone: AUC {alone:.4f}.\n",
    ]
    return "\n".join(lines + _signal_rows(signals, "with IH features")) + "\n"


def _signal_rows(signals: dict[str, AnchorSignal], added: str) -> list[str]:
    rows = [f"| variant | click AUC (folds) | {added} | unused |", "| --- | --- | --- | --- |"]
    return rows + [f"| {v} | {s.auc:.4f} | {s.auc_with_anchors:.4f} | {s.unused:+.4f} |" for v, s in signals.items()]


def markdown_anchor_signal(signals: dict[str, AnchorSignal], alone: float) -> str:
    """The ablation.md section: per row, the click AUC its anchors would still add."""
    lines = [
        "\n## Anchor signal each row leaves unused (click)\n",
        "Each row's click logit plus three flags (is the candidate among the request's PA "
        f"{', '.join(PA_GROUPS)} items), a logistic regression fitted on half the test requests "
        "and scored on the other half (`onepiece/evaluation/anchor_signal.py`). `unused` is the AUC "
        "the flags still add: near 0 means the row has absorbed what membership in the anchors says. "
        f"The flags alone: AUC {alone:.4f}.\n",
    ]
    return "\n".join(lines + _signal_rows(signals, "with anchor flags")) + "\n"
