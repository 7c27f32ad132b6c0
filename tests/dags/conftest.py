"""Fixtures of the DAG tests: one Airflow home, one tiny world with an applied Feast
registry, and one exported tiny model, shared by the whole session."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from dag_helpers import EXPORT, airflow, airflow_env, tail, tiny_checkpoint



@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway AIRFLOW_HOME with a migrated SQLite database."""
    home = tmp_path_factory.mktemp("airflow_home")
    result = airflow(airflow_env(home), "db", "migrate")
    assert result.returncode == 0, tail(result)
    return home


@dataclass(frozen=True)
class Deployment:
    """What the refresh DAG runs against: a data root and a model repository."""

    data: Path
    model_repo: Path
    checkpoint: Path

    #: What runs write under the data root; the rest are the inputs.
    OUTPUTS = ("scores", "contexts", "retrieval", "serving", "outcomes", "_runs", "_refused")

    def copy_inputs(self, target: Path) -> Path:
        """The data root without anything a run published (the deployment is shared:
        other DAG tests may have published into it first)."""
        shutil.copytree(self.data, target, ignore=lambda d, names: (
            [n for n in names if n in self.OUTPUTS] if Path(d) == self.data else []))
        return target

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        return airflow_env(
            home,
            ONEPIECE_DATA=str(self.data),
            ONEPIECE_MODEL_REPO=str(self.model_repo),
            **extra,
        )


@pytest.fixture(scope="session")
def deployment(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """A copy of the tiny world with the project's Feast repo applied, and version 1 of a
    freshly initialised tiny model exported into its own model repository."""
    from onepiece.features.registry import apply
    from onepiece.features.repo import FeatureRepoConfig
    from onepiece.serving.export import ExportConfig, export_checkpoint

    base = tmp_path_factory.mktemp("deployment")
    data = base / "data"
    shutil.copytree(tiny_world, data)
    apply(FeatureRepoConfig(data_root=str(data)))
    checkpoint = tiny_checkpoint(base / "ckpt-v1", seed=1)
    export_checkpoint(checkpoint, base / "model_repo", version=1, config=ExportConfig(**EXPORT))
    return Deployment(data, base / "model_repo", checkpoint)
