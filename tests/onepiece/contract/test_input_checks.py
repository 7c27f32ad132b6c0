"""The input check names each class of damage: table, file, column and first bad row.

Each test damages one file of a copy of the tiny world and runs the check a contexts
run of the live day does (candidates of the window, events of the look-back, items,
users, queries), before any Beam job.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onepiece.assembly.jobs import check_contexts_inputs
from onepiece.contract import ContractError
from onepiece.inputs import check_run_inputs

LIVE_DAY = dt.date(2026, 11, 4)  # WorldConfig.tiny: warm-up 10-30..31, days 11-01..03, 04 live
T = dt.datetime.combine(LIVE_DAY, dt.time(), dt.UTC)
WINDOW = (T, T + dt.timedelta(hours=1))
REPO = Path(__file__).parents[3]


@pytest.fixture
def world(tiny_world: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_world, root)
    return root


def part(root: Path, table: str, day: dt.date | None = None) -> Path:
    directory = root / table / (f"dt={day}" if day else "")
    return directory / "part-0.parquet"


def set_value(path: Path, column: str, row: int, value: object, type_: pa.DataType | None = None) -> None:
    """Rewrite ``path`` with one value of ``column`` changed (the column's type kept unless given)."""
    table = pq.read_table(path)
    values = table[column].to_pylist()
    values[row] = value
    index = table.schema.get_field_index(column)
    field = table.schema.field(index).with_nullable(True)
    type_ = type_ or field.type
    pq.write_table(table.set_column(index, field.with_type(type_), pa.array(values, type_)), path)


def refused(root: Path) -> ContractError:
    with pytest.raises(ContractError) as caught:
        check_contexts_inputs(str(root), *WINDOW)
    return caught.value


def assert_names(err: ContractError, table: str, path: Path, column: str | None, row: int | None) -> None:
    assert (err.table, err.column, err.row) == (table, column, row)
    assert err.source == str(path)
    message = str(err)
    assert f"table '{table}'" in message and str(path) in message
    if column is not None:
        assert f"column '{column}'" in message
    if row is not None:
        assert f"row {row}" in message


def test_the_worlds_own_tables_pass_every_check(tiny_world: Path) -> None:
    days = sorted(dt.date.fromisoformat(p.name[3:]) for p in (tiny_world / "events").glob("dt=*"))
    cand_days = sorted(dt.date.fromisoformat(p.name[3:]) for p in (tiny_world / "candidates").glob("dt=*"))
    checked = check_run_inputs(str(tiny_world), cand_days, days)
    assert checked.rows("candidates") > 0 and checked.rows("events") > 0 and checked.rows("items") > 0
    assert checked.days("events") == days
    window = check_contexts_inputs(str(tiny_world), *WINDOW)
    assert window.days("candidates") == [LIVE_DAY] and window.days("events")[-1] == LIVE_DAY - dt.timedelta(days=1)


def test_a_non_parquet_file_is_named(world: Path) -> None:
    path = part(world, "candidates", LIVE_DAY)
    path.write_text("request_id,item_id\nr1,5\n")
    err = refused(world)
    assert_names(err, "candidates", path, None, None)
    assert "unreadable Parquet file" in err.problem


def test_a_truncated_parquet_file_is_named(world: Path) -> None:
    path = part(world, "events", LIVE_DAY - dt.timedelta(days=1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = refused(world)
    assert_names(err, "events", path, None, None)
    assert "unreadable Parquet file" in err.problem


def test_a_wrong_type_is_named(world: Path) -> None:
    path = part(world, "items")
    table = pq.read_table(path)
    index = table.schema.get_field_index("price")
    as_text = table.set_column(index, "price", table["price"].cast(pa.string()))
    pq.write_table(as_text, path)
    err = refused(world)
    assert_names(err, "items", path, "price", None)
    assert "wrong type string, the contract says double" in err.problem


def test_a_null_id_names_the_row(world: Path) -> None:
    path = part(world, "candidates", LIVE_DAY)
    set_value(path, "user_id", 4, None)
    err = refused(world)
    assert_names(err, "candidates", path, "user_id", 4)
    assert "null value" in err.problem


CASES: dict[str, tuple[str, str, object, str]] = {
    # name: (table, column, bad value, problem)
    "negative price": ("items", "price", -3.5, "negative price (-3.5)"),
    "NaN price": ("items", "price", float("nan"), "NaN price"),
    "infinite statistic": ("queries", "popularity_7d", float("inf"), "infinite popularity_7d (inf)"),
    "negative count": ("items", "sales_30d", -1, "negative sales_30d (-1)"),
    "rate above 1": ("items", "ctr_7d", 1.5, "ctr_7d outside [0, 1] (1.5)"),
    "negative rate": ("items", "cvr_7d", -0.25, "cvr_7d outside [0, 1] (-0.25)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_value_outside_its_declared_range_names_the_row(world: Path, case: str) -> None:
    table, column, value, problem = CASES[case]
    path = part(world, table)
    set_value(path, column, 7, value)
    err = refused(world)
    assert_names(err, table, path, column, 7)
    assert problem in err.problem


def test_a_timestamp_outside_its_partition_names_the_row(world: Path) -> None:
    day = LIVE_DAY - dt.timedelta(days=2)
    path = part(world, "events", day)
    set_value(path, "event_timestamp", 3, dt.datetime.combine(day + dt.timedelta(days=1), dt.time(1), dt.UTC))
    err = refused(world)
    assert_names(err, "events", path, "event_timestamp", 3)
    assert f"timestamp outside its partition dt={day}" in err.problem


def test_a_duplicate_key_names_the_repeating_row(world: Path) -> None:
    path = part(world, "candidates", LIVE_DAY)
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table.slice(0, 10), table.slice(2, 1), table.slice(10)]), path)
    err = refused(world)
    assert_names(err, "candidates", path, "request_id,item_id", 10)
    assert "duplicate candidate row" in err.problem and "appears 2 times" in err.problem


def test_a_duplicate_key_across_files_names_the_second_file(world: Path) -> None:
    first = part(world, "candidates", LIVE_DAY)
    second = first.with_name("part-1.parquet")
    pq.write_table(pq.read_table(first).slice(5, 1), second)
    err = refused(world)
    assert_names(err, "candidates", second, "request_id,item_id", 0)


def test_a_duplicate_snapshot_is_caught(world: Path) -> None:
    path = part(world, "items")
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table, table.slice(3, 1)]), path)
    err = refused(world)
    assert_names(err, "items", path, "item_id,event_timestamp", table.num_rows)
    assert "duplicate item snapshot" in err.problem


def test_only_the_runs_partitions_are_read(world: Path) -> None:
    """Damage outside the window and the look-back does not stop the run."""
    part(world, "candidates", LIVE_DAY - dt.timedelta(days=1)).write_text("not parquet")
    part(world, "events", LIVE_DAY).write_text("not parquet")  # at or after T: not read
    check_contexts_inputs(str(world), *WINDOW)


COMMANDS = {
    "contexts": ["contexts", "--start", T.isoformat(), "--end", WINDOW[1].isoformat(), "--out", "runs/ctx"],
    "trainset": ["trainset", "--from-day", str(LIVE_DAY), "--to-day", str(LIVE_DAY), "--out", "runs/train"],
    # No model is exported: the input error comes first, before any server would start.
    "score": ["score", "--start", T.isoformat(), "--end", WINDOW[1].isoformat(), "--model-repo", "runs/none"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_names_the_damaged_file_without_a_traceback_and_writes_nothing(
    world: Path, tmp_path: Path, command: str
) -> None:
    path = part(world, "candidates", LIVE_DAY)
    path.write_text("not parquet\n")
    before = sorted(p.relative_to(world) for p in world.rglob("*"))
    result = subprocess.run(
        [sys.executable, "-m", "onepiece", *COMMANDS[command], "--data", str(world)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400"},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert f"table 'candidates' ({path}): unreadable Parquet file" in result.stderr
    assert not (tmp_path / "runs").exists()  # no output, no staging directory
    assert sorted(p.relative_to(world) for p in world.rglob("*")) == before  # nothing under --data


def test_a_published_partition_is_checked_and_a_missing_one_named(tmp_path: Path) -> None:
    """The retrieval partition a merged refresh reads: missing, damaged, then sound."""
    from onepiece.contract import RETRIEVAL_SCHEMA, RETRIEVAL_SOURCE
    from onepiece.inputs import check_partition

    directory = tmp_path / "retrieval" / "dt=2026-11-04" / "hour=00"
    with pytest.raises(ContractError, match=r"retrieval/dt=2026-11-04/hour=00\): partition is not published"):
        check_partition(str(directory), "retrieval")
    rows = pa.table({
        "request_id": ["a", "a", "b"], "user_id": [1, 1, 2], "query_id": [3, 3, 4], "item_id": [7, 8, 7],
        "score": [0.9, 0.5, 0.4], "rank": [1, 2, 1], "recall_source": [RETRIEVAL_SOURCE] * 3, "as_of": [T] * 3,
        "model_name": ["m"] * 3, "model_version": [1] * 3,
    }, schema=RETRIEVAL_SCHEMA)
    directory.mkdir(parents=True)
    (directory / "_manifest.json").write_text("{}")
    pq.write_table(pa.concat_tables([rows, rows.slice(1, 1)]), directory / "part-00000.parquet")
    with pytest.raises(ContractError, match="retrieved item"):
        check_partition(str(directory), "retrieval")
    pq.write_table(rows, directory / "part-00000.parquet")
    assert check_partition(str(directory), "retrieval").rows == 3
