"""`onepiece index build`, `onepiece retrieve` and `onepiece evaluate` on a retrieval
checkpoint, end to end on the small world."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from retrieval_helpers import side_source, window_start
from typer.testing import CliRunner

from onepiece import storage
from onepiece.cli import app


def test_index_build_then_retrieve(route_world: Path, retrieval_checkpoint: Path, held_out_contexts: Path,
                                   tmp_path: Path) -> None:
    version = tmp_path / "onepiece_retriever" / "3"
    shutil.copytree(retrieval_checkpoint, version, ignore=shutil.ignore_patterns("item_index"))
    t = window_start(route_world).isoformat()
    runner = CliRunner()
    result = runner.invoke(app, ["index", "build", "--checkpoint", str(version), "--as-of", t,
                                 "--data", str(route_world)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((version / "item_index" / "_manifest.json").read_text())  # beside the version
    assert manifest["model"]["version"] == 3 and manifest["items"] > 3000
    out = tmp_path / "retrieval" / "dt=x" / "hour=00"
    result = runner.invoke(app, ["retrieve", "--contexts", str(held_out_contexts), "--index",
                                 str(version / "item_index"), "--out", str(out), "--top-n", "20"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "_manifest.json").read_text())["rows"]["retrieval"] == 20 * storage.read_partition(
        held_out_contexts, "contexts").num_rows
    # A bad input is one line and exit code 2.
    result = runner.invoke(app, ["retrieve", "--contexts", str(tmp_path / "nope"), "--index",
                                 str(version / "item_index"), "--out", str(out)])
    assert result.exit_code == 2 and "is not a directory" in result.output
    result = runner.invoke(app, ["index", "build", "--checkpoint", str(version), "--as-of", "yesterday",
                                 "--data", str(route_world)])
    assert result.exit_code == 2 and "invalid --as-of" in result.output


def test_evaluate_reports_ann_recall_beside_exact(route_world: Path, retrieval_checkpoint: Path,
                                                  tmp_path: Path) -> None:
    from onepiece.assembly.config import AssemblyConfig
    from onepiece.assembly.contexts import assemble_local

    r = str(route_world)
    day = storage.list_days(r, "candidates")[-1]
    rows, _ = assemble_local(storage.read_table(r, "candidates", [day]), storage.read_table(r, "events"),
                             side_source(route_world), AssemblyConfig())
    storage.write_parquet(rows, tmp_path / "eval" / "part-00000.parquet")
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(retrieval_checkpoint), "--eval",
                                      str(tmp_path / "eval"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())["retrieval"]
    assert list(doc) == ["recall@100", "recall@500", "ann_recall@100", "ann_recall@500"]
    for k in (100, 500):
        assert 0.0 < doc[f"ann_recall@{k}"] <= doc[f"recall@{k}"] + 0.05, doc
