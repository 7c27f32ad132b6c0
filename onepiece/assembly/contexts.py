"""Compose the segments into context rows (and training rows) for a batch of requests.

``assemble_local`` is the whole assembly in one process: the reference the Beam jobs are
tested against and the single-process baseline of the benchmark. The Beam jobs run the
same functions per shard (``onepiece.assembly.transforms``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from onepiece.assembly.anchors import preference_anchors
from onepiece.assembly.config import AssemblyConfig
from onepiece.assembly.history import interaction_history
from onepiece.assembly.labels import candidate_labels, has_click
from onepiece.assembly.requests import candidate_requests, select_window
from onepiece.assembly.side import SideTables, entity_keys, join_side_features
from onepiece.contract import CONTEXTS_SCHEMA, TIMESTAMP, TRAINING_SCHEMA

#: Fetches side features for the unique (id, as_of) keys per entity kind.
SideSource = Callable[[dict[str, pa.Table]], SideTables]


@dataclass
class AssemblyCounts:
    """What a run saw, for the manifest: row counts, dropped and defaulted, by reason."""

    rows: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    defaulted: dict[str, int] = field(default_factory=dict)


def sort_rows(table: pa.Table) -> pa.Table:
    """The canonical row order of context and training rows."""
    return table.sort_by([("as_of", "ascending"), ("request_id", "ascending")])


def finish(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast to the contract schema, in canonical row order."""
    return sort_rows(table.select(schema.names).cast(schema))


def events_before(events: pa.Table, as_of: dt.datetime, lookback: dt.timedelta) -> pa.Table:
    """The events of a refresh at T: ``T - lookback <= ts < T`` (nothing at or after T)."""
    ts = events["event_timestamp"]
    keep = pc.and_(
        pc.less(ts, pa.scalar(as_of, TIMESTAMP)),
        pc.greater_equal(ts, pa.scalar(as_of - lookback, TIMESTAMP)),
    )
    return events.filter(keep)


def count_at_or_after(events: pa.Table, as_of: dt.datetime) -> int:
    return int(pc.sum(pc.greater_equal(events["event_timestamp"], pa.scalar(as_of, TIMESTAMP))).as_py() or 0)


def user_segments(
    cands: pa.Table, events: pa.Table, config: AssemblyConfig, as_of: dt.datetime | None,
    training: bool, threads: int = 1,
) -> pa.Table:
    """Requests with CIS and IH (and labels when ``training``): everything keyed by user."""
    requests = candidate_requests(cands, as_of)
    ih = interaction_history(requests, events, config, threads)
    table = requests
    for name in ih.column_names:
        table = table.append_column(name, ih[name])
    if training:
        labels = candidate_labels(requests, events, threads)
        for name in labels.column_names:
            table = table.append_column(name, labels[name])
    return table


def add_anchors(requests: pa.Table, anchors: pa.Table) -> pa.Table:
    for name in anchors.column_names:
        requests = requests.append_column(name, anchors[name])
    return requests


def assemble_local(
    cands: pa.Table,
    events: pa.Table,
    side_source: SideSource,
    config: AssemblyConfig,
    as_of: dt.datetime | None = None,
    window: tuple[dt.datetime, dt.datetime] | None = None,
    threads: int = 1,
) -> tuple[pa.Table, AssemblyCounts]:
    """Context rows (``as_of`` = T) or training rows (``as_of`` None) in one process.

    ``cands`` and ``events`` are conformed contract tables. For a refresh, ``window`` =
    [start, end) selects the candidate requests and T = start; for training, ``window``
    selects requests by their own time and each request is its own as_of.
    """
    training = as_of is None
    counts = AssemblyCounts()
    counts.rows["events_read"] = events.num_rows
    if window is not None:
        cands = select_window(cands, *window)
    counts.rows["candidates"] = cands.num_rows
    if not training:
        counts.dropped["event_at_or_after_as_of"] = count_at_or_after(events, as_of)
        events = events_before(events, as_of, config.lookback)
    table = user_segments(cands, events, config, as_of, training, threads)
    counts.rows["requests"] = table.num_rows
    if training:
        keep = has_click(table)
        counts.dropped["request_without_click"] = table.num_rows - int(pc.sum(keep).as_py() or 0)
        table = table.filter(keep)
    table = add_anchors(table, preference_anchors(table, events, config, threads))
    side = side_source(entity_keys(table))
    table, missing = join_side_features(table, side)
    counts.defaulted.update({f"unknown_{k}": int(v) for k, v in side.unknown.items()})
    counts.defaulted.update(missing)
    schema = TRAINING_SCHEMA if training else CONTEXTS_SCHEMA
    table = finish(table, schema)
    counts.rows["training_rows" if training else "contexts"] = table.num_rows
    return table, counts
