"""Random candidate groups: one request row with many candidates -> rows of <= C candidates.

The ranking model scores a request's candidates in groups of C (the paper: C = 12), each
group one sequence that shares the request's context. This module does the split on
Arrow tables, vectorised (no Python loop per row or candidate): every per-candidate list
column (``cand_*`` and the ``label_*`` columns of TRAINING_SCHEMA) is shuffled within its
request and cut into consecutive groups; every other column is repeated per group. The
result still follows the input schema, so the model's ``tensorize`` reads it unchanged.

Training sampling (the paper's, section 5): every exposed candidate is kept (exposed but
not clicked = impression positive, click negative); unexposed candidates are negatives
for every task, and at most ``max_unexposed`` of them per request are kept (ours: the
world's recall lists are long and mostly noise; a cap keeps the positives' share useful).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CAND_ID = "cand_item_id"
IMPRESSION = "label_impression"


def per_candidate_columns(schema: pa.Schema) -> list[str]:
    """The list columns parallel to ``cand_item_id`` (candidate features and labels)."""
    return [n for n in schema.names if n.startswith("cand_") or n.startswith("label_")]


@dataclass(frozen=True)
class Groups:
    """Group rows plus, per group row, the index of the request row it came from."""

    table: pa.Table
    source_row: np.ndarray  # [G] int64


def _within_row_rank(parent: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order flat candidates by (parent row, key); return the order and each one's rank."""
    order = np.lexsort((key, parent))
    p = parent[order]
    n = len(p)
    starts = np.ones(n, dtype=bool)
    starts[1:] = p[1:] != p[:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    return order, np.arange(n) - first


def sample_candidates(
    table: pa.Table, rng: np.random.Generator, max_unexposed: int | None
) -> np.ndarray:
    """Boolean mask over flat candidates: all exposed ones plus <= max_unexposed others."""
    table = table.combine_chunks()
    n_flat = len(pc.list_flatten(table[CAND_ID]))
    if max_unexposed is None or IMPRESSION not in table.column_names:
        return np.ones(n_flat, dtype=bool)
    exposed = np.asarray(pc.list_flatten(table[IMPRESSION]).to_numpy(zero_copy_only=False)) > 0
    parent = np.asarray(pc.list_parent_indices(table[CAND_ID]))
    # Rank unexposed candidates at random within their request; exposed ones go last.
    key = rng.random(n_flat) + exposed  # exposed keys in [1, 2) sort after unexposed
    order, rank = _within_row_rank(parent, key)
    keep = np.empty(n_flat, dtype=bool)
    keep[order] = rank < max_unexposed
    return keep | exposed


def split_groups(
    table: pa.Table,
    group_size: int,
    rng: np.random.Generator,
    keep: np.ndarray | None = None,
) -> Groups:
    """Shuffle each request's (kept) candidates and cut them into groups of ``group_size``."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    table = table.combine_chunks()
    parent = np.asarray(pc.list_parent_indices(table[CAND_ID]), dtype=np.int64)
    n_flat = len(parent)
    kept = np.arange(n_flat) if keep is None else np.flatnonzero(keep)
    order, rank = _within_row_rank(parent[kept], rng.random(len(kept)))
    flat_index = kept[order]  # flat candidate indices in (row, shuffled) order
    row = parent[flat_index]
    group = rank // group_size
    n = len(flat_index)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (row[1:] != row[:-1]) | (group[1:] != group[:-1])
    starts = np.flatnonzero(new_group)
    offsets = pa.array(np.append(starts, n).astype(np.int32))
    source_row = row[starts]

    take = pa.array(flat_index)
    columns = []
    listed = set(per_candidate_columns(table.schema))
    for field in table.schema:
        column = table[field.name]
        if field.name in listed:
            columns.append(_regroup(column.combine_chunks(), field, n_flat, take, offsets))
        else:
            columns.append(column.take(pa.array(source_row)))
    return Groups(pa.Table.from_arrays(columns, schema=table.schema), source_row)


def _regroup(
    column: pa.Array, field: pa.Field, n_flat: int, take: pa.Array, offsets: pa.Array
) -> pa.Array:
    """Gather one per-candidate list column into the groups' order."""
    if column.null_count == len(column):  # a column the rows do not carry at all
        return pa.nulls(len(offsets) - 1, field.type)
    values = pc.list_flatten(column)
    if len(values) != n_flat or column.null_count:
        raise ValueError(f"column {field.name!r} is not parallel to {CAND_ID!r}")
    return pa.ListArray.from_arrays(offsets, values.take(take), type=field.type)
