"""The world writes valid, deterministic tables with a sane funnel, atomically."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import duckdb
import pyarrow.compute as pc
import pytest

from onepiece.contract import INPUT_TABLES
from onepiece.errors import UserError
from onepiece.storage import list_days, read_table
from onepiece.world import WorldConfig, generate_world


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tables(root: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name in INPUT_TABLES:
        con.register(name, read_table(str(root), name))
    return con


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path, tiny_generated):
    again = tmp_path / "again"
    generate_world(WorldConfig.tiny(0), again)
    first = _files(tiny_generated.root)
    assert _files(again) == first
    other = tmp_path / "other"
    generate_world(WorldConfig.tiny(1), other)
    second = _files(other)
    assert second.keys() == first.keys()
    changed = [name for name in first if first[name] != second[name]]
    assert "events/dt=2026-11-01/part-0.parquet" in changed
    assert "items/part-0.parquet" in changed


def test_every_table_passes_the_validator_and_partitions_cover_the_days(small_generated):
    root, config = str(small_generated.root), small_generated.config
    for name in INPUT_TABLES:
        assert read_table(root, name).num_rows > 0, name
    days = [config.start_date + dt.timedelta(days=d) for d in range(config.days + 1)]  # + the live day
    warmup = [config.start_date - dt.timedelta(days=d) for d in range(config.warmup_days, 0, -1)]
    assert config.warmup_days == 7
    assert list_days(root, "events") == warmup + days  # the log starts before the candidates
    assert list_days(root, "candidates") == days
    assert small_generated.summary.warmup_days == [d.isoformat() for d in warmup]


def test_summary_and_world_json_match_the_tables(small_generated):
    con = _tables(small_generated.root)
    summary = small_generated.summary
    counts = dict(con.execute("select event_type, count(*) from events group by 1").fetchall())
    assert counts == summary.events
    assert con.execute("select count(*) from candidates").fetchone()[0] == summary.candidates
    requests = con.execute("select count(distinct request_id) from events").fetchone()[0]
    assert requests == summary.warmup_requests + summary.requests + summary.live_requests
    assert summary.warmup_requests > 0
    document = json.loads((small_generated.root / "world.json").read_text())
    assert document["summary"]["events"] == summary.events
    assert document["config"] == small_generated.config.to_json()
    assert document["truth"]["biases"]["click"] != 0


def test_funnel_is_sane(small_generated):
    con = _tables(small_generated.root)
    n = dict(con.execute("select event_type, count(*) from events group by 1").fetchall())
    assert n["impression"] > n["click"] > n["add_to_cart"] > n["order"] > 0
    assert 0.02 <= n["click"] / n["impression"] <= 0.10
    assert 0.05 <= n["order"] / n["click"] <= 0.30

    # Each later step of the funnel follows the step before it for the same (request, item).
    for step, before in (("click", "impression"), ("add_to_cart", "click"), ("order", "add_to_cart")):
        orphans = con.execute(f"""
            select count(*) from events a where a.event_type = '{step}' and not exists (
              select 1 from events b where b.event_type = '{before}' and b.request_id = a.request_id
                and b.item_id = a.item_id and b.event_timestamp <= a.event_timestamp)""").fetchone()[0]
        assert orphans == 0, step

    k = small_generated.config.impressions_per_request
    bad_positions = con.execute(f"""
        select count(*) from events where (event_type = 'impression') != (position is not null)
          or position < 1 or position > {k}""").fetchone()[0]
    assert bad_positions == 0
    per_request = con.execute("""
        select count(*) = count(distinct position) and max(position) = count(*) as ok
        from events where event_type = 'impression' group by request_id""").fetchall()
    assert all(ok for (ok,) in per_request)

    # Impressions of days with candidates are candidates of their own request, shown at or
    # after the request time (the warm-up days' log has no candidates).
    day1 = dt.datetime.combine(small_generated.config.start_date, dt.time(), tzinfo=dt.UTC)
    not_candidates = con.execute("""
        select count(*) from events e left join candidates c using (request_id, item_id)
        where e.event_type = 'impression' and e.event_timestamp >= ? and (c.item_id is null
          or e.event_timestamp < c.request_timestamp
          or e.user_id != c.user_id or e.query_id != c.query_id)""", [day1]).fetchone()[0]
    assert not_candidates == 0


def test_candidates_are_distinct_and_the_live_day_is_logged(small_generated):
    config = small_generated.config
    root = str(small_generated.root)
    live = config.start_date + dt.timedelta(days=config.days)
    cand = read_table(root, "candidates", days=[live])
    per_request = cand.group_by("request_id").aggregate([("item_id", "count_distinct"), ("item_id", "count")])
    assert pc.all(pc.equal(per_request["item_id_count"], config.candidates_per_request)).as_py()
    assert pc.all(pc.equal(per_request["item_id_count_distinct"], config.candidates_per_request)).as_py()
    assert set(pc.unique(cand["recall_source"]).to_pylist()) == {"intent", "noise"}
    assert per_request.num_rows == small_generated.summary.live_requests
    # The live day's log holds exactly its own requests (an hourly refresh reads it before T).
    assert list_days(root, "events")[-1] == live
    impressions = read_table(root, "events", days=[live]).filter(pc.equal(pc.field("event_type"), "impression"))
    assert set(pc.unique(impressions["request_id"]).to_pylist()) <= set(per_request["request_id"].to_pylist())
    assert pc.count_distinct(impressions["request_id"]).as_py() == small_generated.summary.live_requests


def test_some_ids_in_candidates_have_no_feature_rows(small_generated):
    con = _tables(small_generated.root)
    unknown_items = con.execute("""select count(distinct item_id) from candidates
        where item_id not in (select item_id from items)""").fetchone()[0]
    unknown_users = con.execute("""select count(distinct user_id) from candidates
        where user_id not in (select user_id from users)""").fetchone()[0]
    assert unknown_items == small_generated.summary.unknown_items > 0
    assert unknown_users == small_generated.summary.unknown_users > 0


def test_snapshots_are_daily_and_stamped_at_midnight(small_generated):
    config = small_generated.config
    con = _tables(small_generated.root)
    stamps = [row[0] for row in con.execute(
        "select distinct event_timestamp from items order by 1").fetchall()]
    midnight = lambda d: dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC)  # noqa: E731
    log_start = config.start_date - dt.timedelta(days=config.warmup_days)
    # The prior the day before the log starts, then one per logged day after the first.
    expected = [midnight(log_start - dt.timedelta(days=1))] + [
        midnight(log_start + dt.timedelta(days=d)) for d in range(1, config.warmup_days + config.days + 1)]
    assert [s.astimezone(dt.UTC) for s in stamps] == expected
    per_stamp = con.execute("select count(*), count(distinct item_id) from items group by event_timestamp").fetchall()
    known = sum(small_generated.truth("items")["known"].to_pylist())
    assert known < config.n_items
    assert all(rows == distinct == known for rows, distinct in per_stamp)
    q_stamps = con.execute("select count(distinct event_timestamp) from queries").fetchone()[0]
    assert q_stamps == len(expected)
    # Users: one profile row each before the log; the few later rows are profile changes.
    first = con.execute("select count(*), count(distinct user_id) from users where event_timestamp < ?",
                    [midnight(log_start)]).fetchone()
    known_users = sum(small_generated.truth("users")["known"].to_pylist())
    assert first[0] == first[1] == known_users < config.n_users
    later = con.execute("select count(*) from users where event_timestamp >= ?",
                    [midnight(config.start_date)]).fetchone()[0]
    assert 0 < later < first[0]


def test_a_failed_run_leaves_the_previous_world_untouched(tmp_path):
    out = tmp_path / "data"
    config = dataclasses.replace(WorldConfig.tiny(5), days=2)
    generate_world(config, out)
    before = _files(out)

    def explode(step: str, done: int, total: int) -> None:
        if done == 2:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_world(WorldConfig.tiny(6), out, progress=explode)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging leftovers


def test_a_crawler_holds_its_share_of_requests_and_is_off_by_default(tmp_path, tiny_generated):
    assert "crawler_share" not in json.loads((tiny_generated.root / "world.json").read_text())["config"]
    config = dataclasses.replace(WorldConfig.tiny(0), crawler_share=0.8)
    root = tmp_path / "crawler"
    generate_world(config, root)
    events = read_table(str(root), "events")
    counts = pc.value_counts(events["user_id"]).to_pylist()
    top = max(c["counts"] for c in counts)
    assert 0.7 < top / events.num_rows < 0.9  # about its share of requests, so of events
    document = json.loads((root / "world.json").read_text())
    assert WorldConfig.from_json(document["config"]) == config
    with pytest.raises(UserError, match="crawler_share"):
        WorldConfig(crawler_share=1.0)
