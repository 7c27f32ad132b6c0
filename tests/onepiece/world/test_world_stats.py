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


def _prior_stamp(con: duckdb.DuckDBPyConnection) -> dt.datetime:
    return con.execute("select min(event_timestamp) from items").fetchone()[0]


def test_item_stats_are_recomputed_from_events_strictly_before_the_snapshot(small_generated):
    config = small_generated.config
    con = _con(small_generated.root)
    prior = _prior_stamp(con)  # every later snapshot, warm-up days' too, comes from the log
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
        from snap s join counts c using (item_id, event_timestamp)""", [prior]).fetchall()
    got = np.array(rows, dtype=float)
    known = sum(small_generated.truth("items")["known"].to_pylist())
    assert len(rows) == known * (config.warmup_days + config.days)
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
    rows = con.execute("""
        select q.popularity_7d, count(distinct e.request_id)
        from queries q left join events e on e.query_id = q.query_id
          and e.event_timestamp < q.event_timestamp
          and e.event_timestamp >= q.event_timestamp - interval 7 day
        where q.event_timestamp > ?
        group by q.query_id, q.event_timestamp, q.popularity_7d""", [_prior_stamp(con)]).fetchall()
    got = np.array(rows, dtype=float)
    assert len(rows) == config.n_queries * (config.warmup_days + config.days)
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


def _candidate_stats_by_day(root) -> np.ndarray:  # noqa: ANN001
    """[day, mean ctr_7d, mean cvr_7d] of the snapshot each day's candidates read."""
    con = _con(root)
    con.register("candidates", read_table(str(root), "candidates"))
    return np.array(con.execute("""
        select cast(c.request_timestamp as date) as day, avg(i.ctr_7d), avg(i.cvr_7d)
        from candidates c join items i on i.item_id = c.item_id
          and i.event_timestamp = (select max(event_timestamp) from items
                                   where event_timestamp <= c.request_timestamp)
        group by 1 order by 1""").fetchall(), dtype=object)


def test_day_one_reads_statistics_like_every_later_day(small_generated):
    """The warm-up log makes day 1 ordinary: without it, day 1 read a prior whose mean CTR
    over the candidates was about 3x the logged days' (a prior knows no unshown items)."""
    stats = _candidate_stats_by_day(small_generated.root)
    ctr, cvr = stats[:, 1].astype(float), stats[:, 2].astype(float)
    assert len(stats) == small_generated.config.days + 1
    for name, values in (("ctr_7d", ctr), ("cvr_7d", cvr)):
        later = values[1:].mean()
        assert 0.75 * later <= values[0] <= 1.25 * later, (name, values)
