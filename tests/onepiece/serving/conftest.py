"""Fixtures for the serving tests: tiny model repositories served by the real tritonserver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serving_helpers import write_checkpoint, write_doubling_model


@pytest.fixture
def doubler_repo(tmp_path: Path) -> Path:
    return write_doubling_model(tmp_path / "model_repo")


@pytest.fixture
def broken_doubler_repo(tmp_path: Path) -> Path:
    return write_doubling_model(tmp_path / "broken_repo", broken=True)


@dataclass
class RankerRepo:
    repo: Path
    checkpoints: dict[int, Path]  # version -> checkpoint dir


@pytest.fixture(scope="session")
def ranker_repo(tmp_path_factory: pytest.TempPathFactory) -> RankerRepo:
    """A model repository with versions 1 and 2 (different weights, same config)."""
    from onepiece.serving.export import ExportConfig, export_checkpoint

    base = tmp_path_factory.mktemp("ranker")
    checkpoints = {v: write_checkpoint(base / f"ckpt-v{v}", seed=v) for v in (1, 2)}
    export = ExportConfig(preferred_batch_sizes=(16, 32), max_batch_size=32, max_queue_delay_us=500)
    for version, ckpt in checkpoints.items():
        export_checkpoint(ckpt, base / "model_repo", version=version, config=export)
    return RankerRepo(base / "model_repo", checkpoints)


@pytest.fixture(scope="session")
def ranker_server(ranker_repo: RankerRepo) -> Iterator[Any]:
    """One real tritonserver with both versions loaded, shared by the client tests."""
    from onepiece.serving.server import TritonServerConfig, embedded_triton

    with embedded_triton(TritonServerConfig(ranker_repo.repo)) as server:
        yield server


@pytest.fixture(scope="session")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> RankerRepo:
    """A model repository serving a shared-context checkpoint (context blind to the
    candidates): export writes the shared-context layout. The long queue delay lets the
    dynamic batcher merge concurrent bundles."""
    from onepiece.serving.export import ExportConfig, export_checkpoint

    base = tmp_path_factory.mktemp("shared")
    ckpt = write_checkpoint(base / "ckpt-shared", seed=5, context_sees_candidates=False)
    export = ExportConfig(preferred_batch_sizes=(8,), max_batch_size=8, max_queue_delay_us=50_000)
    export_checkpoint(ckpt, base / "model_repo", version=1, config=export)
    return RankerRepo(base / "model_repo", {1: ckpt})


@pytest.fixture(scope="session")
def shared_server(shared_repo: RankerRepo) -> Iterator[Any]:
    from onepiece.serving.server import TritonServerConfig, embedded_triton

    with embedded_triton(TritonServerConfig(shared_repo.repo)) as server:
        yield server
