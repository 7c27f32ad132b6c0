"""PA: per query, top-k exposed / clicked / ordered items over a window before as_of."""

import datetime as dt

import pyarrow as pa
from builders import at, events, requests_table

from onepiece.assembly import AssemblyConfig
from onepiece.assembly.anchors import anchor_counts, preference_anchors, preference_anchors_from
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
