"""The one training loop: early stopping on the caller's metric, best epoch kept, seeded."""

from __future__ import annotations

import torch

from onepiece.model import variant_config
from onepiece.training.batches import epoch_batches
from onepiece.training.config import TrainConfig
from onepiece.training.fit import FitSettings, Score, fit


def test_fit_stops_after_patience_and_keeps_the_best_epoch(tiny_split, tiny_model) -> None:
    rows = tiny_split[0].slice(0, 30)
    config = variant_config("onepiece", **tiny_model)
    sampling = TrainConfig(batch_size=16, max_unexposed=5)
    metric = [0.5, 0.9, 0.7, 0.6, 0.95]  # best at epoch 2, then two epochs worse: stop
    weights = {}

    def evaluate(model) -> Score:
        epoch = len(weights) + 1
        weights[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        return Score("made_up", metric[epoch - 1], {"seen": epoch})

    result = fit(
        config,
        FitSettings(epochs=5, lr=1e-2, patience=2, threads=1),
        lambda epoch: epoch_batches(rows, config, sampling, epoch),
        evaluate,
    )
    history = result.history
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3, 4]
    assert (history["best_epoch"], history["best_eval"], history["eval_metric"]) == (2, 0.9, "made_up")
    assert [e["seen"] for e in history["epochs"]] == [1, 2, 3, 4]
    final = result.model.state_dict()
    assert all(torch.equal(final[k], weights[2][k]) for k in final)
    assert not all(torch.equal(final[k], weights[4][k]) for k in final)
    assert not result.model.training


def test_an_undefined_metric_never_counts_as_best(tiny_split, tiny_model) -> None:
    rows = tiny_split[0].slice(0, 20)
    config = variant_config("onepiece", **tiny_model)
    result = fit(
        config,
        FitSettings(epochs=2, lr=1e-2, patience=5, threads=1),
        lambda epoch: epoch_batches(rows, config, TrainConfig(batch_size=16, max_unexposed=5), epoch),
        lambda model: Score("auc", float("nan")),
    )
    assert result.history["best_epoch"] is None and result.history["best_eval"] is None
    assert [e["eval"] for e in result.history["epochs"]] == [None, None]


def test_the_cosine_schedule_warms_up_then_decays_to_zero(tiny_split, tiny_model) -> None:
    import math

    import pytest

    from onepiece.training.batches import batches_per_epoch
    from onepiece.training.fit import lr_factor

    rows = tiny_split[0].slice(0, 30)
    config = variant_config("onepiece", **tiny_model)
    sampling = TrainConfig(batch_size=8, max_unexposed=5)
    per_epoch = batches_per_epoch(rows, config, sampling)
    settings = FitSettings(epochs=2, lr=1e-2, patience=5, threads=1, lr_schedule="cosine", warmup_steps=2,
                           steps_per_epoch=per_epoch)
    result = fit(config, settings, lambda epoch: epoch_batches(rows, config, sampling, epoch),
                 lambda model: Score("auc", 0.5))
    used = [s["lr"] for s in result.history["steps"]]
    assert used == pytest.approx([1e-2 * lr_factor(settings, i) for i in range(len(used))])
    assert used[0] == pytest.approx(5e-3) and used[1] < 1e-2 and max(used) == pytest.approx(used[1])
    assert all(a >= b for a, b in zip(used[1:], used[2:])) and used[-1] < 0.1 * used[1]
    total = 2 * per_epoch
    assert lr_factor(settings, total // 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * (total // 2) / total)))
    constant = FitSettings(epochs=2, lr=1e-2, warmup_steps=4)
    assert [lr_factor(constant, i) for i in (0, 3, 50)] == [0.25, 1.0, 1.0]
    with pytest.raises(ValueError, match="steps_per_epoch"):
        FitSettings(epochs=2, lr=1e-2, lr_schedule="cosine")


def test_a_shared_context_model_trains_on_whole_requests(tiny_split, tiny_model) -> None:
    """Without ``context_sees_candidates`` an epoch's batches are whole requests in the
    shared-context layout: every kept candidate once, in groups of at most C, about
    batch_size groups a batch, each request's context once; seeded like the others."""
    import numpy as np
    import pyarrow.compute as pc

    from onepiece.training.groups import sample_candidates

    rows = tiny_split[0].slice(0, 40)
    config = variant_config("onepiece_shared", **tiny_model)
    sampling = TrainConfig(batch_size=16, max_unexposed=5)
    batches = list(epoch_batches(rows, config, sampling, 1))
    assert all(b.inputs.group_context is not None for b in batches)
    keep = sample_candidates(rows, np.random.default_rng([sampling.seed, 1]), sampling.max_unexposed)
    flat_ids = pc.list_flatten(rows["cand_item_id"]).to_numpy()
    parents = np.asarray(pc.list_parent_indices(rows["cand_item_id"]))
    kept = sorted(zip(rows["request_id"].to_numpy(zero_copy_only=False)[parents[keep]], flat_ids[keep]))
    seen, contexts = [], 0
    for b in batches:
        x = b.inputs
        assert x.n_groups <= sampling.batch_size + 200 // config.group_size
        assert len(torch.unique(x.group_context)) == x.batch_size  # each context once
        assert int(x.cand_len.max()) <= config.group_size
        contexts += x.batch_size
        valid = x.cand_flat_index >= 0
        seen += [int(i) for i in x.cand_item_cat[..., 0][valid]]
        assert b.labels["click"].shape == x.cand_flat_index.shape
    assert sorted(seen) == sorted(int(i) for _, i in kept)
    assert contexts == len({r for r, _ in kept})
    again = list(epoch_batches(rows, config, sampling, 1))
    assert all(torch.equal(a.inputs.cand_item_cat, b.inputs.cand_item_cat) for a, b in zip(batches, again))
    result = fit(config, FitSettings(epochs=1, lr=1e-2, patience=1, threads=1),
                 lambda epoch: epoch_batches(rows, config, sampling, epoch), lambda model: Score("auc", 0.5))
    assert np.isfinite(result.history["steps"][-1]["loss"])
