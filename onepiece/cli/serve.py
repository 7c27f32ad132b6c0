"""``onepiece serve`` and ``onepiece export``: put the ranker behind Triton."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from onepiece.cli import app
from onepiece.cli.common import console, friendly_errors

ModelRepoOption = Annotated[
    Path,
    typer.Option("--model-repo", help="Triton model repository (holds onepiece_ranker/)."),
]


@app.command()
@friendly_errors
def serve(
    model_repo: ModelRepoOption = Path("model_repo"),
    model: Annotated[
        list[str], typer.Option("--model", help="Model to load (repeatable).")
    ] = ["onepiece_ranker"],  # noqa: B006 (typer needs a literal default)
    http_port: Annotated[int, typer.Option(help="HTTP port (0 = pick a free one).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0 = pick a free one).")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Metrics port (0 = pick a free one).")] = 8002,
    startup_timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 120.0,
    log_file: Annotated[
        Path | None, typer.Option(help="Server log (default: a temporary file).")
    ] = None,
) -> None:
    """Run the bundled tritonserver on 127.0.0.1 until SIGINT or SIGTERM.

    Explicit model control: only the named models are loaded. Clients use the printed
    gRPC address as --url.
    """
    from onepiece.serving.export import MODEL_NAME, check_exported
    from onepiece.serving.server import TritonServerConfig, embedded_triton

    if MODEL_NAME in model:
        check_exported(model_repo)
    config = TritonServerConfig(
        model_repository=model_repo,
        models=tuple(model),
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        startup_timeout_s=startup_timeout,
        log_file=log_file,
    )
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with embedded_triton(config) as server:
            console.print(
                f"tritonserver ready: grpc {server.grpc_url}  http {server.http_url}  "
                f"metrics {server.metrics_url}  models {', '.join(config.models)}",
                highlight=False,
            )
            assert server.process is not None
            while not stop.wait(0.5):
                code = server.process.poll()
                if code is not None:
                    from onepiece.errors import UserError

                    raise UserError(
                        f"tritonserver exited unexpectedly with code {code}:\n"
                        f"{server.log_errors()}"
                    )
            console.print(f"{received[0]} received: stopping tritonserver", highlight=False)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print("tritonserver stopped", highlight=False)


@app.command()
@friendly_errors
def export(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="Checkpoint directory (model.safetensors + config.json).")
    ],
    model_repo: ModelRepoOption = Path("model_repo"),
    version: Annotated[
        int | None, typer.Option(help="Model version to write (default: next free).")
    ] = None,
    instance_kind: Annotated[
        str, typer.Option(help="auto (GPU when torch sees one), cpu or gpu.")
    ] = "auto",
    instance_count: Annotated[int, typer.Option(help="Model instances per device.")] = 1,
    max_batch_size: Annotated[int, typer.Option(help="Sequences per batch at most.")] = 256,
    preferred_batch_size: Annotated[
        list[int] | None, typer.Option(help="Dynamic-batching preferred size (repeatable).")
    ] = None,
    max_queue_delay_us: Annotated[int, typer.Option(help="Dynamic-batching queue delay.")] = 2000,
    max_bundles: Annotated[
        int, typer.Option(help="Shared-context layout: bundles of whole requests merged per execution.")
    ] = 8,
    latest_versions: Annotated[
        int, typer.Option(help="Versions kept loaded (newest N; 0 = all).")
    ] = 2,
    cpu_threads: Annotated[
        int, typer.Option(help="torch threads per CPU instance (scale with --instance-count).")
    ] = 1,
    layout_change: Annotated[
        str, typer.Option(help="When the checkpoint needs another tensor layout than the loaded versions: "
                               "refuse, or replace (serve the new layout; older versions stay on disk, unloaded).")
    ] = "refuse",
) -> None:
    """Write a checkpoint as a version of onepiece_ranker (a retrieval checkpoint: of
    onepiece_user_tower) and regenerate config.pbtxt.

    One config.pbtxt declares one tensor layout: per-group (the paper's mask) or shared
    context (a context blind to the candidates, e.g. onepiece_invisible). A checkpoint of
    the other layout than the loaded versions is refused unless --layout-change replace."""
    from onepiece.errors import UserError
    from onepiece.serving.export import ExportConfig, export_checkpoint

    if instance_kind not in ("auto", "cpu", "gpu"):
        raise UserError(f"--instance-kind must be auto, cpu or gpu, got {instance_kind!r}")
    config = ExportConfig(
        max_batch_size=max_batch_size,
        preferred_batch_sizes=tuple(preferred_batch_size or (64, 128, 256)),
        max_queue_delay_us=max_queue_delay_us,
        max_bundles=max_bundles,
        instance_kind=instance_kind,  # type: ignore[arg-type]
        instance_count=instance_count,
        latest_versions=latest_versions,
        cpu_threads=cpu_threads,
        layout_change=layout_change,  # type: ignore[arg-type]  (checked by ExportConfig)
    )
    written = export_checkpoint(checkpoint, model_repo, version=version, config=config)
    console.print(f"exported {checkpoint} -> {written}", highlight=False)
