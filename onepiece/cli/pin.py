"""``onepiece pin``: show, set or roll back the model version the refresh scores with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from onepiece.cli import app
from onepiece.cli.common import DataOption, console, friendly_errors


@app.command()
@friendly_errors
def pin(
    data: DataOption = "data",
    version: Annotated[int | None, typer.Option(help="Pin this exported version (a rollout by hand).")] = None,
    rollback: Annotated[bool, typer.Option(help="Pin the version the current pin replaced.")] = False,
    model_repo: Annotated[Path, typer.Option(help="Model repository the version must be exported in.")] = Path("model_repo"),
    model_name: Annotated[str, typer.Option(help="Served model name.")] = "onepiece_ranker",
) -> None:
    """Show the pinned model version (<data>/serving/model_pin.json), pin an exported version, or roll back to the previous one.

    The prerank_refresh DAG scores with the pinned version from its next run on (its model_version Param overrides the pin for one run). model_publish pins after its gate and smoke test; this command is the operator's hand on the same file, replaced in one step.
    """  # noqa: E501 (typer rewraps the help text itself)
    from onepiece.pipeline.pin import pin_path, pin_version, read_pin
    from onepiece.storage import data_root

    root = data_root(data)
    if version is None and not rollback:
        current = read_pin(root, model_name)
        console.print(json.dumps(current, indent=2) if current else f"nothing pinned in {pin_path(root)}",
                      highlight=False, soft_wrap=True)
        return
    written = pin_version(root, model_repo, model_name, version, rollback)
    console.print(f"pinned {model_name} v{written['version']} (was v{written['previous_version']}) "
                  f"in {pin_path(root)}", highlight=False, soft_wrap=True)
