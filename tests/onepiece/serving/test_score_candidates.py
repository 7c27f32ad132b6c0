"""The Beam scoring job against real tritonservers: equal scores, atomic and idempotent
partitions, failover when a server dies, dead letters when none is left."""

from __future__ import annotations

import json
import threading

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from serving_helpers import (
    dead_letters_when_the_only_server_dies,
    PARTITION,
    START,
    expected_scores,
    job_config,
    kill_after_first_request,
    partition_files,
    synthetic_contexts,
    write_context_run,
)

from onepiece.contract import SCORES_SCHEMA, validate_manifest
from onepiece.errors import UserError
from onepiece.serving.fusion import FusionConfig, fuse
from onepiece.serving.score_job import run_scoring
from onepiece.serving.server import TritonServerConfig, embedded_triton

pytestmark = pytest.mark.slow

def test_job_scores_every_candidate_once_like_inprocess_and_reruns_identically(
    tmp_path, ranker_repo, ranker_server
):
    shards = [synthetic_contexts(60, seed=s, max_cands=9) for s in (11, 12)]
    write_context_run(tmp_path, shards)
    fusion = FusionConfig(beta=0.01)
    manifest = run_scoring(job_config(tmp_path, (ranker_server.grpc_url,), model_version=1, fusion=fusion))

    files = partition_files(tmp_path)
    assert sorted(files) == ["_manifest.json", "part-00000.parquet", "part-00001.parquet"]
    table = pq.read_table(tmp_path / PARTITION)
    assert table.schema.equals(SCORES_SCHEMA, check_metadata=False)
    expected = expected_scores(ranker_repo.checkpoints[1], shards)
    assert table.num_rows == expected.num_rows
    assert table.group_by(["request_id", "item_id"]).aggregate([]).num_rows == table.num_rows
    joined = table.join(expected, ["request_id", "item_id"], join_type="inner")
    assert joined.num_rows == table.num_rows
    for task in ("impression", "click", "add_to_cart", "order"):
        diff = np.abs(joined[f"p_{task}"].to_numpy() - joined[f"want_p_{task}"].to_numpy())
        assert diff.max() <= 1e-5
    np.testing.assert_allclose(
        joined["score"].to_numpy(),
        fuse(joined["p_click"].to_numpy(), joined["p_order"].to_numpy(), joined["price"].to_numpy(), fusion),
        rtol=1e-6,
    )
    # ranks: 1..n per request, in descending score order
    for request_id in pc.unique(table["request_id"]).to_pylist()[:20]:
        rows = table.filter(pc.equal(table["request_id"], request_id))
        assert rows["rank"].to_pylist() == list(range(1, rows.num_rows + 1))
        assert np.all(np.diff(rows["score"].to_numpy()) <= 0)
    assert set(table["model_version"].to_pylist()) == {1}
    assert set(table["scored_at"].to_pylist()) == {START}

    validate_manifest(manifest)
    on_disk = json.loads(files["_manifest.json"])
    assert on_disk["model"] == {"name": "onepiece_ranker", "version": 1, "feature_service": "onepiece_ranker_v1"}
    assert on_disk["rows"]["scores"] == table.num_rows and on_disk["rows"]["context_rows"] == 120
    assert json.loads(on_disk["settings"])["fusion"]["beta"] == 0.01
    assert on_disk["defaulted"] == {"unknown_item": 3}

    # a rerun replaces the partition with the same bytes (the manifest differs only in timing)
    run_scoring(job_config(tmp_path, (ranker_server.grpc_url,), model_version=1, fusion=fusion))
    again = partition_files(tmp_path)
    assert {k: v for k, v in again.items() if k.endswith(".parquet")} == {
        k: v for k, v in files.items() if k.endswith(".parquet")
    }
    timing = ("created_at", "wall_time_s")
    strip = lambda m: {k: v for k, v in json.loads(m).items() if k not in timing}  # noqa: E731
    assert strip(again["_manifest.json"]) == strip(files["_manifest.json"])
    assert not [p for p in (tmp_path / "scores" / "dt=2026-11-04").iterdir() if p.name.startswith(".")]


def test_failed_preflight_publishes_nothing(tmp_path, ranker_server):
    write_context_run(tmp_path, [synthetic_contexts(5, seed=1)])
    with pytest.raises(UserError, match="version 9 is not loaded"):
        run_scoring(job_config(tmp_path, (ranker_server.grpc_url,), model_version=9))
    assert not (tmp_path / "scores").exists() or not any((tmp_path / "scores").rglob("*"))


def test_job_fails_over_when_one_of_two_servers_dies(tmp_path, ranker_repo):
    shards = [synthetic_contexts(200, seed=s, max_cands=9) for s in (21, 22)]
    write_context_run(tmp_path, shards)
    config = TritonServerConfig(ranker_repo.repo)
    with embedded_triton(config) as victim, embedded_triton(config) as survivor:
        done = threading.Event()
        watcher = kill_after_first_request(victim, done)
        job = job_config(tmp_path, (victim.grpc_url, survivor.grpc_url), model_version=2, max_in_flight=2, workers=2)
        try:
            run_scoring(job)
        finally:
            done.set()
            watcher.join()
        assert victim.process is not None and victim.process.poll() is not None, "victim never died"
    table = pq.read_table(tmp_path / PARTITION)
    expected = expected_scores(ranker_repo.checkpoints[2], shards)
    assert table.num_rows == expected.num_rows
    assert table.group_by(["request_id", "item_id"]).aggregate([]).num_rows == table.num_rows
    joined = table.join(expected, ["request_id", "item_id"], join_type="inner")
    assert np.abs(joined["p_click"].to_numpy() - joined["want_p_click"].to_numpy()).max() <= 1e-5


def test_dead_letters_when_the_only_server_dies_and_the_old_partition_stays(tmp_path, ranker_repo, ranker_server):
    lines = dead_letters_when_the_only_server_dies(tmp_path, ranker_repo.repo, ranker_server.grpc_url, seed=31, max_cands=9)
    assert "Triton" in lines[0]["error"]
