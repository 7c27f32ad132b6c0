"""Reading partitions and publishing outputs atomically."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from onepiece import storage
from onepiece.contract import CANDIDATES_SCHEMA, ContractError


def _write_candidates(root: Path, day: dt.date, ids: list[int]) -> None:
    ts = dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)
    table = pa.Table.from_pylist(
        [dict(request_id="r", user_id=1, query_id=1, request_timestamp=ts, item_id=i) for i in ids],
        schema=CANDIDATES_SCHEMA,
    )
    storage.write_parquet(table, root / "candidates" / storage.day_partition(day) / "part-0.parquet")


def test_read_table_lists_and_reads_day_partitions(tmp_path: Path) -> None:
    d1, d2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)
    _write_candidates(tmp_path, d1, [1, 2])
    _write_candidates(tmp_path, d2, [3])
    assert storage.list_days(str(tmp_path), "candidates") == [d1, d2]
    assert storage.read_table(str(tmp_path), "candidates").num_rows == 3
    assert storage.read_table(str(tmp_path), "candidates", days=[d2])["item_id"].to_pylist() == [3]


def test_a_missing_partition_is_named(tmp_path: Path) -> None:
    _write_candidates(tmp_path, dt.date(2026, 11, 1), [1])
    with pytest.raises(ContractError, match=r"candidates/dt=2026-11-05.*partition is missing"):
        storage.read_table(str(tmp_path), "candidates", days=[dt.date(2026, 11, 5)])


def test_a_bad_file_is_named_with_its_path(tmp_path: Path) -> None:
    _write_candidates(tmp_path, dt.date(2026, 11, 1), [1, 1])
    with pytest.raises(ContractError, match=r"dt=2026-11-01/part-0.parquet.*duplicate candidate row"):
        storage.read_table(str(tmp_path), "candidates")


def test_data_root_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(storage.DATA_ENV, raising=False)
    assert storage.data_root() == "data"
    monkeypatch.setenv(storage.DATA_ENV, "/x/y")
    assert storage.data_root() == "/x/y"
    assert storage.data_root("given") == "given"


def test_staged_dir_publishes_whole_or_nothing(tmp_path: Path) -> None:
    final = tmp_path / "scores" / "dt=2026-11-01"
    with storage.staged_dir(final) as staging:
        (staging / "part-0.parquet").write_text("v1")
    assert (final / "part-0.parquet").read_text() == "v1"

    with pytest.raises(RuntimeError):
        with storage.staged_dir(final) as staging:
            (staging / "part-0.parquet").write_text("half")
            raise RuntimeError("scoring failed")
    assert (final / "part-0.parquet").read_text() == "v1"
    assert sorted(p.name for p in final.parent.iterdir()) == ["dt=2026-11-01"]

    with storage.staged_dir(final) as staging:
        (staging / "other.parquet").write_text("v2")
    assert sorted(p.name for p in final.iterdir()) == ["other.parquet"]
    assert sorted(p.name for p in final.parent.iterdir()) == ["dt=2026-11-01"]


def test_publish_dir_swaps_atomically_when_supported(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(); b.mkdir()
    (a / "f").write_text("a"); (b / "f").write_text("b")
    assert storage._exchange(str(a), str(b))  # Linux: renameat2(RENAME_EXCHANGE)
    assert (a / "f").read_text() == "b" and (b / "f").read_text() == "a"
