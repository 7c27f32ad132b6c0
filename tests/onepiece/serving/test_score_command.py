"""`onepiece score` end to end on the tiny world: contexts built by the Beam job, an
embedded tritonserver started and stopped by the command, a published partition."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from serving_helpers import write_checkpoint

from onepiece.serving.export import ExportConfig, export_checkpoint

pytestmark = pytest.mark.slow


def _tritonservers_serving(repo: Path) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"tritonserver") and str(repo).encode() in b" ".join(args):
            found.append(int(cmdline.parent.name))
    return found


def test_score_command_on_the_tiny_world(tiny_world: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    repo = tmp_path / "model_repo"
    checkpoint = write_checkpoint(tmp_path / "ckpt", seed=0)
    export_checkpoint(checkpoint, repo, config=ExportConfig(preferred_batch_sizes=(32,), max_batch_size=32))
    world = json.loads((data / "world.json").read_text())
    live_day = sorted(p.name for p in (data / "candidates").iterdir())[-1].removeprefix("dt=")
    cli = str(Path(sys.executable).parent / "onepiece")
    apply = subprocess.run([cli, "features", "apply", "--data", str(data)], capture_output=True, text=True)
    assert apply.returncode == 0, apply.stderr[-2000:]
    command = [
        cli, "score", "--data", str(data), "--start", f"{live_day}T00:00:00Z",
        "--end", f"{live_day}T12:00:00Z", "--model-repo", str(repo), "--checkpoint", str(checkpoint),
        "--workers", "1", "--beta", "0.001",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "published scores/" in run.stderr and "onepiece_ranker v1" in run.stderr
    assert not _tritonservers_serving(repo)  # the embedded server was stopped

    partition = data / "scores" / f"dt={live_day}" / "hour=00"
    table = pq.read_table(partition)
    candidates = pq.read_table(data / "candidates" / f"dt={live_day}")
    in_window = candidates.filter(pc.less(pc.hour(candidates["request_timestamp"]), 12))
    assert table.num_rows == in_window.num_rows > 0
    assert table.group_by(["request_id", "item_id"]).aggregate([]).num_rows == table.num_rows
    manifest = json.loads((partition / "_manifest.json").read_text())
    assert manifest["model"]["version"] == 1
    assert json.loads(manifest["settings"])["fusion"]["beta"] == 0.001
    assert world  # the world was real: its summary exists
    contexts = data / "contexts" / f"dt={live_day}" / "hour=00"
    assert (contexts / "_manifest.json").is_file()  # built by the command on the way

    # bad input is named: a window whose contexts were built for another window
    bad = subprocess.run(
        command[:5] + [f"{live_day}T00:00:00Z", "--end", f"{live_day}T06:00:00Z", "--model-repo", str(repo)],
        capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode == 2 and "were built for" in bad.stderr
