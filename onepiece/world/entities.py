"""The hidden state of a world: categories, products, items, users and queries.

Everything here is drawn once from the seed and never changes, except the query-level
item popularity, which drifts day by day (``Queries.pool_logpop`` holds every day).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepiece.world.config import WorldConfig

CATEGORY_WORDS = (
    "shoes", "sneakers", "boots", "sandals", "dress", "shirt", "jeans", "jacket", "hoodie",
    "skirt", "watch", "bracelet", "necklace", "earrings", "backpack", "handbag", "wallet",
    "phone", "charger", "headphones", "speaker", "laptop", "keyboard", "mouse", "monitor",
    "camera", "lamp", "pillow", "blanket", "curtain", "mug", "kettle", "blender", "pan",
    "knife", "towel", "shampoo", "lipstick", "perfume", "sunscreen", "vitamins", "tea",
    "coffee", "snacks", "toy", "puzzle", "stroller", "diapers", "tent", "bicycle", "helmet",
    "yoga mat", "dumbbell", "racket", "umbrella", "sunglasses", "notebook", "pen", "printer",
    "router", "drone", "guitar", "plant pot", "pet food",
)
COLORS = ("red", "blue", "black", "white", "green")
# Price-related modifiers: (word, multiplier on the request's price sensitivity,
# multiplier on the weight of quality).
PRICE_MODIFIERS = (("cheap", 2.0, 0.7), ("deal", 1.5, 1.0), ("premium", 0.4, 1.8),
                   ("best", 0.8, 1.6), ("new", 1.0, 1.0))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass(frozen=True)
class Catalog:
    """Items (index i = row), grouped into products ("clusters") of near-duplicates."""

    item_id: np.ndarray  # [N] int64
    shop_id: np.ndarray  # [N] int64
    category: np.ndarray  # [N] int64, 0-based category index
    cluster: np.ndarray  # [N] int64, product id shared by near-duplicates
    vec: np.ndarray  # [N, d] float64, unit latent vector
    quality: np.ndarray  # [N] float64, hidden quality ~ N(0, 1)
    log_rel_price: np.ndarray  # [N] log(base price / category median price)
    base_price: np.ndarray  # [N] float64
    color: np.ndarray  # [N] int64 index into COLORS
    known: np.ndarray  # [N] bool: False = brand-new item without feature rows
    centroid: np.ndarray  # [K, d] category centroids
    category_names: tuple[str, ...]


@dataclass(frozen=True)
class Users:
    user_id: np.ndarray  # [U] int64
    segment: np.ndarray  # [U] hidden segment
    taste: np.ndarray  # [U, d] unit taste vector, fixed for the whole world
    price_sensitivity: np.ndarray  # [U] > 0
    activity: np.ndarray  # [U] mean requests per day
    age_bucket: np.ndarray  # [U] int32 0..6
    gender: np.ndarray  # [U] int32 0/1
    region_id: np.ndarray  # [U] int64
    known: np.ndarray  # [U] bool: False = no profile row


@dataclass(frozen=True)
class Queries:
    query_id: np.ndarray  # [Q] int64
    text: tuple[str, ...]
    intent: np.ndarray  # [Q, K] bool: the categories the query asks for
    intent_vec: np.ndarray  # [Q, d] unit mean of its categories' centroids
    log_base_pop: np.ndarray  # [Q] Zipf log-popularity of the query itself
    ps_mult: np.ndarray  # [Q] multiplier on price sensitivity ("cheap" > 1)
    quality_mult: np.ndarray  # [Q] multiplier on the weight of quality ("premium" > 1)
    color: np.ndarray  # [Q] int64 colour asked for, -1 if none
    pool: np.ndarray  # [Q, P] int64 item indices of its intent, -1 = padding
    pool_logpop: np.ndarray  # [D+1, Q, P] float32 log item popularity per day


@dataclass(frozen=True)
class World:
    config: WorldConfig
    catalog: Catalog
    users: Users
    queries: Queries


def build_world(config: WorldConfig) -> World:
    rng = np.random.default_rng([config.seed, 1])
    catalog = _catalog(config, rng)
    users = _users(config, catalog, rng)
    queries = _queries(config, catalog, rng)
    return World(config, catalog, users, queries)


def _known_mask(n: int, unknown_share: float, rng: np.random.Generator) -> np.ndarray:
    """[n] bool with exactly round(share * n) False entries (at least one if share > 0)."""
    n_unknown = min(n - 1, max(int(round(unknown_share * n)), int(unknown_share > 0)))
    known = np.ones(n, dtype=bool)
    known[rng.permutation(n)[:n_unknown]] = False
    return known


def _category_names(k: int) -> tuple[str, ...]:
    words = CATEGORY_WORDS
    return tuple(words[i % len(words)] + ("" if i < len(words) else f" {i // len(words) + 1}")
                 for i in range(k))


def _catalog(config: WorldConfig, rng: np.random.Generator) -> Catalog:
    n, k, d = config.n_items, config.n_categories, config.latent_dim
    centroid = _unit(rng.normal(size=(k, d)))
    cat_weight = rng.dirichlet(np.full(k, 2.0))
    cat_log_median = rng.normal(np.log(25.0), 0.8, size=k)

    # Products: most are sold by one shop, a share by 2..max shops (near-duplicates).
    multi = rng.random(n) < config.duplicate_share
    sizes = np.where(multi, rng.integers(2, config.max_cluster_size + 1, size=n), 1)
    n_clusters = int(np.searchsorted(np.cumsum(sizes), n) + 1)
    sizes = sizes[:n_clusters]
    p_cat = rng.choice(k, size=n_clusters, p=cat_weight)
    p_cat[:k] = np.arange(k)[: min(k, n_clusters)]  # every category has a product
    p_vec = _unit(centroid[p_cat] + 0.6 * rng.normal(size=(n_clusters, d)))
    p_logprice = cat_log_median[p_cat] + rng.normal(0.0, 0.5, size=n_clusters)
    p_quality = rng.normal(size=n_clusters)
    p_color = rng.integers(0, len(COLORS), size=n_clusters)

    cluster = np.repeat(np.arange(n_clusters), sizes)[:n]
    order = rng.permutation(n)  # ids carry no hint of the product grouping
    cluster = cluster[order]
    vec = _unit(p_vec[cluster] + 0.05 * rng.normal(size=(n, d)))
    log_price = p_logprice[cluster] + rng.normal(0.0, 0.05, size=n)
    base_price = np.maximum(np.round(np.exp(log_price), 2), 0.5)
    category = p_cat[cluster]
    known = _known_mask(n, config.unknown_item_share, rng)
    return Catalog(
        item_id=100_000 + np.arange(n, dtype=np.int64),
        shop_id=1 + rng.integers(0, config.shops, size=n).astype(np.int64),
        category=category.astype(np.int64),
        cluster=cluster.astype(np.int64),
        vec=vec,
        quality=p_quality[cluster] + rng.normal(0.0, 0.2, size=n),
        log_rel_price=np.log(base_price) - cat_log_median[category],
        base_price=base_price,
        color=p_color[cluster].astype(np.int64),
        known=known,
        centroid=centroid,
        category_names=_category_names(k),
    )


def _users(config: WorldConfig, catalog: Catalog, rng: np.random.Generator) -> Users:
    u, s, k, d = config.n_users, config.n_segments, config.n_categories, config.latent_dim
    # A segment ties taste, price sensitivity and the profile fields together, so the
    # profile (situational descriptor) carries signal about what a user wants.
    seg_pref = rng.dirichlet(np.full(k, 0.15), size=s)  # [S, K]
    seg_ps = np.exp(rng.normal(0.0, 0.7, size=s))
    seg_age = rng.integers(0, 7, size=s)
    seg_female = rng.beta(2.0, 2.0, size=s)
    seg_regions = rng.integers(1, config.n_regions + 1, size=(s, 3))

    segment = rng.integers(0, s, size=u)
    # Three favourite categories per user (Gumbel top-3 from the segment's preference).
    n_fav = min(3, k)
    fav = np.argsort(-(np.log(seg_pref[segment] + 1e-12) + rng.gumbel(size=(u, k))), axis=1)[:, :n_fav]
    weight = np.array([0.5, 0.3, 0.2])[:n_fav]
    taste = _unit((catalog.centroid[fav] * weight[None, :, None]).sum(1)
                  + 0.12 * rng.normal(size=(u, d)))
    sigma = 1.0
    activity = np.exp(rng.normal(np.log(config.requests_per_user_day) - sigma**2 / 2, sigma, size=u))
    activity = _with_crawler(activity, config.crawler_share)
    home = rng.random(u) < 0.8
    region = np.where(home, seg_regions[segment, rng.integers(0, 3, size=u)],
                      rng.integers(1, config.n_regions + 1, size=u))
    return Users(
        user_id=10_000 + np.arange(u, dtype=np.int64),
        segment=segment,
        taste=taste,
        price_sensitivity=seg_ps[segment] * np.exp(rng.normal(0.0, 0.3, size=u)),
        activity=activity,
        age_bucket=np.clip(seg_age[segment] + np.round(rng.normal(0.0, 0.5, size=u)), 0, 6).astype(np.int32),
        gender=(rng.random(u) < seg_female[segment]).astype(np.int32),
        region_id=region.astype(np.int64),
        known=_known_mask(u, config.unknown_user_share, rng),
    )


def _with_crawler(activity: np.ndarray, share: float) -> np.ndarray:
    """``activity`` with its most active user raised to ``share`` of all requests.

    No draw from the generator, so a world without a crawler (share 0) is unchanged.
    """
    if share <= 0 or activity.size < 2:
        return activity
    crawler = int(np.argmax(activity))
    others = activity.sum() - activity[crawler]
    out = activity.copy()
    out[crawler] = share / (1.0 - share) * others  # crawler / (crawler + others) = share
    return out


def _queries(config: WorldConfig, catalog: Catalog, rng: np.random.Generator) -> Queries:
    q, k = config.n_queries, config.n_categories
    items_per_cat = np.bincount(catalog.category, minlength=k)
    primary = rng.choice(k, size=q, p=items_per_cat / items_per_cat.sum())
    n_intent = np.minimum(rng.choice([1, 2, 3], size=q, p=[0.5, 0.3, 0.2]), k)
    # Extra intent categories are the primary's nearest neighbours (coherent queries).
    sim = catalog.centroid @ catalog.centroid.T + 0.3 * rng.normal(size=(k, k))
    np.fill_diagonal(sim, np.inf)
    neighbours = np.argsort(-sim, axis=1)  # [K, K], column 0 = the category itself
    rank = np.arange(k)[None, :]
    chosen = neighbours[primary][rank < n_intent[:, None]].reshape(-1)
    rows = np.repeat(np.arange(q), n_intent)
    intent = np.zeros((q, k), dtype=bool)
    intent[rows, chosen] = True
    intent_vec = _unit(intent.astype(float) @ catalog.centroid)

    # Modifiers: a price word and/or a colour, each with its hidden meaning.
    has_price_mod = rng.random(q) < 0.45
    price_mod = rng.integers(0, len(PRICE_MODIFIERS), size=q)
    ps_mult = np.where(has_price_mod, np.array([m[1] for m in PRICE_MODIFIERS])[price_mod], 1.0)
    quality_mult = np.where(has_price_mod, np.array([m[2] for m in PRICE_MODIFIERS])[price_mod], 1.0)
    color = np.where(rng.random(q) < 0.25, rng.integers(0, len(COLORS), size=q), -1)
    names = catalog.category_names
    text = tuple(
        " ".join(
            ([PRICE_MODIFIERS[price_mod[j]][0]] if has_price_mod[j] else [])
            + ([COLORS[color[j]]] if color[j] >= 0 else [])
            + [names[c] for c in neighbours[primary[j], : n_intent[j]]]
        )
        for j in range(q)  # one string per query, not per event
    )
    log_base_pop = -1.1 * np.log(1 + rng.permutation(q))  # Zipf

    pool, pool_logpop = _query_item_popularity(config, catalog, intent, rng)
    return Queries(
        query_id=500 + np.arange(q, dtype=np.int64),
        text=text,
        intent=intent,
        intent_vec=intent_vec,
        log_base_pop=log_base_pop,
        ps_mult=ps_mult,
        quality_mult=quality_mult,
        color=color.astype(np.int64),
        pool=pool,
        pool_logpop=pool_logpop,
    )


def _query_item_popularity(
    config: WorldConfig, catalog: Catalog, intent: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's intent pool and its hot items: a log-popularity per (day, query, slot).

    Popularity is mostly per product (near-duplicates are hot together), leans to
    quality, and follows a mean-reverting random walk from day to day.
    """
    in_pool = intent[:, catalog.category]  # [Q, N]
    width = int(in_pool.sum(1).max())
    # Sorting by (not in pool, item index) lists each query's pool items first, in order.
    order = np.argsort(~in_pool, axis=1, kind="stable")[:, :width]  # [Q, P]
    valid = np.take_along_axis(in_pool, order, axis=1)
    pool = np.where(valid, order, -1).astype(np.int64)

    n_clusters = int(catalog.cluster.max()) + 1
    q = intent.shape[0]
    cluster_pop = rng.normal(0.0, 1.2, size=(q, n_clusters))
    base = (cluster_pop[np.arange(q)[:, None], catalog.cluster[order]]
            + 0.3 * catalog.quality[order] + rng.normal(0.0, 0.3, size=order.shape))
    rho = 0.9
    walk = np.zeros_like(base)
    days = np.empty((config.days + 1,) + base.shape, dtype=np.float32)
    for day in range(config.days + 1):  # one step per day, vectorised over queries and items
        walk = rho * walk + config.popularity_drift * rng.normal(size=base.shape)
        days[day] = np.where(valid, base + walk, -np.inf)
    return pool, days
