"""An HSTU checkpoint with relative time buckets through the real tritonserver: the served
scores equal the in-process ones and move with the IH events' times, which reach the
server in the tensor contract's ``ih_age_days`` (no new tensor)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from serving_helpers import synthetic_contexts, tiny_model_config

from onepiece.model import OnePiece, load_checkpoint, save_checkpoint, score, tensorize
from onepiece.model.backbone import RelativeBias
from onepiece.model.inputs import SHARED_CONTEXT, served_inputs
from onepiece.serving.client import TritonClientConfig, TritonRankerClient, scatter_to_candidates
from onepiece.serving.export import ExportConfig, export_checkpoint
from onepiece.serving.server import TritonServerConfig, embedded_triton

pytestmark = pytest.mark.slow

#: The ``hstu`` variant's fields (``variants.py``) on the serving tests' tiny sizes.
HSTU = {"attention": "hstu", "causal": True, "candidates_visible": False, "num_steps": 0, "use_pa": False,
        "hstu_time_buckets": 128}


def _inprocess(checkpoint: Path, contexts: pa.Table) -> dict[str, np.ndarray]:
    model = load_checkpoint(checkpoint)
    inputs = tensorize(contexts, model.config, fixed_shape=True, shared_context=True)
    probs = {f"p_{t}": p.numpy() for t, p in score(model, inputs).items()}
    return scatter_to_candidates(probs, inputs.cand_flat_index.numpy(), contexts)


def _older_events(contexts: pa.Table, factor: int) -> pa.Table:
    """The same contexts with every IH event ``factor`` times further from the request."""
    as_of = contexts.column("as_of").to_pylist()
    ts = [[t0 - (t0 - t) * factor for t in row] for t0, row in zip(as_of, contexts.column("ih_ts").to_pylist())]
    index = contexts.schema.get_field_index("ih_ts")
    return contexts.set_column(index, contexts.schema.field(index), pa.array(ts, contexts.schema.field(index).type))


def test_an_hstu_checkpoint_serves_its_time_bias(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = OnePiece(tiny_model_config(**HSTU))
    for module in model.modules():  # a bias large enough that the events' times show
        if isinstance(module, RelativeBias):
            torch.nn.init.normal_(module.weight, std=1.0)
            torch.nn.init.normal_(module.time_weight, std=1.0)
    checkpoint = save_checkpoint(model, tmp_path / "ckpt-hstu")
    assert model.config.shares_context and "ih_age_days" in served_inputs(SHARED_CONTEXT)
    export = ExportConfig(preferred_batch_sizes=(8,), max_batch_size=8, max_queue_delay_us=500)
    export_checkpoint(checkpoint, tmp_path / "model_repo", version=1, config=export)

    contexts = synthetic_contexts(24, seed=4, max_cands=12)
    assert max(len(v) for v in contexts.column("ih_ts").to_pylist()) > 1
    older = _older_events(contexts, factor=30)  # hours apart -> days apart
    with embedded_triton(TritonServerConfig(tmp_path / "model_repo")) as server:
        config = TritonClientConfig((server.grpc_url,), model_version=1, batch_size=8)
        with TritonRankerClient(config) as client:
            served = client.preflight(expected_config_json=(checkpoint / "config.json").read_text())
            assert served.layout == SHARED_CONTEXT
            now, then = client.score_contexts(contexts), client.score_contexts(older)
    for name, expected in _inprocess(checkpoint, contexts).items():
        assert np.abs(now[name] - expected).max() <= 1e-5, name
        assert np.abs(then[name] - _inprocess(checkpoint, older)[name]).max() <= 1e-5, name
    assert np.abs(now["p_click"] - then["p_click"]).max() > 1e-4  # the ages reach the bias
