"""One day of search traffic: requests -> recall -> upstream ranker -> funnel.

Every step works on whole days at once: requests are rows, candidates and impressions
are 2-D arrays ``[requests, slots]``, utilities come from numpy broadcasting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepiece.world.entities import World

US_PER_S = 1_000_000
US_PER_DAY = 86_400 * US_PER_S
# Share of the day's requests per UTC hour: quiet nights, a lunch bump, a busy evening.
DIURNAL = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 6, 7, 8, 10, 11, 10, 7, 4],
                   dtype=float)
POOL_FLOOR = -3.0  # log popularity of an item outside the query's intent pool
#: The terms of the base utility (``utility_parts``), in summation order.
UTILITY_PARTS = ("taste", "popularity", "intent", "quality", "price", "colour")


@dataclass(frozen=True)
class Mechanics:
    """Weights of the hidden utility (see the package docstring)."""

    taste: float = 2.0
    popularity: float = 0.8
    category_match: float = 1.5
    quality: float = 0.6
    price: float = 1.2
    color_match: float = 0.8
    color_mismatch: float = -0.4
    relative_price: float = 1.0  # set effect: cheaper than the shown set's mean helps
    redundancy: float = 0.9  # set effect: per near-duplicate shown above
    position: float = 0.7  # position bias: -w * log(position)
    query_choice_taste: float = 3.0  # how strongly users search queries that fit their taste
    # add_to_cart | click and order | add_to_cart
    atc_quality: float = 0.8
    atc_price: float = 0.6
    atc_taste: float = 0.5
    order_quality: float = 0.6
    order_price: float = 0.8


@dataclass(frozen=True)
class Biases:
    """Intercepts of the three funnel steps, calibrated once on day 1."""

    click: float
    add_to_cart: float
    order: float


@dataclass(frozen=True)
class Funnel:
    """What happened to the requests of a logged day, as [R, k] arrays in display order."""

    shown: np.ndarray  # [R, k] item index; column j is position j + 1
    click: np.ndarray  # [R, k] bool
    add_to_cart: np.ndarray  # [R, k] bool
    order: np.ndarray  # [R, k] bool
    click_ts: np.ndarray  # [R, k] int64 microseconds since the epoch
    add_to_cart_ts: np.ndarray
    order_ts: np.ndarray

    @classmethod
    def empty(cls, k: int) -> Funnel:
        """The funnel of a day without requests."""
        none = np.zeros((0, k), dtype=np.int64)
        return cls(none, none.astype(bool), none.astype(bool), none.astype(bool), none, none, none)


@dataclass(frozen=True)
class DayTraffic:
    """All requests of one day and what their users did."""

    user: np.ndarray  # [R] user index
    query: np.ndarray  # [R] query index
    ts: np.ndarray  # [R] request time, microseconds since the epoch
    candidates: np.ndarray  # [R, C] item index, sorted within each request
    from_noise: np.ndarray  # [R, C] bool: recalled at random rather than by intent
    funnel: Funnel


def daily_prices(world: World) -> np.ndarray:
    """[D+1, N] price of every item on every day: base price with random promotions."""
    cfg, cat = world.config, world.catalog
    rng = np.random.default_rng([cfg.seed, 2])
    shape = (cfg.days + 1, cfg.n_items)
    promo = rng.random(shape) < cfg.promo_share
    factor = np.where(promo, rng.uniform(0.6, 0.9, size=shape), 1.0)
    return np.maximum(np.round(cat.base_price[None, :] * factor, 2), 0.5)


def log_relative_price(world: World, prices: np.ndarray, day: int) -> np.ndarray:
    """[N] log(price on ``day`` / the item's category median price)."""
    return np.log(prices[day]) - (np.log(world.catalog.base_price) - world.catalog.log_rel_price)


def simulate_day(
    world: World,
    day: int,
    prices: np.ndarray,
    rng: np.random.Generator,
    biases: Biases | None,
    mech: Mechanics = Mechanics(),
) -> tuple[DayTraffic, Biases | None]:
    """Simulate day ``day`` (0-based). Returns the traffic and the (calibrated) biases.

    A negative ``day`` is a warm-up day before day 1: it replays day 1's prices and
    query-level popularity (the hidden state starts moving on day 1).
    """
    cfg, users, queries = world.config, world.users, world.queries
    day_start = int(np.datetime64(cfg.day(day), "us").astype(np.int64))
    state = max(day, 0)

    # Requests: per-user Poisson counts, a query that fits the user's taste, a time.
    counts = rng.poisson(users.activity)
    user = np.repeat(np.arange(cfg.n_users), counts)
    affinity = queries.log_base_pop[None, :] + mech.query_choice_taste * (
        users.taste[user] @ queries.intent_vec.T
    )  # [R, Q]
    query = np.argmax(affinity + rng.gumbel(size=affinity.shape), axis=1)
    hour = rng.choice(24, size=user.size, p=DIURNAL / DIURNAL.sum())
    ts = day_start + hour * 3600 * US_PER_S + rng.integers(0, 3600 * US_PER_S, size=user.size)
    order = np.lexsort((user, ts))
    user, query, ts = user[order], query[order], ts[order]

    candidates, from_noise = _recall(world, state, query, rng)

    # Upstream ranker: a noisy view of the utility WITHOUT the set effects.
    log_rel_price = log_relative_price(world, prices, state)
    # [R, C] hidden utility of each candidate for its request, before set effects
    base = sum(utility_parts(world, state, user, query, candidates, log_rel_price, mech).values())
    upstream = base + cfg.upstream_noise * rng.normal(size=base.shape)
    k = cfg.impressions_per_request
    top = _top_k(upstream, k)  # [R, k] display order
    shown = np.take_along_axis(candidates, top, axis=1)
    shown_base = np.take_along_axis(base, top, axis=1)

    # What the user sees together changes what they click.
    position = np.arange(1, k + 1)[None, :]
    u_click = (shown_base + set_effects(np.log(prices[state][shown]), world.catalog.cluster[shown], mech)
               - mech.position * np.log(position))

    ps = (users.price_sensitivity[user] * queries.ps_mult[query])[:, None]
    quality = world.catalog.quality[shown] * queries.quality_mult[query][:, None]
    taste = np.einsum("rd,rkd->rk", users.taste[user], world.catalog.vec[shown])
    u_atc = mech.atc_quality * quality - mech.atc_price * ps * log_rel_price[shown] + mech.atc_taste * taste
    u_order = mech.order_quality * quality - mech.order_price * ps * log_rel_price[shown]

    if biases is None and shown.size == 0:  # calibrate on a later day with traffic
        return DayTraffic(user, query, ts, candidates, from_noise, Funnel.empty(k)), None
    if biases is None:
        b_click = _calibrate(u_click, np.ones_like(u_click), cfg.target_ctr)
        w_click = _sigmoid(u_click + b_click)
        b_atc = _calibrate(u_atc, w_click, cfg.target_atc_per_click)
        w_atc = w_click * _sigmoid(u_atc + b_atc)
        b_order = _calibrate(u_order, w_atc, cfg.target_order_per_atc)
        biases = Biases(b_click, b_atc, b_order)

    click = rng.random(shown.shape) < _sigmoid(u_click + biases.click)
    add_to_cart = click & (rng.random(shown.shape) < _sigmoid(u_atc + biases.add_to_cart))
    purchase = add_to_cart & (rng.random(shown.shape) < _sigmoid(u_order + biases.order))

    # Follow-up events come seconds to minutes later, clamped inside the same day.
    last = day_start + US_PER_DAY - 1

    def delay(mean_s: float) -> np.ndarray:  # [R, k] exponential delays in microseconds
        return (rng.exponential(mean_s, shown.shape) * US_PER_S).astype(np.int64)

    click_ts = ts[:, None] + position * 2 * US_PER_S + delay(20.0)
    atc_ts = click_ts + 5 * US_PER_S + delay(60.0)
    order_ts = atc_ts + 10 * US_PER_S + delay(180.0)
    funnel = Funnel(shown, click, add_to_cart, purchase, np.minimum(click_ts, last),
                    np.minimum(atc_ts, last), np.minimum(order_ts, last))
    return DayTraffic(user, query, ts, candidates, from_noise, funnel), biases


def set_effects(log_price: np.ndarray, cluster: np.ndarray, mech: Mechanics) -> np.ndarray:
    """[R, k] utility from the page as a whole, columns in display order.

    Cheaper than the page's mean log price helps; each near-duplicate (same product)
    shown above an item hurts it.
    """
    k = log_price.shape[1]
    relative = log_price - log_price.mean(axis=1, keepdims=True)  # [R, k]
    same = cluster[:, :, None] == cluster[:, None, :]  # [R, k, k]
    above = np.tril(np.ones((k, k), dtype=bool), k=-1)  # [j, j'] = j' shown above j
    duplicates_above = (same & above[None]).sum(axis=2)  # [R, k]
    return -mech.relative_price * relative - mech.redundancy * duplicates_above


def _recall(
    world: World, day: int, query: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """[R, C] distinct candidates per request: intent items by popularity, plus noise."""
    cfg, queries = world.config, world.queries
    n, c = cfg.n_items, cfg.candidates_per_request
    r = query.size
    n_intent = c - int(round(cfg.noise_share * c))
    # Gumbel top-k = sampling without replacement by query-level popularity.
    keys = queries.pool_logpop[day][query] + rng.gumbel(size=(r, queries.pool.shape[1]))
    keep = min(n_intent, keys.shape[1])
    best = _top_k(keys, keep)
    intent_items = np.where(np.isfinite(np.take_along_axis(keys, best, axis=1)),
                            np.take_along_axis(queries.pool[query], best, axis=1), -1)
    noise_items = rng.integers(0, n, size=(r, c + 32))
    pooled = np.concatenate([intent_items, noise_items], axis=1)  # intent first
    from_noise = np.arange(pooled.shape[1])[None, :] >= keep

    # Drop padding and repeats (keeping the first occurrence), then take the first C.
    by_value = np.argsort(pooled, axis=1, kind="stable")
    sorted_vals = np.take_along_axis(pooled, by_value, axis=1)
    repeat_sorted = np.zeros_like(sorted_vals, dtype=bool)
    repeat_sorted[:, 1:] = sorted_vals[:, 1:] == sorted_vals[:, :-1]
    bad = np.empty_like(repeat_sorted)
    np.put_along_axis(bad, by_value, repeat_sorted, axis=1)
    bad |= pooled < 0
    short = np.flatnonzero((~bad).sum(axis=1) < c)
    for row in short:  # rare: only when C is close to the catalogue size
        extra = rng.permutation(np.setdiff1d(np.arange(n), pooled[row][~bad[row]]))
        fill = np.flatnonzero(bad[row])[: c - int((~bad[row]).sum())]
        pooled[row, fill] = extra[: fill.size]
        bad[row, fill] = False
        from_noise[row, fill] = True
    pick = np.argsort(bad.view(np.uint8), axis=1, kind="stable")[:, :c]  # good ones, in column order
    chosen = np.take_along_axis(pooled, pick, axis=1)
    chosen_noise = np.take_along_axis(np.broadcast_to(from_noise, pooled.shape), pick, axis=1)
    # Candidate order must not leak anything: sort by item.
    by_item = np.argsort(chosen, axis=1)
    return np.take_along_axis(chosen, by_item, axis=1), np.take_along_axis(chosen_noise, by_item, axis=1)


def utility_parts(
    world: World,
    day: int,
    user: np.ndarray,
    query: np.ndarray,
    items: np.ndarray,
    log_rel_price: np.ndarray,
    mech: Mechanics,
) -> dict[str, np.ndarray]:
    """[R, C] each, by name: the weighted terms of each candidate's hidden base utility for
    its request (before set effects); their sum is what the upstream ranker sees, noisily."""
    cat, users, queries = world.catalog, world.users, world.queries
    taste = np.einsum("rd,rcd->rc", users.taste[user], cat.vec[items])
    pop = _dense_popularity(world, day)[query[:, None], items]
    match = queries.intent[query[:, None], cat.category[items]]
    quality = queries.quality_mult[query][:, None] * cat.quality[items]
    ps = (users.price_sensitivity[user] * queries.ps_mult[query])[:, None]
    color_q = queries.color[query][:, None]
    color = np.where(color_q < 0, 0.0,
                     np.where(cat.color[items] == color_q, mech.color_match, mech.color_mismatch))
    terms = (mech.taste * taste, mech.popularity * pop, mech.category_match * match,
             mech.quality * quality, -mech.price * ps * log_rel_price[items], color)
    return dict(zip(UTILITY_PARTS, terms, strict=True))


def _dense_popularity(world: World, day: int) -> np.ndarray:
    """[Q, N] float32 log popularity of every item for every query on ``day``."""
    queries = world.queries
    dense = np.full((world.config.n_queries, world.config.n_items), POOL_FLOOR, dtype=np.float32)
    rows = np.broadcast_to(np.arange(queries.pool.shape[0])[:, None], queries.pool.shape)
    valid = queries.pool >= 0
    dense[rows[valid], queries.pool[valid]] = queries.pool_logpop[day][valid]
    return dense


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """[R, k] column indices of each row's k largest values, largest first."""
    if k < values.shape[1]:
        part = np.argpartition(-values, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(values.shape[1]), values.shape)
    order = np.argsort(-np.take_along_axis(values, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _calibrate(logit: np.ndarray, weight: np.ndarray, target: float) -> float:
    """The intercept b with weighted mean sigmoid(logit + b) == target (bisection)."""
    lo, hi = -30.0, 30.0
    total = weight.sum()
    for _ in range(60):
        mid = (lo + hi) / 2
        if (weight * _sigmoid(logit + mid)).sum() / total < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
