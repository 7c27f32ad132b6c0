"""The training-set job on the real Beam runner and a tiny world."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow.compute as pc
import pytest
from conftest import LIVE_DAY, read_output, snapshot_source

from onepiece import storage
from onepiece.assembly import AssemblyConfig
from onepiece.assembly.contexts import assemble_local
from onepiece.assembly.jobs import run_trainset
from onepiece.contract import LABEL_COLUMNS, TRAINING_SCHEMA

pytestmark = pytest.mark.slow


def test_training_rows_are_clicked_requests_with_parallel_labels(tiny_world, tmp_path):
    first, last = LIVE_DAY - dt.timedelta(days=2), LIVE_DAY - dt.timedelta(days=1)
    out = tmp_path / "train"
    manifest = run_trainset(str(tiny_world), first, last, out, side_source=snapshot_source(tiny_world))
    table = read_output(out)

    root = str(tiny_world)
    cands = storage.read_table(root, "candidates", [first, last])
    events = storage.read_table(root, "events")
    expected, counts = assemble_local(cands, events, snapshot_source(tiny_world), AssemblyConfig())
    assert table.schema.equals(TRAINING_SCHEMA)
    assert table.num_rows > 0 and table.equals(expected)

    lengths = pc.list_value_length(table["cand_item_id"]).to_numpy()
    for name in LABEL_COLUMNS:
        assert np.array_equal(pc.list_value_length(table[name]).to_numpy(), lengths)
    clicks = pc.list_flatten(table["label_click"]).to_numpy()
    parents = pc.list_parent_indices(table["label_click"]).to_numpy()
    assert set(parents[clicks == 1]) == set(range(table.num_rows))  # every row has a click
    assert table["as_of"].to_pylist() == sorted(table["as_of"].to_pylist())  # own request times

    requests = manifest["rows"]["requests"]
    assert requests == counts.rows["requests"] > table.num_rows
    assert manifest["dropped"]["request_without_click"] == requests - table.num_rows
    # Every label 1 is backed by an event of its request on that item.
    ev = events.filter(pc.equal(events["event_type"], "click"))
    clicked = set(zip(ev["request_id"].to_pylist(), ev["item_id"].to_pylist()))
    for row in table.select(["request_id", "cand_item_id", "label_click"]).to_pylist():
        for item, label in zip(row["cand_item_id"], row["label_click"]):
            assert label == int((row["request_id"], item) in clicked)
