"""Check a feature repository's sources before Feast sees them.

Each batch source is tagged with the contract table it reads (``contract_table``).
Every Parquet file under the source's path must conform to that table's schema
(``onepiece.contract.conform`` on the file's schema, so nothing is read but
footers), and every feature a view declares must exist in the source with a type
that casts to the declared one. Failures are ContractErrors naming the source, its
file and the column.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from onepiece.contract import TABLES, ContractError, conform
from onepiece.features.types import arrow_type


def _parquet_files(path: str) -> list[str]:
    root = Path(path)
    if root.is_file():
        return [str(root)]
    return sorted(
        str(p)
        for p in root.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    )


def validate_sources(contents) -> None:
    """Raise ContractError if a source of ``contents`` (feast RepoContents) is unusable."""
    for view in contents.feature_views:
        source = view.batch_source
        path = getattr(source, "path", None)
        if path is None or "://" in path:
            continue  # remote or non-file sources are checked by their own store
        table = source.tags.get("contract_table", "")
        label = f"feast source '{source.name}' of feature view '{view.name}'"
        files = _parquet_files(path)
        if not files:
            raise ContractError(
                table or source.name, f"{label} at {path}", "no Parquet files (missing source)"
            )
        for file in files:
            schema = pq.read_schema(file)
            where = f"{label}, file {file}"
            if table in TABLES:
                conform(schema.empty_table(), table, where)
            _check_view_fields(view, schema, table or source.name, where)


def _check_view_fields(view, schema: pa.Schema, table: str, where: str) -> None:
    wanted = [(source_column(view, f.name), arrow_type(f.dtype)) for f in view.features]
    wanted += [(view.batch_source.timestamp_field, None)]
    wanted += [(source_column(view, c.name), pa.int64()) for c in view.entity_columns]
    for column, dtype in wanted:
        if column not in schema.names:
            raise ContractError(table, where, "column is missing", column=column)
        actual = schema.field(column).type
        if dtype is not None and not _casts(actual, dtype):
            raise ContractError(
                table, where, f"type {actual} does not cast to the declared {dtype}", column
            )


def source_column(view, name: str) -> str:
    """The source column a view's field reads (field_mapping maps source -> field)."""
    reverse = {v: k for k, v in view.batch_source.field_mapping.items()}
    return reverse.get(name, name)


def _casts(actual: pa.DataType, wanted: pa.DataType) -> bool:
    if actual.equals(wanted):
        return True
    if pa.types.is_string(wanted):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if pa.types.is_integer(wanted):
        return pa.types.is_integer(actual)
    if pa.types.is_floating(wanted):
        return pa.types.is_integer(actual) or pa.types.is_floating(actual)
    return False
