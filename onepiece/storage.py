"""Where the contract's tables live, how they are read, and how outputs are published.

The data root is a local directory by default (``--data``, else ``$ONEPIECE_DATA``, else
``./data``); any URI that ``pyarrow.fs.FileSystem.from_uri`` understands works for
reading. Outputs are staged in a hidden sibling directory and moved into place in one
step (:func:`publish_dir`), so a reader never sees half of a run.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from onepiece.contract import TABLES, ContractError, conform

DATA_ENV = "ONEPIECE_DATA"


def data_root(explicit: str | os.PathLike[str] | None = None) -> str:
    """The data root: the explicit value, else $ONEPIECE_DATA, else ./data."""
    root = explicit or os.environ.get(DATA_ENV) or "data"
    return str(root)


def _fs(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), str(Path(root).absolute())


def day_partition(day: dt.date) -> str:
    return f"dt={day.isoformat()}"


def parse_day(partition: str) -> dt.date:
    return dt.date.fromisoformat(partition.removeprefix("dt="))


def list_days(root: str, table: str) -> list[dt.date]:
    """The ``dt=`` partitions a day-partitioned table has, sorted."""
    fs, base = _fs(root)
    info = fs.get_file_info(pafs.FileSelector(f"{base}/{table}", allow_not_found=True))
    return sorted(
        parse_day(i.base_name)
        for i in info
        if i.type == pafs.FileType.Directory and i.base_name.startswith("dt=")
    )


def _parquet_files(fs: pafs.FileSystem, directory: str) -> list[str]:
    info = fs.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
    return sorted(
        i.path
        for i in info
        if i.type == pafs.FileType.File
        and i.base_name.endswith(".parquet")
        and not any(part.startswith((".", "_")) for part in i.path[len(directory) :].split("/"))
    )


def read_table(
    root: str,
    table: str,
    days: list[dt.date] | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Read a contract table, file by file, conformed and validated.

    For a day-partitioned table, ``days`` selects partitions (all when None); a requested
    day with no partition raises ContractError naming the missing directory.
    """
    spec = TABLES[table]
    fs, base = _fs(root)
    directory = f"{base}/{table}"
    parts: list[pa.Table] = []
    if spec.partitioned_by_day:
        wanted = days if days is not None else list_days(root, table)
        for day in wanted:
            part_dir = f"{directory}/{day_partition(day)}"
            files = _parquet_files(fs, part_dir)
            if not files:
                raise ContractError(table, part_dir, "partition is missing (no Parquet files)")
            parts += [_read_file(fs, f, table, day) for f in files]
    else:
        files = _parquet_files(fs, directory)
        if not files:
            raise ContractError(table, directory, "table is missing (no Parquet files)")
        parts = [_read_file(fs, f, table, None) for f in files]
    result = pa.concat_tables(parts) if parts else spec.schema.empty_table()
    return result.select(columns) if columns else result


def table_files(root: str, table: str, days: list[dt.date] | None = None) -> list[str]:
    """The Parquet files of a contract table (for readers other than :func:`read_table`).

    Same selection and missing-partition errors as :func:`read_table`; local paths are
    absolute, and a URI root keeps its scheme.
    """
    spec = TABLES[table]
    fs, base = _fs(root)
    scheme = root.split("://", 1)[0] + "://" if "://" in root else ""
    directory = f"{base}/{table}"
    if not spec.partitioned_by_day:
        files = _parquet_files(fs, directory)
        if not files:
            raise ContractError(table, directory, "table is missing (no Parquet files)")
        return [scheme + f for f in files]
    files = []
    for day in days if days is not None else list_days(root, table):
        part_dir = f"{directory}/{day_partition(day)}"
        found = _parquet_files(fs, part_dir)
        if not found:
            raise ContractError(table, part_dir, "partition is missing (no Parquet files)")
        files += found
    return [scheme + f for f in files]


def _read_file(fs: pafs.FileSystem, path: str, table: str, day: dt.date | None) -> pa.Table:
    try:
        with fs.open_input_file(path) as handle:
            raw = pq.read_table(handle)
    except (pa.ArrowInvalid, OSError) as err:
        raise ContractError(table, path, f"unreadable Parquet file: {err}") from None
    return conform(raw, table, path, day)


def read_partition(directory: str | Path, table: str) -> pa.Table:
    """Every Parquet file of one published output directory, each checked against the
    contract's ``table`` schema (a directory with none is an error naming it)."""
    files = sorted(Path(directory).glob("*.parquet"))
    if not files:
        raise ContractError(table, str(directory), "partition holds no Parquet files")
    return pa.concat_tables([conform(pq.read_table(f), table, str(f)) for f in files])


def fingerprint_files(paths: list[str]) -> str:
    """A content fingerprint of files (sha256 over names, sizes and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Write one Parquet file deterministically (same table -> same bytes)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", write_statistics=True)


# --- atomic publication -------------------------------------------------------------


def write_json_atomic(document: dict, path: str | Path) -> None:
    """Replace a small JSON document in one step (write aside, ``os.replace``): a reader
    sees the old or the new document, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


_RENAME_EXCHANGE = 2  # from <linux/fs.h>


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, a.encode(), at_fdcwd, b.encode(), _RENAME_EXCHANGE)
    return result == 0


def publish_dir(staging: str | Path, final: str | Path) -> None:
    """Move a fully written ``staging`` directory to ``final`` in one step.

    A new partition appears with one rename. An existing one is swapped atomically
    (Linux renameat2 RENAME_EXCHANGE), so readers see the old or the new partition,
    never a mix; elsewhere it falls back to rename-aside-then-rename.
    """
    staging, final = Path(staging), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        os.rename(staging, final)
        return
    if _exchange(str(staging), str(final)):
        shutil.rmtree(staging)  # now holds the previous content
        return
    aside = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(final, aside)
    os.rename(staging, final)
    shutil.rmtree(aside)


@contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Yield a hidden staging directory beside ``final``; publish it on success.

    On any exception the staging directory is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.staging-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_dir(staging, final)
