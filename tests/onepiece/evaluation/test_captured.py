"""captured_parts: a row's click logit regressed on the terms of the world's utility."""

from __future__ import annotations

import numpy as np

from onepiece.evaluation.captured import captured_parts, markdown_captured


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _parts(n: int = 4000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"taste": rng.normal(size=n), "price": rng.normal(0, 2, size=n), "colour": rng.normal(size=n)}


def test_a_row_that_scores_with_some_terms_gets_them_back_at_their_weights() -> None:
    parts = _parts()
    noise = np.random.default_rng(1).normal(0, 0.1, size=4000)
    # seed 1 learned price fully and half the taste; seed 2 the same, plus more noise
    seeds = [_sigmoid(-3 + 0.5 * parts["taste"] + parts["price"] + noise),
             _sigmoid(-3 + 0.5 * parts["taste"] + parts["price"] + 3 * noise)]
    got = captured_parts(parts, seeds)
    assert abs(got.coefficients["price"] - 1.0) < 0.02
    assert abs(got.coefficients["taste"] - 0.5) < 0.02
    assert abs(got.coefficients["colour"]) < 0.02
    assert 0.9 < got.r2 < 1.0


def test_a_row_unrelated_to_the_utility_captures_nothing() -> None:
    parts = _parts()
    unrelated = _sigmoid(np.random.default_rng(2).normal(size=4000))
    got = captured_parts(parts, [unrelated])
    assert all(abs(c) < 0.05 for c in got.coefficients.values())
    assert got.r2 < 0.01
    table = markdown_captured({"noise": got}, {n: float(v.std()) for n, v in parts.items()})
    assert "| variant | taste | price | colour | R^2 |" in table and "| noise |" in table
