"""Platt calibration of the task heads: the fit, score() applying it, and the config,
checkpoint and export carrying it (the fit on real traffic is tested in
tests/onepiece/pipeline/test_calibrate.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from model_helpers import contexts_table, random_rows, tiny_config

from onepiece.contract.schemas import TASKS
from onepiece.evaluation.metrics import auc
from onepiece.model import ModelConfig, OnePiece, load_checkpoint, save_checkpoint, score, tensorize
from onepiece.model import calibration


def _inflated(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn at a ~10% rate and a head whose probabilities average ~6x that."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-3.0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(np.int8)
    head = (1 / (1 + np.exp(-(0.7 * (true_logit + 3.0) + 0.5)))).astype(np.float32)
    return head, labels


def test_the_fit_restores_the_base_rate_lowers_the_log_loss_and_keeps_the_order():
    head, labels = _inflated()
    logits = calibration.logits_of(head)
    params = calibration.fit_platt(logits, labels)
    assert params is not None
    after = calibration.calibrated(logits, params)
    before_fig, after_fig = calibration.figures(head, labels), calibration.figures(after, labels)
    assert before_fig["predicted_over_realised"] > 4
    assert after_fig["predicted_over_realised"] == pytest.approx(1.0, abs=0.02)
    assert after_fig["log_loss"] < before_fig["log_loss"] - 0.1
    assert params["scale"] == pytest.approx(1 / 0.7, rel=0.1)  # the map that made the head
    assert auc(labels, after) == auc(labels, head)


def test_a_head_that_ranks_backwards_is_flattened_not_inverted_and_too_few_positives_fit_nothing():
    head, labels = _inflated()
    params = calibration.fit_platt(-calibration.logits_of(head), labels)
    assert params is not None and params["scale"] == calibration.MIN_SCALE
    few = np.zeros(1000, np.int8)
    few[: calibration.MIN_CLASS_COUNT - 1] = 1
    assert calibration.fit_platt(np.linspace(-1, 1, 1000), few) is None


def test_score_applies_the_configs_map_and_is_the_raw_head_without_one(tmp_path):
    assert ModelConfig().calibration == {}  # identity by default
    torch.manual_seed(0)
    model = OnePiece(tiny_config())
    contexts = contexts_table(random_rows(12, seed=3))
    inputs = tensorize(contexts, model.config)
    valid = inputs.cand_flat_index.numpy() >= 0
    raw = {t: p.numpy()[valid] for t, p in score(model, inputs).items()}
    maps = {"click": {"scale": 1.7, "bias": -2.5}, "order": {"scale": 0.4, "bias": -4.0}}
    model.config = dataclasses.replace(model.config, calibration=maps)
    got = {t: p.numpy()[valid] for t, p in score(model, inputs).items()}
    for task in TASKS:
        want = calibration.calibrated(calibration.logits_of(raw[task]), maps.get(task))
        np.testing.assert_allclose(got[task], want, rtol=2e-4, atol=1e-7)
        assert np.array_equal(np.argsort(got[task], kind="stable"), np.argsort(raw[task], kind="stable"))
    assert np.array_equal(got["impression"], raw["impression"])  # a task without a map is untouched

    # the checkpoint carries the map in config.json (no pickle) and scores the same
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ckpt"))
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["calibration"] == maps
    assert loaded.config.calibration == maps
    reloaded = {t: p.numpy()[valid] for t, p in score(loaded, inputs).items()}
    for task in TASKS:
        np.testing.assert_array_equal(reloaded[task], got[task])


def test_a_config_without_calibration_loads_as_the_identity_and_bad_maps_are_refused():
    old = json.loads(ModelConfig().to_json())
    del old["calibration"]  # a config.json written before calibration existed
    assert ModelConfig.from_json(json.dumps(old)).calibration == {}
    for bad in ({"click": {"scale": 0.0, "bias": 0.0}}, {"click": {"scale": -1.0, "bias": 0.0}},
                {"clicks": {"scale": 1.0, "bias": 0.0}}, {"click": {"scale": 1.0}},
                {"order": {"scale": 1.0, "bias": float("nan")}}):
        with pytest.raises(ValueError, match="calibration"):
            ModelConfig(calibration=bad)
