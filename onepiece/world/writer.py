"""Turn the simulated arrays into the contract's tables (conformed, deterministic order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from onepiece.contract import EVENT_TYPE_CODE, EVENT_TYPES, TIMESTAMP, conform
from onepiece.storage import write_parquet
from onepiece.world.entities import COLORS, World
from onepiece.world.stats import Snapshots
from onepiece.world.traffic import US_PER_DAY, US_PER_S, DayTraffic

RECALL_SOURCES = pa.array(["intent", "noise"])


def write_table(table: pa.Table, name: str, root: Path, relative: str, day_index: int | None,
                world: World) -> Path:
    """Conform ``table`` to the contract (the world must satisfy it) and write one file."""
    path = root / relative
    day = world.config.day(day_index) if day_index is not None else None
    write_parquet(conform(table, name, f"world:{relative}", day), path)
    return path


def _timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=TIMESTAMP)


def _day_start_us(world: World, day: int) -> int:
    return int(np.datetime64(world.config.day(day), "us").astype(np.int64))


def _snapshot_day(world: World, snapshot: np.ndarray) -> np.ndarray:
    """World day of each snapshot: snapshot s >= 1 follows the s-th logged day (the first
    logged day is the first warm-up day); s = 0 is the prior, the day before the log."""
    return np.asarray(snapshot) - world.config.warmup_days


def _snapshot_stamps(world: World, count: int) -> np.ndarray:
    """[S] microseconds: snapshot s at 00:00 of its day; the prior the day before the log."""
    stamps = np.array([_day_start_us(world, int(d)) for d in _snapshot_day(world, np.arange(count))],
                      dtype=np.int64)
    stamps[0] -= US_PER_DAY  # the prior: the day before the first logged day
    return stamps


def request_ids(world: World, day: int, count: int) -> pa.Array:
    stamp = world.config.day(day).strftime("%Y%m%d")
    return pa.array([f"r{stamp}-{i:06d}" for i in range(count)])  # one per request


def candidates_table(world: World, day: int, traffic: DayTraffic) -> pa.Table:
    r, c = traffic.candidates.shape
    req = np.repeat(np.arange(r), c)
    return pa.table({
        "request_id": request_ids(world, day, r).take(pa.array(req)),
        "user_id": world.users.user_id[traffic.user][req],
        "query_id": world.queries.query_id[traffic.query][req],
        "request_timestamp": _timestamps(traffic.ts[req]),
        "item_id": world.catalog.item_id[traffic.candidates.ravel()],
        "recall_source": pa.DictionaryArray.from_arrays(
            pa.array(traffic.from_noise.ravel().astype(np.int8)), RECALL_SOURCES),
    })


def events_table(world: World, day: int, traffic: DayTraffic) -> pa.Table:
    """The day's log: impressions with positions, then clicks, carts and orders."""
    funnel = traffic.funnel
    r, k = funnel.shown.shape
    rows = np.broadcast_to(np.arange(r)[:, None], (r, k))
    position = np.broadcast_to(np.arange(1, k + 1)[None, :], (r, k))
    parts = [(np.ones((r, k), dtype=bool), "impression", np.broadcast_to(traffic.ts[:, None], (r, k))),
             (funnel.click, "click", funnel.click_ts),
             (funnel.add_to_cart, "add_to_cart", funnel.add_to_cart_ts),
             (funnel.order, "order", funnel.order_ts)]
    req = np.concatenate([rows[m] for m, _, _ in parts])
    item = np.concatenate([funnel.shown[m] for m, _, _ in parts])
    pos = np.concatenate([np.where(name == "impression", position[m], -1) for m, name, _ in parts])
    code = np.concatenate([np.full(m.sum(), EVENT_TYPE_CODE[name], np.int8) for m, name, _ in parts])
    ts = np.concatenate([t[m] for m, _, t in parts])
    order = np.lexsort((pos, code, req, ts))  # by time, then request, type, position
    req, item, pos, code, ts = req[order], item[order], pos[order], code[order], ts[order]
    return pa.table({
        "request_id": request_ids(world, day, r).take(pa.array(req)),
        "user_id": world.users.user_id[traffic.user[req]],
        "query_id": world.queries.query_id[traffic.query[req]],
        "item_id": world.catalog.item_id[item],
        "event_type": pa.DictionaryArray.from_arrays(pa.array(code), pa.array(EVENT_TYPES)),
        "position": pa.array(pos.astype(np.int32), mask=pos < 0),
        "event_timestamp": _timestamps(ts),
    })


def items_table(world: World, snaps: Snapshots, prices: np.ndarray) -> pa.Table:
    """One row per known item per snapshot, stamped at 00:00 of the day it serves
    (the pre-history prior: the day before the first logged day)."""
    cat = world.catalog
    known = np.flatnonzero(cat.known)
    n_snap = snaps.ctr_7d.shape[0]
    stamp = _snapshot_stamps(world, n_snap)
    snap = np.repeat(np.arange(n_snap), known.size)
    item = np.tile(known, n_snap)
    return pa.table({
        "item_id": cat.item_id[item],
        "shop_id": cat.shop_id[item],
        "category_id": cat.category[item] + 1,
        # The price in force on the snapshot's day (warm-up days and the prior: day 1's).
        "price": prices[np.clip(_snapshot_day(world, snap), 0, prices.shape[0] - 1), item],
        "ctr_7d": snaps.ctr_7d[snap, item],
        "cvr_7d": snaps.cvr_7d[snap, item],
        "sales_30d": snaps.sales_30d[snap, item],
        "event_timestamp": _timestamps(stamp[snap]),
    })


def queries_table(world: World, snaps: Snapshots) -> pa.Table:
    q = world.queries
    n_snap = snaps.popularity_7d.shape[0]
    stamp = _snapshot_stamps(world, n_snap)
    snap = np.repeat(np.arange(n_snap), q.query_id.size)
    query = np.tile(np.arange(q.query_id.size), n_snap)
    return pa.table({
        "query_id": q.query_id[query],
        "query_text": pa.array(q.text).take(pa.array(query)),
        "popularity_7d": snaps.popularity_7d[snap, query],
        "event_timestamp": _timestamps(stamp[snap]),
    })


def users_table(world: World) -> pa.Table:
    """A profile row per known user before the log starts; a few users move region mid-world."""
    cfg, u = world.config, world.users
    rng = np.random.default_rng([cfg.seed, 4])
    known = np.flatnonzero(u.known)
    movers = known[rng.random(known.size) < cfg.profile_update_share]
    move_day = rng.integers(1, cfg.days, size=movers.size)
    move_us = (np.array([_day_start_us(world, int(d)) for d in move_day], dtype=np.int64)
               + rng.integers(0, 86_400 * US_PER_S, size=movers.size))
    start = _day_start_us(world, -cfg.warmup_days) - US_PER_DAY
    rows = np.concatenate([known, movers])
    region = np.concatenate([u.region_id[known], u.region_id[movers] % cfg.n_regions + 1])
    ts = np.concatenate([np.full(known.size, start), move_us])
    order = np.lexsort((rows, ts))
    rows, region, ts = rows[order], region[order], ts[order]
    return pa.table({
        "user_id": u.user_id[rows],
        "age_bucket": u.age_bucket[rows],
        "gender": u.gender[rows],
        "region_id": region,
        "event_timestamp": _timestamps(ts),
    })


def write_truth(world: World, root: Path) -> None:
    """The hidden state, under ``_truth/`` (ignored by read_table), for tests and analysis."""
    cat, u, q = world.catalog, world.users, world.queries
    d = world.config.latent_dim

    def vectors(x: np.ndarray) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float32).ravel()), d)

    write_parquet(pa.table({
        "item_id": cat.item_id, "cluster": cat.cluster, "category_id": cat.category + 1,
        "quality": cat.quality, "base_price": cat.base_price,
        "color": pa.array(COLORS).take(pa.array(cat.color)),
        "known": cat.known, "vec": vectors(cat.vec),
    }), root / "_truth" / "items.parquet")
    write_parquet(pa.table({
        "user_id": u.user_id, "segment": u.segment, "price_sensitivity": u.price_sensitivity,
        "activity": u.activity, "known": u.known, "taste": vectors(u.taste),
    }), root / "_truth" / "users.parquet")
    rows, cols = np.nonzero(q.intent)
    write_parquet(pa.table({
        "query_id": q.query_id[rows], "category_id": cols + 1,
    }), root / "_truth" / "query_intents.parquet")
    write_parquet(pa.table({
        "query_id": q.query_id, "ps_mult": q.ps_mult, "quality_mult": q.quality_mult,
        "color": pa.array(COLORS).take(pa.array(q.color, mask=q.color < 0)),
        "intent_vec": vectors(q.intent_vec),
    }), root / "_truth" / "queries.parquet")
    valid = np.broadcast_to(q.pool >= 0, q.pool_logpop.shape)
    day_idx, q_idx, s_idx = np.nonzero(valid)
    write_parquet(pa.table({
        "day": pa.array([world.config.day(int(x)) for x in range(q.pool_logpop.shape[0])]).take(
            pa.array(day_idx)),
        "query_id": q.query_id[q_idx],
        "item_id": cat.item_id[q.pool[q_idx, s_idx]],
        "log_popularity": q.pool_logpop[day_idx, q_idx, s_idx],
    }), root / "_truth" / "query_item_popularity.parquet")
