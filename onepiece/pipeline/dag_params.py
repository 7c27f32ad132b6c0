"""The Airflow Params several DAGs declare, described once.

An empty string, 0 or false means "not set here": the environment variable named in the
description decides, else the embedded default (``onepiece.pipeline.config``).
"""

from __future__ import annotations

from typing import Any


def shared_params(*names: str) -> dict[str, Any]:
    """Params by name, for a DAG's ``params=`` (merged with its own)."""
    from airflow.sdk import Param

    known = {
        "data": lambda: Param("", type="string", description="Data root; empty: $ONEPIECE_DATA, else ./data."),
        "window_minutes": lambda: Param(
            0, type="integer", minimum=0,
            description="Scoring window after T; 0: $ONEPIECE_REFRESH_WINDOW_MINUTES, else 60."),
        "model_repo": lambda: Param(
            "", type="string", description="Triton model repository; empty: $ONEPIECE_MODEL_REPO, else model_repo/."),
        "triton_urls": lambda: Param(
            "", type="string",
            description="Comma-separated Triton HOST:PORT; empty: $ONEPIECE_TRITON_URLS, else an embedded server."),
        "feature_repo": lambda: Param(
            "", type="string", description="Feast repository; empty: $ONEPIECE_FEATURE_REPO, else features/."),
        "merge_retrieval": lambda: Param(
            False, type="boolean",
            description="Score the upstream candidates merged with retrieval/<partition>/ of the same window "
                        "(the retrieval_refresh run must be published first); false: "
                        "$ONEPIECE_REFRESH_MERGE_RETRIEVAL, else off."),
    }
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"no shared Param named {unknown}; known: {sorted(known)}")
    return {name: known[name]() for name in names}


def guard_params(config_class: type | None = None, help_text: dict[str, str] | None = None) -> dict[str, Any]:
    """A publish guard's Params (``force_publish`` and ``guard_<threshold>``), their
    defaults taken from its config dataclass (default: the pre-rank refresh's)."""
    import dataclasses

    from airflow.sdk import Param

    from onepiece.pipeline.guard import THRESHOLD_HELP, GuardConfig

    config_class = config_class or GuardConfig
    help_text = help_text or THRESHOLD_HELP
    params: dict[str, Any] = {}
    for field in dataclasses.fields(config_class):
        default = getattr(config_class(), field.name)
        if field.name == "force":
            params["force_publish"] = Param(
                False, type="boolean",
                description="Publish even when guard checks fail (recorded in the manifest).")
            continue
        kind = "integer" if isinstance(default, int) else "number"
        params[f"guard_{field.name}"] = Param(
            default, type=kind, minimum=0, description=f"Publish guard: {help_text[field.name]}")
    return params


def route_guard_params() -> dict[str, Any]:
    """The retrieval route's guard Params."""
    from onepiece.pipeline.guard import ROUTE_THRESHOLD_HELP, RouteGuardConfig

    return guard_params(RouteGuardConfig, ROUTE_THRESHOLD_HELP)
