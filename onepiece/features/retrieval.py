"""Point-in-time side features for the entities of a run, through Feast.

A refresh has one scoring time T for all its requests, so one million candidate rows
name only as many items as the catalogue has: the ids are deduplicated first (one row
per unique (id, as_of)), handed to Feast's ``get_historical_features``, and the result
comes back as Arrow tables keyed by (id, as_of) for the context builder to join.

Two ways of asking Feast give the same answer (``Retrieval``): PLAIN, one call per
entity kind with the answer sorted back into key order (any offline store), and
STACKED (the default on Feast's own DuckDB store), where kinds with few keys share one
call and a row number brings the answer back without a sort
(``onepiece.features.entity_frame``). The local profile's ASOF store
(``onepiece.features.asof_store``) is asked PLAIN: its calls are cheap.

Semantics (data contract, "point-in-time correctness"):

- a feature row is visible only if stamped STRICTLY before ``as_of``: Feast's join
  keeps rows with ``event_timestamp <= t``, so it is asked at ``t = as_of - 1 us``;
- a row older than the view's ttl is not served (Feast keeps rows with
  ``event_timestamp >= t - ttl``);
- an id with no visible row gets the contract default (``FeatureSpec.default``) and
  is counted in ``SideFeatures.unknown``; a feature that the feature service does not
  name is filled with its default too and listed in ``SideFeatures.unserved``.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract.schemas import TIMESTAMP
from onepiece.errors import UserError
from onepiece.features.entity_frame import (
    ONE_MICROSECOND,
    STACKING_STORES,
    FrameConfig,
    fetch_stacked,
)
from onepiece.features.repo import FeatureRepoConfig, open_store
from onepiece.features.service import ENTITY_KINDS, EntityKind, ServedView, resolve_service
IdArray: TypeAlias = pa.Array | pa.ChunkedArray | Sequence[int]
Times: TypeAlias = dt.datetime | pa.Array | pa.ChunkedArray


def _empty_ids() -> pa.Array:
    return pa.array([], pa.int64())


@dataclass(frozen=True)
class EntityRequest:
    """The entities a run needs side features for, each with its as-of time(s).

    Every ``*_as_of`` is either one time for all ids of that kind (a refresh at T)
    or an array parallel to the ids (training rows at their own request times).
    A naive datetime is taken as UTC. Ids may repeat; they are deduplicated here.
    """

    item_ids: IdArray = field(default_factory=_empty_ids)
    user_ids: IdArray = field(default_factory=_empty_ids)
    query_ids: IdArray = field(default_factory=_empty_ids)
    item_as_of: Times | None = None
    user_as_of: Times | None = None
    query_as_of: Times | None = None

    @classmethod
    def at(
        cls,
        as_of: dt.datetime,
        *,
        item_ids: IdArray | None = None,
        user_ids: IdArray | None = None,
        query_ids: IdArray | None = None,
    ) -> EntityRequest:
        """A request with one as-of time T for every entity (a refresh)."""
        return cls(
            item_ids=_empty_ids() if item_ids is None else item_ids,
            user_ids=_empty_ids() if user_ids is None else user_ids,
            query_ids=_empty_ids() if query_ids is None else query_ids,
            item_as_of=as_of,
            user_as_of=as_of,
            query_as_of=as_of,
        )

    def unique_keys(self, kind: EntityKind) -> pa.Table:
        """One row per unique (id, as_of) of ``kind``, sorted: columns <id>, as_of."""
        prefix = kind.id_column.removesuffix("_id")
        ids = _as_ids(getattr(self, f"{prefix}_ids"), kind)
        times = getattr(self, f"{prefix}_as_of")
        if len(ids) and times is None:
            raise UserError(f"entity request: {prefix}_as_of is missing for {len(ids)} {kind.name}")
        if isinstance(times, dt.datetime):  # one T: the sorted distinct ids are the keys
            unique = pa.array(np.sort(pc.unique(ids).to_numpy()))
            as_of = pa.repeat(pa.scalar(_utc(times), TIMESTAMP), len(unique))
            return pa.table({kind.id_column: unique, "as_of": as_of})
        as_of = _as_times(times if times is not None else pa.array([], TIMESTAMP), kind)
        if len(as_of) != len(ids):
            raise UserError(
                f"entity request: {prefix}_as_of has {len(as_of)} times "
                f"for {len(ids)} {prefix}_ids"
            )
        keys = pa.table({kind.id_column: ids, "as_of": as_of})
        keys = keys.group_by([kind.id_column, "as_of"]).aggregate([])
        return keys.sort_by([(kind.id_column, "ascending"), ("as_of", "ascending")])


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _as_ids(values: IdArray, kind: EntityKind) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        ids = values.combine_chunks()
    else:
        ids = values if isinstance(values, pa.Array) else pa.array(values, pa.int64())
    if not pa.types.is_integer(ids.type):
        raise UserError(f"entity request: {kind.id_column} must be integers, got {ids.type}")
    if ids.null_count:
        row = pc.index(pc.is_null(ids), True).as_py()
        raise UserError(f"entity request: {kind.id_column} is null at position {row}")
    return ids.cast(pa.int64())


def _as_times(times: pa.Array | pa.ChunkedArray, kind: EntityKind) -> pa.Array:
    if isinstance(times, pa.ChunkedArray):
        times = times.combine_chunks()
    if not pa.types.is_timestamp(times.type):
        raise UserError(f"entity request: as-of times of {kind.name} must be timestamps")
    if times.null_count:
        raise UserError(f"entity request: an as-of time of {kind.name} is null")
    if times.type.tz is None:
        times = pc.assume_timezone(times, "UTC")
    return times.cast(TIMESTAMP)


@dataclass(frozen=True)
class SideFeatures:
    """Side features keyed by (id, as_of): one Arrow table per entity kind.

    ``items``: item_id, as_of, <ITEM_FEATURES>; ``users``: user_id, as_of,
    <USER_FEATURES>; ``queries``: query_id, as_of, <QUERY_FEATURES>. ``unknown`` counts
    the unique (id, as_of) per kind that had no visible feature row (unknown id, or
    every row past the ttl) and got defaults.
    """

    items: pa.Table
    users: pa.Table
    queries: pa.Table
    unknown: dict[str, int]
    feature_service: str
    unserved: tuple[str, ...] = ()  # "<kind>.<feature>" filled with defaults


def output_schema(kind: EntityKind) -> pa.Schema:
    """The schema of one kind's table in SideFeatures."""
    return pa.schema(
        [pa.field(kind.id_column, pa.int64(), nullable=False)]
        + [pa.field("as_of", TIMESTAMP, nullable=False)]
        + [pa.field(spec.name, spec.type, nullable=False) for spec in kind.features]
    )


class Retrieval(enum.Enum):
    """How Feast is asked (the answer is the same): see the module docstring."""

    PLAIN = "plain"
    STACKED = "stacked"


def side_features(
    repo: FeatureRepoConfig,
    request: EntityRequest,
    *,
    store=None,
    retrieval: Retrieval = Retrieval.STACKED,
    frame: FrameConfig = FrameConfig(),
) -> SideFeatures:
    """Point-in-time side features of ``request`` from the feature service of ``repo``.

    ``store`` may be passed to reuse an open Feast FeatureStore across calls. STACKED
    falls back to PLAIN on offline stores other than Feast's own DuckDB store.
    """
    store = store if store is not None else open_store(repo)
    served = resolve_service(store, repo.feature_service)
    keys = {name: request.unique_keys(kind) for name, kind in ENTITY_KINDS.items()}
    stacked = (
        retrieval is Retrieval.STACKED and store.config.offline_store.type in STACKING_STORES
    )
    found = fetch_stacked(store, keys, served, frame) if stacked else None
    tables: dict[str, pa.Table] = {}
    unknown: dict[str, int] = {}
    unserved: list[str] = []
    for name, kind in ENTITY_KINDS.items():
        view = served.get(name)
        if found is None:
            tables[name], unknown[name] = _fetch(store, keys[name], kind, view)
        else:
            tables[name], unknown[name] = _with_defaults(keys[name], found.get(name), kind, view)
        names = set(view.features) if view else set()
        unserved += [f"{name}.{spec.name}" for spec in kind.features if spec.name not in names]
    return SideFeatures(
        items=tables["items"],
        users=tables["users"],
        queries=tables["queries"],
        unknown=unknown,
        feature_service=repo.feature_service,
        unserved=tuple(unserved),
    )


def _fetch(
    store, keys: pa.Table, kind: EntityKind, view: ServedView | None
) -> tuple[pa.Table, int]:
    """PLAIN: one point-in-time Feast query for the unique keys of one kind; defaults filled."""
    found: pa.Table | None = None
    if keys.num_rows and view is not None and view.features:
        entity_df = pa.table(
            {
                kind.id_column: keys[kind.id_column],
                # Feast joins rows stamped <= the entity time: ask 1 us earlier so that a
                # row stamped exactly at as_of stays invisible.
                "event_timestamp": pc.subtract(keys["as_of"], ONE_MICROSECOND),
            }
        ).to_pandas()
        result = store.get_historical_features(entity_df=entity_df, features=view.refs())
        found = result.to_arrow()
        if found.num_rows != keys.num_rows:
            raise RuntimeError(
                f"Feast returned {found.num_rows} rows for {keys.num_rows} unique {kind.name}"
            )
        as_of = pc.add(found["event_timestamp"].cast(TIMESTAMP), ONE_MICROSECOND)
        found = found.drop_columns(["event_timestamp"]).append_column("as_of", as_of)
        found = found.sort_by([(kind.id_column, "ascending"), ("as_of", "ascending")])
        aligned = pc.and_(
            pc.equal(found[kind.id_column], keys[kind.id_column]),
            pc.equal(found["as_of"], keys["as_of"]),
        )
        if not pc.all(aligned).as_py():
            raise RuntimeError(f"Feast returned other keys than requested for {kind.name}")
    return _with_defaults(keys, found, kind, view)


def _with_defaults(
    keys: pa.Table, found: pa.Table | None, kind: EntityKind, view: ServedView | None
) -> tuple[pa.Table, int]:
    """Contract-typed feature columns, nulls replaced by defaults; count of unknown keys."""
    served = set(view.features) if view else set()
    missing = None  # rows where every served feature is null: no visible feature row
    columns = [keys[kind.id_column], keys["as_of"]]
    for spec in kind.features:
        default = pa.scalar(spec.default, spec.type)
        if found is not None and spec.name in served:
            column = found[spec.name].cast(spec.type)
            is_null = pc.is_null(column)
            missing = is_null if missing is None else pc.and_(missing, is_null)
            column = pc.fill_null(column, default)
        else:
            column = pc.fill_null(pa.nulls(keys.num_rows, spec.type), default)
        columns.append(column)
    unknown = int(pc.sum(missing).as_py() or 0) if missing is not None else 0
    return pa.Table.from_arrays(columns, schema=output_schema(kind)), unknown
