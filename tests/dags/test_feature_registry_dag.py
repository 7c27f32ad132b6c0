"""The feature_registry DAG: unchanged definitions skip plan/validate/apply but still
materialise; a compatible change is applied; an incompatible one is refused."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from dag_helpers import airflow_env, asset_events, dags_test, last_run_task_states, tail

from onepiece.features.registry import APPLIED_RECORD, definitions_fingerprint
from onepiece.features.repo import PROJECT_REPO, FeatureRepoConfig, open_store

pytestmark = pytest.mark.slow

DATE = "2026-11-04"  # the tiny world's live day: materialise everything logged before it
ASSET = "onepiece_feature_registry"
UPDATE = ("plan", "validate", "apply")


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


@pytest.fixture
def setup(tiny_world, airflow_home, tmp_path):
    """A copy of the project's Feast repo, applied once, over a copy of the tiny world."""
    from onepiece.features.registry import apply

    data, repo = tmp_path / "data", tmp_path / "features"
    shutil.copytree(tiny_world, data)
    shutil.copytree(PROJECT_REPO, repo, ignore=shutil.ignore_patterns("__pycache__"))
    config = FeatureRepoConfig(repo_dir=repo, data_root=str(data))
    apply(config)
    env = airflow_env(airflow_home, ONEPIECE_DATA=str(data), ONEPIECE_FEATURE_REPO=str(repo))
    return config, env, airflow_home


def test_registry_dag_updates_only_on_change_and_refuses_an_incompatible_one(setup):
    config, env, home = setup
    registry = config.resolved_data_root() + "/feast/registry.db"

    def applied() -> str:  # the fingerprint the last successful apply recorded
        return json.loads((Path(config.resolved_data_root()) / APPLIED_RECORD).read_text())["fingerprint"]

    assert applied() == definitions_fingerprint(config)  # recorded by the setup's apply
    events = asset_events(home, ASSET)

    # Unchanged since the last apply: no update, no Asset event, but the online store
    # is materialised up to the run's date.
    result = dags_test(env, "feature_registry", DATE)
    assert result.returncode == 0, tail(result)
    states = last_run_task_states(home, "feature_registry")
    assert states == {"definitions_changed": "success", **dict.fromkeys(UPDATE, "skipped"),
                      "materialize": "success"}
    assert asset_events(home, ASSET) == events
    store = open_store(config)
    watermarks = {v.name: v.most_recent_end_time for v in store.list_feature_views() if v.online}
    end = dt.datetime.fromisoformat(DATE).replace(tzinfo=dt.UTC)
    assert watermarks and all(w is not None and abs(w - end) < dt.timedelta(seconds=1) for w in watermarks.values())

    # Compatible: a new service version beside the one in use.
    before = applied()
    _edit(config.repo_dir / "feature_services.py", "onepiece_ranker_v1 = FeatureService(",
          'onepiece_ranker_v2 = FeatureService(\n    name="onepiece_ranker_v2",\n'
          "    features=[item_features_fv, user_profile_fv],\n)\n\n"
          "onepiece_ranker_v1 = FeatureService(")
    result = dags_test(env, "feature_registry", DATE)
    assert result.returncode == 0, tail(result)
    assert set(last_run_task_states(home, "feature_registry").values()) == {"success"}
    assert asset_events(home, ASSET) == events + 1
    assert applied() == definitions_fingerprint(config) != before
    store = open_store(config)
    assert {s.name for s in store.list_feature_services()} == {"onepiece_ranker_v1", "onepiece_ranker_v2"}

    # Incompatible: a feature the services in use consume disappears.
    before, registry_bytes = applied(), open(registry, "rb").read()
    _edit(config.repo_dir / "feature_views.py", 'schema=contract_fields(ITEM_FEATURES, "items"),',
          'schema=[f for f in contract_fields(ITEM_FEATURES, "items") if f.name != "ctr_7d"],')
    result = dags_test(env, "feature_registry", DATE)
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "refusing the update" in log and "'ctr_7d'" in log
    states = last_run_task_states(home, "feature_registry")
    assert (states["validate"], states["apply"], states["materialize"]) == ("failed", "upstream_failed", "upstream_failed")
    assert open(registry, "rb").read() == registry_bytes
    assert applied() == before and asset_events(home, ASSET) == events + 1
    views = {v.name: v for v in open_store(config).list_feature_views()}
    assert "ctr_7d" in {f.name for f in views["item_features"].features}
