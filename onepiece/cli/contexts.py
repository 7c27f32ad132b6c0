"""``onepiece contexts`` and ``onepiece trainset``: the Beam assembly jobs."""

from __future__ import annotations

from typing import Annotated

import typer

from onepiece.cli import app
from onepiece.cli.common import DataOption, console, friendly_errors, parse_day, parse_utc_time

RunnerOption = Annotated[
    str,
    typer.Option(help="Beam runner, named explicitly (FnApiRunner, dask, FlinkRunner, SparkRunner, DataflowRunner)."),
]
WorkersOption = Annotated[int, typer.Option(help="Worker processes of a local runner (or of the embedded Dask cluster).")]
ShardsOption = Annotated[int, typer.Option(help="Output files (fixed, so the output never depends on workers).")]
BeamArgOption = Annotated[
    list[str] | None,
    typer.Option("--beam-arg", help="Extra pipeline option passed to the runner (repeatable), e.g. --beam-arg=--flink_master=host:8081."),
]
RepoOption = Annotated[
    str | None, typer.Option("--feature-repo", help="Feast repository directory (default: the project's features/).")
]
ServiceOption = Annotated[
    str | None, typer.Option("--feature-service", help="Feature service to serve (default: onepiece_ranker_v1).")
]


def _settings(runner: str, workers: int, beam_arg: list[str] | None, shards: int):
    from onepiece.assembly import AssemblyConfig
    from onepiece.assembly.jobs import BeamSettings
    from onepiece.errors import UserError

    if workers < 1 or shards < 1:
        raise UserError("--workers and --shards must be at least 1")
    return AssemblyConfig(shards=shards), BeamSettings(runner, workers, tuple(beam_arg or ()))


def _source(data: str, repo: str | None, service: str | None):
    from onepiece.assembly.feast_source import FeastSideSource

    return FeastSideSource(data_root=data, repo_dir=repo, feature_service=service)


def _report(manifest: dict, out: str) -> None:
    rows = ", ".join(f"{k} {v}" for k, v in manifest["rows"].items())
    console.print(f"published {out}: {rows} ({manifest['wall_time_s']:.1f} s)", highlight=False)
    for kind in ("dropped", "defaulted"):
        if any(manifest[kind].values()):
            detail = ", ".join(f"{k} {v}" for k, v in manifest[kind].items() if v)
            console.print(f"  {kind}: {detail}", highlight=False)


@app.command("contexts")
@friendly_errors
def contexts(
    start: Annotated[str, typer.Option(help="Start of the run (ISO time, UTC); every context is as of this time.")],
    end: Annotated[str, typer.Option(help="End of the run (ISO time, exclusive).")],
    out: Annotated[str, typer.Option(help="Directory to publish the context shards and _manifest.json into.")],
    data: DataOption = "data",
    runner: RunnerOption = "FnApiRunner",
    workers: WorkersOption = 2,
    shards: ShardsOption = 4,
    feature_repo: RepoOption = None,
    feature_service: ServiceOption = None,
    beam_arg: BeamArgOption = None,
) -> None:
    """Build context rows for the candidate requests with request_timestamp in [start, end)."""
    from onepiece.assembly.jobs import run_contexts

    config, beam_settings = _settings(runner, workers, beam_arg, shards)
    manifest = run_contexts(
        data, parse_utc_time(start, "--start"), parse_utc_time(end, "--end"), out, config,
        _source(data, feature_repo, feature_service), beam_settings,
    )
    _report(manifest, out)


@app.command("trainset")
@friendly_errors
def trainset(
    from_day: Annotated[str, typer.Option("--from-day", help="First day of requests (YYYY-MM-DD).")],
    to_day: Annotated[str, typer.Option("--to-day", help="Last day of requests (YYYY-MM-DD, inclusive).")],
    out: Annotated[str, typer.Option(help="Directory to publish the training shards and _manifest.json into.")],
    data: DataOption = "data",
    runner: RunnerOption = "FnApiRunner",
    workers: WorkersOption = 2,
    shards: ShardsOption = 4,
    feature_repo: RepoOption = None,
    feature_service: ServiceOption = None,
    beam_arg: BeamArgOption = None,
) -> None:
    """Build training rows: clicked requests of the days, contexts as of request time, labels."""
    from onepiece.assembly.jobs import run_trainset

    config, beam_settings = _settings(runner, workers, beam_arg, shards)
    manifest = run_trainset(
        data, parse_day(from_day, "--from-day"), parse_day(to_day, "--to-day"), out, config,
        _source(data, feature_repo, feature_service), beam_settings,
    )
    _report(manifest, out)
