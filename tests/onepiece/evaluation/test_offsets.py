"""Splitting a row's click AUC into request level and order within requests."""

from __future__ import annotations

import numpy as np
import pytest

from onepiece.evaluation import metrics
from onepiece.evaluation.offsets import offset_profile, split_logits


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_true_probabilities_peak_at_scale_one_and_inflated_offsets_below_it() -> None:
    rng = np.random.default_rng(0)
    requests = np.repeat(np.arange(2000), 10)
    level = rng.normal(-2.0, 0.8, 2000)[requests]  # each request's own click rate
    within = rng.normal(0.0, 1.0, requests.size)
    truth = _sigmoid(level + within)
    labels = (rng.random(requests.size) < truth).astype(np.int8)
    calibrated = offset_profile(labels, [truth], requests)
    assert calibrated.best_scale == 1.0
    inflated = offset_profile(labels, [_sigmoid(4 * level + within)], requests)
    assert inflated.best_scale < 1.0
    assert inflated.auc_by_scale[1.0] < calibrated.auc_by_scale[1.0]
    # the order within requests is the same in both: the request level is all that moved
    assert inflated.within_auc == pytest.approx(calibrated.within_auc, abs=0.01)


def test_split_logits_adds_back_to_the_logit_and_centres_each_request() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.5, 0.6])
    requests = np.array([7, 7, 3, 3, 3])
    level, rest = split_logits(p, requests)
    assert np.allclose(level + rest, np.log(p / (1 - p)))
    assert np.allclose(np.bincount(np.array([1, 1, 0, 0, 0]), rest), 0.0)
    assert level[0] == level[1] and level[2] == level[4]
    assert metrics.auc(np.array([0, 1, 0, 0, 1]), rest) == offset_profile(
        np.array([0, 1, 0, 0, 1]), [p], requests).within_auc
