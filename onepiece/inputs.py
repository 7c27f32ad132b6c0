"""Check every file a run reads against the contract, before any Beam job starts.

A damaged input must stop a run with one line that names the table, the file, the
column and the first bad row, not with a worker's traceback after the pipeline started.
:func:`check_run_inputs` is that one check; the assembly drivers (every CLI command and
DAG that starts a Beam job goes through them) and the refresh DAG's ``check_inputs``
task call it; :func:`check_partition` checks one published partition a run reads (the
retrieval route's, when the refresh merges it). For each file:

1. it opens as Parquet (a truncated or non-Parquet file is named);
2. its schema has the contract's columns, with types that cast to the contract's
   (read from the footer only);
3. the columns the contract has rules for (``TableSpec.rule_columns``) are read and
   checked by ``onepiece.contract.conform``: non-null ids, value ranges, timestamps
   inside the file's ``dt=`` partition;

then the unique key is checked over the files of each partition together.
Everything is vectorised (pyarrow compute); only the files of the run are read.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from onepiece import storage
from onepiece.contract import TABLES, ContractError, conform
from onepiece.contract.validate import duplicate_error, first_repeat

SIDE_TABLES: tuple[str, ...] = ("items", "users", "queries")


@dataclass(frozen=True)
class TableFiles:
    """The checked files of one contract table, their rows, and the ``dt=`` days read."""

    table: str
    files: tuple[str, ...]
    rows: int
    days: tuple[dt.date, ...] = ()


@dataclass(frozen=True)
class CheckedInputs:
    """What a run reads, per table, every file checked; ``seconds`` the check's wall time."""

    tables: tuple[TableFiles, ...]
    seconds: float

    def files(self, table: str) -> list[str]:
        return [f for t in self.tables if t.table == table for f in t.files]

    def rows(self, table: str) -> int:
        return sum(t.rows for t in self.tables if t.table == table)

    def days(self, table: str) -> list[dt.date]:
        return [d for t in self.tables if t.table == table for d in t.days]


def check_run_inputs(
    root: str,
    candidate_days: list[dt.date],
    event_days: list[dt.date],
    side_tables: tuple[str, ...] = SIDE_TABLES,
    candidates_root: str | None = None,
) -> CheckedInputs:
    """Check the candidates of ``candidate_days``, the events of ``event_days`` and the
    side-feature tables; raise ContractError at the first violation. ``candidates_root``
    holds the ``candidates/`` table when it is not ``root``'s (a refresh's merged
    candidates, staged under its run root)."""
    began = time.monotonic()
    tables = (
        check_table(candidates_root or root, "candidates", candidate_days),
        check_table(root, "events", event_days),
    ) + tuple(check_table(root, name) for name in side_tables)
    return CheckedInputs(tables, round(time.monotonic() - began, 3))


def check_table(root: str, table: str, days: list[dt.date] | None = None) -> TableFiles:
    """Check every file of ``table`` (the ``days`` partitions of a day-partitioned
    table; None: all of them), and its unique key across the files of each partition
    (a request lies in one day, so a key repeated across days is the Beam job's
    request-consistency check, not this one)."""
    spec = TABLES[table]
    partitions: list[tuple[list[str], dt.date | None]]
    if spec.partitioned_by_day:
        days = storage.list_days(root, table) if days is None else days
        partitions = [(storage.table_files(root, table, [day]), day) for day in days]
    else:
        partitions = [(storage.table_files(root, table), None)]
    rows = sum(_check_files(files, table, day) for files, day in partitions)
    every_file = tuple(f for files, _ in partitions for f in files)
    return TableFiles(table, every_file, rows, tuple(days or ()))


def check_partition(directory: str, table: str) -> TableFiles:
    """Check one published partition of ``table`` (``<table>/dt=.../hour=.../`` with its
    ``_manifest.json``, e.g. the retrieval route's): it must be there, and every file
    and its unique key conform. A missing partition is named."""
    if not (Path(directory) / "_manifest.json").is_file():
        raise ContractError(table, directory, "partition is not published (no _manifest.json)")
    files = sorted(str(p) for p in Path(directory).glob("*.parquet"))
    if not files:
        raise ContractError(table, directory, "partition holds no Parquet files")
    return TableFiles(table, tuple(files), _check_files(files, table, None))


def _check_files(files: list[str], table: str, day: dt.date | None) -> int:
    """Check every file of one partition of ``table`` and its unique key across them;
    returns the partition's row count."""
    spec = TABLES[table]
    rows, keys = 0, []
    for path in files:
        checked = _check_file(path, table, day)
        rows += checked.num_rows
        if spec.unique is not None:
            keys.append(checked.select(list(spec.unique.columns)))
    if spec.unique is not None:
        _check_unique(keys, files, table)
    return rows


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), path


def _check_file(path: str, table: str, day: dt.date | None) -> pa.Table:
    """One file, conformed on the columns the contract has rules for."""
    spec = TABLES[table]
    fs, inner = _filesystem(path)
    try:
        with fs.open_input_file(inner) as handle:
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
            conform(schema.empty_table(), table, path)  # columns and types, before reading
            columns = [c for c in spec.rule_columns() if c in schema.names]
            raw = parquet.read(columns=columns)
    except (pa.ArrowException, OSError) as err:  # a ContractError is neither
        # A truncated or non-Parquet file, or a damaged page: one line naming the file.
        raise ContractError(table, path, f"unreadable Parquet file: {err}") from None
    return conform(raw, table, path, day, columns=spec.rule_columns(), unique=False)


def _check_unique(keys: list[pa.Table], files: list[str], table: str) -> None:
    """The unique key over the files of one partition (one hash aggregation): name the
    file and the row that repeat an earlier key."""
    unique = TABLES[table].unique
    assert unique is not None
    combined = pa.concat_tables(keys)
    row = first_repeat(combined, unique.columns)
    if row is None:
        return
    starts = np.cumsum([0] + [k.num_rows for k in keys])
    index = int(np.searchsorted(starts, row, side="right")) - 1
    err = duplicate_error(combined, row, unique, table, files[index])
    raise ContractError(table, files[index], err.problem, err.column, row - int(starts[index]))
