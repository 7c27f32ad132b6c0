"""``onepiece features``: plan, apply and materialise the Feast feature repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onepiece.cli import app
from onepiece.cli.common import DataOption, console, friendly_errors, parse_utc_time

features_app = typer.Typer(
    name="features",
    help=(
        "The Feast feature repository (features/): show the registry diff, apply it "
        "after validating the sources and the feature services in use, materialise "
        "into the online store."
    ),
    no_args_is_help=True,
)
app.add_typer(features_app)

RepoOption = Annotated[
    Path | None,
    typer.Option("--repo", help="Feature repository directory (default: the project's features/)."),
]


def _config(repo: Path | None, data: str):
    from onepiece.features.repo import PROJECT_REPO, FeatureRepoConfig

    return FeatureRepoConfig(repo_dir=(repo or PROJECT_REPO).resolve(), data_root=data)


@features_app.command("plan")
@friendly_errors
def plan(data: DataOption = "data", repo: RepoOption = None) -> None:
    """Show what `apply` would change in the registry, and any breaking change."""
    from onepiece.features.registry import plan as plan_changes

    result = plan_changes(_config(repo, data))
    typer.echo(str(result), nl=False)
    if result.breaking:
        console.print("[yellow]apply will refuse these changes unless --force is given[/]")


@features_app.command("apply")
@friendly_errors
def apply(
    data: DataOption = "data",
    repo: RepoOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Apply even if a feature service in use breaks.")
    ] = False,
) -> None:
    """Validate the sources and the feature services in use, then update the registry."""
    from onepiece.features.registry import apply as apply_changes

    result = apply_changes(_config(repo, data), force=force)
    typer.echo(str(result), nl=False)
    console.print("[green]registry updated[/]" + (" (forced)" if result.breaking else ""))


@features_app.command("materialize")
@friendly_errors
def materialize(
    end: Annotated[
        str, typer.Option("--end", help="Materialise rows up to this UTC time (ISO-8601).")
    ],
    data: DataOption = "data",
    repo: RepoOption = None,
    view: Annotated[
        list[str] | None, typer.Option("--view", help="Only this feature view (repeatable).")
    ] = None,
) -> None:
    """Incrementally load the feature views into the online store, up to --end."""
    from onepiece.features.materialize import materialize as run

    end_time = parse_utc_time(end, "--end")
    for done in run(_config(repo, data), end_time, views=view or None):
        console.print(f"{done.view}: {done.start.isoformat()} -> {done.end.isoformat()}")
