"""IH: the user's last N click/add_to_cart/order events strictly before as_of."""

import datetime as dt

from builders import at, events, requests_table

from onepiece.assembly import AssemblyConfig
from onepiece.assembly.history import interaction_history
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
