"""Metrics against brute-force references (pair counts, explicit sorting)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onepiece.evaluation import metrics
from onepiece.evaluation.metrics_file import metrics_document, write_json


def brute_auc(y: list[int], s: list[float]) -> float:
    pos = [si for yi, si in zip(y, s) if yi]
    neg = [si for yi, si in zip(y, s) if not yi]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def brute_gauc(y: list[int], s: list[float], u: list[int]) -> float:
    total, weight = 0.0, 0
    for user in sorted(set(u)):
        idx = [i for i, ui in enumerate(u) if ui == user]
        a = brute_auc([y[i] for i in idx], [s[i] for i in idx])
        if not math.isnan(a):
            total += a * len(idx)
            weight += len(idx)
    return total / weight if weight else math.nan


# Few distinct score values so that ties are frequent.
samples = st.lists(
    st.tuples(st.integers(0, 1), st.sampled_from([0.0, 0.1, 0.5, 0.7, 1.0]), st.integers(0, 3)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(samples)
def test_auc_and_gauc_match_pair_counts(rows: list[tuple[int, float, int]]) -> None:
    y, s, u = (list(c) for c in zip(*rows))
    for got, want in (
        (metrics.auc(y, s), brute_auc(y, s)),
        (metrics.gauc(y, s, u), brute_gauc(y, s, u)),
    ):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12)


def test_auc_known_values() -> None:
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.auc([0, 1], [0.5, 0.5]) == 0.5
    assert math.isnan(metrics.auc([1, 1], [0.2, 0.3]))


def test_gauc_skips_one_class_users_and_weights_by_impressions() -> None:
    # user 0: perfect, 4 impressions; user 1: inverted, 2 impressions; user 2: clicks only.
    y = [1, 1, 0, 0, 1, 0, 1]
    s = [0.9, 0.8, 0.1, 0.2, 0.1, 0.9, 0.5]
    u = [0, 0, 0, 0, 1, 1, 2]
    assert metrics.gauc(y, s, u) == pytest.approx((1.0 * 4 + 0.0 * 2) / 6)


def test_auc_rejects_mismatched_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        metrics.auc([0, 1], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc([0, 1], [0.1, math.nan])


def brute_recall(scores: np.ndarray, targets: np.ndarray, k: int) -> float:
    values = []
    for s, t in zip(scores, targets):
        if not t.any():
            continue
        # Descending score, targets after non-targets on ties (pessimistic).
        order = sorted(range(len(s)), key=lambda j: (-s[j], bool(t[j]), j))
        values.append(sum(bool(t[j]) for j in order[:k]) / t.sum())
    return float(np.mean(values)) if values else math.nan


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 9), st.integers(1, 10))
def test_recall_at_k_matches_sorting(seed: int, q: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, size=(q, n)).astype(float)  # many ties
    targets = rng.random((q, n)) < 0.3
    got, want = metrics.recall_at_k(scores, targets, k), brute_recall(scores, targets, k)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)


def test_leave_one_out_metrics() -> None:
    scores = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # target 0 -> rank 0
            [0.5, 0.5, 0.1, 0.0],  # target 1 ties column 0 -> pessimistic rank 1
            [0.1, 0.2, 0.3, 0.4],  # target 0 -> rank 3
        ]
    )
    ranks = metrics.target_rank(scores, [0, 1, 0])
    assert ranks.tolist() == [0, 1, 3]
    assert metrics.hr_at_k(ranks, 2) == pytest.approx(2 / 3)
    assert metrics.ndcg_at_k(ranks, 2) == pytest.approx((1.0 + 1 / math.log2(3)) / 3)
    assert metrics.mrr_at_k(ranks, 2) == pytest.approx((1.0 + 0.5) / 3)
    # A constant scorer gets nothing.
    assert metrics.hr_at_k(metrics.target_rank(np.zeros((3, 4)), [0, 1, 2]), 3) == 0.0


def test_metrics_document_has_the_issue_shape(tmp_path) -> None:
    ranking = {t: {"auc": 0.7, "gauc": 0.6} for t in ("click", "add_to_cart", "order")}
    ranking["order"]["gauc"] = math.nan
    doc = metrics_document(ranking=ranking, retrieval={"recall@100": 0.3, "recall@500": 0.5})
    write_json(doc, tmp_path / "metrics.json")
    back = json.loads((tmp_path / "metrics.json").read_text())
    assert list(back) == ["ranking", "retrieval"]
    assert list(back["ranking"]) == ["click", "add_to_cart", "order"]
    assert back["ranking"]["order"] == {"auc": 0.7, "gauc": None}
    assert back["retrieval"] == {"recall@100": 0.3, "recall@500": 0.5}
    assert list(metrics_document(retrieval={"recall@100": 0.1, "recall@500": 0.2})) == ["retrieval"]
    ann = {"recall@100": 0.1, "recall@500": 0.2, "ann_recall@100": 0.1, "ann_recall@500": 0.2}
    assert list(metrics_document(retrieval=ann)["retrieval"]) == list(ann)  # the ANN figures, optional
    with pytest.raises(ValueError, match="optionally"):
        metrics_document(retrieval={"recall@100": 0.1, "recall@500": 0.2, "ann_recall@100": 0.1})
    with pytest.raises(ValueError, match="ranking tasks"):
        metrics_document(ranking={"click": {"auc": 0.5, "gauc": 0.5}})


def test_popularity_baseline_counts_training_positives() -> None:
    import datetime as dt

    import pyarrow as pa

    from onepiece.contract import TRAINING_SCHEMA
    from onepiece.evaluation.ranking import flat_candidates, popularity_scores

    t = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    row = lambda rid, items, clicks: dict(  # noqa: E731
        request_id=rid, user_id=1, query_id=1, as_of=t, cand_item_id=items,
        label_impression=[1] * len(items), label_click=clicks,
        label_add_to_cart=[0] * len(items), label_order=[0] * len(items),
    )
    train = pa.Table.from_pylist([row("a", [1, 2, 3], [1, 1, 0]), row("b", [2, 3], [1, 0])], schema=TRAINING_SCHEMA)
    test = pa.Table.from_pylist([row("c", [3, 2, 9, 1], [0, 0, 0, 0])], schema=TRAINING_SCHEMA)
    scores = popularity_scores(train, flat_candidates(test))
    assert scores["click"].tolist() == [0.0, 2.0, 0.0, 1.0]
    assert scores["order"].tolist() == [0.0, 0.0, 0.0, 0.0]
