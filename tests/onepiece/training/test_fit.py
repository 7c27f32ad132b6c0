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
