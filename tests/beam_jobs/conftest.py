"""Shared fixtures of the Beam job tests: the session's tiny world, reference outputs."""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# The repo root first: ``beam_jobs`` is importable, and ``onepiece`` is the package rather
# than the namespace tests/onepiece (pytest puts tests/ on sys.path for its conftest).
sys.path.insert(0, str(Path(__file__).parents[2]))

from onepiece import storage  # noqa: E402
from onepiece.assembly.contexts import sort_rows  # noqa: E402
from onepiece.assembly.side import SnapshotSideSource  # noqa: E402

LIVE_DAY = dt.date(2026, 11, 4)  # WorldConfig.tiny: warm-up 10-30..31, days 11-01..03, 04 live


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def snapshot_source(root: Path) -> SnapshotSideSource:
    """Point-in-time features straight from the world's snapshot tables."""
    root = str(root)
    return SnapshotSideSource(
        storage.read_table(root, "items"),
        storage.read_table(root, "users"),
        storage.read_table(root, "queries"),
    )


def read_output(out: Path) -> pa.Table:
    """All shards of a published output, in canonical row order."""
    parts = sorted(out.glob("part-*.parquet"))
    return sort_rows(pa.concat_tables([pq.read_table(p) for p in parts]))


def leftovers(out: Path) -> list[str]:
    """Hidden staging directories left beside ``out`` (there must be none)."""
    return sorted(p.name for p in out.parent.glob(f".{out.name}*"))


@pytest.fixture
def world_copy(tiny_world: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the session's tiny world."""
    root = tmp_path / "data"
    shutil.copytree(tiny_world, root)
    return root
