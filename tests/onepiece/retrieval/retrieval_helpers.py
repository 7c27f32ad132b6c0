"""Helpers of the retrieval tests: a tiny retrieval model's settings and the held-out
day's contexts as of T, built in-process as the pre-rank refresh builds them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa

from onepiece import storage

#: A retrieval model small enough to train in seconds (as tests/onepiece/training).
TINY_RETRIEVAL = dict(
    d_model=32, n_heads=2, n_layers=1, id_dim=16, side_dim=8, item_vocab=8192,
    shop_vocab=64, category_vocab=64, user_vocab=512, query_vocab=64, piece_vocab=256,
    ih_max_len=30, pa_per_group=10,
)


def side_source(root: Path):
    from onepiece.assembly.side import SnapshotSideSource

    r = str(root)
    return SnapshotSideSource(
        storage.read_table(r, "items"), storage.read_table(r, "users"), storage.read_table(r, "queries")
    )


def window_start(root: Path) -> dt.datetime:
    """T: the start of the last candidates day (the held-out day)."""
    day = storage.list_days(str(root), "candidates")[-1]
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def contexts_as_of(root: Path, events: pa.Table | None = None) -> pa.Table:
    """The held-out day's context rows as of T, as the pre-rank refresh builds them
    (in-process: the functions the Beam contexts job runs)."""
    from onepiece.assembly.config import AssemblyConfig
    from onepiece.assembly.contexts import assemble_local

    t = window_start(root)
    cands = storage.read_table(str(root), "candidates", [t.date()])
    events = storage.read_table(str(root), "events") if events is None else events
    rows, _ = assemble_local(cands, events, side_source(root), AssemblyConfig(), as_of=t,
                             window=(t, t + dt.timedelta(days=1)))
    return rows
