"""The hidden mechanics leave the traces the model is meant to exploit."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from onepiece.storage import read_table
from onepiece.world.traffic import Mechanics, set_effects


@pytest.fixture(scope="module")
def con(small_generated) -> duckdb.DuckDBPyConnection:
    """Impressions joined with the hidden state, one row each, with a click flag."""
    g = small_generated
    con = duckdb.connect()
    con.register("events", read_table(str(g.root), "events"))
    con.register("candidates", read_table(str(g.root), "candidates"))
    con.register("users_profile", read_table(str(g.root), "users"))
    for name in ("items", "users", "queries", "query_intents"):
        con.register(f"t_{name}", g.truth(name))
    con.execute("""
        create table imp as
        select e.request_id, e.user_id, e.query_id, e.item_id, e.position, e.event_timestamp,
               ti.cluster, ti.category_id, ti.base_price,
               list_dot_product(tu.taste::float[], ti.vec::float[]) as taste,
               tu.price_sensitivity * tq.ps_mult as ps,
               exists(select 1 from t_query_intents qi
                      where qi.query_id = e.query_id and qi.category_id = ti.category_id) as in_intent,
               c.item_id is not null as clicked
        from events e
        join t_items ti using (item_id)
        join t_users tu using (user_id)
        join t_queries tq using (query_id)
        left join (select request_id, item_id from events where event_type = 'click') c
          using (request_id, item_id)
        where e.event_type = 'impression'""")
    return con


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):  # noqa: ANN202
    return con.execute(sql, params or []).fetchone()


def test_clicks_follow_the_users_persistent_taste(con):
    clicked, skipped = _one(con, """select avg(taste) filter (where clicked),
                                           avg(taste) filter (where not clicked) from imp""")
    assert clicked > skipped + 0.05


def test_clicks_concentrate_on_the_querys_intent(con):
    clicked, shown = _one(con, "select avg(in_intent::int) filter (where clicked), avg(in_intent::int) from imp")
    candidates = _one(con, """select avg(exists(select 1 from t_query_intents qi join t_items ti
        on qi.category_id = ti.category_id where qi.query_id = c.query_id and ti.item_id = c.item_id)::int)
        from candidates c""")[0]
    assert clicked > shown > candidates


def test_items_clicked_before_for_the_same_query_are_clicked_more_preference_anchors(con):
    anchored, other = _one(con, """
        with past as (select query_id, item_id, min(event_timestamp) as first_click
                      from imp where clicked group by all)
        select avg(clicked::int) filter (where p.item_id is not null),
               avg(clicked::int) filter (where p.item_id is null)
        from imp i left join past p on p.query_id = i.query_id and p.item_id = i.item_id
          and p.first_click < date_trunc('day', i.event_timestamp)
        where i.event_timestamp >= (select min(date_trunc('day', event_timestamp)) + interval 1 day from imp)""")
    assert anchored > 1.5 * other


def test_price_sensitive_requests_shy_away_from_expensive_items(con):
    # For the same item at the same position (so product and page slot are held fixed),
    # a more price-sensitive request clicks it less when it is dear for its category and
    # more when it is cheap: click ~ -(ps * relative price), within (item, position).
    corr = _one(con, """
        with r as (select *, ln(base_price) - median(ln(base_price)) over (partition by category_id) as rel
                   from imp),
        x as (select clicked::int - avg(clicked::int) over (partition by item_id, position) as y,
                     rel * (ps - avg(ps) over (partition by item_id, position)) as x from r)
        select corr(x, y) from x""")[0]
    assert corr < -0.02


def test_near_duplicates_share_candidate_sets_and_hurt_each_other_on_the_page(con):
    with_pairs = _one(con, """select avg((count(*) > count(distinct ti.cluster))::int) over ()
        from candidates c join t_items ti using (item_id) group by c.request_id limit 1""")[0]
    assert with_pairs > 0.5
    # At the same position, an item shown below its own near-duplicate gets fewer clicks.
    diff = _one(con, """
        with d as (select i.*, exists(select 1 from imp j where j.request_id = i.request_id
                     and j.cluster = i.cluster and j.position < i.position) as dup_above from imp i),
        per as (select position, count(*) filter (where dup_above) as n,
                       avg(clicked::int) filter (where dup_above) as a,
                       avg(clicked::int) filter (where not dup_above) as b from d group by 1)
        select sum(n * (a - b)) / sum(n) from per where n > 0 and b is not null""")[0]
    assert diff < -0.003


def test_the_same_item_is_clicked_more_on_pages_where_it_is_relatively_cheap(con):
    corr = _one(con, """
        with d as (select *, ln(base_price) - avg(ln(base_price)) over (partition by request_id) as relp from imp),
        x as (select clicked::int - avg(clicked::int) over (partition by item_id, position) as c,
                     relp - avg(relp) over (partition by item_id, position) as r from d)
        select corr(c, r) from x""")[0]
    assert corr < -0.01


def test_profile_fields_carry_taste_signal(con):
    same_profile, any_pair = _one(con, """
        with u as (select p.user_id, p.age_bucket, p.gender, p.region_id, t.taste
                   from users_profile p join t_users t using (user_id)
                   qualify row_number() over (partition by p.user_id order by p.event_timestamp) = 1),
        pairs as (select a.age_bucket = b.age_bucket and a.region_id = b.region_id as same,
                         list_dot_product(a.taste::float[], b.taste::float[]) as cos
                  from u a join u b on a.user_id < b.user_id)
        select avg(cos) filter (where same), avg(cos) from pairs""")
    assert same_profile > any_pair + 0.1


def test_set_effects_reward_cheap_items_and_punish_duplicates_below_their_twin():
    mech = Mechanics()
    log_price = np.log(np.array([[10.0, 10.0, 40.0, 10.0]]))
    cluster = np.array([[1, 1, 2, 3]])
    effect = set_effects(log_price, cluster, mech)
    assert effect[0, 0] > 0 > effect[0, 2]  # cheaper than the page's mean helps
    assert effect[0, 1] == pytest.approx(effect[0, 0] - mech.redundancy)  # twin shown above
    assert effect[0, 3] == pytest.approx(effect[0, 0])  # same price, no twin above
    # Changing the rest of the page changes an item's utility (candidates interact).
    cheaper_page = set_effects(np.log(np.array([[10.0, 10.0, 5.0, 10.0]])), cluster, mech)
    assert cheaper_page[0, 0] < effect[0, 0]
