"""The jobs through their entry points (CLI, beam_jobs scripts) with real Feast features."""

from __future__ import annotations

import datetime as dt
import shutil

import pyarrow.compute as pc
import pytest
from conftest import LIVE_DAY, midnight, read_output
from typer.testing import CliRunner

from onepiece import storage
from onepiece.assembly import AssemblyConfig
from onepiece.assembly.contexts import assemble_local
from onepiece.assembly.feast_source import FeastSideSource
from onepiece.cli import app
from onepiece.contract import CONTEXTS_SCHEMA, TRAINING_SCHEMA

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def feast_world(tiny_world, tmp_path_factory):
    """A copy of the tiny world with the project's feature repo applied to it."""
    from onepiece.features.registry import apply
    from onepiece.features.repo import FeatureRepoConfig

    root = tmp_path_factory.mktemp("feast_world") / "data"
    shutil.copytree(tiny_world, root)
    apply(FeatureRepoConfig(data_root=str(root)))
    return root


def test_cli_contexts_use_feast_side_features(feast_world, tmp_path):
    out = tmp_path / "contexts"
    result = CliRunner().invoke(app, [
        "contexts", "--data", str(feast_world), "--start", f"{LIVE_DAY}T00:00:00Z",
        "--end", f"{LIVE_DAY + dt.timedelta(days=1)}T00:00:00Z", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    table = read_output(out)

    root, start = str(feast_world), midnight(LIVE_DAY)
    expected, _ = assemble_local(
        storage.read_table(root, "candidates", [LIVE_DAY]), storage.read_table(root, "events"),
        FeastSideSource(data_root=root), AssemblyConfig(), as_of=start,
        window=(start, start + dt.timedelta(days=1)),
    )
    assert table.schema.equals(CONTEXTS_SCHEMA) and table.equals(expected)
    assert pc.max(pc.list_flatten(table["cand_price"])).as_py() > 0  # real features, not defaults


def test_training_script_runs_with_feast(feast_world, tmp_path):
    from beam_jobs import build_training_set

    out = tmp_path / "train"
    manifest = build_training_set.run([
        "--data", str(feast_world), "--from-day", str(LIVE_DAY - dt.timedelta(days=1)),
        "--to-day", str(LIVE_DAY - dt.timedelta(days=1)), "--out", str(out), "--shards", "2",
    ])
    table = read_output(out)
    assert table.schema.equals(TRAINING_SCHEMA)
    assert table.num_rows == manifest["rows"]["training"] > 0
    assert len(list(out.glob("part-*.parquet"))) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "yesterday", "--end", "2026-11-05"], "invalid --start 'yesterday'"),
        (["--start", "2026-11-05", "--end", "2026-11-04"], "must be after --start"),
        (["--start", "2026-11-09", "--end", "2026-11-10"], "candidates/dt=2026-11-09"),
    ],
)
def test_cli_reports_bad_arguments_in_one_line(tiny_world, tmp_path, args, message):
    out = tmp_path / "contexts"
    result = CliRunner().invoke(app, ["contexts", "--data", str(tiny_world), "--out", str(out), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not out.exists()


def test_cli_fails_early_when_the_feature_registry_was_never_applied(world_copy, tmp_path):
    out = tmp_path / "contexts"
    result = CliRunner().invoke(app, [
        "contexts", "--data", str(world_copy), "--start", f"{LIVE_DAY}T00:00:00Z",
        "--end", f"{LIVE_DAY}T06:00:00Z", "--out", str(out),
    ])
    assert result.exit_code == 2
    assert "feature service 'onepiece_ranker_v1'" in " ".join(result.output.split())
    assert not out.exists()
