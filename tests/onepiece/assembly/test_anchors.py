"""PA: per query, top-k exposed / clicked / ordered items over a window before as_of."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import reference
from builders import at, events, requests_table

from onepiece import storage
from onepiece.assembly import AssemblyConfig
from onepiece.assembly.anchors import (
    anchor_counts,
    pa_events,
    preference_anchors,
    preference_anchors_from,
    window_rows,
)
from onepiece.assembly.requests import candidate_requests
from onepiece.contract import EVENT_TYPES, PA_GROUP_CODE


def test_anchor_groups_are_ranked_by_count_in_fixed_group_order():
    rows = []
    for item, n in ((10, 3), (11, 1), (12, 2), (13, 2)):
        rows += [(5, 9, item, "impression", at(-1 - k)) for k in range(n)]
    rows += [(5, 9, 11, "click", at(-2)), (5, 9, 12, "order", at(-2))]
    rows += [(5, 8, 99, "impression", at(-1))]  # another query
    rows += [(5, 9, 14, "impression", at(0)), (5, 9, 14, "impression", at(0.5))]  # not before T
    req = requests_table([("a", 1, 9, at(0)), ("b", 2, 7, at(0))])
    pa_ = preference_anchors(req, events(rows), AssemblyConfig(pa_top_k=3))
    exposed, clicked, ordered = (PA_GROUP_CODE[g] for g in ("exposed", "clicked", "ordered"))
    assert pa_["pa_item_id"].to_pylist() == [[10, 12, 13, 11, 12], []]
    assert pa_["pa_group"].to_pylist() == [[exposed] * 3 + [clicked, ordered], []]


def test_anchor_window_ends_strictly_before_as_of_and_starts_at_window():
    ev = events([(5, 9, 1, "click", at(-24 * 8)), (5, 9, 2, "click", at(-24 * 6)), (5, 9, 3, "click", at(0))])
    req = requests_table([("a", 1, 9, at(0)), ("b", 1, 9, at(1))])
    pa_ = preference_anchors(req, ev, AssemblyConfig(pa_window=dt.timedelta(days=7)))
    assert pa_["pa_item_id"].to_pylist() == [[2], [2, 3]]


def test_pre_aggregated_counts_give_the_same_anchors_for_a_refresh():
    rows = [(5, q, 10 + (k * 7) % 9, EVENT_TYPES[k % 4], at(-0.5 * k)) for k in range(60) for q in (1, 2)]
    rows += [(5, 1, 99, "click", at(0)), (5, 1, 98, "order", at(-24 * 8))]  # outside the window
    ev = events(rows)
    req = requests_table([("a", 1, 1, at(0)), ("b", 2, 2, at(0)), ("c", 3, 3, at(0))])
    config = AssemblyConfig(pa_top_k=3)
    halves = [anchor_counts(ev.slice(0, 50), at(0), config.pa_window),
              anchor_counts(ev.slice(50), at(0), config.pa_window)]  # summed across batches
    pre = preference_anchors_from(req, pa.concat_tables(halves), config)
    assert pre.equals(preference_anchors(req, ev, config))
    assert 99 not in sum(pre["pa_item_id"].to_pylist(), [])


def random_anchor_log(seed: int, n_events: int = 3000, n_requests: int = 300):
    """Few queries and items on a coarse clock: many keys share windows, counts tie."""
    rng = np.random.default_rng(seed)
    ev = events(
        [
            (1, int(q), int(i), str(k), at(float(h)))
            for q, i, k, h in zip(
                rng.integers(1, 4, n_events), rng.integers(100, 120, n_events),
                np.array(EVENT_TYPES)[rng.integers(0, 4, n_events)],
                rng.integers(-24 * 10, 24, n_events) / 2,
            )
        ]
    )
    req = requests_table(
        [(f"r{j}", 1, int(q), at(float(h))) for j, (q, h) in enumerate(
            zip(rng.integers(1, 5, n_requests), rng.integers(-24 * 10, 48, n_requests) / 2))]
    )
    return req, pa_events(ev)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("budget", [1, 2000, 10**9])  # one key per chunk .. one chunk
def test_chunked_anchors_equal_the_join_of_every_key_to_every_event(seed, budget):
    req, anchor_events = random_anchor_log(seed, n_requests=60)
    config = AssemblyConfig(pa_top_k=4, pa_window=dt.timedelta(days=2))
    got = preference_anchors_from(req, anchor_events, config, budget=budget)
    assert got.equals(reference.preference_anchors_from(req, anchor_events, config))
    assert pc.sum(pc.list_value_length(got["pa_item_id"])).as_py() > 0


def test_window_rows_counts_each_keys_anchor_events():
    req, anchor_events = random_anchor_log(2, n_events=400, n_requests=50)
    keys = pa.table({"query_id": req["query_id"], "as_of": req["as_of"],
                     "since": pc.subtract(req["as_of"], pa.scalar(dt.timedelta(days=1)))})
    expected = [
        sum(1 for e in anchor_events.to_pylist()
            if e["query_id"] == k["query_id"] and k["since"] <= e["ts"] < k["as_of"])
        for k in keys.to_pylist()
    ]
    assert window_rows(keys, anchor_events).tolist() == expected


def test_chunked_anchors_equal_the_reference_on_the_tiny_world(tiny_world):
    ev = pa_events(storage.read_table(str(tiny_world), "events"))
    req = candidate_requests(storage.read_table(str(tiny_world), "candidates"), None)
    config = AssemblyConfig()
    got = preference_anchors_from(req, ev, config, budget=20_000)
    assert got.equals(reference.preference_anchors_from(req, ev, config))
