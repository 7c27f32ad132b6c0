"""The ablation table: rows, files, and the claims it checks."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onepiece.cli import app
from onepiece.evaluation import ablation
from onepiece.evaluation.hand_features import FEATURE_NAMES
from onepiece.evaluation.significance import bootstrap_aucs
from onepiece.model import VARIANTS

ISSUE_VARIANTS = (
    "dlrm hstu hstu_pa rearec rearec_pa onepiece onepiece_ids_only onepiece_no_pa onepiece_no_sd "
    "onepiece_causal onepiece_invisible onepiece_k1 onepiece_k2 onepiece_last_step"
).split()


def test_every_issue_variant_is_a_row_and_a_model_variant() -> None:
    assert set(ISSUE_VARIANTS) <= set(ablation.VARIANT_NAMES)
    assert set(ablation.VARIANT_NAMES) - ablation.NON_NEURAL <= set(VARIANTS)
    assert ablation.NON_NEURAL == {"gbdt", "gbdt_no_history"}  # LightGBM, not a ModelConfig
    assert not ablation.NON_NEURAL & set(VARIANTS)


def test_orderings_compare_the_measured_numbers() -> None:
    rows = [
        {"variant": "hstu", "click_auc": 0.70},
        {"variant": "hstu_pa", "click_auc": 0.72},
        {"variant": "onepiece", "click_auc": 0.71},
        {"variant": "rearec_pa", "click_auc": 0.75},
    ]
    claims = {c.text: c for c in ablation.check_claims(rows)}
    assert claims["PA helps HSTU (hstu_pa > hstu)"].holds is True
    assert claims["onePiece beats ReaRec+PA"].holds is False
    assert claims["onePiece beats ReaRec+PA"].verdict == "fails"  # no test scores: the sign alone
    assert "onePiece beats DLRM" not in claims  # not measured, not claimed


def test_claims_get_paired_intervals_over_seeds() -> None:
    rng = np.random.default_rng(0)
    requests = np.repeat(np.arange(300), 10)
    labels = (rng.random(requests.size) < 0.3).astype(np.int8)
    informed = {s: labels + rng.normal(0, 1.0, labels.size) for s in (0, 1)}  # AUC ~0.7
    blind = {s: rng.normal(0, 1.0, labels.size) for s in (0, 1)}  # AUC ~0.5
    rows = [{"variant": "onepiece", "click_auc": 0.7}, {"variant": "dlrm", "click_auc": 0.5},
            {"variant": "rearec_pa", "click_auc": 0.5}]
    scores = {f"onepiece@{s}": informed[s] for s in (0, 1)} | {f"dlrm@{s}": blind[s] for s in (0, 1)}
    scores |= {f"rearec_pa@{s}": blind[s] + rng.normal(0, 0.01, labels.size) for s in (0, 1)}
    claims = {c.a + ">" + c.b: c for c in ablation.check_claims(rows, labels, requests, scores, (0, 1), 300)}
    strong = claims["onepiece>dlrm"].difference
    assert strong is not None and strong.low > 0.1 and claims["onepiece>dlrm"].verdict == "holds"
    assert len(strong.per_seed) == 2 and strong.seed_std > 0
    assert strong.delta == pytest.approx(np.mean(strong.per_seed))
    # Two unrelated blind scorers (each seed's pair swapped on the other seed): equal on
    # average, so no ordering; each seed alone differs by chance.
    blind_rows = [{"variant": "dlrm", "click_auc": 0.5}, {"variant": "hstu", "click_auc": 0.5}]
    swapped = {f"dlrm@{s}": blind[s] for s in (0, 1)} | {f"hstu@{s}": blind[1 - s] for s in (0, 1)}
    near_claim = ablation.check_claims(blind_rows, labels, requests, swapped, (0, 1), 300)[0]
    assert near_claim.verdict == "within noise"
    near = near_claim.difference
    assert near.delta == pytest.approx(0.0, abs=1e-12) and near.seed_std > 0
    assert near.per_seed[0] == pytest.approx(-near.per_seed[1])
    # Paired: a scorer against a slightly perturbed copy of itself has a narrow interval,
    # though each one's own AUC varies far more across the same resamples.
    twin = {f"dlrm@{s}": blind[s] for s in (0, 1)} | {f"hstu@{s}": blind[s] + rng.normal(0, 0.01, labels.size) for s in (0, 1)}
    paired = ablation.check_claims(blind_rows, labels, requests, twin, (0, 1), 300)[0].difference
    _, draws = bootstrap_aucs(labels, {"dlrm": blind[0]}, requests, 300)
    assert paired.high - paired.low < 0.1 * (np.percentile(draws["dlrm"], 97.5) - np.percentile(draws["dlrm"], 2.5))


def test_the_interval_holds_the_training_noise_of_seeds_that_disagree() -> None:
    """Two seeds say A beats B by far, a third says the reverse: every seed's own difference
    is sure on the test day, but the seed-averaged one is not, and the interval says so."""
    rng = np.random.default_rng(1)
    requests = np.repeat(np.arange(400), 10)
    labels = (rng.random(requests.size) < 0.3).astype(np.int8)
    good = {s: labels + rng.normal(0, 0.7, labels.size) for s in range(3)}
    poor = {s: labels + rng.normal(0, 2.0, labels.size) for s in range(3)}
    scores = {f"hstu_pa@{s}": (good if s < 2 else poor)[s] for s in range(3)}
    scores |= {f"hstu@{s}": (poor if s < 2 else good)[s] for s in range(3)}
    rows = [{"variant": "hstu_pa", "click_auc": 0.8}, {"variant": "hstu", "click_auc": 0.7}]
    d = ablation.check_claims(rows, labels, requests, scores, (0, 1, 2), 400)[0].difference
    assert d.per_seed[0] > 0.1 and d.per_seed[1] > 0.1 and d.per_seed[2] < -0.1
    assert d.delta > 0.03 and d.low < 0 < d.high  # seed-mean +, yet within noise
    # The test day alone would have called it (one seed draw is fixed: no training noise).
    alone = ablation.check_claims(rows, labels, requests, {k: v for k, v in scores.items() if k.endswith("@0")},
                                  (0,), 400)[0].difference
    assert alone.low > 0.05


def test_gauc_claims_ignore_request_level_offsets() -> None:
    """A ranks each user's candidates better than B but adds a random offset per request:
    global AUC calls A worse, GAUC (each user's candidates among themselves) better."""
    rng = np.random.default_rng(2)
    requests = np.repeat(np.arange(400), 10)
    users = requests // 2  # two requests per user; offsets differ between them
    labels = (rng.random(requests.size) < 0.3).astype(np.int8)
    offsets = rng.normal(0, 3.0, 400)[requests]
    scores = {"dlrm@0": labels + rng.normal(0, 0.6, labels.size) + offsets * (requests % 2 == 0),
              "hstu@0": labels + rng.normal(0, 1.0, labels.size)}
    rows = [{"variant": "dlrm", "click_auc": 0.6, "click_gauc": 0.8},
            {"variant": "hstu", "click_auc": 0.7, "click_gauc": 0.7}]
    on_auc = ablation.check_claims(rows, labels, requests, scores, (0,), 300)[0]
    on_gauc = ablation.check_claims(rows, labels, requests, scores, (0,), 300, users=users)[0]
    assert on_auc.verdict == "fails" and on_gauc.verdict == "holds"
    assert on_gauc.holds and not on_auc.holds  # each from its own column of the rows


def test_the_bootstrap_resamples_whole_requests() -> None:
    labels = np.array([0, 1, 0, 1, 1, 0])
    scores = {"a": np.array([0.1, 0.9, 0.4, 0.3, 0.8, 0.2])}
    one_request = np.zeros(6, dtype=np.int64)
    full, draws = bootstrap_aucs(labels, scores, one_request, resamples=20)
    assert np.all(draws["a"] == full["a"])  # one request: every resample is the whole data
    full, draws = bootstrap_aucs(labels, scores, np.arange(6), resamples=200)
    assert np.nanstd(draws["a"]) > 0  # one candidate per request: resamples differ



def test_split_holds_out_validation_from_the_training_days(tiny_split) -> None:
    train_rows, test_rows = tiny_split
    cfg = ablation.AblationConfig(max_train_requests=100, max_test_requests=50, valid_fraction=0.2)
    fit, valid, test = ablation.split_rows(train_rows, test_rows, cfg)
    assert fit.num_rows + valid.num_rows == 100 and test.num_rows == 50
    ids = set(fit["request_id"].to_pylist())
    assert not ids & set(valid["request_id"].to_pylist())
    assert set(test["request_id"].to_pylist()) <= set(test_rows["request_id"].to_pylist())
    again = ablation.split_rows(train_rows, test_rows, cfg)
    assert again[1].equals(valid)
    # A learning curve's budgets are scored on the same test requests.
    bigger = ablation.split_rows(train_rows, test_rows, dataclasses.replace(cfg, max_train_requests=150))
    assert bigger[2].equals(test) and bigger[0].num_rows + bigger[1].num_rows == 150


def test_ablation_command_on_prebuilt_shards(tiny_split, tiny_model, tmp_path: Path) -> None:
    from onepiece import storage

    train_rows, test_rows = tiny_split
    storage.write_parquet(train_rows, tmp_path / "ts" / "train" / "part-0.parquet")
    storage.write_parquet(test_rows, tmp_path / "ts" / "test" / "part-0.parquet")
    out = tmp_path / "abl"
    result = CliRunner().invoke(
        app,
        ["ablation", "--trainset", str(tmp_path / "ts"), "--out", str(out), "--variants", "onepiece,hstu,gbdt",
         "--epochs", "1", "--threads", "1", "--workers", "1", "--max-train-requests", "60",
         "--max-test-requests", "40", "--lr", "0.003", "--patience", "2", "--learning-curve", "30"]
        + [a for k, v in tiny_model.items() for a in ("--set", f"{k}={json.dumps(v)}")],
    )
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "ablation.md").read_text().split("Settings: ")[1].split("; train")[0])
    assert (settings["lr"], settings["patience"], settings["batch_size"]) == (0.003, 2, 64)
    doc = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in doc["rows"]] == ["popularity", "ctr_7d", "onepiece", "hstu", "gbdt"]
    keys = ["variant", "click_auc", "click_gauc", "add_to_cart_auc", "add_to_cart_gauc", "order_auc", "order_gauc"]
    for row in doc["rows"]:
        assert list(row) == keys
        assert all(row[k] is None or 0.0 <= row[k] <= 1.0 for k in keys[1:])
    table = (out / "ablation.md").read_text()
    assert "| main | onepiece |" in table and "0.911" in table  # the paper's number beside ours
    assert "| main | gbdt |" in table and "## What the gbdt row's click model splits on" in table
    orderings = json.loads((out / "orderings.json").read_text())
    assert orderings["seeds"] == [0]
    claims = {c["claim"]: c for c in orderings["claims"]}
    assert set(claims) == {"onePiece beats popularity", "onePiece beats the LightGBM floor (onepiece > gbdt)",
                           "onePiece beats the item's 7-day CTR alone (onepiece > ctr_7d)"}
    assert "| reference | ctr_7d |" in table
    # the reference row is the CTR column itself
    ctr_claim = claims["onePiece beats the item's 7-day CTR alone (onepiece > ctr_7d)"]
    claim = claims["onePiece beats popularity"]
    low, high = claim["ci95"]
    assert low <= claim["delta"] <= high and claim["verdict"] in ("holds", "fails", "within noise")
    assert f"| onePiece beats popularity | {claim['delta']:+.4f} |" in table
    # The saved test scores give the same difference again (the orderings can be rechecked).
    import pyarrow.parquet as pq

    from onepiece.evaluation.metrics import auc

    saved = pq.read_table(out / "test_scores.parquet").to_pydict()
    assert {"request", "click", "onepiece@0", "hstu@0", "gbdt@0", "popularity@0", "ctr_7d@0"} <= set(saved)
    ctr_row = next(r for r in doc["rows"] if r["variant"] == "ctr_7d")
    assert ctr_row["click_auc"] == pytest.approx(auc(np.array(saved["click"]), np.array(saved["ctr_7d@0"])))
    ctr_values = set(np.concatenate(test_rows["cand_ctr_7d"].to_pylist()).astype(np.float32).tolist())
    assert set(saved["ctr_7d@0"]) <= ctr_values
    assert auc(np.array(saved["click"]), np.array(saved["ctr_7d@0"])) - auc(
        np.array(saved["click"]), np.array(saved["onepiece@0"])) == pytest.approx(-ctr_claim["delta"])
    redone = auc(np.array(saved["click"]), np.array(saved["onepiece@0"])) - auc(
        np.array(saved["click"]), np.array(saved["popularity@0"]))
    assert redone == pytest.approx(claim["delta"])
    offsets = json.loads((out / "offsets.json").read_text())
    assert set(offsets) == {"onepiece", "hstu", "gbdt"} and offsets["onepiece"]["best_scale"] in (0, 0.25, 0.5, 0.75, 1, 1.5)
    assert "## Request level against order within requests" in table
    gauc_claim = {c["claim"]: c for c in orderings["gauc_claims"]}["onePiece beats popularity"]
    assert "on our click GAUC" in table and f"| onePiece beats popularity | {gauc_claim['delta']:+.4f} |" in table
    per_seed = json.loads((out / "seeds.json").read_text())["rows_by_seed"]
    assert [r["variant"] for r in per_seed["0"]] == ["popularity", "ctr_7d", "onepiece", "hstu", "gbdt"]
    importance = json.loads((out / "gbdt_importance.json").read_text())
    assert list(importance["by_seed"]) == ["0"] and importance["config"]["n_estimators"] == 500
    assert sorted(importance["mean"]) == sorted(FEATURE_NAMES) and all(g >= 0 for g in importance["mean"].values())
    assert "gbdt" in json.loads((out / "anchors.json").read_text())["rows"]
    history = json.loads((out / "history.json").read_text())
    assert set(history["rows"]) == {"onepiece", "hstu", "gbdt"} and 0.0 <= history["features_alone_auc"] <= 1.0
    assert all(r["unused"] == pytest.approx(r["auc_with_anchors"] - r["auc"]) for r in history["rows"].values())
    assert "History signal each row leaves unused" in (out / "ablation.md").read_text()
    assert (out / "ablation_click_auc.png").stat().st_size > 0
    curve = json.loads((out / "learning_curve.json").read_text())["points"]
    assert sorted(p["variant"] for p in curve) == ["gbdt", "hstu", "onepiece"] and {p["train_requests"] for p in curve} == {30}
    assert (out / "learning_curve.png").stat().st_size > 0 and "## Learning curve (click)" in table


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--lr", "0", "lr must be positive"), ("--patience", "0", "patience must be at least 1"),
    ("--lr-schedule", "linear", "lr_schedule must be one of"),
])
def test_ablation_command_names_a_bad_budget_option(option: str, value: str, message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ablation", "--trainset", str(tmp_path), option, value, "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_rows_trained_at_once_equal_rows_trained_one_by_one(tiny_split, tiny_model) -> None:
    train_rows, test_rows = tiny_split
    cfg = ablation.AblationConfig(epochs=1, max_train_requests=40, max_test_requests=30, batch_size=32)
    reported: list[str] = []
    rows = ("onepiece", "hstu", "gbdt")  # gbdt: the non-neural branch, in a worker too
    parallel = ablation.run_ablation(
        train_rows, test_rows, cfg, rows, on_row=lambda row, history: reported.append(row["variant"]),
        model_overrides=tiny_model,
    )
    serial = ablation.run_ablation(
        train_rows, test_rows, dataclasses.replace(cfg, workers=1), rows, model_overrides=tiny_model
    )
    assert parallel == serial
    assert [r["variant"] for r in parallel.rows] == ["popularity", "ctr_7d", "onepiece", "hstu", "gbdt"]
    assert sorted(reported) == ["gbdt", "hstu", "onepiece"]


@pytest.mark.slow
def test_ablation_command_runs_the_beam_job_with_feast(tiny_world: Path, tiny_model, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    out = tmp_path / "abl"
    result = CliRunner().invoke(
        app,
        ["ablation", "--data", str(data), "--out", str(out), "--variants", "onepiece", "--epochs", "1",
         "--threads", "1"]
        + [a for k, v in tiny_model.items() for a in ("--set", f"{k}={json.dumps(v)}")],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "ablation.json").read_text())["rows"]
    # --data is a generated world: its hidden utility scores the test day as a reference
    assert [r["variant"] for r in rows] == ["popularity", "ctr_7d", "world_utility", "onepiece"]
    by_name = {r["variant"]: r for r in rows}
    assert not math.isnan(by_name["onepiece"]["click_auc"])
    utility = by_name["world_utility"]
    assert utility["click_auc"] > max(by_name["popularity"]["click_auc"], 0.6) and utility["order_auc"] is None
    assert "| reference | world_utility |" in (out / "ablation.md").read_text()
    # and the row is regressed on the utility's terms: what of each it reproduces
    captured = json.loads((out / "captured.json").read_text())
    assert set(captured["rows"]["onepiece"]["coefficients"]) == set(captured["utility_spread"]) >= {"taste", "price"}
    assert "## What each row learned of the world's utility" in (out / "ablation.md").read_text()
    # and how much click AUC membership in the request's anchors would still add to it
    anchors = json.loads((out / "anchors.json").read_text())
    signal = anchors["rows"]["onepiece"]
    assert signal["unused"] == pytest.approx(signal["auc_with_anchors"] - signal["auc"])
    assert 0.0 <= anchors["anchors_alone_auc"] <= 1.0
    assert "## Anchor signal each row leaves unused" in (out / "ablation.md").read_text()
    assert (out / "trainset" / "train").is_dir()
