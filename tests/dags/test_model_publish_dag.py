"""The model_publish DAG publishes a given checkpoint as a new, smoke-tested, pinned
version (the gate's refusals are unit-tested in tests/onepiece/pipeline)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from dag_helpers import dags_test, tail, tiny_checkpoint

pytestmark = pytest.mark.slow


def test_publish_evaluates_exports_smokes_and_pins_a_checkpoint(
    deployment, airflow_home, tmp_path
):
    # A private copy: the refresh tests keep scoring the shared deployment's version 1.
    data, repo = tmp_path / "data", tmp_path / "model_repo"
    shutil.copytree(deployment.data, data)
    shutil.copytree(deployment.model_repo, repo)
    env = deployment.env(airflow_home) | {"ONEPIECE_DATA": str(data), "ONEPIECE_MODEL_REPO": str(repo)}
    checkpoint = tiny_checkpoint(tmp_path / "ckpt-v2", seed=2)

    result = dags_test(env, "model_publish", "2026-11-04",
                       {"checkpoint": str(checkpoint), "min_gain": -1.0, "calibration_hours": 2,
                        "retrieval": True, "epochs": 1})
    assert result.returncode == 0, tail(result)
    log = result.stdout + result.stderr
    assert "'serving_version': 1" in log  # evaluated against the serving model
    pin = json.loads((data / "serving" / "model_pin.json").read_text())
    assert (pin["model_name"], pin["version"], pin["metric"]) == ("onepiece_ranker", 2, "click_auc")
    exported = repo / "onepiece_ranker" / "2"
    assert (exported / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()
    # the calibrate task's Platt maps travel in the exported config (the impression head
    # always has enough positives on the tiny world); the smoke test scored with them
    assert "impression" in json.loads((exported / "config.json").read_text())["calibration"]
    assert "'calibrated': True" in log
    gap = re.search(r"'max_abs_gap': ([0-9.e-]+)", log)
    assert gap and float(gap[1]) <= 1e-4  # the smoke test: served scores == in-process scores

    # The retrieval task: onepiece_retrieval trained on the train days, published with its
    # item index as of the held-out day as onepiece_user_tower version 1, loadable.
    from onepiece import storage
    from onepiece.model import load_checkpoint
    from onepiece.retrieval.index import load_item_index

    tower = repo / "onepiece_user_tower"
    assert sorted(p.name for p in tower.iterdir()) == ["1", "config.pbtxt"]
    model = load_checkpoint(tower / "1")
    assert model.config.name == "onepiece_retrieval" and model.config.mode == "retrieval"
    index, manifest = load_item_index(tower / "1" / "item_index")
    held_out = storage.list_days(str(data), "candidates")[-1]
    assert manifest["item_snapshot_as_of"] == f"{held_out.isoformat()}T00:00:00+00:00"
    assert manifest["model"]["version"] == 1 and index.size == manifest["items"] > 0
    assert 'name: "user_vectors"' in (tower / "config.pbtxt").read_text()
    assert "'item_index': '" + str(tower / "1" / "item_index") in log
