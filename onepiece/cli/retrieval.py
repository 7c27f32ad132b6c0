"""``onepiece index build`` and ``onepiece retrieve``: the retrieval route's item index
and its batch run over a window's context rows."""

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
) -> None:
    """The onePiece retrieval route for one window: each request's user vector (the click
    step's r_k, computed in-process from its context) searched in the item index; the top
    N items per request with score and rank, recall_source onepiece_retrieval
    (RETRIEVAL_SCHEMA). Published atomically; a rerun writes byte-identical Parquet.

    The index must hold item snapshots no newer than the contexts' T (point in time), and
    come from the same model as the checkpoint; both are checked.

    Example: onepiece retrieve --contexts runs/ctx --index runs/retr_ckpt/item_index --out runs/retr
    """
    from onepiece.retrieval.route import RouteConfig, run_route

    manifest = run_route(contexts, index, out, RouteConfig(top_n=top_n), checkpoint)
    rows = manifest["rows"]
    console.print(
        f"published {out}: {rows['retrieval']} rows for {rows['requests']} requests "
        f"({manifest['wall_time_s']:.1f} s)",
        highlight=False,
    )
