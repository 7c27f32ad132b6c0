"""Learning curves: the ablation's rows at several training budgets.

Issue 17 asks whether a row is short of data or short of ability: DLRM and onePiece
stopped at epoch 1-2 of the default 1,500 training requests while the gbdt row was far
ahead. ``learning_curve`` reruns ``run_ablation`` with ``max_train_requests`` set to each
budget (0 or None = every training request), and keeps every row's click AUC and GAUC
per budget; ``plot_learning_curve`` draws them. Every budget is scored on the same test
requests (``split_rows`` draws them with a generator of their own).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from onepiece.evaluation.ablation import AblationConfig, AblationResult, run_ablation


def parse_budgets(text: str) -> tuple[int | None, ...]:
    """'1500,6000,0' -> (1500, 6000, None): training requests per point, 0 = all."""
    try:
        budgets = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"learning-curve budgets must be integers, got {text!r}") from None
    if any(b < 0 for b in budgets):
        raise ValueError(f"learning-curve budgets must be >= 0 (0 = all requests), got {text!r}")
    return tuple(b or None for b in budgets)


def learning_curve(
    train_rows: pa.Table,
    test_rows: pa.Table,
    cfg: AblationConfig,
    variants: Sequence[str],
    budgets: Sequence[int | None],
    run: Callable[..., AblationResult] = run_ablation,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """One point per (budget, row): requests fitted on, click AUC and GAUC (mean over the
    seeds). ``kwargs`` go to ``run_ablation`` (e.g. gbdt_config, model_overrides)."""
    points = []
    for budget in budgets:
        at = dataclasses.replace(cfg, max_train_requests=budget)
        result = run(train_rows, test_rows, at, variants, **kwargs)
        fitted = min(budget or train_rows.num_rows, train_rows.num_rows)
        for row in result.rows:
            if row["variant"] in variants:
                points.append({"train_requests": fitted, "budget": budget or 0, "variant": row["variant"],
                               "click_auc": row["click_auc"], "click_gauc": row["click_gauc"]})
    return points


def plot_learning_curve(points: list[dict[str, Any]], path: str | Path) -> Path:
    """Click AUC and GAUC against training requests, one line per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for variant in dict.fromkeys(p["variant"] for p in points):
        mine = sorted((p for p in points if p["variant"] == variant), key=lambda p: p["train_requests"])
        for ax, metric in zip(axes, ("click_auc", "click_gauc")):
            ax.plot([p["train_requests"] for p in mine], [p[metric] for p in mine], marker="o", label=variant)
    for ax, title in zip(axes, ("click AUC", "click GAUC")):
        ax.set_xscale("log")
        ax.set_xlabel("training requests")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def markdown_learning_curve(points: list[dict[str, Any]]) -> str:
    lines = ["\n## Learning curve (click)\n", "| variant | training requests | click AUC | click GAUC |",
             "| --- | --- | --- | --- |"]
    for p in sorted(points, key=lambda p: (p["variant"], p["train_requests"])):
        lines.append(f"| {p['variant']} | {p['train_requests']} | {p['click_auc']:.4f} | {p['click_gauc']:.4f} |")
    return "\n".join(lines) + "\n"
