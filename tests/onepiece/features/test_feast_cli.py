"""The `feast` CLI itself works on the feature repository (as users will try it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from onepiece.features import open_store
from onepiece.features.registry import plan

FEAST = str(Path(sys.executable).parent / "feast")


def feast(repo, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ONEPIECE_DATA": repo.resolved_data_root()}
    return subprocess.run([FEAST, *args], cwd=repo.repo_dir, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_feast_plan_and_apply_on_the_repository(repo):
    planned = feast(repo, "plan")
    assert planned.returncode == 0, planned.stderr
    for name in ("item_features", "user_profile", "query_features", "onepiece_ranker_v1"):
        assert name in planned.stdout

    applied = feast(repo, "apply")
    assert applied.returncode == 0, applied.stderr
    registry = Path(repo.resolved_data_root()) / "feast" / "registry.db"
    assert registry.exists()
    assert [s.name for s in open_store(repo).list_feature_services()] == ["onepiece_ranker_v1"]
    # The SDK path and the CLI agree: nothing left to change.
    assert "No changes to registry" in plan(repo).registry_diff
