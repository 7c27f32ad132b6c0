"""The paper's ablation table on the synthetic world: every row trained and evaluated on
the same day split (train on days up to t, evaluate on day t + 1).

Rows and the paper's click AUC beside them (section 6 of the model spec). Our variants
differ from their neighbour in one ModelConfig field; where the paper's row is not the
exact same change, the ``note`` says what ours is.

Early stopping never looks at the test day: it uses a seeded random 10% of the training
requests (held out from fitting). Every row gets the same data, seed and budget. Rows
train two at a time, one process each (``AblationConfig.workers``), with the same
numbers as one by one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.evaluation.metrics_file import RANKING_TASKS


@dataclass(frozen=True)
class Row:
    variant: str
    group: str
    paper_click_auc: float | None
    note: str = ""


ROWS: tuple[Row, ...] = (
    Row("dlrm", "main", 0.856),
    Row("hstu", "main", 0.833),
    Row("hstu_pa", "main", 0.855),
    Row("rearec", "main", 0.843),
    Row("rearec_pa", "main", 0.862),
    Row("onepiece", "main", 0.911),
    Row("onepiece_ids_only", "context", 0.802, "paper: IH ids only; ours keeps PA and SD, drops side info"),
    Row("onepiece_no_pa", "context", 0.846, "paper: + side information (no PA); ours keeps SD"),
    Row("onepiece_pa10", "context", 0.879, "PA of 3 x 3 items"),
    Row("onepiece_pa30", "context", 0.892, "PA of 3 x 10 items"),
    Row("onepiece_no_sd", "context", 0.908, "PA(90) without SD"),
    Row("onepiece_causal", "mask", 0.839),
    Row("onepiece_invisible", "mask", 0.860, "bidirectional, candidates mutually invisible"),
    Row("onepiece_k0", "mask", 0.881, "visible candidates, no reasoning step"),
    Row("onepiece_k1", "mask", 0.890),
    Row("onepiece_k2", "mask", 0.893),
    Row("onepiece_last_step", "mask", 0.906, "K = 3, all tasks supervised at the last step"),
)
VARIANT_NAMES: tuple[str, ...] = tuple(r.variant for r in ROWS)


@dataclass(frozen=True)
class AblationConfig:
    """The shared budget of every row (ours: sized so the default world runs in ~20 min)."""

    seed: int = 0
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    patience: int = 1
    max_train_requests: int | None = 1500
    max_test_requests: int | None = 600
    valid_fraction: float = 0.1
    max_unexposed: int | None = 20
    threads: int = 1  # torch threads per row
    #: Rows trained at once, one process each (2 = both cores of a 2-core machine).
    workers: int = 2


def _sample(rows: pa.Table, n: int | None, rng: np.random.Generator) -> pa.Table:
    if n is None or rows.num_rows <= n:
        return rows
    keep = np.sort(rng.choice(rows.num_rows, n, replace=False))
    return rows.take(pa.array(keep))


def split_rows(
    train_rows: pa.Table, test_rows: pa.Table, cfg: AblationConfig
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(fit, valid, test): seeded subsamples; valid is held out of the training days."""
    rng = np.random.default_rng(cfg.seed)
    train_rows = _sample(train_rows, cfg.max_train_requests, rng)
    test_rows = _sample(test_rows, cfg.max_test_requests, rng)
    is_valid = rng.random(train_rows.num_rows) < cfg.valid_fraction
    return (
        train_rows.filter(pa.array(~is_valid)),
        train_rows.filter(pa.array(is_valid)),
        test_rows,
    )


def vocab_sizes(*tables: pa.Table) -> dict[str, int]:
    """Hash-table sizes that give every id of the data its own bucket (same for all rows)."""

    def top(columns: list[str]) -> int:
        values = [0]
        for t in tables:
            for c in columns:
                col = t[c]
                flat = pc.list_flatten(col) if pa.types.is_list(col.type) else col
                m = pc.max(flat).as_py()
                values.append(int(m) if m is not None else 0)
        return max(values) + 2

    return {
        "item_vocab": top(["ih_item_id", "pa_item_id", "cand_item_id"]),
        "shop_vocab": top(["ih_shop_id", "pa_shop_id", "cand_shop_id"]),
        "category_vocab": top(["ih_category_id", "pa_category_id", "cand_category_id"]),
        "user_vocab": top(["user_id"]),
        "query_vocab": top(["query_id"]),
    }


def ablation_row(variant: str, doc: dict[str, Any]) -> dict[str, Any]:
    """One row of ablation.json from a metrics document."""
    row: dict[str, Any] = {"variant": variant}
    for task in RANKING_TASKS:
        for metric in ("auc", "gauc"):
            row[f"{task}_{metric}"] = doc["ranking"][task][metric]
    return row


def train_and_evaluate(
    variant: str,
    model_config: Any,
    train_config: Any,
    fit: pa.Table,
    valid: pa.Table,
    test: pa.Table,
    report: Callable[[Any], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One row: train on ``fit`` (early stopping on ``valid``), evaluate on ``test``."""
    from onepiece.evaluation.evaluate import evaluate_model
    from onepiece.training.loop import train

    result = train(model_config, train_config, fit, valid)
    doc = evaluate_model(result.model, test, seed=train_config.seed)
    return ablation_row(variant, doc), result.history


def run_ablation(
    train_rows: pa.Table,
    test_rows: pa.Table,
    cfg: AblationConfig,
    variants: tuple[str, ...] = VARIANT_NAMES,
    on_row: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train and evaluate every variant; returns (ablation rows, histories by variant).

    ``cfg.workers`` rows train at once, one process each, with the same numbers as one
    by one (``training.parallel``); ``on_row`` is called here as rows finish.
    """
    from onepiece.evaluation.ranking import flat_candidates, popularity_scores, ranking_metrics
    from onepiece.model import variant_config
    from onepiece.training.config import TrainConfig
    from onepiece.training.parallel import run_jobs

    fit, valid, test = split_rows(train_rows, test_rows, cfg)
    overrides = vocab_sizes(fit, valid, test) | (model_overrides or {})
    train_config = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
        patience=cfg.patience, max_unexposed=cfg.max_unexposed, threads=cfg.threads,
    )
    # The popularity baseline (item positives on the training days) as a reference row.
    flat = flat_candidates(test)
    popularity = {"ranking": ranking_metrics(flat, popularity_scores(fit, flat))}
    jobs = {v: (v, variant_config(v, **overrides), train_config, fit, valid, test) for v in variants}
    done = run_jobs(
        train_and_evaluate, jobs, cfg.workers,
        on_done=(lambda name, result: on_row(*result)) if on_row is not None else None,
    )
    rows = [ablation_row("popularity", popularity)] + [done[v][0] for v in variants]
    return rows, {v: done[v][1] for v in variants}


def markdown_table(rows: list[dict[str, Any]], sizes: dict[str, int] | None = None) -> str:
    """Our measured click AUC/GAUC etc. beside the paper's click AUC, by group."""
    by_name = {r.variant: r for r in ROWS}

    def fmt(x: float | None) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

    lines = [
        "| group | variant | click AUC | click GAUC | A-AUC | A-GAUC | order AUC | order GAUC | paper click AUC | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        spec = by_name.get(r["variant"])
        lines.append(
            f"| {spec.group if spec else 'reference'} | {r['variant']} | {fmt(r['click_auc'])} | "
            f"{fmt(r['click_gauc'])} | {fmt(r['add_to_cart_auc'])} | {fmt(r['add_to_cart_gauc'])} | "
            f"{fmt(r['order_auc'])} | {fmt(r['order_gauc'])} | "
            f"{fmt(spec.paper_click_auc) if spec else '-'} | {spec.note if spec else 'item positives on the training days'} |"
        )
    return "\n".join(lines) + "\n"


def orderings(rows: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The paper's claims, checked on our click AUC: (claim, holds)."""
    auc = {r["variant"]: r["click_auc"] for r in rows}

    def gt(a: str, b: str) -> bool | None:
        if a not in auc or b not in auc or auc[a] is None or auc[b] is None:
            return None
        return auc[a] > auc[b]

    claims = [
        ("PA helps HSTU (hstu_pa > hstu)", gt("hstu_pa", "hstu")),
        ("PA helps ReaRec (rearec_pa > rearec)", gt("rearec_pa", "rearec")),
        ("onePiece beats ReaRec+PA", gt("onepiece", "rearec_pa")),
        ("onePiece beats DLRM", gt("onepiece", "dlrm")),
        ("DLRM beats plain HSTU", gt("dlrm", "hstu")),
        ("side information helps (onepiece > ids only)", gt("onepiece", "onepiece_ids_only")),
        ("PA helps onePiece (onepiece > no PA)", gt("onepiece", "onepiece_no_pa")),
        ("longer PA helps (pa30 > pa10)", gt("onepiece_pa30", "onepiece_pa10")),
        ("PA(90) beats PA(30) (onepiece > pa30)", gt("onepiece", "onepiece_pa30")),
        ("SD helps (onepiece > no SD)", gt("onepiece", "onepiece_no_sd")),
        ("bidirectional beats causal (invisible > causal)", gt("onepiece_invisible", "onepiece_causal")),
        ("visible candidates help (k0 > invisible)", gt("onepiece_k0", "onepiece_invisible")),
        ("1 reasoning step helps (k1 > k0)", gt("onepiece_k1", "onepiece_k0")),
        ("3 steps beat 2 (onepiece > k2)", gt("onepiece", "onepiece_k2")),
        ("progressive beats last-step (onepiece > last_step)", gt("onepiece", "onepiece_last_step")),
        ("onePiece beats popularity", gt("onepiece", "popularity")),
    ]
    return [(c, h) for c, h in claims if h is not None]
