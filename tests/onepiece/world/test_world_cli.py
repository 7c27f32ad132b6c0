"""`onepiece world` end to end in a subprocess: success, and bad arguments that write nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from onepiece.storage import read_table

SMALL_ARGS = ["--users", "30", "--items", "200", "--queries", "8", "--days", "2",
              "--candidates", "30", "--impressions", "6"]


def _run(args: list[str], env_data: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ONEPIECE_DATA"}
    env["COLUMNS"] = "200"
    if env_data is not None:
        env["ONEPIECE_DATA"] = str(env_data)
    code = "from onepiece.cli import app; app(prog_name='onepiece')"
    return subprocess.run([sys.executable, "-c", code, "world", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_world_command_writes_valid_tables_and_prints_a_summary(tmp_path):
    out = tmp_path / "data"
    result = _run(["--out", str(out), "--seed", "4", *SMALL_ARGS])
    assert result.returncode == 0, result.stderr
    assert "events: click" in result.stderr and "CTR" in result.stderr
    for name in ("items", "users", "queries", "events", "candidates"):
        assert read_table(str(out), name).num_rows > 0
    assert (out / "world.json").is_file()


def test_out_defaults_to_the_data_root_from_the_environment(tmp_path):
    root = tmp_path / "from-env"
    result = _run(SMALL_ARGS, env_data=root)
    assert result.returncode == 0, result.stderr
    assert read_table(str(root), "events").num_rows > 0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--users", "0"], "--users"),
        (["--items", "-5"], "--items"),
        (["--queries", "0"], "--queries"),
        (["--days", "1"], "--days"),
        (["--start-date", "yesterday"], "--start-date"),
        (["--crawler-share", "1.5"], "--crawler-share"),
    ],
)
def test_a_bad_argument_exits_with_one_line_and_writes_nothing(tmp_path, args, named):
    out = tmp_path / "data"
    result = _run(["--out", str(out), *args])
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert named in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_out_exits_with_one_line_and_writes_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = blocker / "data"
    result = _run(["--out", str(out), *SMALL_ARGS])
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(out) in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
