"""IH: the user's last N click/add_to_cart/order events strictly before as_of."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import reference
from builders import T0, at, events, requests_table

from onepiece import storage
from onepiece.assembly import AssemblyConfig, contexts
from onepiece.assembly.history import interaction_history, last_ih_events
from onepiece.assembly.requests import candidate_requests
from onepiece.contract import EVENT_TYPE_CODE


def test_history_is_last_n_ih_events_before_as_of_oldest_first():
    ev = events(
        [
            (1, 9, 100, "click", at(-5)),
            (1, 9, 101, "impression", at(-4)),  # impressions never enter IH
            (1, 9, 102, "add_to_cart", at(-3)),
            (1, 9, 103, "order", at(-2)),
            (1, 9, 104, "click", at(0)),  # exactly at as_of: not visible
            (1, 9, 105, "click", at(1)),  # after as_of
            (2, 9, 200, "click", at(-1)),  # another user
        ]
    )
    req = requests_table([("a", 1, 9, at(0)), ("b", 2, 9, at(0)), ("c", 3, 9, at(0))])
    ih = interaction_history(req, ev, AssemblyConfig(ih_length=2))
    assert ih["ih_item_id"].to_pylist() == [[102, 103], [200], []]
    assert ih["ih_event_type"].to_pylist()[0] == [
        EVENT_TYPE_CODE["add_to_cart"],
        EVENT_TYPE_CODE["order"],
    ]
    assert ih["ih_ts"].to_pylist()[0] == [at(-3), at(-2)]


def test_history_respects_its_window_and_each_request_time():
    ev = events([(1, 9, 100, "click", at(-24 * 31)), (1, 9, 101, "click", at(-1)), (1, 9, 102, "click", at(5))])
    req = requests_table([("a", 1, 9, at(0)), ("b", 1, 9, at(6))])
    ih = interaction_history(req, ev, AssemblyConfig(ih_window=dt.timedelta(days=30)))
    assert ih["ih_item_id"].to_pylist() == [[101], [101, 102]]


def test_history_ties_on_time_are_ordered_by_type_then_item():
    ev = events([(1, 9, 7, "order", at(-1)), (1, 9, 8, "click", at(-1)), (1, 9, 6, "click", at(-1))])
    req = requests_table([("a", 1, 9, at(0))])
    forward = interaction_history(req, ev, AssemblyConfig())
    backward = interaction_history(req, ev.take([2, 1, 0]), AssemblyConfig())
    assert forward.equals(backward)
    assert forward["ih_item_id"].to_pylist() == [[6, 8, 7]]


def random_log(seed: int, n_events: int = 3000, n_requests: int = 400):
    """Events and requests of few users on a coarse clock, so ties on time are common."""
    rng = np.random.default_rng(seed)
    kinds = np.array(["impression", "click", "add_to_cart", "order"])
    ev = events(
        [
            (int(u), 9, int(i), str(k), at(float(h)))
            for u, i, k, h in zip(
                rng.integers(1, 6, n_events), rng.integers(100, 110, n_events),
                kinds[rng.integers(0, 4, n_events)], rng.integers(-24 * 40, 24, n_events) / 4,
            )
        ]
    )
    req = requests_table(
        [(f"r{j}", int(u), 9, at(float(h))) for j, (u, h) in enumerate(
            zip(rng.integers(1, 8, n_requests), rng.integers(-24 * 40, 48, n_requests) / 4))]
    )
    return req, ev


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("length,days", [(1, 30), (5, 30), (100, 30), (7, 2)])
def test_bounded_history_equals_the_join_to_every_event(seed, length, days):
    req, ev = random_log(seed)
    config = AssemblyConfig(ih_length=length, ih_window=dt.timedelta(days=days))
    assert interaction_history(req, ev, config).equals(reference.interaction_history(req, ev, config))


def test_bounded_history_equals_the_reference_on_the_tiny_world(tiny_world):
    ev = storage.read_table(str(tiny_world), "events")
    cands = storage.read_table(str(tiny_world), "candidates")
    req = candidate_requests(cands, None)
    for config in (AssemblyConfig(), AssemblyConfig(ih_length=3, ih_window=dt.timedelta(days=1))):
        got = interaction_history(req, ev, config)
        assert got.equals(reference.interaction_history(req, ev, config))
    assert pc.sum(pc.list_value_length(got["ih_item_id"])).as_py() > 0


@pytest.mark.parametrize("length", [1, 5, 100])
def test_a_refresh_capped_per_batch_before_the_shuffle_has_the_same_history(length):
    _, ev = random_log(3)
    ev = contexts.events_before(ev, T0, dt.timedelta(days=30))
    req = requests_table([(f"r{u}", u, 9, T0) for u in range(1, 8)])
    config = AssemblyConfig(ih_length=length)
    batches = [ev.slice(0, 1000), ev.slice(1000, 7), ev.slice(1007)]
    capped = pa.concat_tables([last_ih_events(b, length) for b in batches])
    assert capped.num_rows <= 3 * 5 * length < ev.num_rows or length == 100
    assert interaction_history(req, capped, config).equals(interaction_history(req, ev, config))
