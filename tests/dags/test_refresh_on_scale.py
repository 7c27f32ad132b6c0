"""One prerank_refresh run on the scale profile (Feast on Spark with Redis and an SQL
registry, the Beam jobs on a dask.distributed cluster) publishes the partition that the
default profile (DuckDB, FnApiRunner) publishes, byte for byte."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from dag_helpers import airflow_env, dags_test, tail

pytestmark = [pytest.mark.scale, pytest.mark.slow]

DATE = "2026-11-03"
PARTITION = "dt=2026-11-03/hour=00"
SETTINGS = {"ONEPIECE_REFRESH_SCHEDULE": "@daily", "ONEPIECE_REFRESH_WINDOW_MINUTES": "120"}


@contextmanager
def environment(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_env(home: Path, deployment, data: Path, **extra: str) -> dict[str, str]:
    """The Airflow CLI's environment for a run over ``data`` with the session's model."""
    return airflow_env(
        home, ONEPIECE_DATA=str(data), ONEPIECE_MODEL_REPO=str(deployment.model_repo), **SETTINGS, **extra
    )


def parquet_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.parquet"))}


def test_a_refresh_on_the_scale_profile_publishes_the_default_profiles_bytes(
    tiny_world, deployment, airflow_home, redis_server, tmp_path
):
    from onepiece.beam_options import local_dask_cluster
    from onepiece.features.registry import apply
    from onepiece.features.repo import FeatureRepoConfig, PROFILES

    default_data, scale_data = tmp_path / "default", tmp_path / "scale"
    for data in (default_data, scale_data):
        shutil.copytree(tiny_world, data)
    apply(FeatureRepoConfig(data_root=str(default_data), yaml_name=PROFILES["local"]))
    # Only addresses differ from what a user deploys (features/profiles/scale.feature_store.yaml).
    addresses = {
        "SPARK_MASTER": "local[2]",
        "REDIS_ADDRESS": redis_server.address,
        "REGISTRY_DB_URL": f"sqlite:///{tmp_path / 'registry.db'}",
        "SSL_CERT_FILE": str(redis_server.ca_file),  # trusts the test node's throwaway CA
    }
    scale_env = {**addresses, "ONEPIECE_FEAST_PROFILE": "scale"}
    with environment(scale_env):
        apply(FeatureRepoConfig(data_root=str(scale_data), yaml_name=PROFILES["scale"], env=addresses))
        # The cluster's workers get the deployment's environment, as on a real cluster.
        with local_dask_cluster(2) as scheduler:
            scale = dags_test(
                run_env(airflow_home, deployment, scale_data, **scale_env,
                        ONEPIECE_BEAM_RUNNER="dask", ONEPIECE_DASK_SCHEDULER=scheduler),
                "prerank_refresh", DATE,
            )
    assert scale.returncode == 0, tail(scale)
    default = dags_test(run_env(airflow_home, deployment, default_data), "prerank_refresh", DATE)
    assert default.returncode == 0, tail(default)

    for table in ("contexts", "scores"):
        want = parquet_files(default_data / table / PARTITION)
        assert want, table
        assert parquet_files(scale_data / table / PARTITION) == want, table
        manifest = json.loads((scale_data / table / PARTITION / "_manifest.json").read_text())
        assert json.loads(manifest["settings"])["runner"] == "dask", table
    # The scale run read the SQL registry, never a file registry under its data root.
    assert not (scale_data / "feast" / "registry.db").exists()
