"""Stable sharding of Arrow tables by an int64 id column (same on every run and worker)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads consecutive ids


def shard_of(ids: pa.Array | pa.ChunkedArray, shards: int) -> np.ndarray:
    """The shard (0..shards-1) of every id; Python's hash() is salted, so not used."""
    x = np.asarray(ids, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        return ((x * _GOLDEN >> np.uint64(32)) % np.uint64(shards)).astype(np.int64)


def split_by_shard(table: pa.Table, column: str, shards: int) -> Iterator[tuple[int, pa.Table]]:
    """(shard, rows of that shard) for every shard that has rows, in shard order."""
    if table.num_rows == 0:
        return
    shard = shard_of(table[column], shards)
    order = np.argsort(shard, kind="stable")
    bounds = np.searchsorted(shard[order], np.arange(shards + 1))
    for s in range(shards):
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        if hi > lo:
            # take() makes compact buffers; a slice would pickle its whole parent batch.
            yield s, table.take(pa.array(order[lo:hi]))


def concat_or_empty(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """Concatenate shard pieces (unifying chunk layout), or an empty table of ``schema``."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables).combine_chunks()


__all__ = ["shard_of", "split_by_shard", "concat_or_empty"]
