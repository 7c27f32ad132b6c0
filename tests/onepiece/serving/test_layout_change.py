"""Upgrading a repository across a tensor-layout change (paper-mask versions, then the
product's shared-context onepiece_invisible): refused by default, served with
``layout_change="replace"`` (the older versions stay on disk, unloaded), a pin of an
unloaded version refused with the way back, which works; the publish flow checks before
training; the real tritonserver loads the repository the change leaves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from serving_helpers import synthetic_contexts, write_checkpoint

from onepiece.errors import UserError
from onepiece.model.inputs import PER_GROUP, SHARED_CONTEXT
from onepiece.pipeline.config import PRODUCT_VARIANT, PublishConfig, ServingConfig
from onepiece.pipeline.pin import pin_version, read_pin, write_pin
from onepiece.serving.export import ExportConfig, check_served, export_checkpoint, policy_versions

REPLACE = ExportConfig(layout_change="replace")


def _repo_with_a_layout_change(tmp_path: Path) -> tuple[Path, dict[int, Path]]:
    """v1 paper mask (per-group), then v2 shared-context exported with replace."""
    checkpoints = {
        1: write_checkpoint(tmp_path / "paper", seed=0),
        2: write_checkpoint(tmp_path / "invisible", seed=1, context_sees_candidates=False),
    }
    repo = tmp_path / "model_repo"
    export_checkpoint(checkpoints[1], repo)
    export_checkpoint(checkpoints[2], repo, config=REPLACE)
    return repo, checkpoints


def test_a_layout_change_is_refused_by_default_and_named(tmp_path: Path) -> None:
    repo = tmp_path / "model_repo"
    export_checkpoint(write_checkpoint(tmp_path / "paper", seed=0), repo)
    shared = write_checkpoint(tmp_path / "invisible", seed=1, context_sees_candidates=False)
    with pytest.raises(UserError, match=r"v1 per_group, v2 shared_context.*--layout-change replace"):
        export_checkpoint(shared, repo)
    assert sorted(p.name for p in (repo / "onepiece_ranker").iterdir()) == ["1", "config.pbtxt"]
    with pytest.raises(UserError, match="layout_change must be refuse or replace, got 'keep'"):
        ExportConfig(layout_change="keep")  # type: ignore[arg-type]


def test_replace_serves_the_new_layout_and_leaves_the_old_versions_unloaded(tmp_path: Path) -> None:
    repo, _ = _repo_with_a_layout_change(tmp_path)
    model_dir = repo / "onepiece_ranker"
    pbtxt = (model_dir / "config.pbtxt").read_text()
    assert "version_policy: { specific { versions: [ 2 ] } }" in pbtxt
    assert 'name: "group_context"' in pbtxt and "# Layout changed: v1 (per_group) stay on disk" in pbtxt
    assert (model_dir / "1" / "model.safetensors").is_file()  # kept for a rollback
    assert policy_versions(model_dir, [1, 2]) == [2]
    # the next version of the served layout: the plain policy again, v1 still unloaded
    export_checkpoint(write_checkpoint(tmp_path / "invisible3", seed=3, context_sees_candidates=False), repo)
    pbtxt = (model_dir / "config.pbtxt").read_text()
    assert "version_policy: { latest { num_versions: 2 } }" in pbtxt and "Layout changed" not in pbtxt
    assert policy_versions(model_dir, [1, 2, 3]) == [2, 3]


def test_a_rollback_across_the_change_is_refused_with_the_way_back_which_works(tmp_path: Path) -> None:
    repo, checkpoints = _repo_with_a_layout_change(tmp_path)
    data = str(tmp_path / "data")
    write_pin(data, "onepiece_ranker", 1)
    assert pin_version(data, repo, "onepiece_ranker", 2, rollback=False)["previous_version"] == 1
    v1 = repo / "onepiece_ranker" / "1"
    with pytest.raises(UserError, match=rf"version 1 needs the per_group tensor layout, but .* serves "
                                        rf"shared_context since version 2.*--checkpoint {v1} "):
        pin_version(data, repo, "onepiece_ranker", None, rollback=True)
    assert read_pin(data, "onepiece_ranker")["version"] == 2  # nothing changed

    # the way back: v1's directory exported again, as v3, then pinned
    again = export_checkpoint(v1, repo, config=REPLACE)
    assert again.name == "3"
    assert (again / "model.safetensors").read_bytes() == (checkpoints[1] / "model.safetensors").read_bytes()
    assert policy_versions(repo / "onepiece_ranker", [1, 2, 3]) == [1, 3]  # the per-group ones
    assert pin_version(data, repo, "onepiece_ranker", 3, rollback=False)["version"] == 3
    with pytest.raises(UserError, match="version 2 needs the shared_context tensor layout"):
        check_served(repo, "onepiece_ranker", 2)
    with pytest.raises(UserError, match=r"version 7 is not exported .*\(exported: \[1, 2, 3\]\)"):
        check_served(repo, "onepiece_ranker", 7)


def test_a_version_the_policy_does_not_load_is_refused_by_pin(tmp_path: Path) -> None:
    repo = tmp_path / "model_repo"
    for seed in (1, 2, 3):
        export_checkpoint(write_checkpoint(tmp_path / f"c{seed}", seed=seed), repo)
    with pytest.raises(UserError, match=r"version 1 is exported but Triton's version policy .* loads only \[2, 3\]"):
        pin_version(str(tmp_path / "data"), repo, "onepiece_ranker", 1, rollback=False)


def test_publish_checks_the_layout_change_before_training_and_records_it(tmp_path: Path) -> None:
    from onepiece.model import variant_config
    from onepiece.pipeline import publish_model

    repo = tmp_path / "model_repo"
    export_checkpoint(write_checkpoint(tmp_path / "paper", seed=0), repo)
    refuse = PublishConfig(data=str(tmp_path / "data"), serving=ServingConfig(model_repo=str(repo)))
    product = variant_config(PRODUCT_VARIANT)
    with pytest.raises(UserError, match="v1 per_group, v2 shared_context.*layout_change=replace"):
        publish_model._check_layout_change(refuse, product)
    replace = PublishConfig(data=refuse.data, serving=refuse.serving, layout_change="replace")
    publish_model._check_layout_change(replace, product)
    with pytest.raises(UserError, match="layout_change must be refuse or replace, got 'yes'"):
        PublishConfig.from_params({"layout_change": "yes"}, {})

    shared = write_checkpoint(tmp_path / "invisible", seed=1, context_sees_candidates=False)
    with pytest.raises(UserError, match="--layout-change replace"):
        publish_model.export(refuse, str(shared))
    first = publish_model.export(replace, str(shared))
    assert first == {"version": 2, "exported": True, "layout": SHARED_CONTEXT, "loaded_versions": [2],
                     "unloaded_by_layout_change": [1]}
    assert publish_model.export(replace, str(shared))["exported"] is False  # a rerun finds v2
    assert publish_model.export(replace, str(repo / "onepiece_ranker" / "1"))["layout"] == PER_GROUP


@pytest.mark.slow
def test_tritonserver_serves_the_new_layout_after_the_change(tmp_path: Path) -> None:
    from onepiece.model import load_checkpoint
    from onepiece.serving.client import TritonClientConfig, TritonRankerClient
    from onepiece.serving.inprocess import probabilities_in_process
    from onepiece.serving.server import TritonServerConfig, embedded_triton

    repo, checkpoints = _repo_with_a_layout_change(tmp_path)
    contexts = synthetic_contexts(12, seed=4, max_cands=20)
    expected = probabilities_in_process(load_checkpoint(checkpoints[2]), contexts)
    with embedded_triton(TritonServerConfig(repo)) as server:
        config = TritonClientConfig((server.grpc_url,), model_version=2)
        with TritonRankerClient(config) as client:
            served = client.preflight(expected_config_json=(checkpoints[2] / "config.json").read_text())
            assert served.layout == SHARED_CONTEXT
            got = client.score_contexts(contexts)
        assert np.abs(got["p_click"] - expected["p_click"]).max() <= 1e-5
        with TritonRankerClient(TritonClientConfig((server.grpc_url,), model_version=1)) as client:
            with pytest.raises(UserError, match="version 1"):
                client.preflight()
