"""``onepiece train`` and ``onepiece evaluate``: fit a variant, measure a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onepiece.cli import app
from onepiece.cli.common import console, friendly_errors
from onepiece.pipeline.config import PRODUCT_VARIANT  # light: stdlib and storage
from onepiece.training.config import TrainConfig  # light: its defaults are the options' defaults

VariantOption = Annotated[
    str,
    typer.Option(
        "--variant",
        help="Named model variant (onepiece_invisible: the product default, candidates mutually invisible, "
        "its context encoded once per request; onepiece: the paper's mask; onepiece_shared; "
        "dlrm, dlrm_pa, hstu, hstu_pa (the faithful baselines), "
        "dlrm_mlp, hstu_softmax (the earlier ones), rearec, rearec_pa, "
        "onepiece_ids_only, onepiece_no_pa, onepiece_no_sd, onepiece_causal, "
        "onepiece_k1, onepiece_k2, onepiece_last_step, "
        "onepiece_retrieval, ...).",
    ),
]


@app.command("train")
@friendly_errors
def train_command(
    train: Annotated[Path, typer.Option("--train", help="Training-set shards (TRAINING_SCHEMA).")],
    eval: Annotated[Path, typer.Option("--eval", help="Held-out shards for early stopping.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory to write.")],
    variant: VariantOption = PRODUCT_VARIANT,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = TrainConfig.epochs,
    batch_size: Annotated[int, typer.Option(help="Candidate groups per step.")] = TrainConfig.batch_size,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = TrainConfig.lr,
    lr_schedule: Annotated[
        str, typer.Option(help="'constant', or 'cosine': decays the learning rate to 0 by the last epoch.")
    ] = TrainConfig.lr_schedule,
    warmup_steps: Annotated[int, typer.Option(help="Optimiser steps of linear learning-rate warm-up.")] = TrainConfig.warmup_steps,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same run.")] = TrainConfig.seed,
    patience: Annotated[int, typer.Option(help="Epochs without improvement before stopping.")] = TrainConfig.patience,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = TrainConfig.threads,
    model_set: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a ModelConfig field, KEY=VALUE (JSON value); repeatable."),
    ] = None,
) -> None:
    """Train a model variant with progressive multi-task supervision; write a checkpoint.

    The checkpoint directory holds model.safetensors, config.json, train_config.json and
    history.json (loss per step, eval metric per epoch); it is published atomically.
    """
    from onepiece.errors import UserError
    from onepiece.model import variant_config
    from onepiece.storage import staged_dir
    from onepiece.training.data import read_training_rows
    from onepiece.training.progress import live_progress
    from onepiece.training.loop import save_run
    from onepiece.training.loop import train as run_training

    try:
        model_config = variant_config(variant, **parse_overrides(model_set or []))
        train_config = TrainConfig(
            epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, patience=patience, threads=threads,
            lr_schedule=lr_schedule, warmup_steps=warmup_steps,
        )
    except (ValueError, TypeError) as err:
        raise UserError(f"--variant/--set or a training option: {err}") from None
    train_rows = read_training_rows(train)
    eval_rows = read_training_rows(eval)
    console.print(
        f"training [bold]{variant}[/] on {train_rows.num_rows} requests, "
        f"early stopping on {eval_rows.num_rows}"
    )
    with live_progress(console, train_rows, model_config, train_config) as hooks:
        result = run_training(model_config, train_config, train_rows, eval_rows, **hooks)
    with staged_dir(out) as staging:
        save_run(result, train_config, staging)
    best = result.history["best_epoch"]
    console.print(
        f"best epoch {best}: {result.history['eval_metric']} = {result.history['best_eval']}; "
        f"checkpoint in {out}"
    )


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``["d_model=32", "causal=true"]`` -> {"d_model": 32, "causal": True}."""
    import json

    from onepiece.errors import UserError

    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw  # a bare string such as mode=retrieval
    return out


@app.command("evaluate")
@friendly_errors
def evaluate_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Checkpoint directory.")],
    eval: Annotated[Path, typer.Option("--eval", help="Held-out shards (TRAINING_SCHEMA).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for metrics.json and plots.")],
    seed: Annotated[int, typer.Option(help="Seed of the candidate grouping.")] = 0,
) -> None:
    """Ranking AUC/GAUC (click, add_to_cart, order) or retrieval Recall@100/500 (with
    exact search and, as ann_recall@100/500, through the ANN item index of
    `onepiece index build`, built over the same catalogue with its default settings).

    Writes metrics.json, training_curves.png (from the checkpoint's history.json) and
    report.md (metrics beside a CTR/CVR feature baseline, curves, a ship checklist).
    """
    import json

    from onepiece.evaluation.evaluate import evaluate_model
    from onepiece.evaluation.metrics_file import write_json
    from onepiece.evaluation.plots import training_curves
    from onepiece.evaluation.ranking import flat_candidates
    from onepiece.evaluation.report import evaluation_report, feature_baseline
    from onepiece.model import load_checkpoint
    from onepiece.storage import staged_dir
    from onepiece.training.data import read_training_rows
    from onepiece.training.loop import HISTORY_FILE

    from onepiece.retrieval.index import IndexConfig

    model = load_checkpoint(checkpoint)
    rows = read_training_rows(eval)
    doc = evaluate_model(model, rows, seed=seed, ann=IndexConfig())
    history_file = checkpoint / HISTORY_FILE
    history = json.loads(history_file.read_text()) if history_file.is_file() else None
    baseline = feature_baseline(rows, flat_candidates(rows)) if "ranking" in doc else None
    config = json.loads(model.config.to_json())
    report = evaluation_report(config, doc, history, baseline, str(eval), rows.num_rows)
    with staged_dir(out) as staging:
        write_json(doc, staging / "metrics.json")
        (staging / "report.md").write_text(report)
        if history is not None:
            training_curves(history, staging / "training_curves.png")
    console.print_json(data=doc)
