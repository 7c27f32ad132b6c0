"""hand_features: the vectorised features against a plain Python loop over candidates."""

from __future__ import annotations

import datetime as dt
import math
import statistics

import numpy as np
import pyarrow as pa
import pytest

from onepiece.contract.schemas import EVENT_TYPE_CODE, TIMESTAMP
from onepiece.evaluation.hand_features import FEATURE_NAMES, HandFeatureConfig, group_median, hand_features
from onepiece.evaluation.ranking import flat_candidates

T0 = dt.datetime(2026, 11, 5, 12, tzinfo=dt.UTC)
CLICK, CART, ORDER = (EVENT_TYPE_CODE[n] for n in ("click", "add_to_cart", "order"))


def _hours_before(*hours: float) -> list[dt.datetime]:
    return [T0 - dt.timedelta(hours=h) for h in hours]


def tiny_rows() -> pa.Table:
    """Three requests: a long IH with repeats and an unknown category, an empty IH, and an
    IH with an unknown (-1) item, shop and price; candidates with unknown ids and price 0."""
    ih = [  # (item, shop, category, price, event, hours before as_of), oldest first
        [(10, 1, 100, 5.0, CLICK, 50), (11, 1, 101, 7.0, CLICK, 30), (10, 1, 100, 5.0, CART, 29),
         (12, 2, -1, 9.0, CLICK, 5), (10, 1, 100, 5.0, ORDER, 1)],
        [],
        [(-1, -1, 100, 0.0, CLICK, 2), (13, 3, 102, 4.0, CLICK, 1)],
    ]
    cands = [  # (item, shop, category, price, ctr, cvr, sales)
        [(10, 1, 100, 6.0, 0.1, 0.01, 3), (11, 2, 100, 2.0, 0.2, 0.02, 0), (12, 2, -1, 8.0, 0.3, 0.0, 1),
         (14, 3, 101, 4.0, 0.0, 0.0, 9), (15, 1, 100, 10.0, 0.05, 0.1, 2)],
        [(10, 1, 100, 3.0, 0.1, 0.01, 3), (16, 4, 103, 0.0, 0.0, 0.0, 0)],
        [(-1, -1, -1, 0.0, 0.0, 0.0, 0), (13, 3, 102, 4.0, 0.4, 0.2, 5), (17, -1, 100, 12.0, 0.1, 0.1, 1)],
    ]
    pa_items = [[10, 12, 14], [16], [-1, 13]]
    pa_groups = [[0, 1, 2], [0], [0, 2]]

    def column(lists: list, i: int, kind: pa.DataType) -> pa.Array:
        return pa.array([[e[i] for e in lst] for lst in lists], pa.list_(kind))

    n = len(cands)
    table = {
        "request_id": [f"r{i}" for i in range(n)],
        "user_id": pa.array([1, 2, 3], pa.int64()),
        "query_id": pa.array([7, 8, 7], pa.int64()),
        "as_of": pa.array([T0] * n, TIMESTAMP),
        "query_popularity_7d": pa.array([0.5, None, 2.0], pa.float32()),
        "ih_item_id": column(ih, 0, pa.int64()), "ih_shop_id": column(ih, 1, pa.int64()),
        "ih_category_id": column(ih, 2, pa.int64()), "ih_price": column(ih, 3, pa.float64()),
        "ih_event_type": column(ih, 4, pa.int8()),
        "ih_ts": pa.array([_hours_before(*[e[5] for e in lst]) for lst in ih], pa.list_(TIMESTAMP)),
        "pa_item_id": pa.array(pa_items, pa.list_(pa.int64())), "pa_group": pa.array(pa_groups, pa.list_(pa.int8())),
        "cand_item_id": column(cands, 0, pa.int64()), "cand_shop_id": column(cands, 1, pa.int64()),
        "cand_category_id": column(cands, 2, pa.int64()), "cand_price": column(cands, 3, pa.float64()),
        "cand_ctr_7d": column(cands, 4, pa.float32()), "cand_cvr_7d": column(cands, 5, pa.float32()),
        "cand_sales_30d": column(cands, 6, pa.int64()),
    }
    table |= {f"label_{t}": pa.array([[1] * len(c) for c in cands], pa.list_(pa.int8()))
              for t in ("impression", "click", "add_to_cart", "order")}
    return pa.table(table)


def reference(rows: pa.Table, cfg: HandFeatureConfig) -> list[dict[str, float]]:
    """The features of every candidate, one candidate at a time."""
    d = rows.to_pylist()
    out = []

    def ratio(a: float, b: float | None) -> float:
        return a / b if a > 0 and b is not None and b > 0 else math.nan

    def median(values: list[float]) -> float | None:
        values = [v for v in values if v > 0]
        return statistics.median(values) if values else None

    for r in d:
        ih_n = len(r["ih_item_id"])
        ih_prices = [p for p in r["ih_price"] if p > 0]
        for c in range(len(r["cand_item_id"])):
            f: dict[str, float] = {
                "ih_length": ih_n,
                "query_popularity_7d": math.nan if r["query_popularity_7d"] is None else r["query_popularity_7d"],
            }
            for s in ("price", "ctr_7d", "cvr_7d", "sales_30d"):
                f[f"cand_{s}"] = r[f"cand_{s}"][c]
            price, cat = r["cand_price"][c], r["cand_category_id"][c]
            request_median = median(r["cand_price"])
            same_cat = [p for p, k in zip(r["cand_price"], r["cand_category_id"]) if k == cat]
            f["price_over_category_median"] = ratio(price, median(same_cat) if cat >= 0 else request_median)
            f["price_over_request_median"] = ratio(price, request_median)
            f["price_over_ih_mean"] = ratio(price, sum(ih_prices) / len(ih_prices) if ih_prices else None)
            f["price_over_ih_median"] = ratio(price, median(r["ih_price"]))
            for g, name in enumerate(("exposed", "clicked", "ordered")):
                f[f"pa_{name}"] = float(any(i == r["cand_item_id"][c] and k == g
                                            for i, k in zip(r["pa_item_id"], r["pa_group"])))
            for key, col in (("item", "item_id"), ("shop", "shop_id"), ("category", "category_id")):
                value = r[f"cand_{col}"][c]
                stats = dict.fromkeys(("count", "recent", "fresh", "clicks", "carts", "orders"), 0.0)
                ages = []
                for j in range(ih_n):
                    if value < 0 or r[f"ih_{col}"][j] != value:
                        continue
                    days = (r["as_of"] - r["ih_ts"][j]).total_seconds() / 86400
                    stats["count"] += 1
                    stats["recent"] += math.exp(-(ih_n - 1 - j) / cfg.tau_events)
                    stats["fresh"] += math.exp(-days / cfg.tau_days)
                    event = r["ih_event_type"][j]
                    stats["clicks"] += event == CLICK
                    stats["carts"] += event == CART
                    stats["orders"] += event == ORDER
                    ages.append(days)
                stats["share"] = stats["count"] / ih_n if ih_n else 0.0
                stats["last_age_days"] = min(ages) if ages else math.nan
                f |= {f"ih_{key}_{s}": v for s, v in stats.items()}
            out.append(f)
    return out


def test_features_match_the_candidate_by_candidate_reference() -> None:
    rows = tiny_rows()
    cfg = HandFeatureConfig(tau_events=4.0, tau_days=0.5)
    x, names = hand_features(rows, cfg)
    assert names == FEATURE_NAMES and x.shape == (10, len(FEATURE_NAMES)) and x.dtype == np.float32
    expected = np.array([[f[n] for n in names] for f in reference(rows, cfg)], dtype=np.float32)
    np.testing.assert_allclose(x, expected, rtol=1e-6, equal_nan=True)
    # aligned with flat_candidates, and a few values read off the table by hand
    assert len(flat_candidates(rows).item_id) == len(x)
    col = {n: x[:, i] for i, n in enumerate(names)}
    assert col["ih_item_count"][0] == 3 and col["ih_item_orders"][0] == 1
    assert col["ih_item_share"][0] == pytest.approx(0.6)
    assert col["ih_category_count"][2] == 0  # an unknown category matches nothing, not the IH's -1
    assert col["ih_category_count"][4] == 3 and col["ih_shop_count"][4] == 4
    assert col["ih_item_last_age_days"][0] == pytest.approx(1 / 24)
    assert np.isnan(col["ih_item_last_age_days"][3])
    assert col["ih_length"][5] == 0 and col["ih_category_share"][5] == 0  # the empty IH
    assert np.isnan(col["price_over_ih_mean"][5]) and np.isnan(col["price_over_request_median"][6])  # price 0
    assert col["price_over_category_median"][1] == pytest.approx(2.0 / 6.0)  # category 100: 6, 2, 10
    assert col["ih_item_count"][7] == 0 and col["ih_shop_count"][9] == 0  # unknown item / shop id
    assert col["ih_category_count"][9] == 1  # category 100 of the IH event with unknown item
    assert col["price_over_ih_median"][8] == pytest.approx(1.0)  # the IH price 0 is left out
    assert col["pa_clicked"][2] == 1 and col["pa_ordered"][3] == 1 and col["pa_ordered"][8] == 1
    assert col["pa_exposed"][7] == 1  # anchor_membership (reused) matches the id -1 like any other
    assert np.isnan(col["query_popularity_7d"][5])


def test_features_of_a_slice_are_the_slice_of_the_features() -> None:
    rows = tiny_rows()
    x, _ = hand_features(rows)
    tail, _ = hand_features(rows.slice(1))
    np.testing.assert_array_equal(tail, x[5:])


def test_group_median() -> None:
    got = group_median(np.array([2, 0, 2, 2, 0]), np.array([3.0, 1.0, 1.0, 2.0, 4.0]), 4)
    np.testing.assert_array_equal(got[[0, 2]], [2.5, 2.0])
    assert np.isnan(got[1]) and np.isnan(got[3])
