"""``onepiece world``: generate the synthetic search world into a data root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from onepiece.cli import app
from onepiece.cli.common import console, friendly_errors, parse_day
from onepiece.storage import DATA_ENV

if TYPE_CHECKING:
    from onepiece.world import WorldSummary


@app.command("world")
@friendly_errors
def world(
    out: Annotated[
        str | None,
        typer.Option("--out", "--data", envvar=DATA_ENV,
                     help=f"Data root to write (replaced as a whole). Default: ${DATA_ENV}, then ./data."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes byte-identical files.")] = 0,
    users: Annotated[int, typer.Option(help="Number of users.")] = 2000,
    items: Annotated[int, typer.Option(help="Number of items.")] = 5000,
    queries: Annotated[int, typer.Option(help="Number of distinct queries.")] = 300,
    days: Annotated[int, typer.Option(help="History days (>= 2) that feed the daily statistics; one more, the live day the demo scores, follows.")] = 8,
    warmup_days: Annotated[int, typer.Option(help="Logged days before the first history day, events only (no candidates), so the first day's statistics and histories come from a log like every later day's; 0: a prior instead.")] = 7,
    candidates: Annotated[int, typer.Option(help="Recall candidates per request.")] = 200,
    impressions: Annotated[int, typer.Option(help="Impressions per request (upstream top-k).")] = 20,
    crawler_share: Annotated[float, typer.Option(help="Share of all requests made by one crawler-like account (the most active user), e.g. 0.9 to test memory under a heavy key; 0: none.")] = 0.0,
    start_date: Annotated[str, typer.Option(help="First history day (the first with candidates; YYYY-MM-DD). The warm-up days precede it.")] = "2026-11-01",
) -> None:
    """Generate a synthetic search marketplace: items, users, queries, events, candidates."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from onepiece.errors import UserError
    from onepiece.storage import data_root
    from onepiece.world import WorldConfig, generate_world

    start = parse_day(start_date, "--start-date")
    config = WorldConfig(seed=seed, n_users=users, n_items=items, n_queries=queries, days=days,
                         warmup_days=warmup_days, start_date=start, candidates_per_request=candidates,
                         impressions_per_request=impressions, crawler_share=crawler_share)
    target = Path(data_root(out))
    check_writable(target)

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("world", total=warmup_days + days + 2)

        def report(step: str, done: int, total: int) -> None:
            bar.update(task, description=step, completed=done, total=total)

        try:
            summary = generate_world(config, target, progress=report)
        except OSError as err:
            raise UserError(f"cannot write the world to --out {target}: {err.strerror or err}") from None
    _print_summary(summary)


def check_writable(target: Path) -> None:
    """Fail early, before anything is created, if ``target`` cannot become a directory."""
    from onepiece.errors import UserError

    if "://" in str(target):
        raise UserError(f"--out {target}: the world is written to a local directory, not a URI")
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {target} exists and is not a directory")
    parent = target.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out {target} is not writable: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {target} is not writable: no write permission on {parent}")


def _print_summary(summary: WorldSummary) -> None:
    from rich.table import Table

    table = Table(title=f"world written to {summary.out}", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    if summary.warmup_days:
        table.add_row("warm-up days (events only)",
                      f"{len(summary.warmup_days)} ({summary.warmup_days[0]} .. {summary.warmup_days[-1]})")
    table.add_row("history days", f"{len(summary.history_days)} ({summary.history_days[0]} .. {summary.history_days[-1]})")
    table.add_row("live day (scored by the demo)", summary.live_day)
    table.add_row("requests (warm-up / history / live)",
                  f"{summary.warmup_requests:,} / {summary.requests:,} / {summary.live_requests:,}")
    table.add_row("candidate rows", f"{summary.candidates:,}")
    for name, count in summary.events.items():
        table.add_row(f"events: {name}", f"{count:,}")
    table.add_row("events: total", f"{summary.total_events:,}")
    table.add_row("CTR (clicks / impressions)", f"{summary.ctr:.2%}")
    table.add_row("CVR (orders / clicks)", f"{summary.cvr:.2%}")
    table.add_row("feature rows (items / users / queries)",
                  f"{summary.item_rows:,} / {summary.user_rows:,} / {summary.query_rows:,}")
    table.add_row("unknown ids in candidates (items / users)",
                  f"{summary.unknown_items:,} / {summary.unknown_users:,}")
    table.add_row("wall time", f"{summary.wall_time_s:.1f} s")
    console.print(table)
