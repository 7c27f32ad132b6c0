"""Fixtures for the serving tests: tiny model repositories served by the real tritonserver."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serving_helpers import write_checkpoint

IDENTITY_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ -1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
dynamic_batching {{ }}
"""

# A two-line model that doubles its input, through DLPack both ways (numpy-2 safe).
DOUBLING_MODEL = '''\
import os, sys
sys.path[:0] = [p for p in os.environ.get("ONEPIECE_PYTHONPATH", "").split(os.pathsep) if p]
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack, to_dlpack


class TritonPythonModel:
    def initialize(self, args):
        {init}

    def execute(self, requests):
        responses = []
        for request in requests:
            x = from_dlpack(pb_utils.get_input_tensor_by_name(request, "x").to_dlpack())
            y = pb_utils.Tensor.from_dlpack("y", to_dlpack((x * 2).contiguous()))
            responses.append(pb_utils.InferenceResponse([y]))
        return responses
'''


def write_doubling_model(repo: Path, name: str = "doubler", broken: bool = False) -> Path:
    """A model that doubles its input; ``broken`` makes its initialize() raise."""
    init = 'raise RuntimeError("doubler is broken on purpose")' if broken else "pass"
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(IDENTITY_CONFIG.format(name=name))
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(DOUBLING_MODEL.format(init=init)))
    return repo


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
