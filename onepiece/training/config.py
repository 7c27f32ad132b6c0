"""The training settings, one dataclass saved beside every checkpoint."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


#: Learning-rate schedules of ``fit`` (``fit.lr_factor``).
LR_SCHEDULES = ("constant", "cosine")


def check_lr_schedule(lr_schedule: str, warmup_steps: int) -> None:
    """Raise ValueError for an unknown schedule or a negative warm-up."""
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained. Numbers marked (ours) are our choices; the paper gives none.

    The model's own structure (group size C, tasks per step, temperature) lives in
    ``ModelConfig``; this holds only the optimisation and sampling settings.
    """

    epochs: int = 8
    batch_size: int = 64  # candidate groups (ranking) or requests (retrieval) per step
    lr: float = 2e-3  # AdamW (ours)
    #: "constant" or "cosine" (to 0 by the last epoch); after ``warmup_steps`` of linear
    #: warm-up (``fit.lr_factor``).
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    #: Unexposed candidates kept per request and epoch (ours; all exposed ones are kept).
    max_unexposed: int | None = 40
    #: Early stopping: stop after this many evaluations without improvement of the eval
    #: metric (click AUC in ranking, Recall@100 in retrieval); the best epoch is kept.
    patience: int = 2
    threads: int = 2  # torch intra-op threads

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "threads", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be at least 1")
        if self.lr <= 0:
            raise ValueError("TrainConfig.lr must be positive")
        check_lr_schedule(self.lr_schedule, self.warmup_steps)
        if self.max_unexposed is not None and self.max_unexposed < 0:
            raise ValueError("TrainConfig.max_unexposed must be >= 0 or None")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)
