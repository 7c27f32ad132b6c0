"""`onepiece export`: version directories, a generated config.pbtxt, the committed adapter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from serving_helpers import write_checkpoint

from onepiece.errors import UserError
from onepiece.model.inputs import OUTPUT_SPECS, TENSOR_SPECS
from onepiece.serving.export import (
    ADAPTER_SOURCE,
    ExportConfig,
    config_sha256,
    export_checkpoint,
    render_config_pbtxt,
)

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "model_repo" / "onepiece_ranker"


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_export_writes_versions_and_a_matching_config(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "ckpt", seed=0)
    repo = tmp_path / "model_repo"
    first = export_checkpoint(ckpt, repo)
    second = export_checkpoint(write_checkpoint(tmp_path / "ckpt2", seed=1, d_model=16, n_heads=2), repo)
    assert (first.name, second.name) == ("1", "2")  # next free version by default
    assert set(_files(first)) == {"model.safetensors", "config.json", "model.py"}
    assert (first / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()

    pbtxt = (repo / "onepiece_ranker" / "config.pbtxt").read_text()
    inputs = re.findall(r'name: "(\w+)" data_type: (\w+) dims: \[ ([-\d, ]+) \]', pbtxt)
    declared = {n: (t, tuple(int(d) for d in dims.split(","))) for n, t, dims in inputs}
    assert declared == {
        n: (s.triton_dtype, s.shape) for n, s in (TENSOR_SPECS | OUTPUT_SPECS).items()
    }
    assert list(declared)[: len(TENSOR_SPECS)] == list(TENSOR_SPECS)
    assert 'backend: "python"' in pbtxt and "kind: KIND_CPU" in pbtxt
    assert "preferred_batch_size: [ 64, 128, 256 ]" in pbtxt
    # per-version records that the client checks against its checkpoint
    for version, source in (("1", ckpt), ("2", tmp_path / "ckpt2")):
        sha = config_sha256((source / "config.json").read_text())
        assert f'key: "v{version}.config_sha256" value {{ string_value: "{sha}" }}' in pbtxt
    assert 'key: "v2.feature_service" value { string_value: "onepiece_ranker_v1" }' in pbtxt


def test_reexport_is_byte_identical(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "ckpt", seed=0)
    repo = tmp_path / "model_repo"
    export_checkpoint(ckpt, repo, version=3)
    before = _files(repo / "onepiece_ranker" / "3") | _files(repo / "onepiece_ranker")
    export_checkpoint(ckpt, repo, version=3)
    after = _files(repo / "onepiece_ranker" / "3") | _files(repo / "onepiece_ranker")
    assert before == after
    assert sorted(p.name for p in (repo / "onepiece_ranker").iterdir()) == ["3", "config.pbtxt"]


def test_broken_checkpoint_never_reaches_the_repository(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "ckpt", seed=0)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(config | {"d_model": 48}))  # weights disagree
    with pytest.raises(UserError, match=r"checkpoint .*ckpt does not load"):
        export_checkpoint(ckpt, tmp_path / "repo")
    assert not (tmp_path / "repo" / "onepiece_ranker" / "1").exists()
    with pytest.raises(UserError, match="has no model.safetensors"):
        export_checkpoint(tmp_path, tmp_path / "repo")


def test_committed_repository_is_the_generated_one(tmp_path: Path) -> None:
    assert (COMMITTED / "1" / "model.py").read_text() == ADAPTER_SOURCE
    expected = render_config_pbtxt(ExportConfig(instance_kind="cpu"), versions={})
    assert (COMMITTED / "config.pbtxt").read_text() == expected, (
        "model_repo/onepiece_ranker/config.pbtxt is stale: regenerate it from the tensor contract"
    )
    # exporting into a copy of the committed layout starts at version 1
    repo = tmp_path / "model_repo" / "onepiece_ranker" / "1"
    repo.mkdir(parents=True)
    (repo / "model.py").write_text(ADAPTER_SOURCE)
    written = export_checkpoint(write_checkpoint(tmp_path / "ckpt", seed=0), tmp_path / "model_repo")
    assert written.name == "1"


def test_committed_user_tower_is_the_generated_one() -> None:
    tower = ROOT / "model_repo" / "onepiece_user_tower"
    assert (tower / "1" / "model.py").read_text() == ADAPTER_SOURCE
    expected = render_config_pbtxt(ExportConfig(model_name="onepiece_user_tower", instance_kind="cpu"), versions={})
    assert (tower / "config.pbtxt").read_text() == expected, (
        "model_repo/onepiece_user_tower/config.pbtxt is stale: regenerate it from the tensor contract"
    )


def test_a_retrieval_checkpoint_is_exported_as_the_user_tower(tmp_path: Path) -> None:
    """Its default name follows the checkpoint; inputs are the context tensors, the output
    its user vectors; a ranking checkpoint is refused there."""
    from onepiece.model.inputs import CONTEXT_TENSORS

    retrieval = write_checkpoint(tmp_path / "retr", seed=0, mode="retrieval")
    written = export_checkpoint(retrieval, tmp_path / "repo")
    assert written == tmp_path / "repo" / "onepiece_user_tower" / "1"
    assert not (tmp_path / "repo" / "onepiece_ranker").exists()
    pbtxt = (written.parent / "config.pbtxt").read_text()
    inputs = re.findall(r'name: "(\w+)" data_type', pbtxt.split("output [")[0])
    assert tuple(inputs) == CONTEXT_TENSORS and "cand_len" not in inputs
    assert '{ name: "user_vectors" data_type: TYPE_FP32 dims: [ -1, -1 ] }' in pbtxt
    ranker = write_checkpoint(tmp_path / "rank", seed=0)
    with pytest.raises(UserError, match="onepiece_user_tower serves retrieval models only"):
        export_checkpoint(ranker, tmp_path / "repo", config=ExportConfig(model_name="onepiece_user_tower"))
    assert sorted(p.name for p in written.parent.iterdir()) == ["1", "config.pbtxt"]


def test_export_command_and_bad_version(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "ckpt", seed=0)
    cli = str(Path(sys.executable).parent / "onepiece")
    repo = tmp_path / "repo"
    run = subprocess.run(
        [cli, "export", "--checkpoint", str(ckpt), "--model-repo", str(repo), "--version", "5",
         "--instance-count", "2", "--preferred-batch-size", "32", "--max-batch-size", "64"],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    pbtxt = (repo / "onepiece_ranker" / "config.pbtxt").read_text()
    assert "count: 2" in pbtxt and "max_batch_size: 64" in pbtxt
    assert (repo / "onepiece_ranker" / "5" / "model.safetensors").is_file()
    bad = subprocess.run(
        [cli, "export", "--checkpoint", str(ckpt), "--model-repo", str(repo), "--version", "0"],
        capture_output=True, text=True,
    )
    assert bad.returncode == 2 and "model version must be a positive integer" in bad.stderr


def test_export_picks_the_layout_and_refuses_to_mix_layouts_in_the_loaded_versions(tmp_path: Path) -> None:
    per_group = write_checkpoint(tmp_path / "a", seed=0)
    shared = write_checkpoint(tmp_path / "b", seed=0, context_sees_candidates=False)
    repo = tmp_path / "repo"
    export_checkpoint(per_group, repo)
    with pytest.raises(UserError, match=r"v1 per_group, v2 shared_context"):
        export_checkpoint(shared, repo)
    assert sorted(p.name for p in (repo / "onepiece_ranker").iterdir()) == ["1", "config.pbtxt"]
    # keeping only the newest version loaded, the repository switches layout
    written = export_checkpoint(shared, repo, config=ExportConfig(latest_versions=1))
    pbtxt = (repo / "onepiece_ranker" / "config.pbtxt").read_text()
    assert written.name == "2" and 'name: "group_context"' in pbtxt and "allow_ragged_batch: true" in pbtxt
    assert 'key: "groups_per_request" value { string_value: "256" }' in pbtxt
