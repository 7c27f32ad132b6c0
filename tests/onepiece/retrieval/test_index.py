"""The item index: recall against exact search, the item snapshot as of T, publication,
and clear errors."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from retrieval_helpers import TINY_RETRIEVAL, window_start

from onepiece import storage
from onepiece.contract import ITEMS_SCHEMA
from onepiece.errors import UserError
from onepiece.model import export_item_vectors, load_checkpoint
from onepiece.model.retrieval import user_vectors
from onepiece.retrieval.index import (
    IndexConfig,
    build_index,
    build_item_index,
    exact_search,
    items_as_of,
    load_item_index,
    overlap_at_k,
)


def test_ann_top_n_overlaps_the_exact_top_n(route_world: Path, retrieval_checkpoint: Path, held_out_contexts: Path) -> None:
    model = load_checkpoint(retrieval_checkpoint)
    t = window_start(route_world)
    ids, z = export_item_vectors(model, items_as_of(storage.read_table(str(route_world), "items"), t))
    queries = user_vectors(model, storage.read_partition(held_out_contexts, "contexts"))
    index = build_index(ids, z, IndexConfig())  # the product settings
    assert index.probes(100) < index.index.nlist, "the index must not scan every list"
    for k in (100, 200):
        found, scores = index.search(queries, k)
        exact, exact_scores = exact_search(ids, z, queries, k)
        assert overlap_at_k(found, exact) >= 0.95, k
        assert np.all(np.diff(scores, axis=1) <= 1e-5)  # best first
        # Scores are the inner products, as exact search computes them.
        np.testing.assert_allclose(scores[:, 0], exact_scores[:, 0], atol=1e-4)


def _items(rows: list[tuple[int, float, dt.datetime]]) -> pa.Table:
    n = len(rows)
    return pa.table({
        "item_id": [r[0] for r in rows], "shop_id": [1] * n, "category_id": [2] * n,
        "price": [r[1] for r in rows], "ctr_7d": [0.1] * n, "cvr_7d": [0.01] * n, "sales_30d": [3] * n,
        "event_timestamp": [r[2] for r in rows],
    }, schema=ITEMS_SCHEMA)


def test_items_as_of_takes_each_items_latest_row_before_t() -> None:
    t = dt.datetime(2026, 11, 5, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    items = _items([(7, 1.0, t - 2 * hour), (7, 2.0, t - hour), (7, 3.0, t),  # the row at T is not known at T
                    (9, 5.0, t + hour),  # first seen after T: not in the catalogue yet
                    (3, 4.0, t - 5 * hour)])
    got = items_as_of(items, t)
    assert got["item_id"].to_pylist() == [3, 7]
    assert got["price"].to_pylist() == [4.0, 2.0]
    with pytest.raises(UserError, match="no snapshot before"):
        items_as_of(items, t - 10 * hour)


def test_build_publishes_index_and_manifest(route_world: Path, retrieval_checkpoint: Path, tmp_path: Path) -> None:
    items = storage.read_table(str(route_world), "items")
    t = window_start(route_world)
    manifest = build_item_index(retrieval_checkpoint, items, t, tmp_path / "a")
    again = build_item_index(retrieval_checkpoint, items, t, tmp_path / "b")
    assert manifest["items"] == items_as_of(items, t).num_rows
    assert manifest["model"]["version"] == 1  # the checkpoint directory's name
    assert manifest["item_snapshot_as_of"] == t.isoformat()
    assert {"nlist", "nprobe", "seed", "max_norm", "library_version"} <= set(manifest["index"])
    assert json.loads((tmp_path / "a" / "_manifest.json").read_text()) == manifest
    # The same checkpoint and snapshot build the same index, byte for byte.
    for name in ("index.faiss", "items.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    index, loaded = load_item_index(tmp_path / "a")
    assert loaded == manifest and index.size == manifest["items"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left behind


def test_bad_inputs_give_clear_errors(route_world: Path, retrieval_checkpoint: Path, tmp_path: Path) -> None:
    from onepiece.model import OnePiece, save_checkpoint, variant_config

    items = storage.read_table(str(route_world), "items")
    t = window_start(route_world)
    ranker = save_checkpoint(OnePiece(variant_config("onepiece", **TINY_RETRIEVAL)), tmp_path / "ranker")
    with pytest.raises(UserError, match="needs a retrieval checkpoint"):
        build_item_index(ranker, items, t, tmp_path / "idx")
    assert not (tmp_path / "idx").exists()
    with pytest.raises(UserError, match="has no index.faiss"):
        load_item_index(tmp_path)
    with pytest.raises(UserError, match="nprobe"):
        IndexConfig(nprobe=0)
    index = build_index(np.arange(100), np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32))
    with pytest.raises(UserError, match=r"expected a \[n, 8\] matrix"):
        index.search(np.zeros((2, 5), np.float32), 10)
    with pytest.raises(UserError, match="unique"):
        build_index(np.zeros(100, np.int64), np.ones((100, 8), np.float32))
