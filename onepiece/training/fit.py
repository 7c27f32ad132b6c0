"""One training loop for every model we train: AdamW, gradient clipping, early stopping.

``fit`` knows nothing about where batches come from or what is measured: the caller
passes ``batches(epoch)`` (the batches of one epoch; seeded by the caller) and
``evaluate(model)`` (the early-stopping metric, higher is better). After every epoch
the model is evaluated; the best epoch's weights are kept and training stops after
``patience`` epochs without improvement. The same settings and seed give the same run.
Used by ``training.loop.train`` (the world's ranking/retrieval rows) and by the
MovieLens-100k check (``evaluation.ml100k``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from onepiece.contract import TASKS
from onepiece.model import ModelConfig, OnePiece
from onepiece.model.losses import ranking_loss, retrieval_loss
from onepiece.training.batches import Batch
from onepiece.training.config import check_lr_schedule


@dataclass(frozen=True)
class FitSettings:
    """The optimisation settings ``fit`` needs (a subset of ``TrainConfig``)."""

    epochs: int
    lr: float
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    patience: int = 2
    seed: int = 0
    threads: int = 1  # torch intra-op threads
    #: "constant", or "cosine": decay to 0 by the end of ``epochs`` (needs ``steps_per_epoch``).
    #: Either starts with a linear warm-up over ``warmup_steps`` optimiser steps.
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        check_lr_schedule(self.lr_schedule, self.warmup_steps)
        if self.lr_schedule == "cosine" and not self.steps_per_epoch:
            raise ValueError("the cosine lr_schedule needs steps_per_epoch")


def lr_factor(settings: FitSettings, step: int) -> float:
    """The multiple of ``settings.lr`` used by optimiser step ``step`` (0-based)."""
    warm = min(1.0, (step + 1) / settings.warmup_steps) if settings.warmup_steps else 1.0
    if settings.lr_schedule == "constant":
        return warm
    total = settings.epochs * (settings.steps_per_epoch or 1)
    return warm * 0.5 * (1.0 + math.cos(math.pi * min(step / total, 1.0)))


@dataclass(frozen=True)
class Score:
    """What ``evaluate`` returns: the metric's name and value (NaN/None count as -inf)
    plus extra fields for the epoch's history record (e.g. the full metrics document)."""

    name: str
    value: float | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    model: OnePiece  # the best epoch's weights, eval mode
    history: dict[str, Any] = field(default_factory=dict)


def batch_loss(model: OnePiece, batch: Batch) -> dict[str, torch.Tensor]:
    """The configured loss of one batch: task -> loss, plus 'total'."""
    out = model(batch.inputs)
    if model.config.mode == "retrieval":
        return retrieval_loss(
            out.user_vectors,
            out.item_vectors,
            batch.labels,
            out.cand_valid,
            model.config,
            item_ids=batch.inputs.cand_item_cat[..., 0],
            log_q=batch.log_q,
        )
    return ranking_loss(out.logits, batch.labels, out.cand_valid, model.config)


def fit(
    model_config: ModelConfig,
    settings: FitSettings,
    batches: Callable[[int], Iterable[Batch]],
    evaluate: Callable[[OnePiece], Score],
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    prepare: Callable[[OnePiece], dict[str, Any]] | None = None,
) -> TrainResult:
    """Train a fresh, seeded model; ``on_step(epoch, step, loss)`` / ``on_epoch(record)`` report.
    ``prepare(model)`` runs on the fresh model before the first step (e.g. id admission);
    what it returns joins the history.

    History: ``steps`` (loss per step and task), ``epochs`` (train loss, eval value and
    ``Score.extra``), ``eval_metric``, ``best_epoch``, ``best_eval``.
    """
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    model = OnePiece(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(settings, s))
    history: dict[str, Any] = {"steps": [], "epochs": [], "eval_metric": None}
    if prepare is not None:
        history |= prepare(model)
    best_value, best_state, best_epoch, stale = -math.inf, None, None, 0
    step = 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        losses = []
        for batch in batches(epoch):
            loss = batch_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            schedule.step()
            step += 1
            losses.append(float(loss["total"].detach()))
            history["steps"].append(
                {"epoch": epoch, "step": step, "loss": losses[-1], "lr": lr}
                | {f"loss_{t}": float(loss[t].detach()) for t in TASKS}
            )
            if on_step is not None:
                on_step(epoch, step, losses[-1])
        model.eval()
        score = evaluate(model)
        value = -math.inf if score.value is None or not math.isfinite(score.value) else float(score.value)
        history["eval_metric"] = score.name
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else 0.0,
            "eval": value if math.isfinite(value) else None,
        } | score.extra
        history["epochs"].append(record)
        if on_epoch is not None:
            on_epoch(record)
        if value > best_value:
            best_value, best_epoch, stale = value, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= settings.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    history["best_epoch"] = best_epoch
    history["best_eval"] = best_value if math.isfinite(best_value) else None
    return TrainResult(model.eval(), history)
