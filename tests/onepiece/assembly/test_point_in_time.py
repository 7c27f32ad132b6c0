"""Property: nothing stamped at or after a request's as_of reaches its context.

Events and feature snapshots injected at or after T (the refresh time, or for training
the latest request time) must leave every context row unchanged.
"""

import datetime as dt

import pyarrow as pa
from builders import T0, candidates, events, item_snapshots, query_snapshots, user_snapshots
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onepiece.assembly import AssemblyConfig
from onepiece.assembly.contexts import assemble_local
from onepiece.assembly.side import SnapshotSideSource
from onepiece.contract import EVENT_TYPES

CONFIG = AssemblyConfig(ih_length=5, pa_top_k=2)
REQUESTS = [("r1", 1, 1, T0, [1, 2, 3]), ("r2", 2, 2, T0 + dt.timedelta(minutes=30), [2, 4])]
LAST_AS_OF = T0 + dt.timedelta(minutes=30)


def event_rows(max_minutes: int, min_minutes: int):
    return st.lists(
        st.tuples(
            st.integers(1, 3), st.integers(1, 2), st.integers(1, 6), st.sampled_from(EVENT_TYPES),
            st.integers(min_minutes, max_minutes),
        ),
        max_size=25,
    )


def stamp(rows, base):
    return [(u, q, i, k, base + dt.timedelta(minutes=m)) for u, q, i, k, m in rows]


def item_rows(min_minutes: int, max_minutes: int):
    return st.lists(st.tuples(st.integers(1, 7), st.floats(0, 100), st.integers(min_minutes, max_minutes)), max_size=8)


def source(items, future_items, users_future: bool):
    item_table = item_snapshots([(i, p, T0 + dt.timedelta(minutes=m)) for i, p, m in items + future_items])
    user_rows = [(1, 2, T0 - dt.timedelta(days=1))] + ([(1, 9, T0), (2, 9, LAST_AS_OF)] if users_future else [])
    query_rows = [(1, 0.3, T0 - dt.timedelta(hours=1))] + ([(2, 0.9, LAST_AS_OF)] if users_future else [])
    return SnapshotSideSource(item_table, user_snapshots(user_rows), query_snapshots(query_rows))


def run(ev, side, as_of):
    window = (T0, T0 + dt.timedelta(hours=1))
    table, _ = assemble_local(candidates(REQUESTS), events(ev), side, CONFIG, as_of=as_of, window=window)
    return table


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    past=event_rows(-1, -60 * 24 * 10),
    future=event_rows(600, 0),
    items=item_rows(-60 * 24 * 5, -1),
    future_items=item_rows(0, 600),
)
def test_refresh_contexts_ignore_everything_at_or_after_T(past, future, items, future_items):
    clean = run(stamp(past, T0), source(items, [], False), T0)
    dirty = run(stamp(past, T0) + stamp(future, T0), source(items, future_items, True), T0)
    assert dirty.equals(clean)
    ts = pa.compute.list_flatten(dirty["ih_ts"]).to_pylist()
    assert all(t < T0 for t in ts)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(past=event_rows(-1, -60 * 24 * 10), future=event_rows(600, 0), future_items=item_rows(0, 600))
def test_training_contexts_ignore_everything_at_or_after_their_request_time(past, future, future_items):
    # A click per request so both rows are kept; injected events use other request ids.
    labels = [(1, 1, 2, "click", T0 + dt.timedelta(minutes=1), "r1"),
              (2, 2, 4, "click", LAST_AS_OF + dt.timedelta(minutes=1), "r2")]
    base = stamp(past, T0) + labels
    clean = run(base, source([], [], False), None)
    shifted = [(u, q, i, k, t + (LAST_AS_OF - T0)) for u, q, i, k, t in stamp(future, T0)]
    late_items = [(i, p, m + 30) for i, p, m in future_items]  # at or after LAST_AS_OF
    dirty = run(base + shifted, source([], late_items, True), None)
    assert clean.num_rows == 2
    assert dirty.equals(clean)
