"""The retrieval model served as ``onepiece_user_tower``: a published version (weights,
Triton config and item index together), user vectors through a real tritonserver equal
to the in-process ones, and the route through Triton writing the in-process bytes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from retrieval_helpers import TINY_RETRIEVAL, window_start
from typer.testing import CliRunner

from onepiece import storage
from onepiece.errors import UserError
from onepiece.retrieval.publish import publish_retrieval_version
from onepiece.retrieval.route import PART_FILE
from onepiece.serving.export import USER_TOWER_MODEL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def published(route_world: Path, retrieval_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny retrieval checkpoint published as version 1, its items as of T."""
    repo = tmp_path_factory.mktemp("user_tower") / "model_repo"
    items = storage.read_table(str(route_world), "items")
    return publish_retrieval_version(retrieval_checkpoint, repo, items, window_start(route_world)) | {"repo": repo}


@pytest.fixture(scope="module")
def tower_server(published: dict) -> Iterator[Any]:
    from onepiece.serving.server import TritonServerConfig, embedded_triton

    with embedded_triton(TritonServerConfig(published["repo"], models=(USER_TOWER_MODEL,))) as server:
        yield server


def test_publish_writes_a_loadable_version_with_its_index_and_reruns_to_it(
    published: dict, route_world: Path, retrieval_checkpoint: Path
) -> None:
    from onepiece.model import load_checkpoint
    from onepiece.retrieval.index import load_item_index
    from onepiece.serving.export import config_sha256

    version_dir = Path(published["path"])
    assert published["published"] and published["version"] == 1 and version_dir.name == "1"
    assert sorted(p.name for p in version_dir.iterdir()) == ["config.json", "item_index", "model.py",
                                                             "model.safetensors"]
    assert sorted(p.name for p in version_dir.parent.iterdir()) == ["1", "config.pbtxt"]  # no staging left
    model = load_checkpoint(version_dir)
    index, manifest = load_item_index(version_dir / "item_index")
    assert manifest["model"] == {"name": "onepiece_retrieval", "version": 1,
                                 "config_sha256": config_sha256(model.config.to_json())}
    assert manifest["item_snapshot_as_of"] == window_start(route_world).isoformat()
    assert index.size == manifest["items"] > 3000 and index.dim == model.config.d_model
    pbtxt = (version_dir.parent / "config.pbtxt").read_text()
    assert 'name: "onepiece_user_tower"' in pbtxt and 'name: "user_vectors"' in pbtxt
    assert 'name: "cand_item_cat"' not in pbtxt and 'key: "v1.config_sha256"' in pbtxt
    # The same checkpoint and T again: the version it already is, nothing written.
    items = storage.read_table(str(route_world), "items")
    again = publish_retrieval_version(retrieval_checkpoint, published["repo"], items, window_start(route_world))
    assert not again["published"] and again["version"] == 1
    assert sorted(p.name for p in version_dir.parent.iterdir()) == ["1", "config.pbtxt"]


def test_a_ranking_checkpoint_is_not_published_as_a_user_tower(route_world: Path, tmp_path: Path) -> None:
    from onepiece.model import OnePiece, save_checkpoint, variant_config

    ranker = save_checkpoint(OnePiece(variant_config("onepiece", **TINY_RETRIEVAL)), tmp_path / "ckpt")
    repo = tmp_path / "model_repo"
    with pytest.raises(UserError, match="onepiece_user_tower serves retrieval models only"):
        publish_retrieval_version(ranker, repo, storage.read_table(str(route_world), "items"),
                                  window_start(route_world))
    assert not (repo / USER_TOWER_MODEL).exists()


def test_triton_user_vectors_equal_the_in_process_ones(
    published: dict, tower_server: Any, held_out_contexts: Path
) -> None:
    import torch

    from onepiece.model import load_checkpoint
    from onepiece.model.inputs import tensorize_contexts
    from onepiece.model.retrieval import user_vectors
    from onepiece.serving.client import TritonClientConfig, TritonRankerClient

    version_dir = Path(published["path"])
    model = load_checkpoint(version_dir)
    contexts = storage.read_partition(held_out_contexts, "contexts")
    batch = 64  # several requests, of different padded widths
    assert contexts.num_rows > 2 * batch
    config = TritonClientConfig(urls=(tower_server.grpc_url,), model_name=USER_TOWER_MODEL)
    with TritonRankerClient(config) as client:
        served = client.preflight((version_dir / "config.json").read_text())
        assert (served.layout, served.version) == ("user_tower", 1)
        got = client.user_vectors(contexts, batch)  # [R, S, d]
    with torch.inference_mode():
        expected = np.concatenate([
            model.encode_users(tensorize_contexts(contexts.slice(i, batch), model.config)).numpy()
            for i in range(0, contexts.num_rows, batch)
        ])
    assert got.shape == (contexts.num_rows, model.config.num_outputs, model.config.d_model)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    step = model.config.task_steps()["click"]
    np.testing.assert_allclose(got[:, step], user_vectors(model, contexts, batch), rtol=0, atol=1e-6)
    assert np.abs(got).max() > 0.1 and len(np.unique(got[:, step, 0])) > contexts.num_rows // 2


def test_retrieve_through_triton_writes_the_in_process_bytes(
    published: dict, held_out_contexts: Path, tmp_path: Path
) -> None:
    """`onepiece retrieve --user-vectors triton` on an embedded server (started as the
    scoring job starts one) against the in-process route: the same Parquet bytes."""
    from onepiece.cli import app

    index = Path(published["path"]) / "item_index"
    runner = CliRunner()
    for path in ("inprocess", "triton"):
        result = runner.invoke(app, ["retrieve", "--contexts", str(held_out_contexts), "--index", str(index),
                                     "--out", str(tmp_path / path), "--top-n", "50", "--user-vectors", path,
                                     "--model-repo", str(published["repo"])])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "triton" / PART_FILE).read_bytes() == (tmp_path / "inprocess" / PART_FILE).read_bytes()
    manifests = {p: json.loads((tmp_path / p / "_manifest.json").read_text()) for p in ("inprocess", "triton")}
    assert json.loads(manifests["triton"]["settings"])["route"]["user_vectors"] == "triton"
    assert manifests["triton"]["rows"] == manifests["inprocess"]["rows"]
    assert manifests["triton"]["rows"]["retrieval"] == 50 * manifests["triton"]["rows"]["requests"] > 0


def test_triton_path_refuses_an_unversioned_index_or_other_weights(
    published: dict, route_world: Path, retrieval_checkpoint: Path, held_out_contexts: Path, tmp_path: Path
) -> None:
    from onepiece.retrieval.index import build_item_index
    from onepiece.retrieval.route import RouteConfig, run_route
    from onepiece.serving.user_tower import UserTowerServing

    triton = RouteConfig(top_n=10, user_vectors="triton")
    serving = UserTowerServing(model_repo=str(published["repo"]))
    # An index beside a checkpoint that is no exported version records no version to pin.
    loose = tmp_path / "ckpt"
    shutil.copytree(retrieval_checkpoint, loose, ignore=shutil.ignore_patterns("item_index"))
    build_item_index(loose, storage.read_table(str(route_world), "items"), window_start(route_world),
                     loose / "item_index")
    with pytest.raises(UserError, match="records no model version"):
        run_route(held_out_contexts, loose / "item_index", tmp_path / "a", triton, serving=serving)
    # A served version whose weights are not the checkpoint's is refused before any server starts.
    index = Path(published["path"]) / "item_index"
    other = tmp_path / "repo"
    shutil.copytree(published["repo"], other)
    weights = other / USER_TOWER_MODEL / "1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(UserError, match="does not hold the weights of checkpoint"):
        run_route(held_out_contexts, index, tmp_path / "b", triton, Path(published["path"]),
                  UserTowerServing(model_repo=str(other)))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(UserError, match="user vectors must be one of inprocess, triton"):
        RouteConfig(user_vectors="gpu")
