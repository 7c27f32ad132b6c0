"""Bad input per the contract: the run fails by name (file and column) and publishes nothing."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import LIVE_DAY, leftovers, midnight, snapshot_source

from onepiece.assembly.jobs import BeamSettings, run_contexts, run_trainset
from onepiece.contract import ContractError

pytestmark = pytest.mark.slow
DAY2 = LIVE_DAY - dt.timedelta(days=2)
DAY3 = LIVE_DAY - dt.timedelta(days=1)


def rewrite(path: Path, change) -> None:
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def set_first(table: pa.Table, column: str, value, type_=None) -> pa.Table:
    values = table[column].to_pylist()
    values[0] = value
    index = table.schema.get_field_index(column)
    field = table.schema.field(column)
    return table.set_column(index, field.with_nullable(True), pa.array(values, type_ or field.type))


def events_file(root: Path, day: dt.date) -> Path:
    return root / "events" / f"dt={day}" / "part-0.parquet"


def candidates_file(root: Path, day: dt.date) -> Path:
    return root / "candidates" / f"dt={day}" / "part-0.parquet"


def run_refresh(root: Path, out: Path):
    start = midnight(LIVE_DAY)
    return run_contexts(str(root), start, start + dt.timedelta(days=1), out,
                        side_source=snapshot_source(root), beam_settings=BeamSettings(workers=1))


CASES = {
    "unknown event_type": (
        lambda root: rewrite(events_file(root, DAY2), lambda t: set_first(t, "event_type", "purchase")),
        lambda root: events_file(root, DAY2), "event_type", "unknown event_type",
    ),
    "null candidate user_id": (
        lambda root: rewrite(candidates_file(root, LIVE_DAY), lambda t: set_first(t, "user_id", None)),
        lambda root: candidates_file(root, LIVE_DAY), "user_id", "null value",
    ),
    "event stamped in the future of its partition": (
        lambda root: rewrite(events_file(root, DAY3), lambda t: set_first(
            t, "event_timestamp", midnight(LIVE_DAY) + dt.timedelta(hours=3))),
        lambda root: events_file(root, DAY3), "event_timestamp", "outside its partition",
    ),
    "duplicate candidate rows": (
        lambda root: rewrite(candidates_file(root, LIVE_DAY), lambda t: pa.concat_tables([t, t.slice(5, 1)])),
        lambda root: candidates_file(root, LIVE_DAY), "request_id,item_id", "duplicate candidate row",
    ),
    "duplicate candidate rows across files": (  # the input check reads a partition's files together
        lambda root: pq.write_table(
            pq.read_table(candidates_file(root, LIVE_DAY)).slice(7, 1),
            candidates_file(root, LIVE_DAY).with_name("part-1.parquet"),
        ),
        lambda root: candidates_file(root, LIVE_DAY).with_name("part-1.parquet"),
        "request_id,item_id", "duplicate candidate row",
    ),
    "a candidates file that is not Parquet": (
        lambda root: candidates_file(root, LIVE_DAY).write_text("request_id,item_id\n"),
        lambda root: candidates_file(root, LIVE_DAY), None, "unreadable Parquet file",
    ),
    "negative item price": (
        lambda root: rewrite(root / "items" / "part-0.parquet", lambda t: set_first(t, "price", -1.0)),
        lambda root: root / "items" / "part-0.parquet", "price", "negative price (-1.0)",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_rows_fail_the_run_by_file_and_column_and_publish_nothing(case, world_copy, tmp_path):
    corrupt, source, column, problem = CASES[case]
    corrupt(world_copy)
    out = tmp_path / "contexts"
    with pytest.raises(ContractError) as caught:
        run_refresh(world_copy, out)
    err = caught.value
    assert str(source(world_copy)) in err.source
    assert err.column == column
    assert problem in str(err)
    assert not out.exists() and leftovers(out) == []


def test_a_missing_partition_fails_before_running_and_keeps_the_old_output(world_copy, tmp_path):
    out = tmp_path / "train"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"previous run")
    shutil.rmtree(world_copy / "events" / f"dt={DAY2}")
    with pytest.raises(ContractError, match=f"dt={DAY2}.*partition is missing"):
        run_trainset(str(world_copy), DAY2, DAY3, out, side_source=snapshot_source(world_copy))
    assert (out / "part-00000.parquet").read_bytes() == b"previous run"
    assert leftovers(out) == []


def test_unknown_ids_are_defaulted_and_counted_not_dropped(world_copy, tmp_path):
    def new_ids(t: pa.Table) -> pa.Table:
        index = t.schema.get_field_index("item_id")
        return t.set_column(index, t.schema.field(index), pc.add(t["item_id"], 10**9))

    rewrite(candidates_file(world_copy, LIVE_DAY), new_ids)
    manifest = run_refresh(world_copy, tmp_path / "contexts")
    assert manifest["rows"]["contexts"] == manifest["rows"]["requests"] > 0
    cand_items = pc.unique(pq.read_table(candidates_file(world_copy, LIVE_DAY))["item_id"])
    assert manifest["defaulted"]["unknown_items"] >= len(cand_items)
