"""The ``feature_registry`` DAG's tasks: changed? -> plan -> validate -> apply; materialise.

``definitions_changed`` compares the fingerprint of the feature repository's definitions
with the one recorded by the last successful apply over the data root
(``onepiece.features.registry``); when they match, the DAG skips plan/validate/apply and
only materialises. The Feast work is done by ``onepiece.features`` (registry.plan /
registry.apply with the compatibility check for feature services in use, materialize);
these functions only order it and return small JSON-able summaries. ``apply`` refuses an
incompatible change (a feature service in use would lose or retype a feature) and leaves
the registry untouched; the DAG run then fails at ``validate`` before anything is applied.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from onepiece.pipeline.config import RegistryConfig, as_utc

_SLACK = dt.timedelta(seconds=1)
log = logging.getLogger(__name__)


def definitions_changed(config: RegistryConfig) -> bool:
    """Whether the registry needs plan/validate/apply: the definitions differ from those
    of the last successful apply (or none was recorded), or ``config.force``."""
    from onepiece.features.registry import applied_fingerprint, definitions_fingerprint

    repo = config.repo()
    current, applied = definitions_fingerprint(repo), applied_fingerprint(repo)
    log.info("feature definitions %s: %s; last applied: %s%s", repo.repo_dir, current,
             applied or "none recorded", " (forced)" if config.force else "")
    return config.force or current != applied


def plan(config: RegistryConfig) -> dict[str, Any]:
    """What an apply would change (Feast's diffs), and the breaking changes found."""
    from onepiece.features.registry import plan as feast_plan

    result = feast_plan(config.repo(), validate=False)
    return {
        "registry_diff": result.registry_diff,
        "infra_diff": result.infra_diff,
        "breaking": list(result.breaking),
    }


def validate(config: RegistryConfig) -> dict[str, Any]:
    """Validate the sources against the contract and refuse breaking changes."""
    from onepiece.features.registry import IncompatibleChange
    from onepiece.features.registry import plan as feast_plan

    result = feast_plan(config.repo(), validate=True)
    if result.breaking:
        raise IncompatibleChange(
            f"feature repository {config.repo().repo_dir}: refusing the update (the registry "
            "is unchanged):\n  - " + "\n  - ".join(result.breaking)
        )
    return {"breaking": []}


def apply(config: RegistryConfig) -> dict[str, Any]:
    """Apply the (compatible) definitions to the registry."""
    from onepiece.features.registry import apply as feast_apply

    result = feast_apply(config.repo(), force=False)
    return {"registry_diff": result.registry_diff}


def materialize(config: RegistryConfig, end: dt.datetime) -> dict[str, Any]:
    """Materialise every online view up to ``end``; views already past ``end`` are left
    as they are (a rerun or a backfill of an older date)."""
    from onepiece.features.materialize import materialize as feast_materialize
    from onepiece.features.repo import open_store

    end = as_utc(end)
    repo = config.repo()
    behind = sorted(
        view.name
        for view in open_store(repo).list_feature_views()
        # Feast records a run up to ``end`` as ``end - 1 us``.
        if view.online and (view.most_recent_end_time is None or view.most_recent_end_time < end - _SLACK)
    )
    done = feast_materialize(repo, end, views=behind) if behind else []
    return {
        "end": end.isoformat(),
        "materialized": {m.view: [m.start.isoformat(), m.end.isoformat()] for m in done},
    }
