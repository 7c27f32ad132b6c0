"""Context-match statistics (``ModelConfig.context_match_features``): computed in the
model from the input tensors, they equal the gbdt row's hand features of the same rows
(``evaluation.hand_features``, computed from the Arrow rows), and they reach the logits
on every path."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt

import numpy as np
import pytest
import torch
from model_helpers import context_row, contexts_table, tiny_config

from onepiece.contract.schemas import TASKS
from onepiece.evaluation.hand_features import FEATURE_NAMES, hand_features
from onepiece.model import OnePiece, score, tensorize
from onepiece.model.matches import (
    MATCH_FEATURES,
    N_MATCH,
    NO_MATCH_AGE_DAYS,
    TIME_FEATURES,
    match_features,
    n_match,
)

#: The hand feature each model statistic equals (log1p taken of the counts).
_HAND = {
    **{f"ih_{k}_log_count": f"ih_{k}_count" for k in ("item", "shop", "category")},
    **{f"ih_{k}_share": f"ih_{k}_share" for k in ("item", "shop", "category")},
    **{f"ih_{k}_recent": f"ih_{k}_recent" for k in ("item", "shop", "category")},
    **{f"pa_{g}": f"pa_{g}" for g in ("exposed", "clicked", "ordered")},
}


def _rows(n: int = 9, seed: int = 4) -> list[dict]:
    """Small id ranges, so candidates often match their IH and PA items (and -1 ids); IH
    events spread over 0..20 days before as_of, oldest first."""
    rng = np.random.default_rng(seed)
    ages = np.random.default_rng(seed + 100)
    rows = []
    for r in range(n):
        ih = [int(x) for x in rng.integers(-1, 15, rng.integers(0, 9))]
        pa = sorted((int(g), int(i)) for g, i in zip(rng.integers(0, 3, 6), rng.integers(-1, 15, 6)))
        cands = [int(x) for x in rng.choice(np.arange(-1, 15), rng.integers(1, 8), replace=False)]
        row = context_row(f"r{r}", r, r, ih, pa[: int(rng.integers(0, 7))], cands, seed=r)
        days = np.sort(ages.uniform(0.0, 20.0, len(ih)))[::-1]
        row["ih_ts"] = [row["as_of"] - dt.timedelta(days=float(d)) for d in days]
        rows.append(row)
    return rows


def _flat(x, values: torch.Tensor) -> np.ndarray:
    """(G, C, F) over the valid candidate slots, in the rows' candidate order."""
    valid = torch.arange(values.shape[1])[None] < x.cand_len
    return values[valid].numpy()


def test_the_match_statistics_equal_the_gbdt_rows_hand_features():
    table = contexts_table(_rows())
    config = tiny_config(context_match_features=True, group_size=3)
    x = tensorize(table, config)
    got = _flat(x, OnePiece(config).encoder.match_stats(x))
    hand, names = hand_features(table)
    assert got.shape == (hand.shape[0], N_MATCH)
    for j, name in enumerate(MATCH_FEATURES):
        if name not in _HAND:
            continue
        want = hand[:, names.index(_HAND[name])]
        want = np.log1p(want) if name.endswith("log_count") else want
        np.testing.assert_allclose(got[:, j], want, atol=1e-5, err_msg=name)
    intent = hand[:, names.index("ih_item_carts")] + hand[:, names.index("ih_item_orders")]
    np.testing.assert_allclose(got[:, MATCH_FEATURES.index("ih_item_log_intent")], np.log1p(intent), atol=1e-5)
    ih_length = hand[:, names.index("ih_length")]
    np.testing.assert_allclose(got[:, MATCH_FEATURES.index("ih_log_length")], np.log1p(ih_length), atol=1e-5)
    assert (got[:, MATCH_FEATURES.index("ih_item_log_count")] > 0).sum() >= 3  # matches do occur
    assert (got[:, MATCH_FEATURES.index("pa_clicked")] > 0).sum() >= 1
    assert set(FEATURE_NAMES) >= set(_HAND.values())


def test_the_time_statistics_equal_the_gbdt_rows_fresh_and_last_age():
    """``match_time_features``: per key the hand features' ``fresh`` and log1p of their
    ``last_age_days`` (NaN without a match -> the cap), after the other statistics."""
    table = contexts_table(_rows())
    config = tiny_config(context_match_features=True, match_time_features=True, group_size=3)
    x = tensorize(table, config)
    got = _flat(x, OnePiece(config).encoder.match_stats(x))
    assert got.shape == (len(got), n_match(config)) and n_match(config) == N_MATCH + 6
    assert match_features(config) == MATCH_FEATURES + TIME_FEATURES
    without = _flat(x, OnePiece(dataclasses.replace(config, match_time_features=False)).encoder.match_stats(x))
    np.testing.assert_array_equal(got[:, :N_MATCH], without)  # the earlier columns unchanged
    hand, names = hand_features(table)
    for key in ("item", "shop", "category"):
        fresh = got[:, match_features(config).index(f"ih_{key}_fresh")]
        np.testing.assert_allclose(fresh, hand[:, names.index(f"ih_{key}_fresh")], atol=1e-5, err_msg=key)
        age = hand[:, names.index(f"ih_{key}_last_age_days")]
        want = np.log1p(np.minimum(np.nan_to_num(age, nan=NO_MATCH_AGE_DAYS), NO_MATCH_AGE_DAYS))
        last = got[:, match_features(config).index(f"ih_{key}_log_last_age")]
        np.testing.assert_allclose(last, want, atol=1e-5, err_msg=key)
        assert np.isfinite(age).sum() >= 3 and np.isnan(age).sum() >= 3, key  # both cases occur
    assert np.ptp(got[:, match_features(config).index("ih_category_fresh")]) > 0.1


def test_price_against_the_ih_is_the_log_price_over_the_ih_mean():
    rows = _rows(seed=11)
    table = contexts_table(rows)
    config = tiny_config(context_match_features=True, group_size=4)
    x = tensorize(table, config)
    got = _flat(x, OnePiece(config).encoder.match_stats(x))[:, MATCH_FEATURES.index("price_vs_ih")]
    want = []
    for row in rows:  # the contract's fixed transform of the price: log1p
        ih = np.log1p(np.array(row["ih_price"], np.float64))
        want += [float(np.log1p(p) - ih.mean()) if len(ih) else 0.0 for p in row["cand_price"]]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(want).max() > 0.1


@pytest.mark.parametrize("time", [False, True])
@pytest.mark.parametrize(
    "variant",
    [{"context_sees_candidates": False}, {}, {"backbone": "dlrm", "num_steps": 0}, {"reasoning": "last_token"}],
)
def test_every_path_reads_the_matches_and_the_shared_layout_agrees(variant, time):
    torch.manual_seed(0)
    config = tiny_config(**variant, context_match_features=True, match_time_features=time, wide_numerics=True)
    n = n_match(config)
    model = OnePiece(config).eval()
    torch.nn.init.normal_(model.wide.linear.weight, std=1.0)
    table = contexts_table(_rows(seed=6))
    x = tensorize(table, config)
    valid = torch.arange(x.cand_item_cat.shape[1])[None] < x.cand_len
    matches = model.encoder.match_stats(x)

    # the wide term adds exactly W_match @ matches to every step's logit
    unwide = copy.deepcopy(model)
    unwide.wide.linear.weight.data[:, -n:] = 0
    with torch.no_grad():
        got, without = model(x).logits, unwide(x).logits
    for t, task in enumerate(model.wide.tasks):
        want = matches @ model.wide.linear.weight[t, -n:].detach()  # (B, C)
        diff = (got[task] - without[task])[valid]
        assert (diff - want[valid][:, None]).abs().max() <= 1e-4, task
    assert (matches @ model.wide.linear.weight[0, -n:].detach())[valid].abs().max() > 0.1

    # the events' ages reach the scores exactly when the time statistics are read
    older = dataclasses.replace(x, ih_age_days=x.ih_age_days + 5.0)
    with torch.no_grad():
        moved = (got["click"] - model(older).logits["click"]).abs()[valid]
    assert (moved.max() > 1e-4) if time else (moved.max() == 0)

    # the match adapter's output reaches every candidate's score on every path
    deaf = copy.deepcopy(model)
    torch.nn.init.zeros_(deaf.encoder.match_adapter[-1].weight)
    torch.nn.init.zeros_(deaf.encoder.match_adapter[-1].bias)
    with torch.no_grad():
        change = (got["click"] - deaf(x).logits["click"]).abs()[valid]
    # exactly equal where the adapter did not reach (same graph otherwise); at random init
    # one DLRM candidate moved by only ~1e-6, so the bound is "moved at all" plus a typical size
    assert change.min() > 0 and change.median() > 1e-5

    if model.shares_context:  # each group's context row is found through group_context
        base = score(model, x, trim=False, chunk_size=0)
        shared = score(model, tensorize(table, config, shared_context=True), chunk_size=3, group_chunk=2)
        for task in TASKS:
            assert (shared[task] - base[task]).abs().max() <= 1e-5


def test_the_time_statistics_are_one_set_away_and_off_in_older_configs():
    """``--set match_time_features=true`` turns them on for a ranking row; a config.json
    written before the field existed rebuilds without them; nothing without the matches."""
    from onepiece.cli.train import parse_overrides
    from onepiece.model import variant_config
    from onepiece.model.config import ModelConfig

    on = variant_config("onepiece", **parse_overrides(["match_time_features=true"]))
    assert on.match_time_features and n_match(on) == N_MATCH + len(TIME_FEATURES)
    older = on.to_json().replace('"match_time_features": true,\n', "")
    assert '"match_time_features"' not in older
    assert ModelConfig.from_json(older).match_time_features is False
    assert n_match(variant_config("onepiece_retrieval", match_time_features=True)) == 0
