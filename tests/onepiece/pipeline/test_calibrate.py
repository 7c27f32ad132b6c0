"""model_publish's calibrate task on the tiny world: real Beam contexts jobs, real Feast
side features, the audit's labelling rule, then export of the calibrated checkpoint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest

from onepiece import storage
from onepiece.contract.schemas import CONTEXTS_SCHEMA, TASKS
from onepiece.model import calibration, load_checkpoint
from onepiece.pipeline import publish_model
from onepiece.serving.inprocess import probabilities_in_process
from onepiece.pipeline.config import PublishConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def published(tiny_world, tmp_path_factory):
    """A copy of the tiny world with the Feast registry applied, a tiny (untrained)
    checkpoint, and the calibrate task's result on the held-out (live) day."""
    from onepiece.features.registry import apply
    from onepiece.features.repo import FeatureRepoConfig
    from onepiece.model import OnePiece, save_checkpoint
    from onepiece.model.config import ModelConfig

    tmp_path = tmp_path_factory.mktemp("calibrate")
    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    apply(FeatureRepoConfig(data_root=str(data)))
    import torch

    torch.manual_seed(0)
    config = ModelConfig(
        d_model=32, n_layers=2, n_heads=4, id_dim=16, side_dim=8, item_vocab=512, shop_vocab=64,
        category_vocab=64, user_vocab=128, user_side_vocab=64, query_vocab=64, piece_vocab=128,
        ih_max_len=16, pa_per_group=4, group_size=4,
    )
    checkpoint = save_checkpoint(OnePiece(config), tmp_path / "ckpt")
    publish = PublishConfig.from_params(
        {"data": str(data), "model_repo": str(tmp_path / "model_repo"), "calibration_hours": 6,
         "calibration_requests_per_hour": 0, "beam_workers": 1}, {})
    days = storage.list_days(str(data), "candidates")
    sets = {"eval_day": days[-1].isoformat(), "train_days": [days[0].isoformat(), days[-2].isoformat()]}
    result = publish_model.calibrate(publish, "test-run", str(checkpoint), sets)
    return publish, checkpoint, sets, result


def test_the_fit_on_serving_shaped_traffic_calibrates_every_fitted_head_without_reordering(published):
    publish, checkpoint, sets, result = published
    figures = json.loads(open(result["figures"]).read())
    assert figures["fit_day"] == sets["eval_day"] and len(figures["windows"]) == 6
    # every window is an hour of the held-out day whose 6 h attribution is logged
    assert all(w[0].startswith(sets["eval_day"]) and w[0][11:13] <= "17" for w in figures["windows"])
    # The tiny world's live day has few clicks and fewer orders: only heads with enough
    # positives are fitted (the impression head always), the others stay the identity.
    fitted = [t for t in TASKS if figures["tasks"][t]["params"]]
    assert "impression" in fitted
    for task, fig in figures["tasks"].items():
        assert (task in fitted) == (fig["positives"] >= calibration.MIN_CLASS_COUNT)
        if task in fitted:
            assert fig["after"]["log_loss"] < fig["before"]["log_loss"]
            assert 0.95 < fig["after"]["predicted_over_realised"] < 1.05
            assert fig["params"]["scale"] > 0
        else:
            assert fig["after"] == fig["before"]
        assert fig["auc_after"] == fig["auc"]  # the order within a head is kept
    assert figures["tasks"]["impression"]["before"]["predicted_over_realised"] > 1.3  # the raw head was off

    # The calibrated checkpoint: same weights, the map in config.json; score() applies it.
    calibrated = load_checkpoint(result["checkpoint"])
    assert calibrated.config.calibration == {t: figures["tasks"][t]["params"] for t in fitted}
    assert (checkpoint / "model.safetensors").read_bytes() == (
        publish_model.Path(result["checkpoint"]) / "model.safetensors").read_bytes()
    contexts_dir = publish_model.work_dir(publish, "test-run") / "calibration" / "contexts"
    contexts = pa.concat_tables([storage.read_partition(d, "contexts").select(CONTEXTS_SCHEMA.names)
                                 for d in sorted(contexts_dir.iterdir())])
    raw = probabilities_in_process(load_checkpoint(checkpoint), contexts)
    got = probabilities_in_process(calibrated, contexts)
    for task in TASKS:
        want = calibration.calibrated(calibration.logits_of(raw[f"p_{task}"]), calibrated.config.calibration.get(task))
        np.testing.assert_allclose(got[f"p_{task}"], want, rtol=2e-4, atol=1e-7)
        mean = float(np.mean(got[f"p_{task}"]))
        if task in fitted:
            realised = figures["tasks"][task]["after"]["realised_rate"]
            assert mean == pytest.approx(realised, rel=0.1)


def test_export_writes_the_calibrated_config_and_finds_it_again(published):
    publish, checkpoint, _, result = published
    first = publish_model.export(publish, result["checkpoint"])
    again = publish_model.export(publish, result["checkpoint"])
    raw = publish_model.export(publish, str(checkpoint))  # same weights, no map: another version
    assert (first["version"], first["exported"]) == (1, True)
    assert (again["version"], again["exported"]) == (1, False)
    assert (raw["version"], raw["exported"]) == (2, True)
    version_dir = publish_model.Path(publish.serving.model_repo) / publish.serving.model_name / "1"
    served = json.loads((version_dir / "config.json").read_text())
    assert served["calibration"] == load_checkpoint(result["checkpoint"]).config.calibration != {}
    pbtxt = (version_dir.parent / "config.pbtxt").read_text()
    assert '\\"calibration\\":{\\"' in pbtxt  # the version's recorded config carries the map


def test_no_calibration_hours_publishes_the_checkpoint_as_it_is(tmp_path):
    config = PublishConfig.from_params({"data": str(tmp_path), "calibration_hours": 0}, {})
    assert publish_model.calibrate(config, "r", "/some/ckpt", {}) == {"checkpoint": "/some/ckpt", "calibrated": False}


def test_the_cli_fits_the_same_way_and_explains_bad_input(published, tmp_path):
    from typer.testing import CliRunner

    from onepiece.cli import app

    publish, checkpoint, sets, _ = published
    out = tmp_path / "ckpt_cal"
    args = ["calibrate", "--checkpoint", str(checkpoint), "--data", publish.data, "--out", str(out)]
    bad = CliRunner().invoke(app, [*args, "--day", "2026-13-01"])
    assert bad.exit_code == 2 and "invalid --day" in bad.output
    result = CliRunner().invoke(app, [*args, "--day", sets["eval_day"], "--hours", "2"])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "ckpt_cal.work" / "calibration.json").read_text())
    assert len(figures["windows"]) == 2 and figures["tasks"]["impression"]["params"]
    assert load_checkpoint(out).config.calibration["impression"] == figures["tasks"]["impression"]["params"]
