"""``onepiece score``: refresh the pre-rank scores of a window through Triton."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onepiece.cli import app
from onepiece.cli.common import DataOption, console, friendly_errors, parse_utc_time


@app.command()
@friendly_errors
def score(
    start: Annotated[str, typer.Option(help="Start of the window (ISO time, UTC); contexts are as of it.")],
    end: Annotated[str, typer.Option(help="End of the window (ISO time, exclusive).")],
    data: DataOption = "data",
    url: Annotated[
        list[str] | None,
        typer.Option("--url", help="Existing Triton HOST:PORT (repeatable: sharded, with failover). Default: an embedded server."),
    ] = None,
    protocol: Annotated[str, typer.Option(help="grpc or http.")] = "grpc",
    model_repo: Annotated[Path, typer.Option(help="Model repository for the embedded server.")] = Path("model_repo"),
    model_version: Annotated[int | None, typer.Option(help="Pin this version (default: newest ready).")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint the served version must have been exported from.")
    ] = None,
    feature_service: Annotated[str | None, typer.Option(help="Expected FeatureService (default: the model's).")] = None,
    contexts: Annotated[
        str | None, typer.Option(help="Context run to score (default: <data>/contexts/<partition>, built if absent).")
    ] = None,
    max_failed_requests: Annotated[int, typer.Option(help="Dead-lettered requests tolerated.")] = 0,
    alpha: Annotated[float, typer.Option(help="Fusion: weight of p_ctr^a * p_ctcvr^b.")] = 1.0,
    a: Annotated[float, typer.Option("--a", help="Fusion: exponent of p_ctr.")] = 1.0,
    b: Annotated[float, typer.Option("--b", help="Fusion: exponent of p_ctcvr.")] = 1.0,
    beta: Annotated[float, typer.Option(help="Fusion: weight of the price (GMV) term.")] = 0.0,
    runner: Annotated[str, typer.Option(help="Beam runner, named explicitly.")] = "FnApiRunner",
    workers: Annotated[int, typer.Option(help="Worker processes of a local runner (one keeps a one-instance server busy).")] = 1,
    beam_arg: Annotated[list[str] | None, typer.Option("--beam-arg", help="Extra pipeline option (repeatable).")] = None,
) -> None:
    """Score every candidate of [start, end) and publish scores/dt=.../hour=.../ atomically."""
    from onepiece.errors import UserError
    from onepiece.serving.fusion import FusionConfig
    from onepiece.serving.score_job import ScoreJobConfig, score_window
    from onepiece.storage import data_root

    if protocol not in ("grpc", "http"):
        raise UserError(f"--protocol must be grpc or http, got {protocol!r}")
    expected = None
    if checkpoint is not None:
        if not (checkpoint / "config.json").is_file():
            raise UserError(f"--checkpoint {checkpoint} has no config.json")
        expected = (checkpoint / "config.json").read_text()
    config = ScoreJobConfig(
        data=data_root(data), start=parse_utc_time(start, "--start"), end=parse_utc_time(end, "--end"),
        urls=tuple(url or ()), contexts_dir=contexts, model_version=model_version,
        expected_config_json=expected, feature_service=feature_service,
        fusion=FusionConfig(alpha=alpha, a=a, b=b, beta=beta), protocol=protocol,  # type: ignore[arg-type]
        max_failed_requests=max_failed_requests, runner=runner, workers=workers,
        beam_args=tuple(beam_arg or ()),
    )
    manifest = score_window(config, model_repo)
    rows = ", ".join(f"{k} {v}" for k, v in manifest["rows"].items())
    model = manifest["model"]
    console.print(
        f"published scores/{manifest['partition']}: {rows} with {model['name']} v{model['version']} "
        f"({manifest['wall_time_s']:.1f} s)",
        highlight=False,
    )
