"""The evaluation report a user reads to decide whether to ship a model (Markdown).

It puts the model's held-out metrics beside a feature-only baseline measured on the same
rows (the candidates' own 7-day CTR for clicks, CTR x CVR for add-to-cart and order:
what the platform ranked by before a model existed), shows the training curves, and ends
with a plain checklist. The report only states what was measured.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract import TASKS
from onepiece.evaluation.ranking import FlatCandidates, ranking_metrics


def feature_baseline(rows: pa.Table, flat: FlatCandidates) -> dict[str, dict[str, float]]:
    """AUC/GAUC of the candidates' ctr_7d (click) and ctr_7d x cvr_7d (other tasks)."""
    rows = rows.combine_chunks()
    ctr = np.asarray(pc.fill_null(pc.list_flatten(rows["cand_ctr_7d"]), 0.0), dtype=np.float64)
    cvr = np.asarray(pc.fill_null(pc.list_flatten(rows["cand_cvr_7d"]), 0.0), dtype=np.float64)
    scores = {task: ctr * cvr for task in TASKS} | {"click": ctr}
    return ranking_metrics(flat, scores)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def evaluation_report(
    config: dict[str, Any],
    doc: dict[str, Any],
    history: dict[str, Any] | None,
    baseline: dict[str, dict[str, float]] | None,
    eval_source: str,
    eval_requests: int,
) -> str:
    """The report's Markdown text."""
    lines = [
        f"# Evaluation report: {config.get('name')} ({config.get('mode')} mode)",
        "",
        f"Held-out rows: `{eval_source}` ({eval_requests} requests with at least one click). "
        "Ranking metrics are over the exposed candidates; GAUC is per user, weighted by "
        "impressions, users with one class only skipped.",
        "",
        "Model: "
        + ", ".join(
            f"{k}={config.get(k)}"
            for k in ("backbone", "reasoning", "num_steps", "use_side_info", "use_pa", "use_sd",
                      "causal", "candidates_visible", "supervision", "group_size", "d_model", "n_layers")
        ),
        "",
    ]
    checks: list[tuple[str, bool]] = []
    if "ranking" in doc:
        lines += ["| task | AUC | GAUC | baseline AUC | baseline GAUC |", "| --- | --- | --- | --- | --- |"]
        for task, m in doc["ranking"].items():
            b = (baseline or {}).get(task, {})
            lines.append(
                f"| {task} | {_fmt(m['auc'])} | {_fmt(m['gauc'])} | {_fmt(b.get('auc'))} | {_fmt(b.get('gauc'))} |"
            )
            if b and m["auc"] is not None and b.get("auc") is not None:
                checks.append((f"{task} AUC above the CTR/CVR baseline", m["auc"] > b["auc"]))
            if b and m["gauc"] is not None and b.get("gauc") is not None:
                checks.append((f"{task} GAUC above the CTR/CVR baseline", m["gauc"] > b["gauc"]))
        lines.append("")
    if "retrieval" in doc:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in doc["retrieval"].items()]
        lines.append("")
    if history:
        epochs = history.get("epochs", [])
        lines += [
            f"Training: {len(epochs)} epochs, {len(history.get('steps', []))} steps; best epoch "
            f"{history.get('best_epoch')} by {history.get('eval_metric')} = {_fmt(history.get('best_eval'))} "
            "(early stopping on the --eval rows of `onepiece train`).",
            "",
            "![training curves](training_curves.png)",
            "",
        ]
        if len(epochs) >= 2:
            checks.append(("training loss went down", epochs[-1]["train_loss"] < epochs[0]["train_loss"]))
    if checks:
        lines += ["## Checklist", ""]
        lines += [f"- [{'x' if ok else ' '}] {name}" for name, ok in checks]
        verdict = "all checks pass" if all(ok for _, ok in checks) else "some checks FAIL: do not ship as is"
        lines += ["", f"Verdict: {verdict}."]
    return "\n".join(lines) + "\n"
