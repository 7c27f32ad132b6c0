"""Helpers for the serving tests: tiny checkpoints, synthetic context rows, the scoring
job's expected rows, a doubling model."""

from __future__ import annotations

import datetime as dt
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# ---------------------------------------------------------------------------
# The onepiece_ranker: tiny checkpoints, synthetic context rows, a shared server
# ---------------------------------------------------------------------------

AS_OF = dt.datetime(2026, 11, 4, tzinfo=dt.UTC)


def tiny_model_config(**overrides: Any) -> Any:
    from onepiece.model import ModelConfig

    base = dict(
        d_model=32, n_layers=2, n_heads=4, id_dim=16, side_dim=8, item_vocab=512,
        shop_vocab=64, category_vocab=64, user_vocab=128, user_side_vocab=64,
        query_vocab=64, piece_vocab=128, ih_max_len=16, pa_per_group=4, group_size=4,
    )
    return ModelConfig(**(base | overrides))


def write_checkpoint(directory: Path, seed: int, **overrides: Any) -> Path:
    """A freshly initialised tiny model (never trained weights: none are committed)."""
    import torch

    from onepiece.model import OnePiece, save_checkpoint

    torch.manual_seed(seed)
    return save_checkpoint(OnePiece(tiny_model_config(**overrides)), directory)


def _lists(rng: np.random.Generator, lengths: np.ndarray, draw) -> list[list]:
    flat = draw(int(lengths.sum()))
    return [v.tolist() for v in np.split(flat, np.cumsum(lengths)[:-1])] if len(lengths) else []


def synthetic_contexts(n: int, seed: int = 0, max_cands: int = 11) -> pa.Table:
    """Context rows (CONTEXTS_SCHEMA) with random segments; some empty, some unknown ids."""
    from onepiece.contract.schemas import CONTEXTS_SCHEMA, ITEM_FEATURES

    rng = np.random.default_rng(seed)
    lengths = {
        "ih": rng.integers(0, 20, n),
        "pa": rng.integers(0, 12, n),
        "cand": rng.integers(1, max_cands + 1, n),
    }
    cols: dict[str, Any] = {
        "request_id": [f"req-{seed}-{i:05d}" for i in range(n)],
        "user_id": rng.integers(-1, 100, n),
        "query_id": rng.integers(0, 30, n),
        "as_of": [AS_OF] * n,
        "user_age_bucket": rng.integers(0, 8, n).astype(np.int32),
        "user_gender": rng.integers(0, 3, n).astype(np.int32),
        "user_region_id": rng.integers(0, 40, n),
        "query_query_text": [f"red shoes {i % 7}" for i in range(n)],
        "query_popularity_7d": rng.random(n).astype(np.float32) * 50,
    }
    for segment, lens in lengths.items():
        cols[f"{segment}_item_id"] = _lists(rng, lens, lambda k: rng.integers(-1, 400, k))
        for f in ITEM_FEATURES:
            if f.categorical:
                draw = lambda k: rng.integers(0, 50, k)  # noqa: E731
            elif pa.types.is_integer(f.type):
                draw = lambda k: rng.integers(0, 500, k)  # noqa: E731
            else:
                draw = lambda k: rng.random(k)  # noqa: E731
            cols[f"{segment}_{f.name}"] = _lists(rng, lens, draw)
    cols["ih_event_type"] = _lists(rng, lengths["ih"], lambda k: rng.integers(1, 4, k))
    cols["ih_ts"] = [[AS_OF - dt.timedelta(hours=len(v) - j) for j in range(len(v))] for v in cols["ih_item_id"]]
    cols["pa_group"] = [sorted(v) for v in _lists(rng, lengths["pa"], lambda k: rng.integers(0, 3, k))]
    # Candidates of one request are distinct items.
    cols["cand_item_id"] = [list(rng.choice(400, len(v), replace=False)) for v in cols["cand_item_id"]]
    return pa.Table.from_pydict(cols, schema=CONTEXTS_SCHEMA)


START = dt.datetime(2026, 11, 4, tzinfo=dt.UTC)
END = START + dt.timedelta(hours=1)


def write_context_run(data: Path, tables: list[pa.Table], start: dt.datetime = START, end: dt.datetime = END) -> Path:
    """A context run as the Beam contexts job publishes it: shards plus _manifest.json."""
    import json

    import pyarrow.parquet as pq

    where = data / "contexts" / f"dt={start.date().isoformat()}" / f"hour={start.hour:02d}"
    where.mkdir(parents=True)
    for i, table in enumerate(tables):
        pq.write_table(table, where / f"part-{i:05d}.parquet")
    manifest = {"partition": f"{start.isoformat()}..{end.isoformat()}", "run_id": "test", "defaulted": {"unknown_item": 3}}
    (where / "_manifest.json").write_text(json.dumps(manifest))
    return where


# ---------------------------------------------------------------------------
# The scoring job: its config, the in-process rows it must publish, a dying server
# ---------------------------------------------------------------------------

PARTITION = Path("scores") / "dt=2026-11-04" / "hour=00"


def job_config(data: Path, urls: tuple[str, ...], **overrides) -> Any:
    from onepiece.serving.score_job import ScoreJobConfig

    return ScoreJobConfig(data=str(data), start=START, end=END, urls=urls, **({"workers": 1} | overrides))


def inprocess_scores(checkpoint: Path, contexts: pa.Table) -> dict[str, np.ndarray]:
    from onepiece.model import load_checkpoint, score, tensorize
    from onepiece.serving.client import scatter_to_candidates

    model = load_checkpoint(checkpoint)
    inputs = tensorize(contexts, model.config, fixed_shape=True)
    probs = {f"p_{t}": p.numpy() for t, p in score(model, inputs).items()}
    return scatter_to_candidates(probs, inputs.cand_flat_index.numpy(), contexts)


def expected_scores(checkpoint: Path, shards: list[pa.Table]) -> pa.Table:
    """(request_id, item_id, price, want_p_*) computed in process (per-group tensors),
    for joining against the partition."""
    parts = []
    for contexts in shards:
        probs = inprocess_scores(checkpoint, contexts)
        lengths = pc.list_value_length(contexts["cand_item_id"]).to_numpy()
        parts.append(
            pa.table(
                {
                    "request_id": np.repeat(contexts["request_id"].to_numpy(zero_copy_only=False), lengths),
                    "item_id": pc.list_flatten(contexts["cand_item_id"]),
                    "price": pc.list_flatten(contexts["cand_price"]),
                    **{f"want_{k}": v for k, v in probs.items()},
                }
            )
        )
    return pa.concat_tables(parts)


def partition_files(data: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((data / PARTITION).iterdir())}


def request_successes(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nv_inference_request_success{")
    )


def kill_after_first_request(server, done: threading.Event) -> threading.Thread:
    """Kill ``server`` (SIGKILL) as soon as it has answered a request of the job."""

    def watch() -> None:
        while not done.is_set():
            if request_successes(server.metrics_url) >= 1:
                server.kill()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def dead_letters_when_the_only_server_dies(
    data: Path, repo: Path, standing_url: str, seed: int, max_cands: int
) -> list[dict[str, Any]]:
    """Publish a partition through ``standing_url``, then rerun the same window against a
    server of ``repo`` that is killed after its first answer: the run must fail, publish
    nothing and leave the partition as it was. Returns the dead-letter lines (checked to
    be this window's requests)."""
    import json

    import pytest

    from onepiece.errors import UserError
    from onepiece.serving.server import TritonServerConfig, embedded_triton
    from onepiece.serving.score_job import run_scoring

    write_context_run(data, [synthetic_contexts(200, seed=seed, max_cands=max_cands)])
    run_scoring(job_config(data, (standing_url,), model_version=1))
    before = partition_files(data)
    with embedded_triton(TritonServerConfig(repo)) as victim:
        done = threading.Event()
        watcher = kill_after_first_request(victim, done)
        try:
            with pytest.raises(UserError, match=r"requests could not be scored .*nothing published"):
                run_scoring(job_config(data, (victim.grpc_url,), model_version=1, max_in_flight=1))
        finally:
            done.set()
            watcher.join()
    assert partition_files(data) == before  # the published partition is untouched
    dead = data / "_dead_letter" / PARTITION / "requests.jsonl"
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert lines and all(line["request_id"].startswith(f"req-{seed}-") for line in lines)
    return lines


# ---------------------------------------------------------------------------
# A two-line Python-backend model, for the server's own tests
# ---------------------------------------------------------------------------

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


def write_doubling_model(
    repo: Path, name: str = "doubler", broken: bool = False, init: str = "pass"
) -> Path:
    """A model that doubles its input; ``broken`` makes its initialize() raise.

    ``init`` is one line of Python run by initialize() in the stub.
    """
    if broken:
        init = 'raise RuntimeError("doubler is broken on purpose")'
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(IDENTITY_CONFIG.format(name=name))
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(DOUBLING_MODEL.format(init=init)))
    return repo
