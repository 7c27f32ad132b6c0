"""Item and query statistics come from the simulated log, strictly before each snapshot."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np

from onepiece.storage import read_table


def _con(root) -> duckdb.DuckDBPyConnection:  # noqa: ANN001
    con = duckdb.connect()
    for name in ("items", "queries", "events"):
        con.register(name, read_table(str(root), name))
    return con


def test_item_stats_are_recomputed_from_events_strictly_before_the_snapshot(small_generated):
    config = small_generated.config
    con = _con(small_generated.root)
    first_day = dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC)
    rows = con.execute("""
        with snap as (select * from items where event_timestamp > ?),
        counts as (
          select s.item_id, s.event_timestamp,
            count(*) filter (where e.event_type = 'impression'
                             and e.event_timestamp >= s.event_timestamp - interval 7 day) as imps,
            count(*) filter (where e.event_type = 'click'
                             and e.event_timestamp >= s.event_timestamp - interval 7 day) as clicks,
            count(*) filter (where e.event_type = 'order'
                             and e.event_timestamp >= s.event_timestamp - interval 7 day) as orders_7,
            count(*) filter (where e.event_type = 'order') as orders_30
          from snap s left join events e on e.item_id = s.item_id
            and e.event_timestamp < s.event_timestamp
            and e.event_timestamp >= s.event_timestamp - interval 30 day
          group by all)
        select s.ctr_7d, s.cvr_7d, s.sales_30d,
               case when imps > 0 then clicks / imps else 0 end,
               case when clicks > 0 then orders_7 / clicks else 0 end,
               orders_30
        from snap s join counts c using (item_id, event_timestamp)""", [first_day]).fetchall()
    got = np.array(rows, dtype=float)
    assert len(rows) == sum(small_generated.truth("items")["known"].to_pylist()) * config.days
    np.testing.assert_allclose(got[:, 0], got[:, 3], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[:, 1], got[:, 4], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[:, 2], got[:, 5])
    # The statistics move from day to day and are not all zero.
    assert got[:, 0].max() > 0 and got[:, 2].max() > 0
    per_day = con.execute("""select count(distinct ctr_7d) from items group by event_timestamp""").fetchall()
    assert min(n for (n,) in per_day) > 10


def test_query_popularity_counts_requests_of_the_previous_seven_days(small_generated):
    config = small_generated.config
    con = _con(small_generated.root)
    first_day = dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC)
    rows = con.execute("""
        select q.popularity_7d, count(distinct e.request_id)
        from queries q left join events e on e.query_id = q.query_id
          and e.event_timestamp < q.event_timestamp
          and e.event_timestamp >= q.event_timestamp - interval 7 day
        where q.event_timestamp > ?
        group by q.query_id, q.event_timestamp, q.popularity_7d""", [first_day]).fetchall()
    got = np.array(rows, dtype=float)
    assert len(rows) == config.n_queries * config.days
    np.testing.assert_array_equal(got[:, 0], got[:, 1])
    assert got[:, 0].sum() > 0


def test_the_prior_snapshot_precedes_every_event(small_generated):
    con = _con(small_generated.root)
    first_event = con.execute("select min(event_timestamp) from events").fetchone()[0]
    prior = con.execute("select min(event_timestamp) from items").fetchone()[0]
    assert prior < first_event
    # The prior is informative (derived from hidden quality), not a constant.
    spread = con.execute("select stddev(ctr_7d) from items where event_timestamp = ?", [prior]).fetchone()[0]
    assert spread > 0
