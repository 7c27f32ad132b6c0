"""A rich progress bar with the live loss, wired to the training loop's hooks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from onepiece.model import ModelConfig
from onepiece.training.batches import batches_per_epoch
from onepiece.training.config import TrainConfig


@contextmanager
def live_progress(
    console: Console, rows: pa.Table, model_config: ModelConfig, train_config: TrainConfig
) -> Iterator[dict[str, Any]]:
    """Yield ``on_step`` / ``on_epoch`` hooks that drive one bar per epoch."""
    per_epoch = batches_per_epoch(rows, model_config, train_config)
    state: dict[str, Any] = {"epoch": None, "task": None, "ema": None}
    with Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:

        def on_step(epoch: int, step: int, loss: float) -> None:
            if state["epoch"] != epoch:
                state["epoch"] = epoch
                state["task"] = progress.add_task("", total=per_epoch, epoch=epoch, loss="-")
            # Exponential moving average: a readable live loss.
            state["ema"] = loss if state["ema"] is None else 0.9 * state["ema"] + 0.1 * loss
            progress.update(state["task"], advance=1, loss=f"{state['ema']:.4f}")

        def on_epoch(record: dict[str, Any]) -> None:
            if state["task"] is not None:
                progress.update(state["task"], total=progress.tasks[-1].completed)
            progress.console.print(
                f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, eval {record['eval']}"
            )

        yield {"on_step": on_step, "on_epoch": on_epoch}
