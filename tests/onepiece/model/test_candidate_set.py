"""The candidate-set numerics (``inputs.CAND_SET_FEATURES``): each candidate's price
against its request's whole recall list, the same whether the request is tensorized
whole (serving) or cut into sampled groups first (training)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from model_helpers import context_row, contexts_table, random_rows, tiny_config, training_table

from onepiece.model import OnePiece
from onepiece.model.inputs import (
    CAND_SET_COLUMNS,
    N_ITEM_NUM,
    SET_LOG_RATIO_CLIP,
    candidate_set_values,
    tensorize,
    with_candidate_set_columns,
)
from onepiece.training.groups import split_groups


def _reference(prices: list[float], categories: list[int]) -> list[tuple[float, float]]:
    """One request, candidate by candidate, with the statistics module."""
    import statistics

    def ratio(price: float, pool: list[float]) -> float:
        pool = [p for p in pool if p > 0]
        if price <= 0 or not pool:
            return 0.0
        return max(-SET_LOG_RATIO_CLIP, min(SET_LOG_RATIO_CLIP, math.log(price / statistics.median(pool))))

    return [
        (ratio(p, prices), ratio(p, [q for q, k in zip(prices, categories) if k == c]))
        for p, c in zip(prices, categories)
    ]


def _request(name: str, cands: list[int], prices: list[float], categories: list[int]) -> dict:
    row = context_row(name, 1, 2, ih=[3, 4], pa_items=[], cands=cands)
    row["cand_price"], row["cand_category_id"] = prices, categories
    return row


def test_candidate_set_values_match_a_per_request_reference() -> None:
    rows = [
        _request("a", [1, 2, 3, 4, 5], [10.0, 20.0, 0.0, 40.0, 1e-4], [1, 1, 2, 2, 1]),
        _request("b", [6, 7], [5.0, 5.0], [3, -1]),
        _request("c", [], [], []),
        _request("d", [8, 9, 10], [0.0, 0.0, 7.0], [1, 1, 1]),
    ]
    got = candidate_set_values(contexts_table(rows))
    want = [v for r in rows for v in _reference(r["cand_price"], r["cand_category_id"])]
    np.testing.assert_allclose(got, np.array(want, np.float32).reshape(-1, 2), atol=1e-6)
    assert got.min() >= -SET_LOG_RATIO_CLIP  # 1e-4 against a median of 10 is clipped


def test_training_groups_carry_the_whole_requests_values() -> None:
    """Cut into groups of 3 after sampling, each candidate keeps the value of its whole
    request, which is what the served model sees for it."""
    config = tiny_config(group_size=3)
    rng = np.random.default_rng(0)
    rows = [
        _request(f"r{r}", list(range(100 * r, 100 * r + n)), [float(p) for p in rng.uniform(1, 50, n)],
                 [int(c) for c in rng.integers(0, 3, n)])
        for r, n in enumerate([11, 7, 1, 9])
    ]
    table = training_table(rows)
    whole = tensorize(table, config)
    expected = {}  # item id -> its two values in the whole request
    for g in range(whole.n_groups):
        for slot in range(int(whole.cand_len[g, 0])):
            expected[int(whole.cand_item_cat[g, slot, 0])] = whole.cand_item_num[g, slot, N_ITEM_NUM:].tolist()
    keep = rng.random(28) < 0.5
    groups = split_groups(with_candidate_set_columns(table), 3, rng, keep).table
    cut = tensorize(groups, config)
    seen = [
        (int(cut.cand_item_cat[g, slot, 0]), cut.cand_item_num[g, slot, N_ITEM_NUM:].tolist())
        for g in range(cut.n_groups) for slot in range(int(cut.cand_len[g, 0]))
    ]
    assert len(seen) == int(keep.sum()) and all(values == expected[item] for item, values in seen)
    recomputed = tensorize(groups.drop_columns(list(CAND_SET_COLUMNS)), config)
    assert not torch.equal(recomputed.cand_item_num, cut.cand_item_num)  # groups alone would differ


@pytest.mark.parametrize("backbone", ["transformer", "dlrm"])
def test_only_a_model_with_the_switch_reads_them(backbone: str) -> None:
    rows = contexts_table(random_rows(4))
    base = {"backbone": backbone, "num_steps": 0} if backbone == "dlrm" else {}
    x = tensorize(rows, tiny_config(**base))
    moved = dataclasses.replace(x, cand_item_num=x.cand_item_num.clone())
    moved.cand_item_num[..., N_ITEM_NUM:] += 1.0
    torch.manual_seed(0)
    off = OnePiece(tiny_config(**base)).eval()
    torch.manual_seed(0)
    on = OnePiece(tiny_config(**base, candidate_set_features=True)).eval()
    with torch.no_grad():
        assert torch.equal(off(x).logits["click"], off(moved).logits["click"])
        assert not torch.equal(on(x).logits["click"], on(moved).logits["click"])
