"""The retrieval_refresh DAG end to end: `airflow dags test` runs on a copy of the tiny
world with real Feast and Beam, a tiny retrieval model trained here and its faiss index."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dag_helpers import dags_test, last_run_task_states, route_index, route_model, tail

from onepiece import storage
from onepiece.contract import RETRIEVAL_SCHEMA, RETRIEVAL_SOURCE

pytestmark = pytest.mark.slow

T = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
PARTITION = "dt=2026-11-03/hour=00"
TOP_N = 25


@pytest.fixture(scope="module")
def route(deployment, airflow_home, tmp_path_factory):
    """The deployment's inputs (nothing published yet), a retrieval model, its index as of T."""
    from onepiece.features.registry import apply
    from onepiece.features.repo import FeatureRepoConfig

    base = tmp_path_factory.mktemp("route")
    deployment.copy_inputs(base / "data")
    apply(FeatureRepoConfig(data_root=str(base / "data")))
    checkpoint = route_model(base / "data", base / "retrieval_model" / "1", T)  # version 1
    index = route_index(base / "data", checkpoint, T)
    env = deployment.env(airflow_home, ONEPIECE_REFRESH_WINDOW_MINUTES="360", ONEPIECE_RETRIEVAL_SCHEDULE="@daily",
                         ONEPIECE_RETRIEVAL_TOP_N=str(TOP_N), ONEPIECE_ITEM_INDEX=str(index))
    env["ONEPIECE_DATA"] = str(base / "data")
    return base / "data", checkpoint, env


def test_the_route_publishes_top_n_items_per_request_and_a_rerun_writes_the_same_bytes(route):
    data, _, env = route
    first = dags_test(env, "retrieval_refresh", T.isoformat())
    assert first.returncode == 0, tail(first)
    final = data / "retrieval" / PARTITION
    rows = pq.read_table(final)
    assert rows.schema.equals(RETRIEVAL_SCHEMA, check_metadata=False)
    counts = pc.value_counts(rows["request_id"]).field("counts").to_pylist()
    assert counts and max(counts) == TOP_N
    assert set(rows["recall_source"].to_pylist()) == {RETRIEVAL_SOURCE}
    candidates = storage.read_table(str(data), "candidates", [T.date()])
    ts = candidates["request_timestamp"]
    in_window = pc.less(ts, pa.scalar(T + dt.timedelta(hours=6), ts.type))
    assert set(rows["request_id"].to_pylist()) == set(candidates.filter(in_window)["request_id"].to_pylist())
    manifest = json.loads((final / "_manifest.json").read_text())
    before = {p.name: p.read_bytes() for p in final.glob("*.parquet")}

    again = dags_test(env, "retrieval_refresh", T.isoformat())
    assert again.returncode == 0, tail(again)
    assert {p.name: p.read_bytes() for p in final.glob("*.parquet")} == before
    assert json.loads((final / "_manifest.json").read_text())["run_id"] == manifest["run_id"]
    assert not (data / "_runs" / "retrieval_refresh").exists() or not any((data / "_runs" / "retrieval_refresh").rglob("*.parquet"))


def test_an_index_newer_than_t_is_refused_before_any_work(route, airflow_home):
    data, checkpoint, env = route
    from onepiece.retrieval.index import build_item_index

    later = checkpoint / "item_index_later"
    build_item_index(checkpoint, storage.read_table(str(data), "items"), T + dt.timedelta(days=1), later)
    result = dags_test(env | {"ONEPIECE_ITEM_INDEX": str(later)}, "retrieval_refresh", "2026-11-02")
    assert result.returncode != 0
    assert "a backfill must not see a later catalogue" in result.stdout + result.stderr
    assert last_run_task_states(Path(env["AIRFLOW_HOME"]), "retrieval_refresh")["check_inputs"] == "failed"
    assert not (data / "retrieval" / "dt=2026-11-02").exists()


def test_a_route_short_of_top_n_everywhere_is_refused_and_the_published_partition_kept(route):
    """top_n beyond the tiny catalogue: every request is short, and the guard refuses."""
    data, _, env = route
    final = data / "retrieval" / PARTITION
    before = {p.name: p.read_bytes() for p in final.iterdir()} if final.is_dir() else {}
    result = dags_test(env | {"ONEPIECE_RETRIEVAL_TOP_N": "5000"}, "retrieval_refresh", T.isoformat())
    assert result.returncode != 0
    states = last_run_task_states(Path(env["AIRFLOW_HOME"]), "retrieval_refresh")
    assert states["guard"] == "failed" and states["publish"] == "upstream_failed", states
    assert ({p.name: p.read_bytes() for p in final.iterdir()} if final.is_dir() else {}) == before
    verdict = json.loads((data / "_refused" / "retrieval_refresh" / PARTITION / "_guard.json").read_text())
    assert "short_of_top_n" in verdict["failed"]


def test_user_vectors_through_triton_publish_the_in_process_bytes(route, tmp_path):
    """user_vectors=triton: the retrieve task serves the index's version of
    onepiece_user_tower (published with its index by `onepiece index publish`) on an
    embedded tritonserver; the partition is the in-process run's, byte for byte."""
    from onepiece.retrieval.publish import publish_retrieval_version

    data, checkpoint, env = route
    repo = tmp_path / "model_repo"
    published = publish_retrieval_version(checkpoint, repo, storage.read_table(str(data), "items"), T)
    env = env | {"ONEPIECE_MODEL_REPO": str(repo), "ONEPIECE_ITEM_INDEX": str(Path(published["path"]) / "item_index")}
    final = data / "retrieval" / PARTITION
    parts = {}
    for path in ("triton", "inprocess"):
        result = dags_test(env | {"ONEPIECE_RETRIEVAL_USER_VECTORS": path}, "retrieval_refresh", T.isoformat())
        assert result.returncode == 0, tail(result)
        parts[path] = {p.name: p.read_bytes() for p in final.glob("*.parquet")}
        manifest = json.loads((final / "_manifest.json").read_text())
        assert json.loads(manifest["settings"])["route"]["user_vectors"] == path
        assert manifest["model"]["version"] == published["version"]
    assert parts["triton"] and parts["triton"] == parts["inprocess"]
