"""Learning curves: the ablation's rows rerun at several training budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onepiece.evaluation import learning_curve
from onepiece.evaluation.ablation import AblationConfig


def test_budgets_parse_and_refuse_bad_values() -> None:
    assert learning_curve.parse_budgets("1500,6000,0") == (1500, 6000, None)
    for bad in ("1500,x", "-5"):
        with pytest.raises(ValueError, match="learning-curve budgets"):
            learning_curve.parse_budgets(bad)


def test_the_curve_reruns_every_row_at_every_budget(tiny_split, tmp_path: Path) -> None:
    train_rows, test_rows = tiny_split
    cfg = AblationConfig(workers=1, max_test_requests=40, resamples=50)
    budgets = (30, None)
    points = learning_curve.learning_curve(train_rows, test_rows, cfg, ["gbdt"], budgets)
    assert [(p["variant"], p["budget"]) for p in points] == [("gbdt", 30), ("gbdt", 0)]
    assert [p["train_requests"] for p in points] == [30, train_rows.num_rows]
    assert all(0.0 <= p["click_auc"] <= 1.0 and 0.0 <= p["click_gauc"] <= 1.0 for p in points)
    assert points[0]["click_auc"] != points[1]["click_auc"]  # the budget really changed what was fitted
    png = learning_curve.plot_learning_curve(points, tmp_path / "curve.png")
    assert png.stat().st_size > 1000
    table = learning_curve.markdown_learning_curve(points)
    assert f"| gbdt | {train_rows.num_rows} | {points[1]['click_auc']:.4f} |" in table
    json.dumps(points)  # what the CLI writes
