"""The per-run quality report of a scores partition: distributions, coverage, drift.

Written beside the partition's rows as ``_report.json`` (the figures), ``_report.png``
(score histograms of this run against the previous one, matplotlib Agg) and
``_report.html`` (a small page with both). Underscore names keep Parquet readers of the
partition away from them.

- distributions: mean and quantiles of the fused score and of every task probability;
- coverage: candidates scored out of the candidates of the window, requests, distinct
  items and users, and the side-feature defaults the context job counted (unknown ids);
- drift against the previous run (``refresh.previous_partition``: the same hour a day
  earlier when published, else the newest published partition before this one):
  population stability index of the fused score over the previous run's deciles, the
  Kolmogorov-Smirnov distance, the shift of the mean, and the share of this run's items
  the previous run also scored.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract.schemas import TASKS

REPORT_JSON = "_report.json"
REPORT_PNG = "_report.png"
REPORT_HTML = "_report.html"
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_COLUMNS = ("score",) + tuple(f"p_{task}" for task in TASKS)


def distribution(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"mean": None} | {f"q{int(q * 100):02d}": None for q in _QUANTILES}
    quantiles = np.quantile(values, _QUANTILES)
    figures: dict[str, float | None] = {"mean": round(float(values.mean()), 6)}
    return figures | {
        f"q{int(q * 100):02d}": round(float(v), 6) for q, v in zip(_QUANTILES, quantiles, strict=True)
    }


def psi(current: np.ndarray, previous: np.ndarray, bins: int = 10) -> float | None:
    """Population stability index of ``current`` against ``previous``'s quantile bins."""
    if current.size == 0 or previous.size == 0:
        return None
    edges = np.unique(np.quantile(previous, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = np.concatenate([[-np.inf], edges, [np.inf]])
    eps = 1e-6
    cur = np.histogram(current, edges)[0] / current.size + eps
    prev = np.histogram(previous, edges)[0] / previous.size + eps
    return round(float(np.sum((cur - prev) * np.log(cur / prev))), 6)


def ks_distance(current: np.ndarray, previous: np.ndarray) -> float | None:
    """The largest gap between the two empirical distribution functions."""
    if current.size == 0 or previous.size == 0:
        return None
    a, b = np.sort(current), np.sort(previous)
    grid = np.concatenate([a, b])
    gap = np.abs(np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size)
    return round(float(gap.max()), 6)


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table[name].to_numpy().astype(np.float64)


def quality_figures(
    scores: pa.Table,
    previous: pa.Table | None,
    candidates_in_window: int,
    defaulted: dict[str, int],
) -> dict[str, Any]:
    """The report's figures (a JSON-able dict)."""
    figures: dict[str, Any] = {
        "distributions": {name: distribution(_column(scores, name)) for name in _COLUMNS},
        "coverage": {
            "scored": scores.num_rows,
            "candidates_in_window": candidates_in_window,
            "scored_share": round(scores.num_rows / candidates_in_window, 6) if candidates_in_window else None,
            "requests": pc.count_distinct(scores["request_id"]).as_py(),
            "items": pc.count_distinct(scores["item_id"]).as_py(),
            "users": pc.count_distinct(scores["user_id"]).as_py(),
            "defaulted": dict(defaulted),
        },
        "drift": None,
    }
    if previous is not None:
        now, before = _column(scores, "score"), _column(previous, "score")
        items_now = pc.unique(scores["item_id"])
        seen = pc.sum(pc.is_in(items_now, value_set=pc.unique(previous["item_id"]))).as_py() or 0
        figures["drift"] = {
            "previous_rows": previous.num_rows,
            "score_psi": psi(now, before),
            "score_ks": ks_distance(now, before),
            "score_mean_shift": (
                round(float(now.mean() - before.mean()), 6) if now.size and before.size else None
            ),
            "items_seen_before_share": round(seen / len(items_now), 6) if len(items_now) else None,
        }
    return figures


def log_scale(values: np.ndarray, bins: np.ndarray) -> bool:
    """Whether a histogram needs a log axis: most of the mass sits in its lowest bin (the
    order probabilities, near 0), so a linear axis shows one bar and nothing else."""
    return values.size > 0 and np.histogram(values, bins)[0][0] > 0.5 * values.size


def plot(scores: pa.Table, previous: pa.Table | None, title: str, out: Path) -> None:
    """Histograms of the fused score and the task probabilities, this run vs previous."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(_COLUMNS), figsize=(4 * len(_COLUMNS), 3.2))
    for ax, name in zip(axes, _COLUMNS, strict=True):
        now = _column(scores, name)
        both = [now] + ([_column(previous, name)] if previous is not None else [])
        lo = min((float(v.min()) for v in both if v.size), default=0.0)
        hi = max((float(v.max()) for v in both if v.size), default=1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 41)
        if previous is not None:
            ax.hist(both[1], bins, density=True, alpha=0.45, label="previous run")
        ax.hist(now, bins, density=True, alpha=0.6, label="this run")
        if log_scale(now, bins):
            ax.set_yscale("log")
            name += " (log density)"
        ax.set_title(name)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    # No timestamp in the PNG metadata: a rerun writes the same file.
    fig.savefig(out, dpi=80, metadata={"Software": None})
    plt.close(fig)


def render_html(figures: dict[str, Any], title: str) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        + "".join(f"<td>{'' if v is None else v}</td>" for v in dist.values())
        + "</tr>"
        for name, dist in figures["distributions"].items()
    )
    header = "".join(f"<th>{k}</th>" for k in next(iter(figures["distributions"].values())))
    blocks = "".join(
        f"<h2>{key}</h2><pre>{html.escape(json.dumps(figures[key], indent=2))}</pre>"
        for key in ("coverage", "drift", "run")
        if key in figures
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1><img src='{REPORT_PNG}' style='max-width:100%'>"
        f"<h2>distributions</h2><table><tr><th></th>{header}</tr>{rows}</table>{blocks}"
        "</body></html>\n"
    )


def write_report(
    scores: pa.Table,
    previous: pa.Table | None,
    out_dir: Path,
    title: str,
    candidates_in_window: int,
    defaulted: dict[str, int],
    run: dict[str, Any],
) -> dict[str, Any]:
    """Write _report.json/.png/.html into ``out_dir``; returns the figures."""
    figures = quality_figures(scores, previous, candidates_in_window, defaulted) | {"run": run}
    (out_dir / REPORT_JSON).write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    plot(scores, previous, title, out_dir / REPORT_PNG)
    (out_dir / REPORT_HTML).write_text(render_html(figures, title))
    return figures
