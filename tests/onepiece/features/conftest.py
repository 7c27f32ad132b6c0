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
