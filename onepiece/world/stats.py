"""Daily statistics computed from the simulated log, strictly from the past.

The snapshot stamped at 00:00 of day d uses only the events of days before d (every
event lies inside its own day), so a feature row never sees its own day's traffic:
- ``ctr_7d`` = clicks / impressions over days [d-7, d)   (0 when never shown)
- ``cvr_7d`` = orders / clicks over days [d-7, d)        (0 when never clicked)
- ``sales_30d`` = orders over days [d-30, d)
- query ``popularity_7d`` = requests of the query over days [d-7, d)
The log starts ``warmup_days`` before day 1 (days with events but no candidates), so the
snapshots that day 1 onwards read come from simulated traffic like every later one. The
very first snapshot, stamped the day before the log, is a prior driven by the same hidden
quality and popularity; with ``warmup_days=0`` it is what day 1 reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepiece.world.entities import World
from onepiece.world.traffic import DayTraffic


@dataclass(frozen=True)
class DayCounts:
    """What one logged day adds to the statistics."""

    impressions: np.ndarray  # [N] int64
    clicks: np.ndarray  # [N] int64
    orders: np.ndarray  # [N] int64
    requests: np.ndarray  # [Q] int64


def count_day(world: World, traffic: DayTraffic) -> DayCounts:
    n, q = world.config.n_items, world.config.n_queries
    funnel = traffic.funnel
    return DayCounts(
        impressions=np.bincount(funnel.shown.ravel(), minlength=n),
        clicks=np.bincount(funnel.shown[funnel.click], minlength=n),
        orders=np.bincount(funnel.shown[funnel.order], minlength=n),
        requests=np.bincount(traffic.query, minlength=q),
    )


@dataclass(frozen=True)
class Snapshots:
    """Rows [S, N] / [S, Q]: snapshot s >= 1 covers the logged days before the s-th
    (warm-up days first); s = 0 is the prior."""

    ctr_7d: np.ndarray  # float32
    cvr_7d: np.ndarray  # float32
    sales_30d: np.ndarray  # int64
    popularity_7d: np.ndarray  # float32 [S, Q]


def _window_sums(daily: np.ndarray, width: int) -> np.ndarray:
    """[S, ...] sums over the ``width`` days before each snapshot; daily is [D, ...].

    Row s covers days [s - width, s): row 0 is empty, row D covers the last days.
    """
    cum = np.concatenate([np.zeros_like(daily[:1]), np.cumsum(daily, axis=0)])  # [D+1, ...]
    start = np.maximum(np.arange(cum.shape[0]) - width, 0)
    return cum - cum[start]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.maximum(den, 1), 0.0).astype(np.float32)


def snapshots(world: World, days: list[DayCounts]) -> Snapshots:
    """Snapshot 0 is the prior; snapshot s >= 1 uses the logged days [s-7, s) (0-based)."""
    imps = _window_sums(np.stack([d.impressions for d in days]), 7)
    clicks = _window_sums(np.stack([d.clicks for d in days]), 7)
    orders_7 = _window_sums(np.stack([d.orders for d in days]), 7)
    orders_30 = _window_sums(np.stack([d.orders for d in days]), 30)
    requests = _window_sums(np.stack([d.requests for d in days]), 7)
    prior = _prior(world, float(np.mean([d.requests.sum() for d in days])))
    ctr, cvr = _ratio(clicks, imps), _ratio(orders_7, clicks)
    ctr[0], cvr[0], orders_30[0] = prior.ctr_7d[0], prior.cvr_7d[0], prior.sales_30d[0]
    popularity = requests.astype(np.float32)
    popularity[0] = prior.popularity_7d[0]
    return Snapshots(ctr, cvr, orders_30.astype(np.int64), popularity)


def _prior(world: World, requests_per_day: float) -> Snapshots:
    """Statistics of the unlogged pre-history, from the hidden quality and popularity."""
    cfg, cat, queries = world.config, world.catalog, world.queries
    rng = np.random.default_rng([cfg.seed, 3])
    n = cfg.n_items
    logit_ctr = np.log(cfg.target_ctr / (1 - cfg.target_ctr)) + 0.5 * cat.quality
    ctr = 1 / (1 + np.exp(-(logit_ctr + rng.normal(0.0, 0.3, n))))
    cvr = cfg.target_atc_per_click * cfg.target_order_per_atc * np.exp(0.3 * cat.quality)
    cvr = np.clip(cvr * np.exp(rng.normal(0.0, 0.3, n)), 0.0, 1.0)
    sales = rng.poisson(2.0 * np.exp(0.5 * cat.quality + 0.5 * rng.normal(size=n)))
    share = np.exp(queries.log_base_pop) / np.exp(queries.log_base_pop).sum()
    popularity = rng.poisson(7 * requests_per_day * share)
    return Snapshots(
        ctr[None].astype(np.float32),
        cvr[None].astype(np.float32),
        sales[None].astype(np.int64),
        popularity[None].astype(np.float32),
    )
