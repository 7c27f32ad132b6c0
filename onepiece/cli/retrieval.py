"""``onepiece index build``, ``onepiece index publish`` and ``onepiece retrieve``: the
retrieval route's item index, a published retrieval version (served user tower and its
index), and the route's batch run over a window's context rows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onepiece.cli import app
from onepiece.cli.common import DataOption, console, friendly_errors, parse_utc_time

index_app = typer.Typer(
    help="The retrieval route's item index: every item's vector from a retrieval checkpoint in an ANN index.",
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")


@index_app.command("build")
@friendly_errors
def build_command(
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint",
            help="A retrieval checkpoint (variant onepiece_retrieval) or an exported version directory "
            "model_repo/<model>/<N> (config.json + model.safetensors).",
        ),
    ],
    as_of: Annotated[
        str,
        typer.Option(
            "--as-of",
            help="Item snapshot time T (ISO, UTC): each item's latest row of the items table stamped before T. "
            "Routes may only use the index for windows starting at or after T.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Index directory to publish (default: CHECKPOINT/item_index, beside the model)."),
    ] = None,
    data: DataOption = "data",
    model_version: Annotated[
        int | None,
        typer.Option(help="Model version recorded in the manifest (default: the checkpoint directory's name "
                     "when it is a number)."),
    ] = None,
    nlist: Annotated[int, typer.Option(help="IVF lists; 0: about 4 * sqrt(items).")] = 0,
    nprobe: Annotated[int, typer.Option(help="Lists scanned per query (recall against speed).")] = 64,
    threads: Annotated[int, typer.Option(help="faiss threads for the build and searches.")] = 1,
) -> None:
    """Export every item's vector z_v from a retrieval checkpoint and publish a faiss
    IVF-Flat index for inner-product search (index.faiss, items.parquet, _manifest.json
    with the model, item count, index parameters, build time and item snapshot time),
    atomically.

    Example: onepiece index build --checkpoint runs/retr_ckpt --as-of 2026-11-09T00:00:00Z
    """
    from onepiece import storage
    from onepiece.retrieval.index import DEFAULT_DIR, IndexConfig, build_item_index

    config = IndexConfig(nlist=nlist, nprobe=nprobe, threads=threads)
    items = storage.read_table(storage.data_root(data), "items")
    target = out or checkpoint / DEFAULT_DIR
    manifest = build_item_index(checkpoint, items, parse_utc_time(as_of, "--as-of"), target, config, model_version)
    console.print(
        f"published {target}: {manifest['items']} items, {manifest['index']['nlist']} lists, "
        f"built in {manifest['build_s']:.1f} s",
        highlight=False,
    )


@index_app.command("publish")
@friendly_errors
def publish_command(
    checkpoint: Annotated[
        Path,
        typer.Option("--checkpoint", help="A trained retrieval checkpoint (`onepiece train --variant onepiece_retrieval`)."),
    ],
    as_of: Annotated[
        str,
        typer.Option("--as-of", help="Item snapshot time T of the index (ISO, UTC); routes serve windows from T on."),
    ],
    model_repo: Annotated[Path, typer.Option(help="Model repository to publish into.")] = Path("model_repo"),
    data: DataOption = "data",
    nlist: Annotated[int, typer.Option(help="IVF lists; 0: about 4 * sqrt(items).")] = 0,
    nprobe: Annotated[int, typer.Option(help="Lists scanned per query (recall against speed).")] = 64,
    threads: Annotated[int, typer.Option(help="faiss threads for the build and searches.")] = 1,
) -> None:
    """Publish a retrieval model version: export the checkpoint as the next version N of
    onepiece_user_tower (served by Triton: contexts in, user vectors out) and build its
    item index inside it, MODEL_REPO/onepiece_user_tower/N/item_index, in one atomic step.
    The same checkpoint and --as-of again find version N and write nothing.

    Example: onepiece index publish --checkpoint runs/retr_ckpt --as-of 2026-11-09T00:00:00Z
    """
    from onepiece import storage
    from onepiece.retrieval.index import IndexConfig
    from onepiece.retrieval.publish import publish_retrieval_version

    config = IndexConfig(nlist=nlist, nprobe=nprobe, threads=threads)
    items = storage.read_table(storage.data_root(data), "items")
    result = publish_retrieval_version(checkpoint, model_repo, items, parse_utc_time(as_of, "--as-of"), config)
    index = result["index"]
    verb = "published" if result["published"] else "already published as"
    console.print(
        f"{verb} {result['path']}: index {Path(result['path']) / 'item_index'} of {index['items']} items "
        f"as of {index['item_snapshot_as_of']}",
        highlight=False, soft_wrap=True,
    )


@app.command("retrieve")
@friendly_errors
def retrieve_command(
    contexts: Annotated[
        Path, typer.Option("--contexts", help="A contexts partition (`onepiece contexts` output: one window, as of T).")
    ],
    index: Annotated[Path, typer.Option("--index", help="An item index directory (`onepiece index build`).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to publish the rows and _manifest.json into.")],
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="The retrieval checkpoint the index was built from (default: the index's "
                     "parent directory)."),
    ] = None,
    top_n: Annotated[int, typer.Option("--top-n", help="Items retrieved per request.")] = 200,
    user_vectors: Annotated[
        str,
        typer.Option("--user-vectors", help="inprocess (the checkpoint, in this process) or triton (the index's "
                     "version of the served onepiece_user_tower; same vectors, same rows)."),
    ] = "inprocess",
    model_repo: Annotated[
        Path, typer.Option(help="--user-vectors triton: model repository of the embedded server.")
    ] = Path("model_repo"),
    url: Annotated[
        list[str] | None,
        typer.Option("--url", help="--user-vectors triton: existing Triton HOST:PORT (repeatable). "
                     "Default: an embedded server."),
    ] = None,
    protocol: Annotated[str, typer.Option(help="--user-vectors triton: grpc or http.")] = "grpc",
) -> None:
    """The onePiece retrieval route for one window: each request's user vector (the click
    step's r_k, computed from its context in-process or by the served user tower through
    Triton) searched in the item index, loaded here; the top
    N items per request with score and rank, recall_source onepiece_retrieval
    (RETRIEVAL_SCHEMA). Published atomically; a rerun writes byte-identical Parquet.

    The index must hold item snapshots no newer than the contexts' T (point in time), and
    come from the same model as the checkpoint; both are checked.

    Example: onepiece retrieve --contexts runs/ctx --index runs/retr_ckpt/item_index --out runs/retr
    """
    from onepiece.errors import UserError
    from onepiece.retrieval.route import RouteConfig, run_route
    from onepiece.serving.user_tower import UserTowerServing

    if protocol not in ("grpc", "http"):
        raise UserError(f"--protocol must be grpc or http, got {protocol!r}")
    serving = UserTowerServing(model_repo=str(model_repo), urls=tuple(url or ()), protocol=protocol)  # type: ignore[arg-type]
    config = RouteConfig(top_n=top_n, user_vectors=user_vectors)
    manifest = run_route(contexts, index, out, config, checkpoint, serving)
    rows = manifest["rows"]
    console.print(
        f"published {out}: {rows['retrieval']} rows for {rows['requests']} requests "
        f"({manifest['wall_time_s']:.1f} s)",
        highlight=False,
    )
