"""The gRPC/HTTP client against a real tritonserver serving two versions of a tiny ranker."""

from __future__ import annotations

import numpy as np
import pytest
from serving_helpers import synthetic_contexts, write_checkpoint

from onepiece.errors import UserError
from onepiece.model import load_checkpoint, score, tensorize
from onepiece.serving.client import (
    TritonClientConfig,
    TritonRankerClient,
    TritonRequestRejected,
    TritonUnavailable,
    scatter_to_candidates,
)
from onepiece.serving.server import free_port

pytestmark = pytest.mark.slow


def inprocess(checkpoint, contexts) -> dict[str, np.ndarray]:
    model = load_checkpoint(checkpoint)
    inputs = tensorize(contexts, model.config, fixed_shape=True)
    probs = {f"p_{t}": p.numpy() for t, p in score(model, inputs).items()}
    return scatter_to_candidates(probs, inputs.cand_flat_index.numpy(), contexts)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_scores_equal_inprocess_for_the_pinned_version(ranker_repo, ranker_server, protocol):
    contexts = synthetic_contexts(40, seed=3)
    url = ranker_server.grpc_url if protocol == "grpc" else ranker_server.http_url
    scored = {}
    for version in (1, 2):
        config = TritonClientConfig((url,), model_version=version, protocol=protocol)
        with TritonRankerClient(config) as client:
            served = client.preflight(
                expected_config_json=(ranker_repo.checkpoints[version] / "config.json").read_text(),
                feature_service="onepiece_ranker_v1",
            )
            assert served.version == version
            assert served.preferred_batch_size == 32  # 40 requests -> several batches
            scored[version] = client.score_contexts(contexts)
        expected = inprocess(ranker_repo.checkpoints[version], contexts)
        for name, values in expected.items():
            assert not np.isnan(values).any()
            np.testing.assert_allclose(scored[version][name], values, atol=1e-5, rtol=0)
    # the two versions really differ, so the pin is what decided the scores
    assert np.abs(scored[1]["p_click"] - scored[2]["p_click"]).max() > 1e-3


def test_unpinned_client_takes_the_newest_common_version(ranker_server):
    with TritonRankerClient(TritonClientConfig((ranker_server.grpc_url,))) as client:
        assert client.preflight().version == 2


def test_unknown_model_version_is_named(ranker_server):
    config = TritonClientConfig((ranker_server.grpc_url,), model_version=7)
    with TritonRankerClient(config) as client:
        with pytest.raises(UserError, match=r"version 7 is not loaded on .*ready versions: 1, 2"):
            client.preflight()


def test_checkpoint_or_feature_service_mismatch_stops_before_scoring(ranker_server, tmp_path):
    other = write_checkpoint(tmp_path / "other", seed=1, d_model=16, n_heads=2)
    config = TritonClientConfig((ranker_server.grpc_url,), model_version=1)
    with TritonRankerClient(config) as client:
        with pytest.raises(UserError, match="different model config"):
            client.preflight(expected_config_json=(other / "config.json").read_text())
        with pytest.raises(UserError, match="FeatureService 'onepiece_ranker_v1'.*'onepiece_ranker_v2'"):
            client.preflight(feature_service="onepiece_ranker_v2")


def test_server_down_is_named():
    dead = f"127.0.0.1:{free_port()}"
    with TritonRankerClient(TritonClientConfig((dead,), model_version=1)) as client:
        with pytest.raises(TritonUnavailable, match=f"down or unreachable.*{dead}"):
            client.preflight()


def test_wrong_shape_is_rejected_naming_the_input(ranker_server):
    contexts = synthetic_contexts(3, seed=1)
    with TritonRankerClient(TritonClientConfig((ranker_server.grpc_url,), model_version=1)) as client:
        served = client.preflight()
        inputs = tensorize(contexts, served.model_config, fixed_shape=True)
        tensors = {n: t.numpy() for n, t in inputs.tensors().items()}
        tensors["cand_item_cat"] = tensors["cand_item_cat"][..., :2]  # 2 features, not 3
        with pytest.raises(TritonRequestRejected, match="cand_item_cat"):
            client.infer_batch(tensors)
        tensors = {n: t.numpy() for n, t in inputs.tensors().items()}
        tensors["cand_len"] = tensors["cand_len"].astype(np.float32)  # wrong dtype
        with pytest.raises(TritonRequestRejected, match="cand_len"):
            client.infer_batch(tensors)


def test_batch_fails_over_from_a_dead_server(ranker_repo, ranker_server):
    dead = f"127.0.0.1:{free_port()}"
    contexts = synthetic_contexts(20, seed=5)
    config = TritonClientConfig(
        (dead, ranker_server.grpc_url), model_version=1, backoff_initial_s=0.01, batch_size=8
    )
    with TritonRankerClient(config) as client:
        client.preflight()
        scored = client.score_contexts(contexts)
        assert client.failovers >= 1
    expected = inprocess(ranker_repo.checkpoints[1], contexts)
    np.testing.assert_allclose(scored["p_order"], expected["p_order"], atol=1e-5, rtol=0)
