"""The publish guard on real runs: the refresh's task functions in DAG order (real Beam,
Feast and an embedded tritonserver) on a copy of the tiny world. Healthy runs pass and
are served; a constant model, an outage of the items feature source and a window with
most requests missing are each refused, with the last published partition still served;
``force`` publishes a refused run and records it.

The DAG's own wiring of the guard (a refusal fails the Airflow run before ``publish``) is
checked in test_refresh_dag.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dag_helpers import EXPORT, tiny_checkpoint

from onepiece import storage
from onepiece.pipeline import refresh
from onepiece.pipeline.config import BeamConfig, RefreshConfig, ServingConfig
from onepiece.pipeline.guard import GuardConfig, GuardRefused

pytestmark = pytest.mark.slow

# The damaged window is compared with the same hours a day earlier (a healthy run).
HEALTHY = (dt.datetime(2026, 11, 2, 6, tzinfo=dt.UTC), dt.datetime(2026, 11, 3, tzinfo=dt.UTC))
DAMAGED = dt.datetime(2026, 11, 3, 6, tzinfo=dt.UTC)
WINDOW = dt.timedelta(hours=6)


def run_refresh(config: RefreshConfig, start: dt.datetime) -> dict:
    """The prerank_refresh DAG's task bodies, in its order; returns the guard's verdict."""
    inputs = refresh.check_inputs(config, start)
    model = refresh.ensure_model_served(config)
    refresh.merge_retrieval(config, start)
    refresh.assemble_contexts(config, start, model)
    refresh.score(config, start, model)
    refresh.report(config, start, inputs)
    verdict = refresh.guard(config, start)
    refresh.publish(config, start)
    refresh.serving_table(config, start)
    return verdict


def _manifest_guard(data: Path, start: dt.datetime) -> dict:
    manifest = json.loads((data / "scores" / refresh.partition_of(start) / "_manifest.json").read_text())
    return json.loads(manifest["guard"])


def _checks(document: dict) -> dict[str, dict]:
    return {c["name"]: c for c in document["checks"]}


@pytest.fixture(scope="module")
def site(deployment, tmp_path_factory) -> RefreshConfig:
    """A private copy of the deployment with both healthy dates published."""
    base = tmp_path_factory.mktemp("guard")
    deployment.copy_inputs(base / "data")
    shutil.copytree(deployment.model_repo, base / "model_repo")
    config = RefreshConfig(
        data=str(base / "data"), serving=ServingConfig(model_repo=str(base / "model_repo")),
        window=WINDOW, beam=BeamConfig(workers=1),
    )
    for start in HEALTHY:
        run_refresh(config, start)
    return config


@pytest.fixture
def pointer(site):
    """The serving pointer before a test, checked unchanged by refused runs."""
    return (Path(site.data) / refresh.SERVING_POINTER).read_bytes()


def _copy(site: RefreshConfig, tmp_path: Path) -> RefreshConfig:
    """The site on a copy of its data root, with the Feast registry applied over the copy
    (a registry records its sources' paths: the original's would read the original)."""
    from onepiece.features.registry import apply
    from onepiece.features.repo import FeatureRepoConfig

    data = tmp_path / "data"
    shutil.copytree(site.data, data)
    apply(FeatureRepoConfig(data_root=str(data)))
    return dataclasses.replace(site, data=str(data))


def _refused(config: RefreshConfig, match: str) -> GuardRefused:
    with pytest.raises(GuardRefused, match=match) as refused:
        run_refresh(config, DAMAGED)
    data = Path(config.data)
    partition = refresh.partition_of(DAMAGED)
    assert not (data / "scores" / partition).exists(), "a refused run published its partition"
    report = data / refresh.REFUSED_ROOT / partition
    assert report.name in str(refused.value) or str(report) in str(refused.value)
    assert {"_guard.json", "_report.json", "_report.html", "_report.png"} <= {p.name for p in report.iterdir()}
    return refused.value


def test_healthy_runs_pass_every_check_and_are_served(site):
    data = Path(site.data)
    first, second = (_manifest_guard(data, start) for start in HEALTHY)
    assert first["passed"] and second["passed"] and not first["forced"]
    assert first["thresholds"] == dataclasses.asdict(GuardConfig())
    # Neither has a published partition of the same hours a day earlier to compare with.
    for document in (first, second):
        checks = _checks(document)
        assert checks.pop("volume")["state"] == checks.pop("drift_ks")["state"] == "skipped"
        assert all(c["state"] == "pass" for c in checks.values()), checks
    assert checks["sample_agreement"]["value"] <= 1e-4
    assert checks["defaulted_items"]["value"] < 0.5
    pointer = json.loads((data / refresh.SERVING_POINTER).read_text())
    assert pointer["partition"] == refresh.partition_of(HEALTHY[1])


def test_a_constant_model_is_refused(site, pointer, tmp_path):
    """Version 2 outputs the same probabilities for every candidate (zeroed head weights)."""
    from safetensors.torch import load_file, save_file

    from onepiece.serving.export import ExportConfig, export_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "constant", seed=2)
    weights = next(checkpoint.glob("*.safetensors"))
    tensors = load_file(weights)
    tensors["head.tasks.out_weight"].zero_()
    save_file(tensors, weights)
    repo = Path(site.serving.model_repo).with_name("model_repo_constant")
    shutil.copytree(site.serving.model_repo, repo)
    export_checkpoint(checkpoint, repo, version=2, config=ExportConfig(**EXPORT))
    config = dataclasses.replace(site, serving=ServingConfig(model_repo=str(repo)), model_version=2)

    error = _refused(config, "distinct_scores")
    assert "score_std" in str(error)
    assert "sample_agreement" not in str(error)  # served and in-process agree: the model is the fault
    assert (Path(site.data) / refresh.SERVING_POINTER).read_bytes() == pointer


def test_an_outage_of_the_items_feature_source_is_refused(site, pointer, tmp_path):
    """The items source is empty: every candidate gets the contract's default features."""
    config = _copy(site, tmp_path)
    data = Path(config.data)
    for path in (data / "items").rglob("*.parquet"):
        pq.write_table(pq.read_table(path).slice(0, 0), path)

    error = _refused(config, "defaulted_items")
    assert "defaulted_users" not in str(error)
    verdict = json.loads((data / refresh.REFUSED_ROOT / refresh.partition_of(DAMAGED) / "_guard.json").read_text())
    assert _checks(verdict)["defaulted_items"]["value"] == 1.0
    assert (data / refresh.SERVING_POINTER).read_bytes() == pointer


def _keep_a_tenth_of_the_damaged_window(data: Path) -> None:
    for path in (data / "candidates" / storage.day_partition(DAMAGED.date())).glob("*.parquet"):
        rows = pq.read_table(path)
        ts = rows["request_timestamp"]
        in_window = pc.and_(pc.greater_equal(ts, pa.scalar(DAMAGED, ts.type)),
                            pc.less(ts, pa.scalar(DAMAGED + WINDOW, ts.type)))
        kept = pc.unique(rows.filter(in_window)["request_id"])[::10]
        mask = pc.or_(pc.invert(in_window), pc.is_in(rows["request_id"], value_set=kept))
        pq.write_table(rows.filter(mask), path)


def test_a_window_with_most_requests_missing_is_refused_and_force_publishes_it(site, pointer, tmp_path):
    config = _copy(site, tmp_path)
    data = Path(config.data)
    _keep_a_tenth_of_the_damaged_window(data)

    error = _refused(config, "volume")
    assert "coverage" not in str(error)  # what arrived was all scored
    assert (data / refresh.SERVING_POINTER).read_bytes() == pointer

    forced = dataclasses.replace(config, guard=GuardConfig(force=True))
    verdict = run_refresh(forced, DAMAGED)
    assert verdict == {"passed": False, "forced": True, "failed": ["volume"]}
    recorded = _manifest_guard(data, DAMAGED)
    assert recorded["forced"] and recorded["thresholds"]["force"]
    served = json.loads((data / refresh.SERVING_POINTER).read_text())
    assert served["partition"] == refresh.partition_of(DAMAGED)
    assert not (data / refresh.REFUSED_ROOT / refresh.partition_of(DAMAGED)).exists()


def test_the_run_summary_prints_paths_whole_and_the_guards_verdict(site):
    from rich.console import Console

    from onepiece.pipeline.summary import print_summary

    console = Console(width=60, record=True)
    print_summary(site.data, refresh.partition_of(HEALTHY[1]), console)
    text = console.export_text()
    assert str(Path(site.data).absolute() / "scores" / refresh.partition_of(HEALTHY[1])) in text.splitlines()[1]
    assert "publish guard" in text and "passed" in text
