"""Fixtures shared across the test tree."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic world (contract tables) generated once per test session.

    Read-only for tests: copy it (shutil.copytree) before changing anything.
    """
    from onepiece.world import WorldConfig, generate_world

    root = tmp_path_factory.mktemp("tiny_world") / "data"
    generate_world(WorldConfig.tiny(seed=0), root)
    return root


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server (one TLS cluster node) on a free port of 127.0.0.1 for the
    `scale` tests, in a throwaway directory; stopped at the end of the session."""
    from redis_service import redis_cluster_node

    with redis_cluster_node(tmp_path_factory.mktemp("redis")) as server:
        yield server
