"""The ``outcomes_audit`` DAG's task: measure a published refresh against what followed.

At logical date T it audits the prerank_refresh partition of T - window - attribution:
the newest run whose requests and attribution horizon are both in the past, so every
outcome it counts is already logged. The work is ``onepiece.evaluation.outcomes``
(``onepiece outcomes`` on the command line); the figures land in
``<data>/outcomes/<partition>/`` and the scores partition is never touched. When the
retrieval route published the same partition, the click and order shares it retrieved
are reported beside the upstream candidates'; otherwise it is reported absent.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from onepiece.errors import UserError
from onepiece.pipeline.config import AuditConfig, as_utc
from onepiece.pipeline.refresh import MANIFEST_NAME, partition_of


def audit(config: AuditConfig, logical_date: dt.datetime) -> dict[str, Any]:
    """Audit the refresh of T - window - attribution; returns the headline figures."""
    from onepiece.evaluation.outcomes import OutcomesConfig, audit_partition

    target = as_utc(logical_date) - config.window - config.attribution
    partition = partition_of(target)
    if not (Path(config.data) / "scores" / partition / MANIFEST_NAME).is_file():
        raise UserError(
            f"{config.data}/scores/{partition} was never published: the prerank_refresh run of "
            f"{target.isoformat()} is what this audit measures (run or backfill it first)"
        )
    figures = audit_partition(config.data, partition, OutcomesConfig(config.attribution, config.top_k))
    return {
        "partition": partition,
        "rows": figures["rows"],
        "click_auc": figures["tasks"]["click"]["auc"],
        "click_predicted_over_realised": figures["tasks"]["click"]["predicted_over_realised"],
        "clicks_kept_in_top_k": figures["score"]["click_kept_in_top_k"],
        "retrieval": _route_headline(figures["retrieval"]),
    }


def _route_headline(route: dict[str, Any]) -> dict[str, Any]:
    """The route's click and order shares beside the upstream's, or that it is absent."""
    if not route["published"]:
        return {"partition": route["partition"], "published": False}
    return {"partition": route["partition"], "published": True,
            **{f"{kind}_share_{source}": route[kind][source]
               for kind in ("click", "order") for source in ("route", "upstream")}}
