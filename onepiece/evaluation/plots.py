"""PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def training_curves(history: dict[str, Any], path: str | Path) -> Path:
    """Loss per optimiser step (and its per-task parts) and the eval metric per epoch."""
    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = history.get("steps", [])
    if steps:
        x = [s["step"] for s in steps]
        ax_loss.plot(x, [s["loss"] for s in steps], lw=0.8, label="total")
        for key in sorted(k for k in steps[0] if k.startswith("loss_")):
            ax_loss.plot(x, [s[key] for s in steps], lw=0.6, alpha=0.7, label=key[5:])
        ax_loss.legend(fontsize=7)
    ax_loss.set(title="training loss", xlabel="optimiser step", ylabel="loss")
    epochs = history.get("epochs", [])
    if epochs:
        metric = history.get("eval_metric", "eval")
        ax_eval.plot([e["epoch"] for e in epochs], [e["eval"] for e in epochs], marker="o")
        best = history.get("best_epoch")
        if best is not None:
            ax_eval.axvline(best, color="grey", ls="--", lw=0.8, label=f"best epoch {best}")
            ax_eval.legend(fontsize=7)
        ax_eval.set(title=f"eval {metric}", xlabel="epoch", ylabel=metric)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def bars(
    labels: list[str],
    series: dict[str, list[float | None]],
    title: str,
    ylabel: str,
    path: str | Path,
) -> Path:
    """Grouped bars: one group per label, one bar per series (None = missing)."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(labels) * max(1, len(series))), 4))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [j + i * width for j, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        ax.bar(xs, ys, width=width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, rotation=45, ha="right")
    finite = [v for vs in series.values() for v in vs if v is not None]
    if finite:
        ax.set_ylim(max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.03))
    ax.set(title=title, ylabel=ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
