"""``onepiece outcomes``: a published scores partition against what users did next."""

from __future__ import annotations

from typing import Annotated

import typer

from onepiece.cli import app
from onepiece.cli.common import DataOption, console, friendly_errors


@app.command()
@friendly_errors
def outcomes(
    partition: Annotated[str, typer.Option(help="Scores partition to audit, e.g. dt=2026-11-09/hour=00.")],
    data: DataOption = "data",
    attribution_hours: Annotated[
        float, typer.Option(help="Events up to this long after the window's end count as its outcomes.")
    ] = 6.0,
    top_k: Annotated[int, typer.Option(help="The pre-rank's cut per request (kept-share figures).")] = 20,
) -> None:
    """Measure published scores against the impressions, clicks, carts and orders that followed: AUC/GAUC and calibration per task head, and what the pre-rank's top-k kept.

    Run it once the events of the window (plus --attribution-hours) are logged. When the retrieval route published the same partition, also the share of the clicked and ordered items it retrieved beside the upstream candidates'. Writes <data>/outcomes/<partition>/outcomes.json and reliability.png (atomically); the scores partition itself is never changed.
    """  # noqa: E501 (typer rewraps the help text itself)
    import datetime as dt

    from rich.table import Table

    from onepiece.errors import UserError
    from onepiece.evaluation.outcomes import OutcomesConfig, audit_partition
    from onepiece.storage import data_root

    if attribution_hours < 0 or top_k < 1:
        raise UserError("--attribution-hours must be >= 0 and --top-k >= 1")
    root = data_root(data)
    config = OutcomesConfig(attribution=dt.timedelta(hours=attribution_hours), top_k=top_k)
    figures = audit_partition(root, partition, config)
    table = Table(title=f"scores/{partition} against realised outcomes\n({figures['rows']:,} candidates, "
                        f"{figures['requests']:,} requests; rate: realised over all candidates)")
    for column in ("task", "positives", "AUC", "GAUC", "mean p", "rate", "p / rate"):
        table.add_column(column, justify="left" if column == "task" else "right", no_wrap=True)

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4g}"

    for task, f in figures["tasks"].items():
        table.add_row(task, f"{f['positives']:,}", fmt(f["auc"]), fmt(f["gauc"]), fmt(f["mean_predicted"]),
                      fmt(f["realised_rate"]), fmt(f["predicted_over_realised"]))
    console.print(table)
    fused = figures["score"]
    console.print(
        f"fused score: click AUC {fmt(fused['click_auc'])}, order AUC {fmt(fused['order_auc'])}; each request's "
        f"top {fused['top_k']} kept {fmt(fused['click_kept_in_top_k'])} of the clicks and "
        f"{fmt(fused['order_kept_in_top_k'])} of the orders (a random cut keeps {fmt(fused['random_top_k_share'])})"
    )
    route = figures["retrieval"]
    if route["published"]:
        console.print(
            f"retrieval route ({route['partition']}, {route['requests']:,} requests): it retrieved "
            f"{fmt(route['click']['route'])} of the {route['click']['events']:,} clicked and "
            f"{fmt(route['order']['route'])} of the {route['order']['events']:,} ordered items; the upstream "
            f"candidates held {fmt(route['click']['upstream'])} and {fmt(route['order']['upstream'])}"
        )
    else:
        console.print(f"retrieval route: {route['partition']} is not published (no route figures)")
    console.print(f"written to {root}/outcomes/{partition}/")
