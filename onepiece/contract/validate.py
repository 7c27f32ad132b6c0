"""Conform and validate tables against the contract.

``conform`` casts a table read from anywhere to the contract's exact schema (dropping
extra columns, casting only where no information is lost) and then checks the rules;
every failure raises :class:`ContractError`, whose message names the table, the source
file, the column and, where it applies, the first bad row.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract.schemas import (
    EVENT_TYPES,
    MANIFEST_SCHEMA,
    OPTIONAL_COLUMNS,
    TABLES,
    TIMESTAMP,
)


class ContractError(ValueError):
    """A table breaks the data contract. The message says which table, file, column, row."""

    def __init__(
        self,
        table: str,
        source: str,
        problem: str,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        self.table, self.source, self.problem = table, source, problem
        self.column, self.row = column, row
        where = f"table '{table}' ({source})"
        if column is not None:
            where += f", column '{column}'"
        if row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {problem}")


def _castable(actual: pa.DataType, wanted: pa.DataType) -> bool:
    """Whether ``actual`` may be cast to ``wanted`` without changing what the values mean."""
    if actual.equals(wanted):
        return True
    families = (
        (pa.types.is_integer, pa.types.is_integer),
        (lambda t: pa.types.is_integer(t) or pa.types.is_floating(t), pa.types.is_floating),
        (pa.types.is_timestamp, pa.types.is_timestamp),
        (
            lambda t: pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type)),
            pa.types.is_string,
        ),
        (pa.types.is_null, lambda t: True),
    )
    if any(src(actual) and dst(wanted) for src, dst in families):
        if pa.types.is_timestamp(actual) and actual.tz not in (None, "UTC", "+00:00", "Etc/UTC"):
            return False
        return True
    if (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and pa.types.is_list(wanted):
        return _castable(actual.value_type, wanted.value_type)
    return False


def _first_true(mask: pa.ChunkedArray | pa.Array) -> int | None:
    """Index of the first true value of a boolean mask (nulls count as false)."""
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return None
    return int(pc.index(mask, True).as_py())


def conform(
    table: pa.Table,
    name: str,
    source: str,
    partition_day: dt.date | None = None,
) -> pa.Table:
    """Cast ``table`` to the contract schema of ``name`` and check its rules.

    ``partition_day`` is the ``dt=`` day a partitioned file came from; timestamps of
    events and candidates must lie inside it.
    """
    spec = TABLES[name]
    optional = OPTIONAL_COLUMNS.get(name, frozenset())
    columns = []
    for field in spec.schema:
        if field.name not in table.column_names:
            if field.name in optional:
                columns.append(pa.nulls(table.num_rows, field.type))
                continue
            raise ContractError(name, source, "required column is missing", column=field.name)
        column = table.column(field.name)
        if not _castable(column.type, field.type):
            raise ContractError(
                name,
                source,
                f"wrong type {column.type}, the contract says {field.type}",
                column=field.name,
            )
        if pa.types.is_timestamp(column.type) and column.type.tz is None:
            column = pc.assume_timezone(column, "UTC")
        try:
            column = column.cast(field.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ContractError(
                name, source, f"cannot cast to {field.type}: {err}", column=field.name
            ) from None
        if not field.nullable and column.null_count:
            row = _first_true(pc.is_null(column))
            raise ContractError(name, source, "null value in a required column", field.name, row)
        columns.append(column)
    conformed = pa.Table.from_arrays(columns, schema=spec.schema)
    _check_rules(conformed, name, source, partition_day)
    return conformed


def _check_rules(table: pa.Table, name: str, source: str, day: dt.date | None) -> None:
    def fail_where(mask: Any, column: str, problem: str) -> None:
        row = _first_true(mask)
        if row is not None:
            value = table.column(column)[row].as_py()
            raise ContractError(name, source, f"{problem} ({value!r})", column, row)

    if name == "items":
        for column in ("price", "ctr_7d", "cvr_7d", "sales_30d"):
            fail_where(pc.less(table[column], 0), column, f"negative {column}")
            if pa.types.is_floating(table.schema.field(column).type):
                fail_where(pc.is_nan(table[column]), column, f"NaN {column}")
    if name == "events":
        fail_where(
            pc.invert(pc.is_in(table["event_type"], pa.array(EVENT_TYPES))),
            "event_type",
            f"unknown event_type, expected one of {list(EVENT_TYPES)}",
        )
        fail_where(pc.less(table["position"], 0), "position", "negative position")
    if name in ("candidates", "scores"):
        _check_unique(table, name, source, ("request_id", "item_id"), "duplicate candidate row")
    if name == "scores":
        fail_where(pc.less(table["rank"], 1), "rank", "rank must start at 1")
    if day is not None:
        time_column = {"events": "event_timestamp", "candidates": "request_timestamp"}.get(name)
        if time_column is not None:
            start = pa.scalar(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC), TIMESTAMP)
            end = pa.scalar(
                dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC),
                TIMESTAMP,
            )
            outside = pc.or_(
                pc.less(table[time_column], start), pc.greater_equal(table[time_column], end)
            )
            fail_where(outside, time_column, f"timestamp outside its partition dt={day}")


def _check_unique(
    table: pa.Table, name: str, source: str, keys: tuple[str, ...], problem: str
) -> None:
    if table.num_rows == 0:
        return
    counts = table.select(list(keys)).group_by(list(keys)).aggregate([([], "count_all")])
    dup = _first_true(pc.greater(counts["count_all"], 1))
    if dup is None:
        return
    key = {k: counts[k][dup].as_py() for k in keys}
    # Name the first row that repeats an earlier one.
    mask = None
    for k, v in key.items():
        eq = pc.equal(table[k], pa.scalar(v, table.schema.field(k).type))
        mask = eq if mask is None else pc.and_(mask, eq)
    rows = pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()
    raise ContractError(
        name, source, f"{problem}: {key} appears {len(rows)} times", ",".join(keys), rows[1]
    )


def validate_manifest(manifest: dict[str, Any], source: str = "<manifest>") -> None:
    """Check a run manifest against MANIFEST_SCHEMA (names the first bad field)."""
    for field in MANIFEST_SCHEMA:
        if field.name not in manifest:
            if field.nullable:
                continue
            raise ContractError("manifest", source, "required field is missing", field.name)
        value = manifest[field.name]
        if value is None and not field.nullable:
            raise ContractError("manifest", source, "null value in a required field", field.name)
        if pa.types.is_map(field.type) and isinstance(value, dict):
            value = list(value.items())
        try:
            pa.array([value], type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as err:
            raise ContractError(
                "manifest", source, f"does not fit {field.type}: {err}", field.name
            ) from None
    if "settings" in manifest and manifest["settings"] is not None:
        json.loads(manifest["settings"])
