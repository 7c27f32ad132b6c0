"""A DuckDB connection set up the same way for every assembly step (UTC, one thread)."""

from __future__ import annotations

import duckdb
import pyarrow as pa


def connect(threads: int = 1, **tables: pa.Table) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with ``tables`` registered under their names.

    One thread by default: Beam already runs one worker per core, and the single-process
    reference passes ``threads`` explicitly.
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {int(threads)}")
    for name, table in tables.items():
        con.register(name, table)
    return con


def query(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    return con.sql(sql).to_arrow_table()
