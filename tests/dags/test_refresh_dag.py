"""The prerank_refresh DAG end to end: real Feast, Beam and an embedded tritonserver on
the tiny world, run by Airflow itself.

The two dates are written by a real ``airflow backfill create`` (scheduler, dag-processor
and API server on a throwaway Airflow home, see airflow_services.py); then an ``airflow
dags test`` rerun of a date checks that it writes the backfill's bytes, and a failure
injected into scoring checks that nothing is published.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from airflow_services import airflow_services
from dag_helpers import BROKEN_EXECUTE, EXPORT, dags_test, last_run_task_states, tail

from onepiece import storage
from onepiece.contract import SCORES_SCHEMA, conform, validate_manifest

pytestmark = pytest.mark.slow

DATES = ("2026-11-02", "2026-11-03")  # logged days of the tiny world (2026-11-01..03)
WINDOW = dt.timedelta(hours=6)
SETTINGS = {"ONEPIECE_REFRESH_SCHEDULE": "@daily", "ONEPIECE_REFRESH_WINDOW_MINUTES": "360"}
BACKFILL_TIMEOUT_S = 1500  # two runs; each starts Beam twice and a tritonserver once


def _partition(date: str) -> str:
    return f"dt={date}/hour=00"


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def env(airflow_home, deployment):
    """The shared Airflow home, for `airflow dags test` runs."""
    return deployment.env(airflow_home, **SETTINGS)


@dataclass(frozen=True)
class Backfill:
    data: Path
    model_repo: Path
    runs: list[dict]  # the backfill's DAG runs as the metadata database records them


@pytest.fixture(scope="module")
def backfill(deployment, tmp_path_factory) -> Backfill:
    """`airflow backfill create` of both dates, run by the scheduler on its own Airflow home,
    one run at a time (the second date's report measures drift against the first)."""
    home = tmp_path_factory.mktemp("airflow_backfill_home")
    with airflow_services(home, deployment.env(home, **SETTINGS), "prerank_refresh") as services:
        # The scheduler starts no run of a paused DAG, backfill runs included.
        unpaused = services.cli("dags", "unpause", "prerank_refresh")
        assert unpaused.returncode == 0, tail(unpaused)
        created = services.cli("backfill", "create", "--dag-id", "prerank_refresh",
                               "--from-date", DATES[0], "--to-date", DATES[1], "--max-active-runs", "1")
        assert created.returncode == 0, tail(created)
        runs = services.wait_for_runs("prerank_refresh", len(DATES), BACKFILL_TIMEOUT_S)
        failed = [r for r in runs if r["state"] != "success"]
        assert not failed, f"backfill runs failed: {failed}\n{services.diagnostics()}"
    return Backfill(deployment.data, deployment.model_repo, runs)


def _window_candidates(data: Path, start: dt.datetime) -> pa.Table:
    rows = storage.read_table(str(data), "candidates", [start.date()])
    ts = rows["request_timestamp"]
    return rows.filter(pc.and_(pc.greater_equal(ts, pa.scalar(start, ts.type)),
                               pc.less(ts, pa.scalar(start + WINDOW, ts.type))))


@pytest.mark.parametrize("date", DATES)
def test_backfill_writes_one_valid_partition_per_date_from_data_before_it(backfill, date):
    data = backfill.data
    start = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)
    final = data / "scores" / _partition(date)
    files = sorted(p.name for p in final.iterdir())
    assert files[:4] == ["_manifest.json", "_report.html", "_report.json", "_report.png"]
    assert files[4:] and all(re.fullmatch(r"part-\d{5}\.parquet", f) for f in files[4:])

    scores = pa.concat_tables(
        [conform(pq.read_table(f), "scores", str(f)) for f in sorted(final.glob("*.parquet"))]
    )
    assert scores.schema.equals(SCORES_SCHEMA, check_metadata=False)
    expected = _window_candidates(data, start)
    assert expected.num_rows > 0
    # Every candidate of the window scored exactly once, nothing else.
    assert scores.num_rows == expected.num_rows
    assert scores.group_by(["request_id", "item_id"]).aggregate([]).num_rows == scores.num_rows
    assert set(scores["request_id"].to_pylist()) == set(expected["request_id"].to_pylist())
    assert pc.all(pc.equal(scores["scored_at"], pa.scalar(start, scores["scored_at"].type))).as_py()
    manifest = json.loads((final / "_manifest.json").read_text())
    validate_manifest(manifest, str(final))
    assert manifest["model"]["version"] == 1 and manifest["rows"]["scores"] == scores.num_rows

    # Point in time: contexts as of T, histories strictly before T, no event log of day T.
    contexts_dir = data / "contexts" / _partition(date)
    contexts = pq.read_table(contexts_dir)
    assert pc.all(pc.equal(contexts["as_of"], pa.scalar(start, contexts["as_of"].type))).as_py()
    history = pc.list_flatten(contexts["ih_ts"])
    assert len(history) > 0 and pc.max(history).as_py() < start
    event_inputs = [
        i["path"] for i in json.loads((contexts_dir / "_manifest.json").read_text())["inputs"]
        if i["path"].startswith("events/")
    ]
    assert event_inputs and all(re.search(r"dt=(\d{4}-\d\d-\d\d)", p)[1] < date for p in event_inputs)

    report = json.loads((final / "_report.json").read_text())
    assert report["coverage"]["scored"] == scores.num_rows
    assert report["coverage"]["scored_share"] == 1.0
    assert report["distributions"]["score"]["q05"] <= report["distributions"]["score"]["q95"]
    assert (final / "_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<img src='_report.png'" in (final / "_report.html").read_text()


def test_the_second_date_reports_drift_against_the_first_and_is_served(backfill):
    data = backfill.data
    report = json.loads((data / "scores" / _partition(DATES[1]) / "_report.json").read_text())
    assert report["run"]["previous_partition"] == _partition(DATES[0])
    drift = report["drift"]
    assert drift["previous_rows"] > 0 and 0 <= drift["score_ks"] <= 1 and drift["score_psi"] >= 0
    first = json.loads((data / "scores" / _partition(DATES[0]) / "_report.json").read_text())
    assert first["drift"] is None  # nothing was published before the first date

    pointer = json.loads((data / "serving" / "prerank_scores.json").read_text())
    assert pointer["partition"] == _partition(DATES[1])
    assert (data / pointer["path"] / "_manifest.json").is_file()
    assert not (data / "_runs").exists()  # staging removed after publishing


def test_the_backfill_ran_one_scheduler_run_per_logical_date(backfill):
    assert [(r["run_type"], r["logical_date"][:10], r["state"]) for r in backfill.runs] == [
        ("backfill", date, "success") for date in DATES
    ]
    assert [r["run_id"] for r in backfill.runs] == [f"backfill__{d}T00:00:00+00:00" for d in DATES]


def test_a_rerun_writes_the_backfills_bytes(backfill, env):
    """`airflow dags test` runs the tasks the way a scheduled run does; rerunning a
    backfilled date that way rewrites the same partition byte for byte."""
    final = backfill.data / "scores" / _partition(DATES[1])
    before = _files(final)
    result = dags_test(env, "prerank_refresh", DATES[1])
    assert result.returncode == 0, tail(result)
    after = _files(final)
    assert sorted(after) == sorted(before)
    for name in before:
        if name != "_manifest.json":  # the manifest records the wall clock
            assert after[name] == before[name], name
    manifests = [json.loads(x["_manifest.json"]) for x in (before, after)]
    assert manifests[0]["run_id"] == manifests[1]["run_id"]
    assert manifests[0]["created_at"] <= manifests[1]["created_at"]


def test_a_failure_in_scoring_publishes_nothing_and_keeps_the_previous_partition(
    backfill, env, tmp_path
):
    from onepiece.serving.export import ADAPTER_SOURCE, ExportConfig, write_config_pbtxt

    # Version 2 of a copy of the model repository loads but fails every request.
    repo = tmp_path / "model_repo"
    shutil.copytree(backfill.model_repo, repo)
    model_dir = repo / "onepiece_ranker"
    shutil.copytree(model_dir / "1", model_dir / "2")
    (model_dir / "2" / "model.py").write_text(ADAPTER_SOURCE + BROKEN_EXECUTE)
    write_config_pbtxt(model_dir, ExportConfig(**EXPORT))

    data = backfill.data
    final = data / "scores" / _partition(DATES[1])
    before = _files(final)
    pointer = (data / "serving" / "prerank_scores.json").read_bytes()
    result = dags_test(env, "prerank_refresh", DATES[1],
                       {"model_repo": str(repo), "model_version": 2})

    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "injected scoring failure" in log and "nothing published" in log
    assert _files(final) == before
    assert sorted(p.name for p in final.parent.iterdir()) == ["hour=00"]  # no staging leftovers
    assert (data / "serving" / "prerank_scores.json").read_bytes() == pointer
    dead = list((data / "_runs").rglob("requests.jsonl"))
    assert dead, "the failed requests are kept for inspection in the run's staging root"


def test_the_outcomes_audit_measures_a_refresh_once_its_outcomes_are_logged(backfill, env):
    # A 6-hour window plus the default 6 hours of attribution: at 12:00 the audit measures
    # the refresh of 00:00.
    result = dags_test(env, "outcomes_audit", f"{DATES[0]}T12:00:00+00:00")
    assert result.returncode == 0, tail(result)
    out = backfill.data / "outcomes" / _partition(DATES[0])
    figures = json.loads((out / "outcomes.json").read_text())
    scores = pq.read_table(backfill.data / "scores" / _partition(DATES[0]))
    assert figures["rows"] == scores.num_rows
    assert figures["window"]["horizon"] == f"{DATES[0]}T12:00:00+00:00"
    shown = json.loads((backfill.data / "world.json").read_text())["config"]["impressions_per_request"]
    assert figures["tasks"]["impression"]["positives"] == shown * figures["requests"]
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # An hour later the audit looks for the refresh of 01:00, which never ran.
    result = dags_test(env, "outcomes_audit", f"{DATES[0]}T13:00:00+00:00")
    assert result.returncode != 0
    assert f"scores/dt={DATES[0]}/hour=01 was never published" in result.stdout + result.stderr


def test_a_guard_refusal_fails_the_run_before_publish_and_keeps_the_served_partition(backfill, env):
    """A threshold no run can meet (Param), so the guard refuses a healthy rerun."""
    data = backfill.data
    final = data / "scores" / _partition(DATES[1])
    before = _files(final)
    pointer = (data / "serving" / "prerank_scores.json").read_bytes()

    result = dags_test(env, "prerank_refresh", DATES[1], {"guard_min_score_std": 1.0})

    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "publish guard refused scores partition" in log and "score_std" in log
    states = last_run_task_states(Path(env["AIRFLOW_HOME"]), "prerank_refresh")
    assert states["guard"] == "failed" and states["publish"] == "upstream_failed", states
    assert _files(final) == before
    assert (data / "serving" / "prerank_scores.json").read_bytes() == pointer
    verdict = json.loads((data / "_refused" / "prerank_refresh" / _partition(DATES[1]) / "_guard.json").read_text())
    assert verdict["failed"] == ["score_std"] and verdict["thresholds"]["min_score_std"] == 1.0
