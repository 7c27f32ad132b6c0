"""The paired cluster bootstrap on per-cluster values (``bootstrap_means``): what
``onepiece ml100k`` uses for NDCG@10 over users, two-level over training seeds."""

from __future__ import annotations

import numpy as np
import pytest

from onepiece.evaluation.significance import FAILS, HOLDS, WITHIN_NOISE, bootstrap_means, paired_difference

USERS = 400


def difference(a: dict[int, np.ndarray], b: dict[int, np.ndarray], resamples: int = 400):
    values = {f"a@{s}": v for s, v in a.items()} | {f"b@{s}": v for s, v in b.items()}
    full, draws = bootstrap_means(values, resamples, seed=0)
    return paired_difference(full, draws, [f"a@{s}" for s in a], [f"b@{s}" for s in b])


def gains(rng: np.random.Generator, hit_rate: float) -> np.ndarray:
    """Per-user NDCG@10-like gains: 0 for a miss, 1/log2(r + 2) for a hit at rank r < 10."""
    hit = rng.random(USERS) < hit_rate
    return np.where(hit, 1.0 / np.log2(rng.integers(0, 10, USERS) + 2.0), 0.0)


def test_means_and_paired_resamples() -> None:
    rng = np.random.default_rng(0)
    base = gains(rng, 0.3)
    full, draws = bootstrap_means({"x": base, "y": base + 0.05}, resamples=200, seed=3)
    assert full["x"] == pytest.approx(base.mean()) and full["y"] == pytest.approx(base.mean() + 0.05)
    assert draws["x"].std() > 0  # the resamples differ ...
    np.testing.assert_allclose(draws["y"] - draws["x"], 0.05)  # ... and are the same users for both
    again = bootstrap_means({"x": base, "y": base + 0.05}, resamples=200, seed=3)[1]
    np.testing.assert_array_equal(again["x"], draws["x"])


def test_a_clear_win_holds_and_its_reverse_fails() -> None:
    rng = np.random.default_rng(1)
    strong = {s: gains(rng, 0.45) for s in range(3)}
    weak = {s: gains(rng, 0.15) for s in range(3)}
    win = difference(strong, weak)
    assert win.verdict == HOLDS and win.low > 0.05
    assert win.low < win.delta < win.high
    assert len(win.per_seed) == 3 and all(d > 0 for d in win.per_seed)
    assert difference(weak, strong).verdict == FAILS


def test_models_of_equal_quality_are_within_noise() -> None:
    rng = np.random.default_rng(2)
    same = {s: gains(rng, 0.3) for s in range(3)}
    identical = difference(same, same)
    assert identical.delta == 0 and identical.low == identical.high == 0 and identical.verdict == WITHIN_NOISE
    # Two models of the same hit rate, trained apart: their difference is sampling noise.
    other = {s: gains(rng, 0.3) for s in range(3)}
    level = difference(same, other)
    assert level.verdict == WITHIN_NOISE and level.low < 0 < level.high


def test_the_seeds_are_resampled_too() -> None:
    """Two seeds say A is far better, the third far worse: each seed alone is sure, the
    mean over seeds is not, and the interval holds that training noise."""
    rng = np.random.default_rng(3)
    good = {s: gains(rng, 0.5) for s in range(3)}
    poor = {s: gains(rng, 0.1) for s in range(3)}
    a = {s: (good if s < 2 else poor)[s] for s in range(3)}
    b = {s: (poor if s < 2 else good)[s] for s in range(3)}
    d = difference(a, b)
    assert d.per_seed[0] > 0.1 and d.per_seed[1] > 0.1 and d.per_seed[2] < -0.1
    assert d.delta > 0.03 and d.verdict == WITHIN_NOISE
    assert d.seed_std > 0.1
    # Seed 0 alone (no training noise) would have called it.
    assert difference({0: a[0]}, {0: b[0]}).verdict == HOLDS


def test_misaligned_values_are_named() -> None:
    with pytest.raises(ValueError, match=r"one length.*'b'"):
        bootstrap_means({"a": np.zeros(3), "b": np.zeros(4)})
    with pytest.raises(ValueError, match="at least one cluster"):
        bootstrap_means({"a": np.zeros(0)})
