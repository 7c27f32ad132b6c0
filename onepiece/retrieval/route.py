"""The retrieval route in batch: context rows -> user vectors -> top-N items per request.

For a window's context rows (the contexts job's output: IH, PA and SD as of T), each
request's user vector r_k (the click step's) is computed in-process
(``onepiece.model.retrieval.user_vectors``) or by the served user tower through Triton
(``onepiece.serving.user_tower``; same batches, same vectors, same bytes) and searched in
the item index (``onepiece.retrieval.index``), which the job loads, never Triton.
The rows are ``RETRIEVAL_SCHEMA``, ``recall_source = "onepiece_retrieval"``. Nothing is
excluded: the upstream excludes nothing a request has seen either.

Point in time: a context row holds only what was observed strictly before its ``as_of``,
and the user vector reads nothing else; the index must be built from item snapshots no
newer than the window's T (checked), so a backfill never sees a later catalogue.

``retrieve`` is the library call a DAG task makes; ``run_route`` reads a contexts
partition and an index directory and publishes one partition with its manifest.
The Parquet bytes depend only on the inputs (fixed batch sizes, sorted rows), so a rerun
writes identical files; the manifest's ``run_id`` is a hash of inputs and settings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece import storage
from onepiece.contract import CONTEXTS_SCHEMA, RETRIEVAL_SCHEMA, RETRIEVAL_SOURCE, ContractError, validate_manifest
from onepiece.errors import UserError
from onepiece.retrieval.index import ItemIndex, load_item_index
from onepiece.serving.user_tower import UserTowerServing

MANIFEST_NAME = "_manifest.json"
PART_FILE = "part-00000.parquet"


@dataclass(frozen=True)
class RouteConfig:
    """What the route retrieves per request."""

    top_n: int = 200  # items per request (the paper's route feeds the pre-ranker; ours)
    #: Context rows per user-vector forward (and per Triton request): fixed, so the same
    #: rows give the same bytes, in-process or through Triton.
    batch_size: int = 256
    #: Where user vectors are computed: "inprocess" (the loaded checkpoint) or "triton"
    #: (the served onepiece_user_tower version the index was built from).
    user_vectors: str = "inprocess"
    #: torch threads of the in-process path. The thread count can change the last bit of
    #: a vector entry (2 threads against 1 do on this CPU: the retrieval_refresh DAG test
    #: wrote other bytes before this was fixed), so it is fixed, and 1 is what a served CPU
    #: instance runs (``ExportConfig.cpu_threads``): both paths then give the same bits.
    threads: int = 1

    def __post_init__(self) -> None:
        from onepiece.serving.user_tower import USER_VECTOR_PATHS

        if self.top_n < 1 or self.batch_size < 1 or self.threads < 1:
            raise UserError(f"--top-n, the batch size and threads must be at least 1 (got {self.top_n}, "
                            f"{self.batch_size}, {self.threads})")
        if self.user_vectors not in USER_VECTOR_PATHS:
            raise UserError(f"user vectors must be one of {', '.join(USER_VECTOR_PATHS)}, got {self.user_vectors!r}")


def retrieve(
    model, index: ItemIndex, contexts: pa.Table, config: RouteConfig = RouteConfig(),
    model_version: int | None = None, encode: Callable[[pa.Table], np.ndarray] | None = None,
) -> pa.Table:
    """The top ``config.top_n`` items of every context row, ``RETRIEVAL_SCHEMA`` rows
    sorted by (request_id, rank). ``encode`` turns the (sorted) rows into their user
    vectors [R, d]; default in-process (``onepiece.model.retrieval.user_vectors``)."""
    if model.config.mode != "retrieval":
        raise UserError(f"model {model.config.name} is a {model.config.mode} model: the route needs a retrieval model")
    if index.dim != model.config.d_model:
        raise UserError(f"the item index holds {index.dim}-d vectors, the model makes {model.config.d_model}-d ones")
    missing = [n for n in CONTEXTS_SCHEMA.names if n not in contexts.column_names]
    if missing:
        raise ContractError("contexts", "<retrieve>", "required column is missing", missing[0])
    contexts = contexts.sort_by([("request_id", "ascending")])
    r = _in_process(model, contexts, config) if encode is None else encode(contexts)  # [R, d]
    ids, scores = index.search(r, config.top_n)  # [R, N] best first, -1 padded
    found = ids >= 0
    row = np.repeat(np.arange(contexts.num_rows), found.sum(axis=1))
    take = pa.array(row)
    n = len(row)
    # -1 pads only the tail of a row, so the found items keep ranks 1, 2, ...
    rank = np.broadcast_to(np.arange(1, config.top_n + 1, dtype=np.int32), ids.shape)[found]
    columns = {
        "request_id": contexts["request_id"].take(take),
        "user_id": contexts["user_id"].take(take),
        "query_id": contexts["query_id"].take(take),
        "item_id": pa.array(ids[found], pa.int64()),
        "score": pa.array(scores[found], pa.float32()),
        "rank": pa.array(rank, pa.int32()),
        "recall_source": pa.array([RETRIEVAL_SOURCE] * n, pa.string()),
        "as_of": contexts["as_of"].take(take),
        "model_name": pa.array([model.config.name] * n, pa.string()),
        "model_version": pa.nulls(n, pa.int32()) if model_version is None else pa.array(
            np.full(n, model_version, np.int32)
        ),
    }
    return pa.table(columns, schema=RETRIEVAL_SCHEMA)


def _in_process(model, contexts: pa.Table, config: RouteConfig) -> np.ndarray:
    """The click-step user vectors [R, d] from the loaded model, on ``config.threads``
    torch threads (the caller's count is restored)."""
    import torch

    from onepiece.model.retrieval import user_vectors

    before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return user_vectors(model, contexts, config.batch_size)
    finally:
        torch.set_num_threads(before)


def _retrieve_on_triton(
    model, index: ItemIndex, contexts: pa.Table, config: RouteConfig, version: int | None,
    checkpoint: Path, serving: UserTowerServing | None, index_dir: Path,
) -> pa.Table:
    """``retrieve`` with the user vectors of the served user tower ``version``."""
    from onepiece.model.retrieval import click_step
    from onepiece.serving.user_tower import user_tower_client

    if version is None:
        raise UserError(
            f"the item index {index_dir} records no model version, so no served user tower can be "
            "pinned: build it from an exported version (`onepiece index publish`)"
        )
    step = click_step(model.config)
    with user_tower_client(serving or UserTowerServing(), version, checkpoint) as client:
        return retrieve(model, index, contexts, config, version,
                        encode=lambda rows: client.user_vectors(rows, config.batch_size)[:, step])


def _window_t(contexts: pa.Table, where: str) -> dt.datetime:
    """The window's T: the one ``as_of`` of a contexts partition (a refresh window)."""
    if contexts.num_rows == 0:
        raise UserError(f"{where}: the contexts partition has no rows")
    first, last = pc.min_max(contexts["as_of"]).values()
    if first != last:
        raise ContractError(
            "contexts", where, f"rows are as of several times ({first} .. {last}): expected one window's contexts",
            "as_of",
        )
    return first.as_py()


def run_route(
    contexts_dir: str | Path,
    index_dir: str | Path,
    out: str | Path,
    config: RouteConfig = RouteConfig(),
    checkpoint: str | Path | None = None,
    serving: UserTowerServing | None = None,
) -> dict[str, Any]:
    """Retrieve for a contexts partition with a published index; publish ``out``.

    ``checkpoint`` is the retrieval model the index was built from (default: the index
    directory's parent, where ``onepiece index build`` puts it); its config must match
    the index manifest's. With ``config.user_vectors == "triton"`` the user vectors come
    from the index's model version of the served user tower (``serving``; default an
    embedded server over ``model_repo/``), else from the checkpoint in this process;
    the rows are the same. Returns the manifest written beside the rows.
    """
    from onepiece.model import load_checkpoint
    from onepiece.serving.export import config_sha256

    began = time.monotonic()
    contexts_dir, index_dir = Path(contexts_dir), Path(index_dir)
    if not contexts_dir.is_dir():
        raise UserError(f"--contexts {contexts_dir} is not a directory (a contexts job output)")
    index, index_manifest = load_item_index(index_dir)
    checkpoint = Path(checkpoint) if checkpoint is not None else index_dir.parent
    model = load_checkpoint(checkpoint)
    built_from = index_manifest["model"]["config_sha256"]
    if config_sha256(model.config.to_json()) != built_from:
        raise UserError(
            f"checkpoint {checkpoint} is not the model the index {index_dir} was built from "
            "(config fingerprints differ): user and item vectors must come from one model"
        )
    contexts = storage.read_partition(contexts_dir, "contexts")
    as_of = _window_t(contexts, str(contexts_dir))
    snapshot = dt.datetime.fromisoformat(index_manifest["item_snapshot_as_of"])
    if snapshot > as_of:
        raise UserError(
            f"the index {index_dir} holds item snapshots as of {snapshot.isoformat()}, after the contexts' "
            f"T = {as_of.isoformat()}: rebuild it as of T or earlier (`onepiece index build --as-of`)"
        )
    version = index_manifest["model"]["version"]
    if config.user_vectors == "triton":
        rows = _retrieve_on_triton(model, index, contexts, config, version, checkpoint, serving, index_dir)
    else:
        rows = retrieve(model, index, contexts, config, version)
    files = sorted(str(p) for p in contexts_dir.glob("*.parquet"))
    index_files = sorted(str(p) for p in index_dir.iterdir() if p.is_file())
    inputs = [{"path": f"contexts/{Path(f).name}", "fingerprint": storage.fingerprint_files([f])} for f in files]
    inputs.append({"path": "item_index", "fingerprint": storage.fingerprint_files(index_files)})
    settings = {"route": asdict(config), "recall_source": RETRIEVAL_SOURCE, "index": index_manifest["index"],
                "item_snapshot_as_of": index_manifest["item_snapshot_as_of"]}
    run_id = hashlib.sha256(json.dumps([settings, inputs], sort_keys=True).encode()).hexdigest()[:16]
    partition = f"dt={as_of.date().isoformat()}/hour={as_of.hour:02d}"
    full = pc.sum(pc.equal(pc.value_counts(rows["request_id"]).field("counts"), config.top_n)).as_py() or 0
    manifest = {
        "table": "retrieval",
        "partition": partition,
        "run_id": run_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_time_s": round(time.monotonic() - began, 3),
        "rows": {"requests": contexts.num_rows, "retrieval": rows.num_rows},
        "inputs": inputs,
        "dropped": {},
        # Requests whose index search found fewer than top_n items (a small catalogue).
        "defaulted": {"requests_short_of_top_n": contexts.num_rows - int(full)},
        "model": {"name": model.config.name, "version": version, "feature_service": model.config.feature_service},
        "settings": json.dumps(settings, sort_keys=True),
    }
    validate_manifest(manifest, str(Path(out) / MANIFEST_NAME))
    with storage.staged_dir(out) as staging:
        storage.write_parquet(rows, staging / PART_FILE)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
