"""The gbdt row learns what its hand features show, and nothing it cannot see."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from onepiece.contract.schemas import TIMESTAMP
from onepiece.evaluation import ablation
from onepiece.evaluation.gbdt import GBDTConfig, evaluate_gbdt, fit_gbdt, markdown_importance
from onepiece.evaluation.hand_features import FEATURE_NAMES

IH_LEN, CANDS, CATEGORIES = 8, 20, 30


def _lists(values: np.ndarray, length: int, kind: pa.DataType) -> pa.Array:
    offsets = pa.array(np.arange(0, len(values) + 1, length, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values, kind))


def category_world(n: int, seed: int) -> pa.Table:
    """``n`` requests whose candidates are clicked exactly when their category is among the
    user's IH categories. Every IH has the same length, and items and shops are drawn
    from large ranges, so no other feature tells a click."""
    rng = np.random.default_rng(seed)
    as_of = dt.datetime(2026, 11, 5, tzinfo=dt.UTC)
    ih_cat = rng.integers(0, CATEGORIES, (n, IH_LEN))
    cand_cat = rng.integers(0, CATEGORIES, (n, CANDS))
    click = (cand_cat[:, :, None] == ih_cat[:, None, :]).any(axis=2)
    deeper = rng.random((n, CANDS))
    ids = lambda shape: rng.integers(0, 1_000_000, shape).reshape(-1)  # noqa: E731
    price = lambda shape: rng.uniform(1, 50, shape).reshape(-1)  # noqa: E731
    ts = [as_of - dt.timedelta(hours=int(h)) for h in rng.integers(1, 24 * 20, n * IH_LEN)]
    table = {
        "request_id": [f"r{i}" for i in range(n)], "user_id": pa.array(rng.integers(0, n, n)),
        "query_id": pa.array(rng.integers(0, 20, n)), "as_of": pa.array([as_of] * n, TIMESTAMP),
        "query_popularity_7d": pa.array(rng.random(n), pa.float32()),
        "ih_item_id": _lists(ids((n, IH_LEN)), IH_LEN, pa.int64()),
        "ih_shop_id": _lists(ids((n, IH_LEN)), IH_LEN, pa.int64()),
        "ih_category_id": _lists(ih_cat.reshape(-1), IH_LEN, pa.int64()),
        "ih_price": _lists(price((n, IH_LEN)), IH_LEN, pa.float64()),
        "ih_event_type": _lists(rng.integers(1, 4, n * IH_LEN), IH_LEN, pa.int8()),
        "ih_ts": _lists(pa.array(ts, TIMESTAMP), IH_LEN, TIMESTAMP),
        "pa_item_id": _lists(ids((n, 3)), 3, pa.int64()),
        "pa_group": _lists(np.tile([0, 1, 2], n), 3, pa.int8()),
        "cand_item_id": _lists(ids((n, CANDS)), CANDS, pa.int64()),
        "cand_shop_id": _lists(ids((n, CANDS)), CANDS, pa.int64()),
        "cand_category_id": _lists(cand_cat.reshape(-1), CANDS, pa.int64()),
        "cand_price": _lists(price((n, CANDS)), CANDS, pa.float64()),
        "cand_ctr_7d": _lists(rng.random(n * CANDS), CANDS, pa.float32()),
        "cand_cvr_7d": _lists(rng.random(n * CANDS), CANDS, pa.float32()),
        "cand_sales_30d": _lists(rng.integers(0, 100, n * CANDS), CANDS, pa.int64()),
        "label_impression": _lists(np.ones(n * CANDS), CANDS, pa.int8()),
        "label_click": _lists(click.reshape(-1), CANDS, pa.int8()),
        "label_add_to_cart": _lists((click & (deeper < 0.5)).reshape(-1), CANDS, pa.int8()),
        "label_order": _lists((click & (deeper < 0.2)).reshape(-1), CANDS, pa.int8()),
    }
    return pa.table(table)


@pytest.fixture(scope="module")
def split() -> tuple[pa.Table, pa.Table, pa.Table]:
    return category_world(300, 0), category_world(80, 1), category_world(150, 2)


def _train_config(seed: int = 0):  # noqa: ANN202
    return ablation.row_train_config(ablation.AblationConfig(), seed)


def test_the_row_learns_a_click_that_the_ih_categories_decide(split) -> None:
    fit, valid, test = split
    row, history, click = ablation.train_and_evaluate("gbdt", GBDTConfig(), _train_config(), fit, valid, test)
    assert row["variant"] == "gbdt" and row["click_auc"] > 0.95 and row["click_gauc"] > 0.95
    assert set(row) == {"variant"} | {f"{t}_{m}" for t in ("click", "add_to_cart", "order") for m in ("auc", "gauc")}
    assert click.shape == (150 * CANDS,) and click.dtype == np.float32
    top = next(iter(history["click_importance"]))
    assert top.startswith("ih_category_")  # the gain says where the signal is
    assert set(history["click_importance"]) == set(FEATURE_NAMES)
    assert 0 < history["best_iteration"]["click"] <= GBDTConfig().n_estimators
    assert f"| {top} |" in markdown_importance(history["click_importance"])


def test_without_the_category_features_it_cannot(split) -> None:
    fit, valid, test = split
    blind = GBDTConfig(drop_features=tuple(n for n in FEATURE_NAMES if n.startswith("ih_category_")))
    model = fit_gbdt(blind, _train_config(), fit, valid)
    doc, _ = evaluate_gbdt(model, test)
    assert doc["ranking"]["click"]["auc"] < 0.6
    assert not any(n.startswith("ih_category_") for n in model.importance())


def test_the_no_history_row_reads_no_history_feature_and_cannot(split) -> None:
    fit, valid, test = split
    config = ablation.gbdt_row_config("gbdt_no_history")
    assert set(config.feature_names) == {
        "query_popularity_7d", "cand_price", "cand_ctr_7d", "cand_cvr_7d", "cand_sales_30d",
        "price_over_category_median", "price_over_request_median",
    }
    row, history, _ = ablation.train_and_evaluate("gbdt_no_history", config, _train_config(), fit, valid, test)
    assert row["variant"] == "gbdt_no_history" and row["click_auc"] < 0.6
    assert set(history["click_importance"]) == set(config.feature_names)
    assert ablation.gbdt_row_config("gbdt") == GBDTConfig()


def test_with_the_ih_shuffled_across_requests_it_cannot(split) -> None:
    fit, valid, test = split

    def shuffled(rows: pa.Table, seed: int) -> pa.Table:
        order = pa.array(np.random.default_rng(seed).permutation(rows.num_rows))
        column = rows.column_names.index("ih_category_id")
        return rows.set_column(column, "ih_category_id", rows["ih_category_id"].take(order))

    model = fit_gbdt(GBDTConfig(), _train_config(), shuffled(fit, 3), shuffled(valid, 4))
    doc, _ = evaluate_gbdt(model, shuffled(test, 5))
    assert doc["ranking"]["click"]["auc"] < 0.6


def test_the_same_seed_gives_the_same_scores(split) -> None:
    fit, valid, test = split
    small = GBDTConfig(n_estimators=30)
    a = fit_gbdt(small, _train_config(1), fit, valid).score(test)
    b = fit_gbdt(small, _train_config(1), fit, valid).score(test)
    assert all(np.array_equal(a[t], b[t]) for t in a)


def test_config_rejects_unknown_features() -> None:
    with pytest.raises(ValueError, match="unknown features"):
        GBDTConfig(drop_features=("ih_brand_count",))
