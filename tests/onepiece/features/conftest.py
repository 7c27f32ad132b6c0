"""Fixtures for the Feast tests (helpers live in feast_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from feast_fixtures import make_repo

from onepiece.features.repo import FeatureRepoConfig


@pytest.fixture
def repo(tmp_path: Path) -> FeatureRepoConfig:
    """A fresh, not yet applied repository copy over the base rows."""
    return make_repo(tmp_path)


@pytest.fixture(scope="module")
def applied_repo(tmp_path_factory: pytest.TempPathFactory) -> FeatureRepoConfig:
    """A repository copy over the base rows, applied once for the whole module."""
    from onepiece.features.registry import apply

    config = make_repo(tmp_path_factory.mktemp("applied"))
    apply(config)
    return config


@pytest.fixture(scope="module")
def scale_repos(tmp_path_factory: pytest.TempPathFactory, redis_server):
    """(local, scale): one repository copy over the base rows, applied under both
    profiles; the scale one on Spark local[2], the session's Redis and an SQLite SQL
    registry. Clients trust the Redis node's throwaway CA while the module runs."""
    from feast_fixtures import scale_variant

    from onepiece.features.registry import apply

    base = tmp_path_factory.mktemp("scale")
    local = make_repo(base)
    scale = scale_variant(local, redis_server.address, base / "registry.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_CERT_FILE", str(redis_server.ca_file))
        apply(local)
        apply(scale)
        yield local, scale
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:  # Feast started it; stop its JVM with the module
        session.stop()
