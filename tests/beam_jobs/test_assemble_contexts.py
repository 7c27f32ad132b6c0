"""The contexts job on the real Beam runner (FnApiRunner, multi-processing) and a tiny world."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import LIVE_DAY, leftovers, midnight, read_output, snapshot_source

from onepiece import storage
from onepiece.assembly import AssemblyConfig
from onepiece.assembly.contexts import assemble_local
from onepiece.assembly.jobs import MANIFEST_NAME, BeamSettings, run_contexts
from onepiece.contract import CONTEXTS_SCHEMA, ITEMS_SCHEMA, validate_manifest

pytestmark = pytest.mark.slow


def reference(root, start, end):
    cands = storage.read_table(str(root), "candidates", [start.date()])
    last = (start - dt.timedelta(microseconds=1)).date()  # the job reads the days before T
    events = storage.read_table(str(root), "events", [d for d in storage.list_days(str(root), "events") if d <= last])
    return assemble_local(cands, events, snapshot_source(root), AssemblyConfig(), as_of=start, window=(start, end))


def test_contexts_match_the_single_process_reference(tiny_world, tmp_path):
    start, end = midnight(LIVE_DAY), midnight(LIVE_DAY + dt.timedelta(days=1))
    out = tmp_path / "contexts"
    manifest = run_contexts(str(tiny_world), start, end, out, side_source=snapshot_source(tiny_world))

    table = read_output(out)
    expected, counts = reference(tiny_world, start, end)
    assert table.schema.equals(CONTEXTS_SCHEMA)
    assert table.num_rows > 0 and table.equals(expected)
    assert set(table["as_of"].to_pylist()) == {start}
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME] + [
        f"part-{i:05d}-00000-of-00001.parquet" for i in range(4)
    ]
    assert leftovers(out) == []

    on_disk = json.loads((out / MANIFEST_NAME).read_text())
    validate_manifest(on_disk)
    assert on_disk == manifest
    assert manifest["rows"]["requests"] == manifest["rows"]["contexts"] == table.num_rows
    assert manifest["rows"]["candidates"] == pc.sum(pc.list_value_length(table["cand_item_id"])).as_py()
    assert manifest["rows"]["events_read"] == counts.rows["events_read"]
    for kind in ("items", "users", "queries"):
        assert manifest["defaulted"][f"unknown_{kind}"] == counts.defaulted[f"unknown_{kind}"]
    assert manifest["defaulted"]["unknown_items"] > 0  # the tiny world has unknown items
    assert {i["path"] for i in manifest["inputs"]} >= {"candidates/dt=2026-11-04/part-0.parquet"}


def test_output_is_byte_identical_across_worker_counts_and_reruns(tiny_world, tmp_path):
    start, end = midnight(LIVE_DAY), midnight(LIVE_DAY) + dt.timedelta(hours=12)
    source = snapshot_source(tiny_world)

    def files(out):
        return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}

    one = tmp_path / "one"
    run_contexts(str(tiny_world), start, end, one, side_source=source, beam_settings=BeamSettings(workers=1))
    two = tmp_path / "two"
    first = run_contexts(str(tiny_world), start, end, two, side_source=source, beam_settings=BeamSettings(workers=2))
    before = files(two)
    second = run_contexts(str(tiny_world), start, end, two, side_source=source)  # rerun replaces
    assert files(one) == before == files(two)
    assert len(before) == 4
    assert first["run_id"] == second["run_id"]
    assert leftovers(two) == []


def test_one_worker_in_process_writes_the_same_bytes_as_a_worker_process(tiny_world, tmp_path):
    """The refresh's default (BeamConfig.contexts_in_process): Beam's in_memory mode runs
    the worker in this process, with the same bundles, so the same shards and manifest."""
    start, end = midnight(LIVE_DAY), midnight(LIVE_DAY) + dt.timedelta(hours=12)
    source = snapshot_source(tiny_world)

    def files(out):
        return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}

    manifests = {}
    for in_process in (False, True):
        out = tmp_path / f"in_process_{in_process}"
        manifests[in_process] = run_contexts(str(tiny_world), start, end, out, side_source=source,
                                             beam_settings=BeamSettings(workers=1, in_process=in_process))
        assert leftovers(out) == []
    assert len(files(tmp_path / "in_process_True")) == 4
    assert files(tmp_path / "in_process_True") == files(tmp_path / "in_process_False")
    timeless = [{k: v for k, v in m.items() if k not in ("created_at", "wall_time_s")}
                for m in manifests.values()]
    assert timeless[0] == timeless[1]


def test_nothing_at_or_after_T_reaches_a_mid_day_run(world_copy, tmp_path):
    """A run at T = day 3, 12:00 reads day 3's events; those at or after T are cut and
    counted, and feature rows stamped at T (injected here) are not visible."""
    day = LIVE_DAY - dt.timedelta(days=1)
    start, end = midnight(day) + dt.timedelta(hours=12), midnight(day) + dt.timedelta(hours=18)
    clean = tmp_path / "clean"
    run_contexts(str(world_copy), start, end, clean, side_source=snapshot_source(world_copy))

    items = storage.read_table(str(world_copy), "items")
    # One snapshot per item (the contract's unique key is (item_id, event_timestamp)).
    items = items.filter(pc.equal(items["event_timestamp"], pc.max(items["event_timestamp"])))
    late = items.set_column(
        items.schema.get_field_index("event_timestamp"), "event_timestamp",
        pa.array([start] * items.num_rows, ITEMS_SCHEMA.field("event_timestamp").type),
    )
    late = late.set_column(items.schema.get_field_index("price"), "price", pc.add(items["price"], 1000.0))
    storage.write_parquet(late, world_copy / "items" / "part-late.parquet")
    dirty = tmp_path / "dirty"
    manifest = run_contexts(str(world_copy), start, end, dirty, side_source=snapshot_source(world_copy))

    assert read_output(dirty).equals(read_output(clean))
    events_after = pc.sum(pc.greater_equal(
        storage.read_table(str(world_copy), "events", [day])["event_timestamp"],
        pa.scalar(start, pa.timestamp("us", tz="UTC")),
    )).as_py()
    assert events_after > 0
    assert manifest["dropped"]["event_at_or_after_as_of"] == events_after
    assert all(t < start for t in pc.list_flatten(read_output(dirty)["ih_ts"]).to_pylist())


def test_a_run_at_the_start_of_the_log_has_empty_history_and_anchors(world_copy, tmp_path):
    first = storage.list_days(str(world_copy), "candidates")[0]
    for day in storage.list_days(str(world_copy), "events"):  # drop the warm-up log
        if day < first:
            shutil.rmtree(world_copy / "events" / storage.day_partition(day))
    assert storage.list_days(str(world_copy), "events")[0] == first
    start = midnight(first)
    out = tmp_path / "first"
    manifest = run_contexts(str(world_copy), start, start + dt.timedelta(hours=6), out,
                            side_source=snapshot_source(world_copy))
    table = read_output(out)
    assert manifest["rows"]["events_read"] == 0
    assert table.num_rows == manifest["rows"]["requests"] > 0
    assert pc.sum(pc.list_value_length(table["ih_item_id"])).as_py() == 0
    assert pc.sum(pc.list_value_length(table["pa_item_id"])).as_py() == 0
    assert manifest["dropped"] == {"event_at_or_after_as_of": 0}
