"""What the route retrieved of what users did next: for a published retrieval partition,
the share of its requests' clicked and ordered items the route held, beside the share
the upstream candidates held (the audit's figures for the route; issue 21 item 5).

A click or order counts when it belongs to one of the partition's requests and is logged
at or after T and before ``horizon`` (the window's end plus the attribution time); a pair
(request, item) counts once per event type. The world logs clicks only on impressions of
upstream candidates, so there the upstream's share is 1 by construction; on a real log
the two shares compare the sources.

``partition_outcomes`` is what the outcomes audit (``onepiece outcomes``, the
``outcomes_audit`` DAG) reports beside a scores partition: these figures for the
retrieval partition of the same name, or that none was published.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece import storage
from onepiece.contract import TIMESTAMP
from onepiece.errors import UserError

OUTCOME_TYPES: tuple[str, ...] = ("click", "order")


def share_held(outcomes: pa.Table, source: pa.Table) -> float | None:
    """Share of the (request_id, item_id) pairs of ``outcomes`` that ``source`` holds."""
    if outcomes.num_rows == 0:
        return None
    pairs = source.select(["request_id", "item_id"]).group_by(["request_id", "item_id"]).aggregate([])
    pairs = pairs.append_column("_held", pa.array(np.ones(pairs.num_rows, bool)))
    joined = outcomes.join(pairs, ["request_id", "item_id"], join_type="left outer")
    return float(pc.sum(pc.fill_null(joined["_held"], False)).as_py() or 0) / outcomes.num_rows


def route_outcomes(data: str, partition_dir: str | Path, window: dt.timedelta,
                   attribution: dt.timedelta) -> dict[str, Any]:
    """Click and order shares of the route and of the upstream for one partition."""
    routed = storage.read_partition(partition_dir, "retrieval")
    if routed.num_rows == 0:
        raise UserError(f"{partition_dir}: the retrieval partition has no rows")
    start = pc.min(routed["as_of"]).as_py()
    horizon = start + window + attribution
    days = [d for d in storage.list_days(data, "events") if start.date() <= d <= horizon.date()]
    if not days or days[-1] < (horizon - dt.timedelta(microseconds=1)).date():
        raise UserError(f"{data}/events: the outcomes of {partition_dir} run until {horizon.isoformat()}, "
                        "the log does not reach that day yet")
    requests = pc.unique(routed["request_id"])
    events = storage.read_table(data, "events", days, ["request_id", "item_id", "event_type", "event_timestamp"])
    keep = pc.and_(
        pc.and_(pc.is_in(events["request_id"], requests), pc.is_in(events["event_type"], pa.array(OUTCOME_TYPES))),
        pc.and_(pc.greater_equal(events["event_timestamp"], pa.scalar(start, TIMESTAMP)),
                pc.less(events["event_timestamp"], pa.scalar(horizon, TIMESTAMP))),
    )
    events = events.filter(keep)
    cand_days = sorted({start.date(), (start + window - dt.timedelta(microseconds=1)).date()})
    upstream = storage.read_table(data, "candidates", cand_days, ["request_id", "item_id"])
    upstream = upstream.filter(pc.is_in(upstream["request_id"], requests))
    out: dict[str, Any] = {"requests": len(requests), "horizon": horizon.isoformat()}
    for kind in OUTCOME_TYPES:
        pairs = events.filter(pc.equal(events["event_type"], kind)).select(["request_id", "item_id"])
        pairs = pairs.group_by(["request_id", "item_id"]).aggregate([])
        out[kind] = {"events": pairs.num_rows, "route": share_held(pairs, routed),
                     "upstream": share_held(pairs, upstream)}
    return out


def partition_outcomes(data: str, partition: str, window: dt.timedelta,
                       attribution: dt.timedelta) -> dict[str, Any]:
    """``route_outcomes`` of ``<data>/retrieval/<partition>/`` with ``published: true``,
    or ``published: false`` when the route published nothing for that window."""
    directory = Path(data) / "retrieval" / partition
    where = {"partition": f"retrieval/{partition}"}
    if not (directory / "_manifest.json").is_file():
        return where | {"published": False}
    return where | {"published": True} | route_outcomes(data, directory, window, attribution)
