"""Side features: which entities a batch of contexts needs, and joining their features in.

Context rows are self-contained (see onepiece.contract.schemas): every item token of IH,
PA and CIS carries its item features as parallel list columns ``{segment}_{feature}``,
and the user and query features are scalar ``user_*`` / ``query_*`` columns. Values come
from ``onepiece.features.side_features`` (point-in-time, strictly before as_of), one row
per unique (id, as_of); anything missing there gets the contract default and is counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract import (
    ITEM_FEATURES,
    ITEM_SEGMENTS,
    QUERY_FEATURES,
    TIMESTAMP,
    USER_FEATURES,
    FeatureSpec,
)

#: Entity kind -> (id column, its features, column prefix in scalar context columns).
ENTITY_KINDS: dict[str, tuple[str, tuple[FeatureSpec, ...]]] = {
    "items": ("item_id", ITEM_FEATURES),
    "users": ("user_id", USER_FEATURES),
    "queries": ("query_id", QUERY_FEATURES),
}


def key_schema(kind: str) -> pa.Schema:
    id_column, _ = ENTITY_KINDS[kind]
    return pa.schema([pa.field(id_column, pa.int64()), pa.field("as_of", TIMESTAMP)])


@dataclass
class SideTables:
    """Side feature tables in the shape of ``onepiece.features.SideFeatures``.

    ``items`` (item_id, as_of, ITEM_FEATURES...), ``users``, ``queries`` likewise, one row
    per unique (id, as_of); ``unknown`` counts ids that got defaults, per entity kind.
    """

    items: pa.Table
    users: pa.Table
    queries: pa.Table
    unknown: dict[str, int] = field(default_factory=dict)


def entity_keys(contexts: pa.Table) -> dict[str, pa.Table]:
    """The unique (id, as_of) pairs per entity kind that ``contexts`` (ids only) needs."""
    as_of = contexts["as_of"]
    item_ids, item_times = [], []
    for segment in ITEM_SEGMENTS:
        lists = contexts[f"{segment}_item_id"]
        item_ids += pc.list_flatten(lists).chunks
        item_times += pc.take(as_of, pc.list_parent_indices(lists)).chunks
    keys = {
        "items": pa.table(
            [pa.chunked_array(item_ids, pa.int64()), pa.chunked_array(item_times, TIMESTAMP)],
            schema=key_schema("items"),
        ),
        "users": pa.table([contexts["user_id"], as_of], schema=key_schema("users")),
        "queries": pa.table([contexts["query_id"], as_of], schema=key_schema("queries")),
    }
    return {kind: unique_keys(table) for kind, table in keys.items()}


def unique_keys(table: pa.Table) -> pa.Table:
    """Distinct rows of a key table, sorted (so the result does not depend on input order)."""
    names = table.column_names
    distinct = table.group_by(names, use_threads=False).aggregate([])
    return distinct.select(names).sort_by([(n, "ascending") for n in names])


def merge_keys(parts: list[dict[str, pa.Table]]) -> dict[str, pa.Table]:
    """Union of several ``entity_keys`` results."""
    return {
        kind: unique_keys(
            pa.concat_tables([p[kind] for p in parts] or [key_schema(kind).empty_table()])
        )
        for kind in ENTITY_KINDS
    }


def default_features(kind: str, keys: pa.Table) -> pa.Table:
    """Contract defaults for every key (what an unknown id gets)."""
    _, specs = ENTITY_KINDS[kind]
    n = keys.num_rows
    columns = [keys.column(0), keys["as_of"]]
    columns += [pa.array([s.default] * n, s.type) for s in specs]
    names = keys.column_names + [s.name for s in specs]
    return pa.table(columns, names=names)


def _lookup(kind: str, keys: pa.Table, features: pa.Table) -> tuple[list[pa.Array], int]:
    """Feature columns aligned with ``keys`` (id, as_of), defaults filled; and the miss count."""
    id_column, specs = ENTITY_KINDS[kind]
    keys = pa.table(
        {
            id_column: keys.column(0).cast(pa.int64()),
            "as_of": keys["as_of"].cast(TIMESTAMP),
            "_pos": np.arange(keys.num_rows, dtype=np.int64),
        }
    )
    right = features.select([id_column, "as_of"] + [s.name for s in specs])
    right = right.set_column(1, "as_of", right["as_of"].cast(TIMESTAMP))
    right = right.append_column("_hit", pa.array(np.ones(right.num_rows, dtype=bool)))
    joined = keys.join(right, keys=[id_column, "as_of"], join_type="left outer", use_threads=False)
    if joined.num_rows != keys.num_rows:
        raise ValueError(f"side features for {kind} hold more than one row per ({id_column}, as_of)")
    joined = joined.sort_by("_pos")
    misses = joined["_hit"].null_count
    columns = [pc.fill_null(joined[s.name].cast(s.type), pa.scalar(s.default, s.type)) for s in specs]
    return [c.combine_chunks() for c in columns], misses


def join_side_features(contexts: pa.Table, side: SideTables) -> tuple[pa.Table, dict[str, int]]:
    """Add the side feature columns of CONTEXTS_SCHEMA to id-only ``contexts``.

    Returns the table (input columns plus ``user_*``, ``query_*`` and every
    ``{segment}_{feature}`` list column) and the count of tokens whose (id, as_of) had no
    row in ``side`` at all (they got defaults; zero when the feature function did its job).
    """
    missing: dict[str, int] = {}
    out = contexts
    for kind, prefix in (("users", "user"), ("queries", "query")):
        id_column, specs = ENTITY_KINDS[kind]
        keys = pa.table({id_column: contexts[id_column], "as_of": contexts["as_of"]})
        columns, misses = _lookup(kind, keys, getattr(side, kind))
        missing[f"{prefix}_feature_row_missing"] = misses
        for spec, column in zip(specs, columns, strict=True):
            out = out.append_column(f"{prefix}_{spec.name}", column)
    item_misses = 0
    for segment in ITEM_SEGMENTS:
        lists = contexts[f"{segment}_item_id"].combine_chunks()
        keys = pa.table(
            {
                "item_id": pc.list_flatten(lists),
                "as_of": pc.take(contexts["as_of"], pc.list_parent_indices(lists)),
            }
        )
        columns, misses = _lookup("items", keys, side.items)
        item_misses += misses
        offsets = _offsets(lists)
        for spec, column in zip(ITEM_FEATURES, columns, strict=True):
            out = out.append_column(
                f"{segment}_{spec.name}", pa.ListArray.from_arrays(offsets, column)
            )
    missing["item_feature_row_missing"] = item_misses
    return out, missing


def _offsets(lists: pa.ListArray) -> pa.Array:
    """Fresh int32 offsets for ``lists`` (robust to sliced arrays; nulls become empty)."""
    lengths = np.asarray(pc.fill_null(pc.list_value_length(lists), 0), dtype=np.int64)
    return pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))


@dataclass(frozen=True)
class SnapshotSideSource:
    """Point-in-time side features straight from snapshot tables, with DuckDB ASOF joins.

    A plain reference for ``onepiece.features.side_features`` (no TTL): for each key the
    latest snapshot stamped STRICTLY before as_of, else the contract default (counted as
    unknown). Used by tests and as the single-process baseline; the jobs use Feast.
    """

    items: pa.Table
    users: pa.Table
    queries: pa.Table

    def __call__(self, keys: dict[str, pa.Table]) -> SideTables:
        from onepiece.assembly.sql import connect, query

        tables, unknown = {}, {}
        for kind, (id_column, specs) in ENTITY_KINDS.items():
            names = ", ".join(f"f.{s.name}" for s in specs)
            snap = getattr(self, kind).select([id_column, "event_timestamp"] + [s.name for s in specs])
            con = connect(keys=keys[kind], snap=snap)
            found = query(
                con,
                f"""
                SELECT k.{id_column}, k.as_of, f.event_timestamp IS NOT NULL AS _hit, {names}
                FROM keys k ASOF LEFT JOIN snap f
                  ON f.{id_column} = k.{id_column} AND k.as_of > f.event_timestamp
                ORDER BY k.{id_column}, k.as_of
                """,
            )
            unknown[kind] = found.num_rows - int(pc.sum(found["_hit"]).as_py() or 0)
            columns = [found[id_column], found["as_of"].cast(TIMESTAMP)]
            columns += [pc.fill_null(found[s.name].cast(s.type), pa.scalar(s.default, s.type)) for s in specs]
            tables[kind] = pa.table(columns, names=[id_column, "as_of"] + [s.name for s in specs])
        return SideTables(tables["items"], tables["users"], tables["queries"], unknown)


@dataclass(frozen=True)
class DefaultSideSource:
    """Every entity gets the contract defaults (and counts as unknown): no feature store."""

    def __call__(self, keys: dict[str, pa.Table]) -> SideTables:
        tables = {kind: default_features(kind, keys[kind]) for kind in ENTITY_KINDS}
        unknown = {kind: keys[kind].num_rows for kind in ENTITY_KINDS}
        return SideTables(tables["items"], tables["users"], tables["queries"], unknown)
