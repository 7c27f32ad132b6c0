"""``onepiece compare``: paired intervals between rows of finished ablation runs."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from onepiece.cli import app
from onepiece.errors import UserError
from onepiece.evaluation.compare import SCORES_FILE, compare_runs, read_row
from onepiece.evaluation.significance import (
    FAILS,
    HOLDS,
    WITHIN_NOISE,
    bootstrap_aucs,
    paired_difference,
    pooled_difference,
    seed_resampled_difference,
)

REQUESTS, PER_REQUEST = 120, 10


def write_run(path, rows: dict[str, float], seeds: int = 2, world: int = 0):
    """A run directory whose row r scores click + noise of scale rows[r] (smaller = better)."""
    rng = np.random.default_rng(world)
    n = REQUESTS * PER_REQUEST
    click = (rng.random(n) < 0.2).astype(np.int8)
    columns = {
        "request": np.repeat(np.arange(REQUESTS), PER_REQUEST),
        "user_id": np.repeat(np.arange(REQUESTS) % 40, PER_REQUEST),
        "item_id": rng.integers(0, 500, n),
        "click": click,
    }
    for row, noise in rows.items():
        for s in range(seeds):
            columns[f"{row}@{s}"] = click + noise * np.random.default_rng(100 * world + s + sum(map(ord, row))).normal(size=n)
    path.mkdir(parents=True)
    pq.write_table(pa.table(columns), path / SCORES_FILE)
    return path


def test_a_clearly_better_row_holds_and_the_reverse_fails(tmp_path):
    run = write_run(tmp_path / "r", {"good": 0.5, "bad": 3.0})
    ahead = compare_runs("good", "bad", [run], [run], resamples=200)
    behind = compare_runs("bad", "good", [run], [run], resamples=200)
    for metric in ("auc", "gauc"):
        d = ahead.splits[0].difference(metric)
        assert d.verdict == HOLDS and d.low > 0
        a_mean, b_mean = ahead.splits[0].means[metric]
        assert d.delta == pytest.approx(a_mean - b_mean)
        assert behind.splits[0].difference(metric).verdict == FAILS


def test_a_row_against_itself_in_another_run_on_the_split_is_within_noise(tmp_path):
    a = write_run(tmp_path / "a", {"x": 1.0})
    b = write_run(tmp_path / "b", {"x": 1.0})  # same world and seeds: the same scores
    d = compare_runs("x", "x", [a], [b], resamples=100).pooled("auc")
    assert d.delta == 0 and d.verdict == WITHIN_NOISE


def test_pooling_averages_the_splits_differences(tmp_path):
    w0 = write_run(tmp_path / "w0", {"a": 0.8, "b": 1.5}, world=0)
    w1 = write_run(tmp_path / "w1", {"a": 1.5, "b": 1.4}, world=1)
    both = compare_runs("a", "b", [w0, w1], [w0, w1], resamples=200)
    one = [compare_runs("a", "b", [w], [w], resamples=200).pooled("auc").delta for w in (w0, w1)]
    assert both.pooled("auc").delta == pytest.approx(np.mean(one))
    assert one[0] > 0.02 and abs(one[1]) < one[0]  # the worlds disagree in size
    doc = both.to_json()
    assert len(doc["splits"]) == 2 and doc["pooled"]["auc"]["verdict"] in (HOLDS, WITHIN_NOISE)
    json.dumps(doc, allow_nan=False)


def test_one_split_pooled_is_the_paired_difference():
    rng = np.random.default_rng(3)
    labels = (rng.random(600) < 0.3).astype(int)
    requests = np.repeat(np.arange(60), 10)
    scores = {f"{m}@{s}": labels + (1 + m) * rng.normal(size=600) for m in (0, 1) for s in range(3)}
    full, draws = bootstrap_aucs(labels, scores, requests, 200, 0)
    a, b = [f"0@{s}" for s in range(3)], [f"1@{s}" for s in range(3)]
    assert pooled_difference([seed_resampled_difference(full, draws, a, b)]) == paired_difference(full, draws, a, b)
    with pytest.raises(ValueError, match="at least one split"):
        pooled_difference([])


def test_bad_input_names_the_file_and_the_problem(tmp_path):
    run = write_run(tmp_path / "r", {"dlrm": 1.0})
    with pytest.raises(UserError, match=r"no row 'onepiece'; it holds \['dlrm'\]"):
        read_row(run, "onepiece")
    with pytest.raises(UserError, match="not found"):
        read_row(tmp_path / "missing", "dlrm")
    other = write_run(tmp_path / "other", {"dlrm": 1.0}, world=5)
    with pytest.raises(UserError, match="different test candidates"):
        compare_runs("dlrm", "dlrm", [run], [other])
    three = write_run(tmp_path / "three", {"dlrm": 1.0}, seeds=3)
    with pytest.raises(UserError, match="as many of each"):
        compare_runs("dlrm", "dlrm", [run], [three])
    with pytest.raises(UserError, match="one B run per A run"):
        compare_runs("dlrm", "dlrm", [run], [run, run])


def test_the_command_prints_the_verdicts_and_writes_json(tmp_path):
    w0 = write_run(tmp_path / "w0", {"onepiece": 0.5, "dlrm": 3.0}, world=0)
    w1 = write_run(tmp_path / "w1", {"onepiece": 0.5, "dlrm": 3.0}, world=1)
    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(app, ["compare", "--a", "onepiece", "--b", "dlrm", "--runs", f"{w0},{w1}",
                                      "--resamples", "100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "pooled" in result.output and HOLDS in result.output
    doc = json.loads(out.read_text())
    assert doc["a"] == "onepiece" and doc["pooled"]["gauc"]["verdict"] == HOLDS
    bad = CliRunner().invoke(app, ["compare", "--a", "onepiece", "--b", "hstu", "--runs", str(w0)])
    assert bad.exit_code == 2 and "no row 'hstu'" in bad.output

