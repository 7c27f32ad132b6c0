"""``onepiece calibrate``: fit the task heads' Platt maps on a held-out day, as serving scores it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onepiece.cli import app
from onepiece.cli.common import DataOption, console, friendly_errors


@app.command()
@friendly_errors
def calibrate(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint to calibrate (model.safetensors + config.json).")],
    day: Annotated[str, typer.Option(help="Held-out day to fit on, YYYY-MM-DD: a logged day the model never trained on.")],
    out: Annotated[Path, typer.Option(help="Calibrated checkpoint to write (same weights, the maps in config.json).")],
    data: DataOption = "data",
    hours: Annotated[int, typer.Option(help="Hourly windows of the day to fit on (seeded sample).")] = 4,
    requests_per_hour: Annotated[int, typer.Option(help="Requests sampled per window (seeded); 0: all.")] = 500,
    attribution_hours: Annotated[int, typer.Option(help="Events up to this long after a window count as its outcomes.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed of the hour and request samples.")] = 0,
    work: Annotated[Path | None, typer.Option(help="Where the contexts and calibration.json go; default: <out>.work.")] = None,
) -> None:
    """Fit p = sigmoid(scale * logit + bias) per task head on the day's traffic as the pre-rank sees it, and write a calibrated checkpoint.

    The model_publish DAG runs the same fit as its calibrate task. For each sampled hour of --day whose outcomes are logged, the Beam contexts job assembles every candidate of every request as of the hour's start (as prerank_refresh does, side features from Feast); the raw heads score them in-process; the labels are the impressions, clicks, carts and orders within --attribution-hours (the outcomes audit's rule). The scale stays positive, so each head's ranking is unchanged; a head with fewer than 20 positives keeps its raw output. Writes --out and <work>/calibration.json (parameters; mean predicted vs realised and log loss before and after). Export --out with `onepiece export` to serve the calibrated probabilities.
    """  # noqa: E501 (typer rewraps the help text itself)
    import datetime as dt

    from rich.table import Table

    from onepiece.errors import UserError
    from onepiece.pipeline.config import PublishConfig
    from onepiece.pipeline.publish_model import fit_calibration
    from onepiece.storage import data_root

    if hours < 1 or requests_per_hour < 0 or attribution_hours < 0:
        raise UserError("--hours must be >= 1, --requests-per-hour and --attribution-hours >= 0")
    try:
        fit_day = dt.date.fromisoformat(day)
    except ValueError:
        raise UserError(f"invalid --day {day!r}: expected YYYY-MM-DD") from None
    config = PublishConfig.from_params({
        "data": data_root(data), "seed": seed, "calibration_hours": hours,
        "calibration_requests_per_hour": requests_per_hour, "attribution_hours": attribution_hours,
    })
    work = work or out.with_name(out.name + ".work")
    figures = fit_calibration(config, str(checkpoint), fit_day, work, out)
    table = Table(title=f"calibration on {figures['fit_day']} ({figures['rows']:,} candidates, "
                        f"{figures['requests']:,} requests, {len(figures['windows'])} hours)")
    for column in ("task", "positives", "scale", "bias", "p / rate before", "after", "log loss before", "after"):
        table.add_column(column, justify="left" if column == "task" else "right", no_wrap=True)

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4g}"

    for task, f in figures["tasks"].items():
        params = f["params"] or {}
        table.add_row(task, f"{f['positives']:,}", fmt(params.get("scale")), fmt(params.get("bias")),
                      fmt(f["before"]["predicted_over_realised"]), fmt(f["after"]["predicted_over_realised"]),
                      fmt(f["before"]["log_loss"]), fmt(f["after"]["log_loss"]))
    console.print(table)
    console.print(f"calibrated checkpoint: {out}\nfigures: {work / 'calibration.json'}")
