"""The DAG folder imports cleanly, and the DAGs are wired as documented."""

from __future__ import annotations

import json
import subprocess
import sys

from dag_helpers import DAGS_FOLDER, REPO_ROOT, airflow_env

# Runs in a child process: Airflow reads AIRFLOW_HOME once, at import.
_INSPECT = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=%r)
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
        "params": sorted(dag.params.keys()),
        "retries": {t.task_id: t.retries for t in dag.tasks},
        "trigger_rules": {t.task_id: getattr(t.trigger_rule, "value", t.trigger_rule) for t in dag.tasks},
        "schedule": getattr(dag.timetable, "_expression", None) or str(dag.timetable),
        "outlets": {t.task_id: [a.name for a in t.outlets] for t in dag.tasks if t.outlets},
        "inlets": {t.task_id: [a.name for a in t.inlets] for t in dag.tasks if t.inlets},
    }
print(json.dumps(out))
"""


def _inspect(tmp_path, **env) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _INSPECT % str(DAGS_FOLDER)],
        env=airflow_env(tmp_path / "home", **env), cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_dag_folder_imports_without_errors_and_wires_the_tasks(tmp_path):
    found = _inspect(tmp_path, ONEPIECE_TASK_RETRIES="3", ONEPIECE_REFRESH_SCHEDULE="15 * * * *")
    assert found["errors"] == {}
    assert set(found["dags"]) == {
        "prerank_refresh", "feature_registry", "model_publish", "outcomes_audit", "retrieval_refresh"}
    route = found["dags"]["retrieval_refresh"]
    assert route["tasks"] == {"check_inputs": ["contexts"], "contexts": ["retrieve"], "retrieve": ["guard"],
                              "guard": ["publish"], "publish": []}
    assert route["retries"]["guard"] == 0
    assert {"item_index", "retrieval_checkpoint", "top_n", "window_minutes", "data", "force_publish",
            "guard_max_short_share", "user_vectors", "model_repo", "triton_urls"} <= set(route["params"])

    refresh = found["dags"]["prerank_refresh"]
    assert refresh["tasks"] == {
        "check_inputs": ["merge_retrieval", "report"],
        "merge_retrieval": ["assemble_contexts"],
        "ensure_model_served": ["assemble_contexts", "score"],
        "assemble_contexts": ["score"],
        "score": ["report"],
        "report": ["guard"],
        "guard": ["publish"],
        "publish": ["serving_table"],
        "serving_table": [],
    }
    assert "15 * * * *" in refresh["schedule"]  # configurable through the environment
    assert refresh["retries"].pop("guard") == 0  # a refusal is a verdict, not a transient failure
    assert set(refresh["retries"].values()) == {3}
    assert refresh["inlets"] == {
        "check_inputs": ["onepiece_feature_registry"], "ensure_model_served": ["onepiece_model_pin"]
    }
    assert {"window_minutes", "model_version", "data", "model_repo", "triton_urls", "merge_retrieval"} <= set(
        refresh["params"])
    assert {"force_publish", "guard_min_coverage", "guard_max_ks", "guard_sample_requests"} <= set(refresh["params"])

    registry = found["dags"]["feature_registry"]
    assert registry["tasks"] == {
        "definitions_changed": ["plan"], "plan": ["validate"], "validate": ["apply"],
        "apply": ["materialize"], "materialize": [],
    }
    # Unchanged definitions skip plan..apply, but materialize runs on every schedule.
    assert registry["trigger_rules"]["materialize"] == "none_failed"
    assert "force" in registry["params"]
    assert registry["outlets"] == {"apply": ["onepiece_feature_registry"]}
    assert registry["retries"]["validate"] == 0  # a refused change does not heal by retrying

    audit = found["dags"]["outcomes_audit"]
    assert audit["tasks"] == {"audit": []}
    assert {"window_minutes", "attribution_hours", "top_k", "data"} <= set(audit["params"])

    publish = found["dags"]["model_publish"]
    assert publish["tasks"] == {
        "datasets": ["calibrate", "evaluate", "retrieval", "smoke", "train"], "train": ["calibrate", "evaluate"],
        "evaluate": ["gate", "pin"], "gate": ["calibrate"], "calibrate": ["export", "smoke"],
        "export": ["smoke"], "smoke": ["pin"], "pin": [], "retrieval": [],
    }
    assert {"calibration_hours", "calibration_requests_per_hour", "attribution_hours", "retrieval"} <= set(
        publish["params"])
    assert publish["outlets"] == {"pin": ["onepiece_model_pin"]}
    assert publish["retries"]["gate"] == 0
