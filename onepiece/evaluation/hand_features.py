"""Hand features of context rows, one vector per candidate: the inputs of the gbdt row.

A gradient-boosted ranker on hand features is what pre-rank stages ran before generative
models (section 7 of the model spec), so it is the floor the model rows must clear. Its
features are computed from the same context rows the model rows read (one row per
request: IH, PA and candidates as parallel list columns), nothing else:

- the user's IH against the candidate, for its item, shop and category: how many IH
  events match, their share of the IH, the same count weighted by recency (by events
  back from the most recent, ``exp(-back / tau_events)``, and by time before ``as_of``,
  ``exp(-days / tau_days)``), the matching clicks, add-to-carts and orders, and the days
  since the latest match (NaN without one). An unknown id (negative, the contract's
  default) matches nothing;
- whether the candidate is among the request's PA items of each group
  (``anchor_signal.anchor_membership``);
- the candidate's own statistics (price, ctr_7d, cvr_7d, sales_30d) and its price over
  the median price of its category among the request's candidates (of all the request's
  candidates for an unknown category), over the request's median, and over the mean and
  median price of the user's IH events. Price 0 is the contract's default for an unknown
  item: prices <= 0 enter no median or mean, and a ratio of an unknown price or without
  a positive denominator is NaN (LightGBM routes missing values on its own);
- the query's popularity_7d and the IH length.

Everything is vectorised over the flat candidates (no Python loop per row or candidate):
IH statistics are sums per (request, id) key, looked up by each candidate's key.
Rows are in ``ranking.flat_candidates`` order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract.schemas import EVENT_TYPE_CODE, PA_GROUPS
from onepiece.evaluation.anchor_signal import anchor_membership
from onepiece.model.inputs import MICROS_PER_DAY, group_median
from onepiece.model.matches import RECENCY_EVENTS, TAU_DAYS

#: IH keys matched against the candidate, as (feature prefix, column suffix).
IH_KEYS: tuple[tuple[str, str], ...] = (("item", "item_id"), ("shop", "shop_id"), ("category", "category_id"))
#: Per IH key: the statistics of the matching IH events.
IH_STATS: tuple[str, ...] = ("count", "share", "recent", "fresh", "clicks", "carts", "orders", "last_age_days")
_EVENT_STATS = (("clicks", "click"), ("carts", "add_to_cart"), ("orders", "order"))
CANDIDATE_STATS: tuple[str, ...] = ("price", "ctr_7d", "cvr_7d", "sales_30d")
PRICE_RATIOS: tuple[str, ...] = (
    "price_over_category_median", "price_over_request_median", "price_over_ih_mean", "price_over_ih_median",
)
FEATURE_NAMES: tuple[str, ...] = (
    ("ih_length", "query_popularity_7d")
    + tuple(f"cand_{s}" for s in CANDIDATE_STATS)
    + PRICE_RATIOS
    + tuple(f"pa_{g}" for g in PA_GROUPS)
    + tuple(f"ih_{key}_{stat}" for key, _ in IH_KEYS for stat in IH_STATS)
)


@dataclass(frozen=True)
class HandFeatureConfig:
    #: Recency by position: an IH event ``back`` events before the most recent weighs
    #: exp(-back / tau_events) (ours: about the last 10 events count; the model's
    #: context-match statistics use the same constant).
    tau_events: float = RECENCY_EVENTS
    #: Recency by time: an IH event ``d`` days before as_of weighs exp(-d / tau_days)
    #: (ours: the world's tastes drift over days; the IH window is 30 days; the model's
    #: time statistics, ``match_time_features``, use the same constant).
    tau_days: float = TAU_DAYS

    def __post_init__(self) -> None:
        if self.tau_events <= 0 or self.tau_days <= 0:
            raise ValueError("HandFeatureConfig: tau_events and tau_days must be positive")


def _ids(rows: pa.Table, column: str) -> np.ndarray:
    """Flat int64 values of a list column (timestamps in microseconds); null -> -1."""
    values = pc.list_flatten(rows[column])
    if pa.types.is_timestamp(values.type):
        values = pc.cast(values, pa.int64())
    return np.asarray(pc.fill_null(values, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _values(rows: pa.Table, column: str) -> np.ndarray:
    """Flat float64 values of a list column; null -> NaN."""
    values = pc.cast(pc.list_flatten(rows[column]), pa.float64())
    return np.asarray(pc.fill_null(values, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


def _parent(rows: pa.Table, column: str) -> np.ndarray:
    return np.asarray(pc.list_parent_indices(rows[column]), dtype=np.int64)


def _lengths(rows: pa.Table, column: str) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.list_value_length(rows[column]), 0), dtype=np.int64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator where both are positive, else NaN (a price <= 0 is unknown)."""
    out = np.full(len(numerator), np.nan)
    ok = (numerator > 0) & (denominator > 0)
    out[ok] = numerator[ok] / denominator[ok]
    return out


def _ih_match(
    ih_request: np.ndarray, ih_id: np.ndarray, ih_columns: np.ndarray, ih_age: np.ndarray,
    cand_request: np.ndarray, cand_id: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: the column sums [N, k] and the minimum age [N] over its request's IH
    events with the same (known) id; 0 and NaN without a match."""
    known = ih_id >= 0
    span = int(max(ih_id.max(initial=0), cand_id.max(initial=0))) + 1
    keys, inverse = np.unique(ih_request[known] * span + ih_id[known], return_inverse=True)
    sums = np.column_stack(
        [np.bincount(inverse, weights=ih_columns[known, j], minlength=len(keys)) for j in range(ih_columns.shape[1])]
    ).reshape(len(keys), ih_columns.shape[1])
    youngest = np.full(len(keys), np.inf)
    np.minimum.at(youngest, inverse, ih_age[known])
    cand_key = cand_request * span + cand_id
    pos = np.minimum(np.searchsorted(keys, cand_key), max(len(keys) - 1, 0))
    found = (cand_id >= 0) & (len(keys) > 0)
    if len(keys):
        found &= keys[pos] == cand_key
    out = np.zeros((len(cand_id), ih_columns.shape[1]))
    out[found] = sums[pos[found]]
    age = np.full(len(cand_id), np.nan)
    age[found] = youngest[pos[found]]
    return out, age


def hand_features(
    rows: pa.Table, config: HandFeatureConfig = HandFeatureConfig()
) -> tuple[np.ndarray, tuple[str, ...]]:
    """([N, F] float32 features of every flat candidate, in ``flat_candidates(rows)``
    order; the F names, ``FEATURE_NAMES``)."""
    rows = rows.combine_chunks()
    n_rows = rows.num_rows
    cand_request = _parent(rows, "cand_item_id")
    ih_request = _parent(rows, "ih_item_id")
    ih_length = _lengths(rows, "ih_item_id")
    columns: dict[str, np.ndarray] = {
        "ih_length": ih_length[cand_request].astype(np.float64),
        "query_popularity_7d": np.asarray(
            pc.fill_null(pc.cast(rows["query_popularity_7d"], pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        )[cand_request],
    }
    for stat in CANDIDATE_STATS:
        columns[f"cand_{stat}"] = _values(rows, f"cand_{stat}")

    # Prices against the request's candidates and against the user's IH.
    price = columns["cand_price"]
    priced = np.isfinite(price) & (price > 0)
    request_median = group_median(cand_request[priced], price[priced], n_rows)[cand_request]
    category = _ids(rows, "cand_category_id")
    span = int(category.max(initial=0)) + 2
    groups, group_of = np.unique(cand_request * span + category + 1, return_inverse=True)
    category_median = group_median(group_of[priced], price[priced], len(groups))[group_of]
    category_median = np.where(category >= 0, category_median, request_median)
    ih_price = _values(rows, "ih_price")
    ih_priced = np.isfinite(ih_price) & (ih_price > 0)
    ih_n = np.bincount(ih_request[ih_priced], minlength=n_rows)
    ih_total = np.bincount(ih_request[ih_priced], weights=ih_price[ih_priced], minlength=n_rows)
    ih_mean = np.divide(ih_total, ih_n, out=np.full(n_rows, np.nan), where=ih_n > 0)
    ih_median = group_median(ih_request[ih_priced], ih_price[ih_priced], n_rows)
    columns["price_over_category_median"] = _ratio(price, category_median)
    columns["price_over_request_median"] = _ratio(price, request_median)
    columns["price_over_ih_mean"] = _ratio(price, ih_mean[cand_request])
    columns["price_over_ih_median"] = _ratio(price, ih_median[cand_request])

    flags = anchor_membership(rows)
    for g, group in enumerate(PA_GROUPS):
        columns[f"pa_{group}"] = flags[:, g]

    # IH events: recency weights and event types, then sums per (request, id).
    starts = np.concatenate([[0], np.cumsum(ih_length)[:-1]])
    back = (ih_length[ih_request] - 1 - (np.arange(len(ih_request)) - starts[ih_request])).astype(np.float64)
    as_of = np.asarray(pc.cast(rows["as_of"], pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    age_days = (as_of[ih_request] - _ids(rows, "ih_ts")) / MICROS_PER_DAY
    event = _ids(rows, "ih_event_type")
    ih_columns = np.column_stack(
        [np.ones(len(ih_request)), np.exp(-back / config.tau_events), np.exp(-age_days / config.tau_days)]
        + [(event == EVENT_TYPE_CODE[name]).astype(np.float64) for _, name in _EVENT_STATS]
    ).reshape(len(ih_request), 3 + len(_EVENT_STATS))
    for prefix, suffix in IH_KEYS:
        sums, age = _ih_match(ih_request, _ids(rows, f"ih_{suffix}"), ih_columns, age_days,
                              cand_request, _ids(rows, f"cand_{suffix}"))
        columns[f"ih_{prefix}_count"] = sums[:, 0]
        columns[f"ih_{prefix}_share"] = sums[:, 0] / np.maximum(columns["ih_length"], 1)  # 0 for an empty IH
        columns[f"ih_{prefix}_recent"] = sums[:, 1]
        columns[f"ih_{prefix}_fresh"] = sums[:, 2]
        for j, (stat, _) in enumerate(_EVENT_STATS):
            columns[f"ih_{prefix}_{stat}"] = sums[:, 3 + j]
        columns[f"ih_{prefix}_last_age_days"] = age
    features = np.column_stack([columns[name] for name in FEATURE_NAMES]).astype(np.float32)
    return features.reshape(len(cand_request), len(FEATURE_NAMES)), FEATURE_NAMES
