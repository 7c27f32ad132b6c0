"""The feature_registry DAG applies a compatible change and refuses an incompatible one."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from dag_helpers import airflow_env, dags_test, tail

from onepiece.features.repo import PROJECT_REPO, FeatureRepoConfig, open_store

pytestmark = pytest.mark.slow

DATE = "2026-11-04"  # the tiny world's live day: materialise everything logged before it


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
    return config, env


def test_registry_dag_applies_a_compatible_change_and_refuses_an_incompatible_one(setup):
    config, env = setup
    registry = config.resolved_data_root() + "/feast/registry.db"

    # Compatible: a new service version beside the one in use.
    _edit(config.repo_dir / "feature_services.py", "onepiece_ranker_v1 = FeatureService(",
          'onepiece_ranker_v2 = FeatureService(\n    name="onepiece_ranker_v2",\n'
          "    features=[item_features_fv, user_profile_fv],\n)\n\n"
          "onepiece_ranker_v1 = FeatureService(")
    result = dags_test(env, "feature_registry", DATE)
    assert result.returncode == 0, tail(result)
    store = open_store(config)
    assert {s.name for s in store.list_feature_services()} == {"onepiece_ranker_v1", "onepiece_ranker_v2"}
    watermarks = {v.name: v.most_recent_end_time for v in store.list_feature_views() if v.online}
    end = dt.datetime.fromisoformat(DATE).replace(tzinfo=dt.UTC)
    assert watermarks and all(w is not None and abs(w - end) < dt.timedelta(seconds=1) for w in watermarks.values())

    # Incompatible: a feature the services in use consume disappears.
    before = open(registry, "rb").read()
    _edit(config.repo_dir / "feature_views.py", 'schema=contract_fields(ITEM_FEATURES, "items"),',
          'schema=[f for f in contract_fields(ITEM_FEATURES, "items") if f.name != "ctr_7d"],')
    result = dags_test(env, "feature_registry", DATE)
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "refusing the update" in log and "'ctr_7d'" in log
    assert open(registry, "rb").read() == before
    views = {v.name: v for v in open_store(config).list_feature_views()}
    assert "ctr_7d" in {f.name for f in views["item_features"].features}
