"""The two infrastructure profiles of the feature repository."""

from __future__ import annotations

import pytest
import yaml

from onepiece.errors import UserError
from onepiece.features import open_store
from onepiece.features.asof_store import STORE_TYPE
from onepiece.features.repo import PROFILE_ENV, PROJECT_REPO, FeatureRepoConfig, repo_config

SCALE = "profiles/scale.feature_store.yaml"
SCALE_ENV = {
    "REGISTRY_DB_URL": "postgresql://feast@registry/feast",
    "REDIS_ADDRESS": "redis-0:6379,redis-1:6379",
    "SPARK_MASTER": "yarn",
}


def test_local_profile_follows_the_data_root(tmp_path):
    config = repo_config(FeatureRepoConfig(data_root=str(tmp_path / "d")))
    assert config.offline_store.type == STORE_TYPE  # Feast's DuckDB store, ASOF join
    assert config.online_store.type == "sqlite"
    assert config.registry.path == str(tmp_path / "d" / "feast" / "registry.db")
    assert config.online_store.path == str(tmp_path / "d" / "feast" / "online_store.db")


def test_scale_profile_declares_spark_redis_and_a_sql_registry():
    local = yaml.safe_load((PROJECT_REPO / "feature_store.yaml").read_text())
    scale = yaml.safe_load((PROJECT_REPO / SCALE).read_text())
    assert scale["project"] == local["project"]
    assert scale["offline_store"]["type"] == "spark"
    assert scale["online_store"]["type"] == "redis"
    assert scale["registry"]["registry_type"] == "sql"


@pytest.mark.scale
def test_scale_profile_is_a_valid_feast_config(scale_repos):
    # A real run, never a skip: pyspark and redis are the `scale` extra of `make setup`,
    # and scale_repos applied the definitions through Spark into Redis and the SQL registry.
    import pyspark  # noqa: F401
    import redis  # noqa: F401

    repo = FeatureRepoConfig(yaml_name=SCALE, data_root="s3://bucket/onepiece", env=SCALE_ENV)
    config = repo_config(repo)
    assert config.offline_store.type == "spark"
    assert config.offline_store.spark_conf["spark.master"] == "yarn"
    assert config.online_store.connection_string == "redis-0:6379,redis-1:6379,ssl=true"
    _, scale = scale_repos
    store = open_store(scale)
    assert store.config.registry.path.startswith("sqlite:///")
    assert [s.name for s in store.list_feature_services()] == ["onepiece_ranker_v1"]
    sources = {v.name: type(v.batch_source).__name__ for v in store.list_feature_views()}
    assert set(sources.values()) == {"SparkSource"}


def test_the_profile_variable_selects_the_yaml_and_a_bad_one_is_named(monkeypatch):
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert FeatureRepoConfig().yaml_name == "feature_store.yaml"
    monkeypatch.setenv(PROFILE_ENV, "scale")
    assert FeatureRepoConfig().yaml_name == SCALE
    assert (PROJECT_REPO / FeatureRepoConfig().yaml_name).is_file()
    monkeypatch.setenv(PROFILE_ENV, "huge")
    with pytest.raises(UserError, match=r"ONEPIECE_FEAST_PROFILE='huge' is not a profile"):
        FeatureRepoConfig()
