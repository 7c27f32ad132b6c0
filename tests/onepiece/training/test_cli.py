"""`onepiece train` and `onepiece evaluate` end to end on the tiny world's shards."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from onepiece.cli import app


def _set_args(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}")]


def test_train_then_evaluate_writes_a_checkpoint_and_metrics(tiny_shards, tiny_model, tmp_path: Path) -> None:
    train_dir, eval_dir = tiny_shards
    ckpt, out = tmp_path / "ckpt", tmp_path / "eval"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["train", "--train", str(train_dir), "--eval", str(eval_dir), "--variant", "onepiece",
         "--out", str(ckpt), "--epochs", "1", "--batch-size", "32", "--threads", "1"]
        + _set_args(tiny_model),
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in ckpt.iterdir()} >= {"model.safetensors", "config.json", "history.json", "train_config.json"}
    assert json.loads((ckpt / "config.json").read_text())["d_model"] == tiny_model["d_model"]

    for attempt in range(2):  # a rerun replaces the output with the same content
        result = runner.invoke(app, ["evaluate", "--checkpoint", str(ckpt), "--eval", str(eval_dir), "--out", str(out)])
        assert result.exit_code == 0, result.output
        text = (out / "metrics.json").read_text()
        if attempt == 0:
            first = text
    assert text == first
    doc = json.loads(text)
    assert list(doc) == ["ranking"]
    assert list(doc["ranking"]) == ["click", "add_to_cart", "order"]
    assert all(list(v) == ["auc", "gauc"] for v in doc["ranking"].values())
    assert 0.0 <= doc["ranking"]["click"]["auc"] <= 1.0
    # The checkpoint's own early-stopping history agrees with a fresh evaluation.
    history = json.loads((ckpt / "history.json").read_text())
    assert history["best_eval"] == doc["ranking"]["click"]["auc"]
    assert (out / "training_curves.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| click |" in report and "baseline" in report and "Verdict" in report


def test_bad_arguments_are_one_line_errors(tiny_shards, tmp_path: Path) -> None:
    train_dir, eval_dir = tiny_shards
    runner = CliRunner()
    result = runner.invoke(
        app, ["train", "--train", str(tmp_path / "nope"), "--eval", str(eval_dir), "--out", str(tmp_path / "c")]
    )
    assert result.exit_code == 2 and "training-set directory not found" in result.output
    result = runner.invoke(
        app, ["train", "--train", str(train_dir), "--eval", str(eval_dir), "--out", str(tmp_path / "c"), "--variant", "nope"]
    )
    assert result.exit_code == 2 and "unknown model variant 'nope'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "c").exists()
