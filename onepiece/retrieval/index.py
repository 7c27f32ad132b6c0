"""The item index: every item's vector z_v from a retrieval checkpoint, searchable by
inner product with faiss IVF-Flat over the MIPS-to-L2 transform.

Why this index (``benchmarks/retrieval_route.py``, docs/results.md): the trained model's
item vectors share one dominant direction (mean cosine to their mean about 0.87), so a
request's exact top-100 by <r, z_v> leans on the items with the largest norms, and graphs
and cells built for inner product miss them. At 98k items, faiss HNSW and usearch HNSW
under inner product kept only 0.29-0.36 of the exact top-100 (ef 128-256), faiss IVF-Flat
under inner product 0.845 at 64 of 1,252 lists. Appending one coordinate, sqrt(M^2 - |z_v|^2) to items
(M the largest norm) and 0 to queries, turns the largest inner product into the smallest
L2 distance (Bachrach et al. 2014). IVF-Flat under L2 on those vectors kept 0.996 of the
exact top-100 at 64 of 1,252 lists and answered 7.0-8.6x the queries per CPU second of
exact search (faiss IndexFlatIP: a BLAS GEMM and a heap; one thread each; two runs), built
in 5-10 s; faiss HNSW on the same vectors reached 0.981 at 4.1-5.3x after a 16-25 s build. IVF-Flat keeps the raw
vectors (no quantisation error) and its seeded k-means rebuilds the same index, byte for
byte, from the same vectors. faiss (Meta) ships CPU wheels for every release.

Layout of a published index directory (written in one step, ``storage.staged_dir``)::

    item_index/
        index.faiss       the faiss index over the augmented vectors (ids = row positions)
        items.parquet     item_id per index row, ascending
        _manifest.json    model, item count, index parameters (and M), build time,
                          the item snapshot time

It lives beside the model version it was built from: ``<checkpoint>/item_index/`` by
default, so an exported version directory ``model_repo/<model>/<N>/`` carries its own.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece import storage
from onepiece.contract import TIMESTAMP, ContractError
from onepiece.errors import UserError

INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.parquet"
MANIFEST_NAME = "_manifest.json"
DEFAULT_DIR = "item_index"


@dataclass(frozen=True)
class IndexConfig:
    """How the IVF-Flat index is built and searched."""

    #: Inverted lists (k-means cells); 0: about 4 * sqrt(items), at most items / 39
    #: (faiss wants 39 training points per centroid).
    nlist: int = 0
    #: Lists scanned per query (ours, measured at 98k items, 1,252 lists): 64 kept 0.996 of
    #: the exact top-100 (0.973 for a less trained model, where 32 kept 0.933);
    #: ``search`` scans more when k needs it (see ``probes``).
    nprobe: int = 64
    #: k-means seed: the same vectors and seed give the same index.
    seed: int = 1234
    #: faiss (OpenMP) threads for build and search; 1 suits the shared 2-core workers.
    threads: int = 1

    def __post_init__(self) -> None:
        if self.nlist < 0 or self.nprobe < 1 or self.threads < 1:
            raise UserError(
                f"index settings: nlist must be >= 0, nprobe and threads >= 1 "
                f"(got nlist={self.nlist}, nprobe={self.nprobe}, threads={self.threads})"
            )

    def lists_for(self, items: int) -> int:
        wanted = self.nlist or round(4 * math.sqrt(items))
        return max(1, min(wanted, items // 39))


def items_as_of(items: pa.Table, as_of: dt.datetime) -> pa.Table:
    """The latest snapshot row of every item stamped strictly before ``as_of``, by item_id.

    Items whose first snapshot is at or after ``as_of`` are not in the catalogue yet.
    """
    before = items.filter(pc.less(items["event_timestamp"], pa.scalar(as_of, TIMESTAMP)))
    if before.num_rows == 0:
        raise UserError(f"the items table has no snapshot before {as_of.isoformat()}: nothing to index")
    ordered = before.sort_by([("item_id", "ascending"), ("event_timestamp", "descending")])
    _, first = np.unique(ordered["item_id"].to_numpy(), return_index=True)  # the newest per item
    return ordered.take(pa.array(first))


def augment_items(vectors: np.ndarray, max_norm: float) -> np.ndarray:
    """[z, sqrt(M^2 - |z|^2)]: the L2 distance to [r, 0] is |r|^2 + M^2 - 2 <r, z>."""
    sq = np.maximum(np.float32(max_norm) ** 2 - np.einsum("nd,nd->n", vectors, vectors), 0)
    return np.ascontiguousarray(np.hstack([vectors, np.sqrt(sq)[:, None]]), dtype=np.float32)


def augment_queries(queries: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.hstack([queries, np.zeros((len(queries), 1), np.float32)]))


class ItemIndex:
    """Item ids and their faiss index; ``search`` returns item ids and inner products."""

    def __init__(self, item_ids: np.ndarray, index: Any, config: IndexConfig, max_norm: float) -> None:
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.index = index
        self.config = config
        self.max_norm = float(max_norm)

    @property
    def size(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        return int(self.index.d) - 1  # the model's d; the index holds one more coordinate

    def probes(self, k: int) -> int:
        """Lists to scan for ``k`` results: ``nprobe``, or enough lists to hold about 2k
        items on average when k is large against the catalogue (else a query could see
        fewer than k items)."""
        nlist = int(self.index.nlist)
        needed = math.ceil(2 * k * nlist / max(self.size, 1))
        return min(nlist, max(self.config.nprobe, needed))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per query by <query, z_v>: (item ids int64 [Q, k], scores float32
        [Q, k]), best first; -1 / -inf pad a row that found fewer than k items."""
        import faiss

        queries = _as_matrix(queries, self.dim, "queries")
        faiss.omp_set_num_threads(self.config.threads)
        params = faiss.SearchParametersIVF(nprobe=self.probes(k))
        dist, rows = self.index.search(augment_queries(queries), k, params=params)
        # <r, z> back from the distance (float32 rounding aside).
        scores = 0.5 * (np.einsum("qd,qd->q", queries, queries)[:, None] + np.float32(self.max_norm) ** 2 - dist)
        ids = np.where(rows >= 0, self.item_ids[np.maximum(rows, 0)], -1)
        return ids, np.where(rows >= 0, scores, -np.inf).astype(np.float32)


def _as_matrix(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise UserError(f"{what}: expected a [n, {dim}] matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise UserError(f"{what}: non-finite values")
    return x


def build_index(item_ids: np.ndarray, vectors: np.ndarray, config: IndexConfig = IndexConfig()) -> ItemIndex:
    """An IVF-Flat index for inner product over ``vectors`` [N, d] (rows = ``item_ids``),
    L2 on the augmented vectors (``augment_items``)."""
    import faiss

    if len(item_ids) == 0:
        raise UserError("no items to index")
    vectors = _as_matrix(vectors, vectors.shape[-1], "item vectors")
    if len(np.unique(item_ids)) != len(item_ids):
        raise UserError("item ids of the index must be unique")
    faiss.omp_set_num_threads(config.threads)
    nlist = config.lists_for(len(item_ids))
    max_norm = float(np.sqrt(np.einsum("nd,nd->n", vectors, vectors).max()))
    augmented = augment_items(vectors, max_norm)
    d = augmented.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist, faiss.METRIC_L2)
    index.cp.seed = config.seed
    index.train(augmented)
    index.add(augmented)  # ids = row positions
    return ItemIndex(np.asarray(item_ids, np.int64), index, config, max_norm)


def exact_search(
    item_ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The reference: exact top-k by inner product (faiss IndexFlatIP), same outputs as
    ``ItemIndex.search``."""
    import faiss

    faiss.omp_set_num_threads(threads)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, np.float32))
    scores, rows = flat.search(_as_matrix(queries, vectors.shape[1], "queries"), k)
    ids = np.where(rows >= 0, np.asarray(item_ids, np.int64)[np.maximum(rows, 0)], -1)
    return ids, np.where(rows >= 0, scores, -np.inf).astype(np.float32)


def overlap_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k that ``found`` contains (-1 is padding)."""
    hits = [len(np.intersect1d(f[f >= 0], e[e >= 0])) / max((e >= 0).sum(), 1) for f, e in zip(found, exact)]
    return float(np.mean(hits)) if hits else float("nan")


# --- build from a checkpoint and publish ------------------------------------------------


def build_item_index(
    checkpoint: str | Path,
    items: pa.Table,
    as_of: dt.datetime,
    out: str | Path,
    config: IndexConfig = IndexConfig(),
    model_version: int | None = None,
) -> dict[str, Any]:
    """Index the item vectors of a retrieval ``checkpoint`` for the items of ``items``
    (the contract's items table) as of ``as_of``; publish into ``out``, return the manifest.

    ``model_version`` defaults to the checkpoint directory's name when it is a number
    (an exported version ``model_repo/<model>/<N>``), else it is recorded as null.
    """
    import faiss

    from onepiece.model import export_item_vectors, load_checkpoint
    from onepiece.serving.export import config_sha256

    began = time.monotonic()
    checkpoint = Path(checkpoint)
    model = load_checkpoint(checkpoint)
    if model.config.mode != "retrieval":
        raise UserError(
            f"checkpoint {checkpoint} is a {model.config.mode} model ({model.config.name}): "
            "the item index needs a retrieval checkpoint (variant onepiece_retrieval)"
        )
    catalogue = items_as_of(items, as_of)
    ids, vectors = export_item_vectors(model, catalogue)
    index = build_index(ids, vectors, config)
    if model_version is None and checkpoint.name.isdigit():
        model_version = int(checkpoint.name)
    manifest = {
        "kind": "item_index",
        "model": {
            "name": model.config.name,
            "version": model_version,
            "config_sha256": config_sha256(model.config.to_json()),
        },
        "items": index.size,
        "dim": index.dim,
        "item_snapshot_as_of": as_of.astimezone(dt.UTC).isoformat(),
        "index": {
            "library": "faiss-cpu",
            "library_version": faiss.__version__,
            "type": "IVFFlat",
            "metric": "inner_product (L2 over the MIPS-to-L2 transform)",
            "nlist": int(index.index.nlist),
            "max_norm": index.max_norm,
        }
        | {k: v for k, v in asdict(config).items() if k != "nlist"},
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "build_s": round(time.monotonic() - began, 3),
    }
    with storage.staged_dir(out) as staging:
        faiss.write_index(index.index, str(staging / INDEX_FILE))
        storage.write_parquet(pa.table({"item_id": pa.array(ids, pa.int64())}), staging / ITEMS_FILE)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def load_item_index(directory: str | Path, config: IndexConfig | None = None) -> tuple[ItemIndex, dict[str, Any]]:
    """A published index and its manifest. ``config`` overrides the search settings
    (nprobe, threads); by default the ones it was built with."""
    import faiss
    import pyarrow.parquet as pq

    directory = Path(directory)
    for name in (INDEX_FILE, ITEMS_FILE, MANIFEST_NAME):
        if not (directory / name).is_file():
            raise UserError(f"item index {directory} has no {name}: build it with `onepiece index build`")
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    ids = pq.read_table(directory / ITEMS_FILE)["item_id"].to_numpy()
    index = faiss.read_index(str(directory / INDEX_FILE))
    if index.ntotal != len(ids) or manifest.get("items") != len(ids):
        raise ContractError(
            "item_index", str(directory),
            f"{INDEX_FILE} holds {index.ntotal} vectors, {ITEMS_FILE} {len(ids)} ids, the manifest {manifest.get('items')}",
        )
    built = manifest["index"]
    config = config or IndexConfig(
        nlist=int(built["nlist"]), nprobe=int(built["nprobe"]), seed=int(built["seed"]), threads=int(built["threads"])
    )
    return ItemIndex(ids, index, config, float(built["max_norm"])), manifest
