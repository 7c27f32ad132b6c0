"""Training on the world's rows: progressive multi-task losses, early stopping, checkpoints.

Each epoch draws fresh candidate samples and groups (``batches``); the loss is the model
package's ``ranking_loss`` (per-step BCE + set-wise contrastive, each task at the step
that supervises it) or ``retrieval_loss`` (BCE + bidirectional in-batch contrastive).
After every epoch the model is evaluated on the early-stopping rows (click AUC in
ranking, Recall@100 in retrieval); the loop itself (AdamW, best epoch kept, stop after
``patience`` epochs without improvement, seeded) is ``fit.fit``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from onepiece.evaluation.evaluate import evaluate_model, headline
from onepiece.model import ModelConfig, OnePiece, save_checkpoint
from onepiece.model.inputs import with_candidate_set_columns
from onepiece.training.admission import admit_ids
from onepiece.training.batches import batches_per_epoch, epoch_batches
from onepiece.training.config import TrainConfig
from onepiece.training.fit import FitSettings, Score, TrainResult, batch_loss, fit

__all__ = ["HISTORY_FILE", "TRAIN_CONFIG_FILE", "TrainResult", "batch_loss", "save_run", "train"]

HISTORY_FILE = "history.json"
TRAIN_CONFIG_FILE = "train_config.json"


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_rows: pa.Table,
    eval_rows: pa.Table,
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a fresh model; ``on_step(epoch, step, loss)`` / ``on_epoch(record)`` report."""
    train_rows = with_candidate_set_columns(train_rows)  # once, not every epoch

    def evaluate(model: OnePiece) -> Score:
        doc = evaluate_model(model, eval_rows, seed=train_config.seed)
        name, value = headline(doc)
        return Score(name, value, {"metrics": doc})

    settings = FitSettings(
        epochs=train_config.epochs, lr=train_config.lr, weight_decay=train_config.weight_decay,
        grad_clip=train_config.grad_clip, patience=train_config.patience, seed=train_config.seed,
        threads=train_config.threads, lr_schedule=train_config.lr_schedule,
        warmup_steps=train_config.warmup_steps,
        steps_per_epoch=batches_per_epoch(train_rows, model_config, train_config)
        if train_config.lr_schedule != "constant" else None,
    )
    return fit(
        model_config,
        settings,
        lambda epoch: epoch_batches(train_rows, model_config, train_config, epoch),
        evaluate,
        on_step,
        on_epoch,
        prepare=(lambda model: admit_ids(model, train_rows)) if model_config.id_min_count else None,
    )


def save_run(result: TrainResult, train_config: TrainConfig, directory: str | Path) -> Path:
    """Checkpoint (safetensors + config.json) plus the training config and history."""
    out = save_checkpoint(result.model, directory)
    (out / TRAIN_CONFIG_FILE).write_text(train_config.to_json() + "\n")
    (out / HISTORY_FILE).write_text(json.dumps(result.history, indent=2, allow_nan=False) + "\n")
    return out
