"""The training loop: progressive multi-task losses, AdamW, early stopping, checkpoints.

Each epoch draws fresh candidate samples and groups (``batches``); the loss is the model
package's ``ranking_loss`` (per-step BCE + set-wise contrastive, each task at the step
that supervises it) or ``retrieval_loss`` (BCE + bidirectional in-batch contrastive).
After every epoch the model is evaluated on the early-stopping rows (click AUC in
ranking, Recall@100 in retrieval); the best epoch's weights are kept and training stops
after ``patience`` epochs without improvement. The same seed gives the same run.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from onepiece.contract import TASKS
from onepiece.evaluation.evaluate import evaluate_model, headline
from onepiece.model import ModelConfig, OnePiece, save_checkpoint
from onepiece.model.losses import ranking_loss, retrieval_loss
from onepiece.training.batches import Batch, epoch_batches
from onepiece.training.config import TrainConfig

HISTORY_FILE = "history.json"
TRAIN_CONFIG_FILE = "train_config.json"


@dataclass
class TrainResult:
    model: OnePiece  # the best epoch's weights, eval mode
    history: dict[str, Any] = field(default_factory=dict)


def batch_loss(model: OnePiece, batch: Batch) -> dict[str, torch.Tensor]:
    """The configured loss of one batch: task -> loss, plus 'total'."""
    out = model(batch.inputs)
    if model.config.mode == "retrieval":
        return retrieval_loss(out.user_vectors, out.item_vectors, batch.labels, out.cand_valid, model.config)
    return ranking_loss(out.logits, batch.labels, out.cand_valid, model.config)


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_rows: pa.Table,
    eval_rows: pa.Table,
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a fresh model; ``on_step(epoch, step, loss)`` / ``on_epoch(record)`` report."""
    torch.set_num_threads(train_config.threads)
    torch.manual_seed(train_config.seed)
    model = OnePiece(model_config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay
    )
    history: dict[str, Any] = {"steps": [], "epochs": [], "eval_metric": None}
    best_value, best_state, best_epoch, stale = -math.inf, None, None, 0
    step = 0
    for epoch in range(1, train_config.epochs + 1):
        model.train()
        total, count = 0.0, 0
        for batch in epoch_batches(train_rows, model_config, train_config, epoch):
            losses = batch_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
            optimizer.step()
            step += 1
            value = float(losses["total"].detach())
            total, count = total + value, count + 1
            history["steps"].append(
                {"epoch": epoch, "step": step, "loss": value}
                | {f"loss_{t}": float(losses[t].detach()) for t in TASKS}
            )
            if on_step is not None:
                on_step(epoch, step, value)
        doc = evaluate_model(model, eval_rows, seed=train_config.seed)
        name, value = headline(doc)
        history["eval_metric"] = name
        record = {
            "epoch": epoch,
            "train_loss": total / max(count, 1),
            "eval": value if math.isfinite(value) else None,
            "metrics": doc,
        }
        history["epochs"].append(record)
        if on_epoch is not None:
            on_epoch(record)
        if value > best_value:
            best_value, best_epoch, stale = value, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= train_config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    history["best_epoch"] = best_epoch
    history["best_eval"] = best_value if math.isfinite(best_value) else None
    return TrainResult(model.eval(), history)


def save_run(result: TrainResult, train_config: TrainConfig, directory: str | Path) -> Path:
    """Checkpoint (safetensors + config.json) plus the training config and history."""
    out = save_checkpoint(result.model, directory)
    (out / TRAIN_CONFIG_FILE).write_text(train_config.to_json() + "\n")
    (out / HISTORY_FILE).write_text(json.dumps(result.history, indent=2, allow_nan=False) + "\n")
    return out
