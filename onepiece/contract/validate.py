"""Conform and validate tables against the contract.

``conform`` casts a table read from anywhere to the contract's exact schema (dropping
extra columns, casting only where no information is lost) and then checks the rules;
every failure raises :class:`ContractError`, whose message names the table, the source
file, the column and, where it applies, the first bad row.

The rules are not written here: every check is derived from the table's declaration in
``schemas.TABLES`` (non-null fields, ``ranges``, ``unique``, ``partition_time``), and
each is one vectorised pyarrow compute call over the whole column.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract.schemas import (
    MANIFEST_SCHEMA,
    OPTIONAL_COLUMNS,
    TABLES,
    TIMESTAMP,
    UniqueKey,
    ValueRange,
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
    columns: list[str] | None = None,
    unique: bool = True,
) -> pa.Table:
    """Cast ``table`` to the contract schema of ``name`` and check its rules.

    ``partition_day`` is the ``dt=`` day a partitioned file came from; timestamps of
    events and candidates must lie inside it. ``columns`` conforms only those columns of
    the contract (a reader that needs fewer, such as the input check); the rules on the
    other columns are then not checked. ``unique=False`` leaves the unique key to a
    caller that checks it over several files at once.
    """
    spec = TABLES[name]
    optional = OPTIONAL_COLUMNS.get(name, frozenset())
    fields = [f for f in spec.schema if columns is None or f.name in columns]
    arrays = []
    for field in fields:
        if field.name not in table.column_names:
            if field.name in optional:
                arrays.append(pa.nulls(table.num_rows, field.type))
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
        arrays.append(column)
    conformed = pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=spec.schema.metadata))
    check_values(conformed, name, source, partition_day, unique)
    return conformed


def check_values(
    table: pa.Table, name: str, source: str, day: dt.date | None = None, unique: bool = True
) -> None:
    """Check the value rules ``TABLES[name]`` declares on a conformed table (rules on
    columns the table lacks are skipped); the first violation raises ContractError."""
    spec = TABLES[name]
    present = set(table.column_names)
    for rule in spec.ranges:
        if rule.column in present:
            _check_range(table, rule, name, source)
    if unique and spec.unique is not None and set(spec.unique.columns) <= present:
        row = first_repeat(table, spec.unique.columns)
        if row is not None:
            raise duplicate_error(table, row, spec.unique, name, source)
    time_column = spec.partition_time
    if day is not None and time_column is not None and time_column in present:
        start = pa.scalar(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC), TIMESTAMP)
        end = pa.scalar(
            dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC), TIMESTAMP
        )
        values = table[time_column]
        outside = pc.or_(pc.less(values, start), pc.greater_equal(values, end))
        problem = f"timestamp outside its partition dt={day}"
        _fail_where(table, outside, time_column, problem, name, source)


def _fail_where(table: pa.Table, mask: Any, column: str, problem: str, name: str, source: str) -> None:
    row = _first_true(mask)
    if row is not None:
        value = table.column(column)[row].as_py()
        raise ContractError(name, source, f"{problem} ({value!r})", column, row)


def _check_range(table: pa.Table, rule: ValueRange, name: str, source: str) -> None:
    column, values = rule.column, table[rule.column]
    fail = functools.partial(_fail_where, table, column=column, name=name, source=source)
    if rule.finite and pa.types.is_floating(values.type):
        # NaN compares false with every bound, so it is looked for before the bounds.
        fail(pc.is_nan(values), problem=f"NaN {column}")
        fail(pc.is_inf(values), problem=f"infinite {column}")
    if rule.low is not None and rule.high is not None:
        outside = pc.or_(pc.less(values, rule.low), pc.greater(values, rule.high))
        fail(outside, problem=f"{column} outside [{rule.low:g}, {rule.high:g}]")
    elif rule.low is not None:
        below = f"negative {column}" if rule.low == 0 else f"{column} below {rule.low:g}"
        fail(pc.less(values, rule.low), problem=below)
    elif rule.high is not None:
        fail(pc.greater(values, rule.high), problem=f"{column} above {rule.high:g}")
    if rule.allowed is not None:
        fail(
            pc.invert(pc.is_in(values, pa.array(rule.allowed, values.type))),
            problem=f"unknown {column}, expected one of {list(rule.allowed)}",
        )


_ROW = "__row"


def first_repeat(table: pa.Table, keys: tuple[str, ...]) -> int | None:
    """The first row whose key an earlier row already holds; None when the key is unique.

    One hash aggregation when the key is unique (the usual case); only when it is not,
    the repeated keys are joined back to find the earliest repeat.
    """
    if table.num_rows < 2:
        return None
    indexed = table.select(list(keys)).append_column(_ROW, pa.array(np.arange(table.num_rows)))
    groups = indexed.group_by(list(keys)).aggregate([(_ROW, "min"), (_ROW, "count")])
    repeated = pc.greater(groups[f"{_ROW}_count"], 1)
    if not pc.any(repeated).as_py():
        return None
    firsts = groups.filter(repeated).select(list(keys) + [f"{_ROW}_min"])
    rows = indexed.join(firsts, list(keys), join_type="inner")
    later = rows.filter(pc.not_equal(rows[_ROW], rows[f"{_ROW}_min"]))[_ROW]
    return int(pc.min(later).as_py()) if len(later) else None


def duplicate_error(
    table: pa.Table, row: int, unique: UniqueKey, name: str, source: str, times: int | None = None
) -> ContractError:
    """The error for ``row``, which repeats the key of an earlier row of ``table``."""
    key = {k: table[k][row].as_py() for k in unique.columns}
    if times is None:
        same = [pc.equal(table[k], table[k][row]) for k in unique.columns]
        times = int(pc.sum(functools.reduce(pc.and_, same)).as_py())
    return ContractError(
        name, source, f"duplicate {unique.what}: {key} appears {times} times",
        ",".join(unique.columns), row,
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
