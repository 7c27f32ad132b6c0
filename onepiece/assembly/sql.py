"""A DuckDB connection set up the same way for every assembly step (UTC, one thread)."""

from __future__ import annotations

import os
import threading

import duckdb
import pyarrow as pa

_databases: dict[tuple[int, int], duckdb.DuckDBPyConnection] = {}
_lock = threading.Lock()


def _database(threads: int) -> duckdb.DuckDBPyConnection:
    """This process's in-memory database of ``threads`` threads (a global setting in
    DuckDB, hence one database per count), opened once: opening one costs 30-50 ms, a
    connection to an open one (``cursor()``) about 3 ms, and an assembly job opens
    dozens."""
    key = (os.getpid(), threads)  # never a database inherited through fork
    with _lock:
        base = _databases.get(key)
        if base is None:
            base = _databases[key] = duckdb.connect()
            base.execute(f"SET threads = {threads}")
        return base.cursor()


def connect(threads: int = 1, **tables: pa.Table) -> duckdb.DuckDBPyConnection:
    """A connection of its own (session settings, registered tables) to an in-memory
    DuckDB database, with ``tables`` registered under their names.

    One thread by default: Beam already runs one worker per core, and the single-process
    reference passes ``threads`` explicitly.
    """
    con = _database(int(threads))
    con.execute("SET TimeZone = 'UTC'")  # a session setting: every connection sets it
    for name, table in tables.items():
        con.register(name, table)
    return con


def query(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    return con.sql(sql).to_arrow_table()
