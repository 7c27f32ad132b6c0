"""The jobs on inputs that Beam reads as many batches: tiny Parquet row groups.

Beam's parquet IO yields one table per row group, so every file here becomes dozens of
batches, each split into shard pieces, and requests straddle row-group boundaries. Every
candidate row must reach exactly one request (the driver's accounting) and the rows must
equal the single-process reference. See onepiece.beam_options.guard_local_data_plane for
the runner race that once lost whole pieces on big worlds.
"""

from __future__ import annotations

import datetime as dt
import glob

import pyarrow.parquet as pq
import pytest
from conftest import LIVE_DAY, midnight, read_output, snapshot_source

from onepiece import storage
from onepiece.assembly import AssemblyConfig
from onepiece.assembly.contexts import assemble_local
from onepiece.assembly.jobs import run_contexts, run_trainset

pytestmark = pytest.mark.slow

ROW_GROUP = 700  # rows; not a multiple of a request's candidate count


def rewrite_with_small_row_groups(root, table: str) -> int:
    """Rewrite every file of ``table`` with ROW_GROUP-row groups; the fewest groups per file."""
    fewest = None
    for path in glob.glob(f"{root}/{table}/dt=*/*.parquet"):
        data = pq.read_table(path)
        pq.write_table(data, path, row_group_size=ROW_GROUP, compression="zstd")
        groups = pq.ParquetFile(path).metadata.num_row_groups
        fewest = groups if fewest is None else min(fewest, groups)
    return fewest or 0


def test_many_row_groups_per_file_lose_no_candidate_row(world_copy, tmp_path):
    assert rewrite_with_small_row_groups(world_copy, "candidates") >= 5
    assert rewrite_with_small_row_groups(world_copy, "events") >= 2
    first, last = LIVE_DAY - dt.timedelta(days=2), LIVE_DAY - dt.timedelta(days=1)
    out = tmp_path / "train"
    source = snapshot_source(world_copy)
    manifest = run_trainset(str(world_copy), first, last, out, side_source=source)

    root = str(world_copy)
    cands = storage.read_table(root, "candidates", [first, last])
    expected, counts = assemble_local(cands, storage.read_table(root, "events"), source, AssemblyConfig())
    assert manifest["rows"]["candidates_read"] == manifest["rows"]["candidates"] == cands.num_rows
    assert manifest["rows"]["requests"] == counts.rows["requests"]
    table = read_output(out)
    assert table.num_rows > 0 and table.equals(expected)


def test_a_refresh_capping_each_event_batch_keeps_every_history(world_copy, tmp_path):
    """Each event batch keeps every user's last ih_length IH events before the shuffle
    (history.last_ih_events); with a short IH and many batches the rows must still equal
    the reference, which sees every event at once."""
    assert rewrite_with_small_row_groups(world_copy, "events") >= 2
    start, end = midnight(LIVE_DAY), midnight(LIVE_DAY + dt.timedelta(days=1))
    config = AssemblyConfig(ih_length=1)  # so the cap drops rows in most batches
    source = snapshot_source(world_copy)
    out = tmp_path / "contexts"
    run_contexts(str(world_copy), start, end, out, config=config, side_source=source)

    root = str(world_copy)
    cands = storage.read_table(root, "candidates", [LIVE_DAY])
    events = storage.read_table(root, "events", [d for d in storage.list_days(root, "events") if d < LIVE_DAY])
    expected, _ = assemble_local(cands, events, source, config, as_of=start, window=(start, end))
    table = read_output(out)
    assert table.num_rows > 0 and table.equals(expected)
    assert max(len(h) for h in table["ih_item_id"].to_pylist()) == 1
