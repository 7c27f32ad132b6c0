"""The entity frames handed to Feast's ``get_historical_features``, and their answers
put back in key order.

Feast's DuckDB (ibis) offline store pays per call (registry look-ups, building and
compiling the ibis expression, a scan of each source) and per entity row (a string row
id from the join keys and the time, a window over the joined rows, a join back). Under
a refresh's one T, the item view has far more keys than the user and query views, so:

- the kinds with few keys share one call: their rows are stacked, each row naming one
  entity and null in the other kinds' join keys. Feast's ibis join gives a null key its
  own marker and never matches it, so every row gets exactly its own view's features.
  A kind with many keys goes alone: stacking lengthens every row id and widens the
  window, which cost more than the call it saved (issue 22, measured);
- a row-number column rides through Feast (entity columns come back unchanged), so the
  answer is put back in key order with one ``take`` instead of a sort;
- times are passed tz-aware in UTC (one microsecond before as_of, see retrieval.py).

Only Feast's own DuckDB store is asked this way; :data:`STACKING_STORES` names it. Other
offline stores (the local profile's ASOF store, the scale profile's Spark) get one plain
call per kind.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.features.service import ENTITY_KINDS, ServedView

#: Offline stores whose point-in-time join is Feast's ibis join (null keys never match).
#: Not the project's ASOF store (``onepiece.features.asof_store``): its calls cost little,
#: and PLAIN measured 10% less CPU there than STACKED (issue 22, 15 interleaved rounds).
STACKING_STORES = frozenset({"duckdb"})
#: The entity column that numbers the rows of a frame (passed through by Feast).
ROW_COLUMN = "onepiece_row"
ONE_MICROSECOND = pa.scalar(dt.timedelta(microseconds=1), pa.duration("us"))


@dataclass(frozen=True)
class FrameConfig:
    """How unique keys are grouped into ``get_historical_features`` calls."""

    # Kinds with at most this many unique keys share one call; a refresh's items
    # (~200k keys per 1M candidates) go alone, its users and queries (~10k) share.
    shared_call_max_keys: int = 100_000


def plan_calls(
    keys: dict[str, pa.Table], served: dict[str, ServedView], config: FrameConfig
) -> list[tuple[str, ...]]:
    """The kinds asked together, one tuple per call; kinds without keys or view skipped.

    Small kinds share a call unless their feature names collide (Feast would then
    need full feature names); large kinds get a call each.
    """
    asked = [name for name in ENTITY_KINDS if name in served and served[name].features]
    asked = [name for name in asked if keys[name].num_rows]
    calls: list[tuple[str, ...]] = []
    shared: list[str] = []
    shared_names: set[str] = set()
    for name in asked:
        names = set(served[name].features)
        if keys[name].num_rows <= config.shared_call_max_keys and not names & shared_names:
            shared.append(name)
            shared_names |= names
        else:
            calls.append((name,))
    if shared:
        calls.insert(0, tuple(shared))
    return calls


@dataclass(frozen=True)
class StackedFrame:
    """The unique keys of several kinds stacked into one entity frame (kinds in order)."""

    kinds: tuple[str, ...]
    keys: tuple[pa.Table, ...]  # per kind: <id>, as_of (unique, sorted)

    @property
    def starts(self) -> np.ndarray:
        sizes = [k.num_rows for k in self.keys]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def to_pandas(self) -> pd.DataFrame:
        """Join-key columns (null outside their kind's rows), event_timestamp, row numbers."""
        starts = self.starts
        total = int(starts[-1])
        columns: dict[str, pa.Array] = {}
        for i, (name, keys) in enumerate(zip(self.kinds, self.keys, strict=True)):
            id_column = ENTITY_KINDS[name].id_column
            ids = keys[id_column].combine_chunks()
            if len(self.kinds) == 1:
                columns[id_column] = ids
                continue
            values = np.zeros(total, np.int64)
            values[starts[i] : starts[i + 1]] = ids.to_numpy()
            mask = np.ones(total, bool)
            mask[starts[i] : starts[i + 1]] = False
            columns[id_column] = pa.array(values, mask=mask)
        chunks = [chunk for keys in self.keys for chunk in keys["as_of"].chunks]
        as_of = pa.chunked_array(chunks, self.keys[0]["as_of"].type).combine_chunks()
        # Feast joins rows stamped <= the entity time: ask 1 us earlier so that a row
        # stamped exactly at as_of stays invisible.
        columns["event_timestamp"] = pc.subtract(as_of, ONE_MICROSECOND)
        columns[ROW_COLUMN] = pa.array(np.arange(total, dtype=np.int64))
        # Nullable join keys as Arrow-backed columns (numpy would make them floats).
        nullable = pd.ArrowDtype if len(self.kinds) > 1 else None
        return pa.table(columns).to_pandas(
            types_mapper=lambda t: nullable(t) if nullable and pa.types.is_integer(t) else None
        )

    def split(self, found: pa.Table, served: dict[str, ServedView]) -> dict[str, pa.Table]:
        """Feast's answer per kind, in the order of that kind's keys (feature columns only)."""
        starts = self.starts
        total = int(starts[-1])
        order = _row_order(found[ROW_COLUMN], total)
        as_of = pc.add(found["event_timestamp"].cast(self.keys[0]["as_of"].type), ONE_MICROSECOND)
        parts: dict[str, pa.Table] = {}
        for i, (name, keys) in enumerate(zip(self.kinds, self.keys, strict=True)):
            positions = pa.array(order[starts[i] : starts[i + 1]])
            id_column = ENTITY_KINDS[name].id_column
            same = pc.and_(
                pc.equal(found[id_column].take(positions), keys[id_column]),
                pc.equal(as_of.take(positions), keys["as_of"]),
            )
            if not pc.all(pc.fill_null(same, False)).as_py():  # a null key is not a match
                raise RuntimeError(f"Feast returned other keys than requested for {name}")
            parts[name] = found.select(list(served[name].features)).take(positions)
        return parts


def _row_order(rows: pa.ChunkedArray | pa.Array, total: int) -> np.ndarray:
    """Positions in Feast's answer of frame rows 0..total-1 (every row exactly once)."""
    numbers = np.asarray(rows.to_numpy())
    if len(numbers) != total or (total and (numbers.min() < 0 or numbers.max() >= total)):
        raise RuntimeError(f"Feast returned {len(numbers)} rows for {total} entity rows")
    order = np.full(total, -1, np.int64)
    order[numbers] = np.arange(total, dtype=np.int64)
    if total and order.min() < 0:
        raise RuntimeError("Feast returned an entity row twice and lost another")
    return order


def fetch_stacked(
    store, keys: dict[str, pa.Table], served: dict[str, ServedView], config: FrameConfig
) -> dict[str, pa.Table]:
    """Feature columns per kind aligned with ``keys`` (nulls where nothing is visible)."""
    found: dict[str, pa.Table] = {}
    for kinds in plan_calls(keys, served, config):
        frame = StackedFrame(kinds, tuple(keys[name] for name in kinds))
        refs = [ref for name in kinds for ref in served[name].refs()]
        answer = store.get_historical_features(entity_df=frame.to_pandas(), features=refs)
        found.update(frame.split(answer.to_arrow(), served))
    return found
