"""anchor_signal: the click AUC that membership in the request's anchors still adds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from onepiece.evaluation.anchor_signal import (
    anchor_membership,
    anchor_signal,
    anchors_alone_auc,
    fit_logistic,
    markdown_anchor_signal,
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_membership_flags_each_candidate_by_the_groups_of_its_own_request() -> None:
    rows = pa.table({
        "cand_item_id": [[7, 8, 9, -1], [7, 5]],
        "pa_item_id": [[7, 9, 9, -1], [8, 5, 5]],
        "pa_group": pa.array([[0, 0, 1, 2], [0, 1, 2]], pa.list_(pa.int8())),
    })
    flags = anchor_membership(rows)
    # brute force: request-major candidates, one column per group (exposed, clicked, ordered)
    expected = []
    for cands, anchors, groups in zip(*(rows[c].to_pylist() for c in ("cand_item_id", "pa_item_id", "pa_group"))):
        for c in cands:
            expected.append([float(any(a == c and g == k for a, g in zip(anchors, groups))) for k in range(3)])
    assert flags.tolist() == expected
    # item 8 is an anchor of request 1 only; item 7 of request 0 only
    assert flags[1].tolist() == [0, 0, 0] and flags[4].tolist() == [0, 0, 0]


def test_logistic_fit_recovers_the_weights_it_was_drawn_with() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 2))
    y = rng.random(20_000) < _sigmoid(1.5 * x[:, 0] - 0.5 * x[:, 1] - 1.0)
    w = fit_logistic(x, y)
    assert np.allclose(w, [1.5, -0.5, -1.0], atol=0.08)


def _world(n: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=n)  # what an item's statistics say
    flags = (rng.random((n, 3)) < [0.4, 0.2, 0.05]).astype(np.float64)
    true_logit = x + 2.0 * flags[:, 1] - 2.0
    labels = (rng.random(n) < _sigmoid(true_logit)).astype(np.int8)
    requests = np.arange(n) // 20
    return x, flags, labels, requests


def test_a_row_blind_to_the_anchors_leaves_their_signal_unused() -> None:
    x, flags, labels, requests = _world()
    blind = anchor_signal(labels, [_sigmoid(x - 2.0)], requests, flags)
    assert blind.unused > 0.03
    assert anchors_alone_auc(labels, requests, flags) > 0.6


def test_a_row_that_uses_the_anchors_leaves_nothing() -> None:
    x, flags, labels, requests = _world()
    seeing = anchor_signal(labels, [_sigmoid(x + 2.0 * flags[:, 1] - 2.0)], requests, flags)
    assert abs(seeing.unused) < 0.003
    table = markdown_anchor_signal({"seeing": seeing}, 0.7)
    assert f"| seeing | {seeing.auc:.4f} | {seeing.auc_with_anchors:.4f} | {seeing.unused:+.4f} |" in table



def test_the_history_features_say_what_the_ih_holds_of_each_candidate():
    """``history_features``: per candidate, how much of its category, shop and item the
    user's IH holds (the hand features, log1p), and a row blind to a label driven by the
    history leaves that signal unused while a row that scores with it does not."""
    from test_hand_features import tiny_rows

    from onepiece.evaluation.anchor_signal import HISTORY_FEATURES, history_features

    features = history_features(tiny_rows())
    col = {n: features[:, i] for i, n in enumerate(HISTORY_FEATURES)}
    assert features.shape == (10, len(HISTORY_FEATURES)) and np.isfinite(features).all()
    assert col["ih_item_count"][0] == np.log1p(3) and col["ih_item_count"][7] == 0  # unknown id: no match
    assert col["ih_category_share"][5] == 0  # the empty IH
    assert col["ih_shop_share"][4] == pytest.approx(np.log1p(4 / 5))  # float32 features

    rng = np.random.default_rng(0)
    n = 4000
    ih = np.column_stack([rng.random(n), rng.random((n, len(HISTORY_FEATURES) - 1))])
    requests = rng.integers(0, 400, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(6 * ih[:, 0] - 3)))).astype(float)
    blind = rng.random(n)
    reading = 1 / (1 + np.exp(-(6 * ih[:, 0] - 3)))
    assert anchor_signal(labels, [blind], requests, ih).unused > 0.1
    assert abs(anchor_signal(labels, [reading], requests, ih).unused) < 0.01
