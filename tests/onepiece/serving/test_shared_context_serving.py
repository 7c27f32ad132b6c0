"""A shared-context checkpoint through the real tritonserver: each request's context sent
once with all its groups, bundles of different sizes merged by the dynamic batcher, the
pre-flight layout check, and the Beam scoring job (and the refresh's embedded scoring)
publishing the per-group path's rows, with failover and dead letters as before."""

from __future__ import annotations

import dataclasses
import json
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from serving_helpers import (
    dead_letters_when_the_only_server_dies,
    PARTITION,
    expected_scores,
    job_config,
    kill_after_first_request,
    synthetic_contexts,
    write_context_run,
)

from onepiece.errors import UserError
from onepiece.model import load_checkpoint, score, tensorize
from onepiece.model.inputs import PER_GROUP, SHARED_CONTEXT
from onepiece.serving.client import TritonClientConfig, TritonRankerClient, scatter_to_candidates
from onepiece.serving.export import ExportConfig, export_checkpoint, render_config_pbtxt
from onepiece.serving.score_job import run_scoring, score_window
from onepiece.serving.server import TritonServerConfig, embedded_triton

pytestmark = pytest.mark.slow

TASKS = ("p_impression", "p_click", "p_add_to_cart", "p_order")


def _inprocess(checkpoint: Path, contexts, shared: bool) -> dict[str, np.ndarray]:
    model = load_checkpoint(checkpoint)
    inputs = tensorize(contexts, model.config, fixed_shape=True, shared_context=shared)
    probs = {f"p_{t}": p.numpy() for t, p in score(model, inputs).items()}
    return scatter_to_candidates(probs, inputs.cand_flat_index.numpy(), contexts)


def _counter(metrics_url: str, name: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_shared_bundles_score_like_inprocess_and_merge_across_group_counts(shared_repo, shared_server, protocol):
    checkpoint = shared_repo.checkpoints[1]
    contexts = synthetic_contexts(48, seed=8, max_cands=30)  # 1 to 8 groups of C = 4 each
    shared = _inprocess(checkpoint, contexts, shared=True)
    per_group = _inprocess(checkpoint, contexts, shared=False)
    for name in TASKS:  # the in-process shared path is the per-group one
        np.testing.assert_allclose(shared[name], per_group[name], atol=1e-5, rtol=0)

    url = shared_server.grpc_url if protocol == "grpc" else shared_server.http_url
    requests_before = _counter(shared_server.metrics_url, "nv_inference_request_success")
    executions_before = _counter(shared_server.metrics_url, "nv_inference_exec_count")
    # Bundles of at most 12 groups, whole requests each: their group counts differ.
    config = TritonClientConfig((url,), model_version=1, protocol=protocol, batch_size=12, max_in_flight=8)
    with TritonRankerClient(config) as client:
        served = client.preflight(expected_config_json=(checkpoint / "config.json").read_text())
        assert served.layout == SHARED_CONTEXT and served.preferred_batch_size == 8
        scored = client.score_contexts(contexts)
        model = load_checkpoint(checkpoint)
        inputs = tensorize(contexts, model.config, fixed_shape=True, shared_context=True)
        by_group = client.score_inputs(inputs)
    requests = _counter(shared_server.metrics_url, "nv_inference_request_success") - requests_before
    executions = _counter(shared_server.metrics_url, "nv_inference_exec_count") - executions_before
    for name in TASKS:
        assert not np.isnan(scored[name]).any()
        assert np.abs(scored[name] - shared[name]).max() <= 1e-5
    expected = {f"p_{t}": p.numpy() for t, p in score(model, inputs).items()}
    assert np.abs(by_group["p_click"] - expected["p_click"]).max() <= 1e-5
    assert requests >= 10  # one bundle per request, of 1 to 12 groups
    assert executions < requests, "the dynamic batcher never merged bundles of different sizes"


def test_preflight_refuses_a_layout_that_does_not_match_the_checkpoint(
    ranker_repo, ranker_server, shared_repo, shared_server
):
    shared_json = (shared_repo.checkpoints[1] / "config.json").read_text()
    per_group_json = (ranker_repo.checkpoints[1] / "config.json").read_text()
    with TritonRankerClient(TritonClientConfig((ranker_server.grpc_url,), model_version=1)) as client:
        with pytest.raises(UserError, match=r"served in the per_group tensor layout.*needs the shared_context layout"):
            client.preflight(expected_config_json=shared_json)
    with TritonRankerClient(TritonClientConfig((shared_server.grpc_url,), model_version=1)) as client:
        with pytest.raises(UserError, match=r"served in the shared_context tensor layout.*needs the per_group layout"):
            client.preflight(expected_config_json=per_group_json)


def test_preflight_refuses_a_stale_repository_whose_layout_is_not_its_checkpoints(tmp_path, shared_repo, ranker_repo):
    # config.pbtxt written in the other layout than its own version needs (as an export by
    # an older package would leave it): the server loads it, preflight refuses it.
    repo = tmp_path / "model_repo"
    export = ExportConfig(preferred_batch_sizes=(8,), max_batch_size=8)
    stale = {
        "stale_shared": (shared_repo.checkpoints[1], PER_GROUP),
        "stale_per_group": (ranker_repo.checkpoints[1], SHARED_CONTEXT),
    }
    for name, (checkpoint, layout) in stale.items():
        config = dataclasses.replace(export, model_name=name)
        written = export_checkpoint(checkpoint, repo, version=1, config=config)
        pbtxt = render_config_pbtxt(config, {1: (written / "config.json").read_text()}, layout=layout)
        (repo / name / "config.pbtxt").write_text(pbtxt)
    with embedded_triton(TritonServerConfig(repo, models=tuple(stale))) as server:
        for name, (checkpoint, layout) in stale.items():
            needed = SHARED_CONTEXT if layout == PER_GROUP else PER_GROUP
            config = TritonClientConfig((server.grpc_url,), model_name=name, model_version=1)
            with TritonRankerClient(config) as client:
                with pytest.raises(UserError, match=rf"{layout} tensor layout, but its own recorded config .*needs the {needed} layout"):
                    client.preflight()
                with pytest.raises(UserError, match=rf"{layout} tensor layout, but the checkpoint this run expects"):
                    client.preflight(expected_config_json=(checkpoint / "config.json").read_text())


def _check_rows(data: Path, checkpoint: Path, shards) -> None:
    """The partition holds every candidate once, with the per-group path's scores."""
    table = pq.read_table(data / PARTITION)
    expected = expected_scores(checkpoint, shards)  # per-group tensors, in process
    assert table.num_rows == expected.num_rows
    assert table.group_by(["request_id", "item_id"]).aggregate([]).num_rows == table.num_rows
    joined = table.join(expected, ["request_id", "item_id"], join_type="inner")
    assert joined.num_rows == table.num_rows
    for task in ("impression", "click", "add_to_cart", "order"):
        assert np.abs(joined[f"p_{task}"].to_numpy() - joined[f"want_p_{task}"].to_numpy()).max() <= 1e-5
    for request_id in pc.unique(table["request_id"]).to_pylist()[:10]:
        rows = table.filter(pc.equal(table["request_id"], request_id))
        assert rows["rank"].to_pylist() == list(range(1, rows.num_rows + 1))


def test_job_on_a_shared_checkpoint_publishes_the_per_group_rows(tmp_path, shared_repo, shared_server):
    shards = [synthetic_contexts(50, seed=s, max_cands=30) for s in (41, 42)]
    write_context_run(tmp_path, shards)
    manifest = run_scoring(job_config(tmp_path, (shared_server.grpc_url,), model_version=1))
    _check_rows(tmp_path, shared_repo.checkpoints[1], shards)
    assert manifest["rows"]["context_rows"] == 100 and manifest["model"]["version"] == 1
    assert sorted(p.name for p in (tmp_path / PARTITION).iterdir()) == [
        "_manifest.json", "part-00000.parquet", "part-00001.parquet"
    ]


def test_shared_job_fails_over_when_one_of_two_servers_dies(tmp_path, shared_repo):
    shards = [synthetic_contexts(150, seed=s, max_cands=30) for s in (51, 52)]
    write_context_run(tmp_path, shards)
    config = TritonServerConfig(shared_repo.repo)
    with embedded_triton(config) as victim, embedded_triton(config) as survivor:
        done = threading.Event()
        watcher = kill_after_first_request(victim, done)
        job = job_config(tmp_path, (victim.grpc_url, survivor.grpc_url), model_version=1, max_in_flight=2, workers=2)
        try:
            run_scoring(job)
        finally:
            done.set()
            watcher.join()
        assert victim.process is not None and victim.process.poll() is not None, "victim never died"
    _check_rows(tmp_path, shared_repo.checkpoints[1], shards)



def test_refresh_scoring_on_an_embedded_server_sends_whole_requests(tmp_path, shared_repo):
    # The refresh's scoring task: score_window starts a tritonserver over the repository.
    shards = [synthetic_contexts(40, seed=61, max_cands=30)]
    write_context_run(tmp_path, shards)
    expected_json = (shared_repo.checkpoints[1] / "config.json").read_text()
    job = job_config(tmp_path, (), model_version=1, expected_config_json=expected_json)
    manifest = score_window(job, shared_repo.repo)
    _check_rows(tmp_path, shared_repo.checkpoints[1], shards)
    assert json.loads(manifest["settings"])["model_config_sha256"]


def test_shared_dead_letters_when_the_only_server_dies_and_the_old_partition_stays(tmp_path, shared_repo, shared_server):
    dead_letters_when_the_only_server_dies(tmp_path, shared_repo.repo, shared_server.grpc_url, seed=71, max_cands=30)
