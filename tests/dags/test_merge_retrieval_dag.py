"""prerank_refresh with the merge_retrieval Param, after a real retrieval_refresh run, and
the outcomes audit of that window: `airflow dags test` runs on a copy of the tiny world
(real Feast, Beam, an embedded tritonserver, a tiny retrieval model and its faiss index)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dag_helpers import REPO_ROOT, dags_test, last_run_task_states, route_index, route_model, tail

from onepiece import storage
from onepiece.contract import RETRIEVAL_SOURCE, SCORES_SCHEMA, conform

pytestmark = pytest.mark.slow

T = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
PARTITION = "dt=2026-11-03/hour=00"
WINDOW = dt.timedelta(hours=6)
TOP_N = 25


@pytest.fixture(scope="module")
def merged(deployment, airflow_home, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The route published for T, then the pre-rank refresh of T with merge_retrieval on."""
    from onepiece.features.registry import apply
    from onepiece.features.repo import FeatureRepoConfig

    base = tmp_path_factory.mktemp("merge")
    data = deployment.copy_inputs(base / "data")
    apply(FeatureRepoConfig(data_root=str(data)))
    checkpoint = route_model(data, base / "retrieval_model" / "1", T)
    env = deployment.env(
        airflow_home, ONEPIECE_REFRESH_WINDOW_MINUTES="360", ONEPIECE_REFRESH_SCHEDULE="@daily",
        ONEPIECE_RETRIEVAL_SCHEDULE="@daily", ONEPIECE_AUDIT_SCHEDULE="@daily", ONEPIECE_RETRIEVAL_TOP_N=str(TOP_N),
        ONEPIECE_ITEM_INDEX=str(route_index(data, checkpoint, T)))
    env["ONEPIECE_DATA"] = str(data)
    route = dags_test(env, "retrieval_refresh", T.isoformat())
    assert route.returncode == 0, tail(route)
    scored = dags_test(env, "prerank_refresh", T.isoformat(), {"merge_retrieval": True})
    assert scored.returncode == 0, tail(scored)
    return data, env


def _pairs(table: pa.Table) -> list[tuple[str, int]]:
    return list(zip(table["request_id"].to_pylist(), table["item_id"].to_pylist(), strict=True))


def test_merged_scores_hold_every_upstream_candidate_once_plus_the_routes_new_ones(merged):
    data, _ = merged
    final = data / "scores" / PARTITION
    scores = pa.concat_tables([conform(pq.read_table(f), "scores", str(f)) for f in sorted(final.glob("*.parquet"))])
    assert scores.schema.equals(SCORES_SCHEMA, check_metadata=False)
    upstream = storage.read_table(str(data), "candidates", [T.date()])
    ts = upstream["request_timestamp"]
    upstream = upstream.filter(pc.less(ts, pa.scalar(T + WINDOW, ts.type)))
    routed = pq.read_table(data / "retrieval" / PARTITION)

    scored = _pairs(scores)
    assert len(scored) == len(set(scored))  # nothing twice
    up = dict(zip(_pairs(upstream), upstream["recall_source"].cast(pa.string()).to_pylist(), strict=True))
    requests = {r for r, _ in up}
    route = {p for p in _pairs(routed) if p[0] in requests}
    new = route - set(up)
    assert up and new, "the route adds items the upstream did not hold"
    assert set(scored) == set(up) | new  # every upstream candidate, plus the route's new ones
    source = dict(zip(scored, scores["recall_source"].to_pylist(), strict=True))
    assert {source[p] for p in new} == {RETRIEVAL_SOURCE}
    assert all(source[p] == s for p, s in up.items())  # the upstream's own source, kept
    assert RETRIEVAL_SOURCE not in set(up.values())

    manifest = json.loads((final / "_manifest.json").read_text())
    merge = json.loads(manifest["merge"])
    route_manifest = json.loads((data / "retrieval" / PARTITION / "_manifest.json").read_text())
    assert merge["retrieval_partition"] == f"retrieval/{PARTITION}"
    assert merge["retrieval_run_id"] == route_manifest["run_id"]
    counts = merge["counts"]
    assert (counts["upstream"], counts["added"]) == (len(up), len(new))
    assert counts["added"] + counts["already_upstream"] + counts["unknown_request"] == routed.num_rows
    assert manifest["rows"]["scores"] == merge["candidates"] == scores.num_rows
    report = json.loads((final / "_report.json").read_text())
    assert report["coverage"]["candidates_in_window"] == scores.num_rows
    assert report["coverage"]["scored_share"] == 1.0
    contexts = pq.read_table(data / "contexts" / PARTITION, columns=["cand_item_id"])
    assert len(pc.list_flatten(contexts["cand_item_id"])) == scores.num_rows
    assert not (data / "_runs" / "prerank_refresh").exists() or not any((data / "_runs" / "prerank_refresh").rglob("*"))


def test_a_missing_retrieval_partition_fails_check_inputs_by_name(merged):
    data, env = merged
    result = dags_test(env, "prerank_refresh", "2026-11-02", {"merge_retrieval": True})
    assert result.returncode != 0
    assert "retrieval/dt=2026-11-02/hour=00 is not published" in result.stdout + result.stderr
    states = last_run_task_states(Path(env["AIRFLOW_HOME"]), "prerank_refresh")
    assert states["check_inputs"] == "failed" and states["merge_retrieval"] == "upstream_failed", states
    assert not (data / "scores" / "dt=2026-11-02").exists()


def test_the_outcomes_audit_reports_the_routes_share_beside_the_upstreams(merged):
    data, env = merged
    # A 6-hour window plus 6 hours of attribution: at 12:00 the audit measures the run of 00:00.
    result = dags_test(env, "outcomes_audit", (T + 2 * WINDOW).isoformat())
    assert result.returncode == 0, tail(result)
    route = json.loads((data / "outcomes" / PARTITION / "outcomes.json").read_text())["retrieval"]
    assert route["published"] and route["partition"] == f"retrieval/{PARTITION}"

    # By hand: the clicked (request, item) pairs of the route's requests in [T, T + 12 h).
    routed = pq.read_table(data / "retrieval" / PARTITION)
    events = storage.read_table(str(data), "events", [T.date()])
    horizon = pa.scalar(T + 2 * WINDOW, events["event_timestamp"].type)
    clicks = events.filter(pc.and_(pc.equal(events["event_type"], "click"), pc.less(events["event_timestamp"], horizon)))
    requests = set(routed["request_id"].to_pylist())
    clicked = {p for p in _pairs(clicks) if p[0] in requests}
    assert clicked and route["click"]["events"] == len(clicked)
    assert route["click"]["route"] == pytest.approx(len(clicked & set(_pairs(routed))) / len(clicked))
    assert route["click"]["upstream"] == 1.0  # the world clicks only what the upstream showed

    cli = subprocess.run(
        [sys.executable, "-m", "onepiece", "outcomes", "--partition", PARTITION, "--data", str(data)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"retrieval route (retrieval/{PARTITION}" in " ".join((cli.stdout + cli.stderr).split())
