"""The pipeline glue without Airflow: configuration precedence, pin, report figures,
the serving pointer."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from onepiece.contract import SCORES_SCHEMA
from onepiece.errors import UserError
from onepiece.pipeline import refresh
from onepiece.pipeline.config import PROJECT_MODEL_REPO, RefreshConfig
from onepiece.pipeline.pin import read_pin, write_pin
from onepiece.pipeline.report import ks_distance, psi, quality_figures


def test_params_win_over_environment_which_wins_over_defaults(tmp_path):
    env = {"ONEPIECE_DATA": str(tmp_path / "env-data"), "ONEPIECE_TRITON_URLS": "a:1, b:2",
           "ONEPIECE_REFRESH_WINDOW_MINUTES": "30", "ONEPIECE_BEAM_ARGS": "--x=1 --y='a b'"}
    config = RefreshConfig.from_params({"window_minutes": 0, "model_version": 0, "data": ""}, env)
    assert config.data == str(tmp_path / "env-data")
    assert config.serving.urls == ("a:1", "b:2")
    assert config.window == dt.timedelta(minutes=30)
    assert config.model_version is None
    assert config.beam.args == ("--x=1", "--y=a b")
    assert (config.beam.workers, config.beam.score_workers, config.beam.contexts_workers) == (2, 1, 1)
    config = RefreshConfig.from_params({"score_workers": 0}, env | {"ONEPIECE_SCORE_WORKERS": "3"})
    assert config.beam.score_workers == 3
    config = RefreshConfig.from_params({"contexts_workers": 2}, env | {"ONEPIECE_CONTEXTS_WORKERS": "3"})
    assert config.beam.contexts_workers == 2
    config = RefreshConfig.from_params({}, env | {"ONEPIECE_CONTEXTS_WORKERS": "3"})
    assert config.beam.contexts_workers == 3
    assert config.beam.contexts_in_process  # default: the one contexts worker in the task's process
    config = RefreshConfig.from_params({}, env | {"ONEPIECE_CONTEXTS_IN_PROCESS": "false"})
    assert not config.beam.contexts_in_process
    config = RefreshConfig.from_params(
        {"contexts_in_process": "true"}, env | {"ONEPIECE_CONTEXTS_IN_PROCESS": "no"}
    )
    assert config.beam.contexts_in_process
    with pytest.raises(UserError, match="contexts_in_process"):
        RefreshConfig.from_params({}, env | {"ONEPIECE_CONTEXTS_IN_PROCESS": "maybe"})
    assert config.serving.model_repo == str(PROJECT_MODEL_REPO)

    config = RefreshConfig.from_params(
        {"window_minutes": 1440, "model_version": 3, "data": str(tmp_path / "p"), "triton_urls": "c:3"}, env
    )
    assert (config.window, config.model_version, config.serving.urls) == (dt.timedelta(days=1), 3, ("c:3",))
    assert config.data == str(tmp_path / "p")

    defaults = RefreshConfig.from_params({}, {})
    assert defaults.window == dt.timedelta(hours=1) and defaults.serving.urls == ()
    assert defaults.beam.runner == "FnApiRunner"
    assert defaults.merge_retrieval is False
    # The merge switch: the Param (true), else the environment (a false Param is "not set").
    assert RefreshConfig.from_params({"merge_retrieval": True}, {}).merge_retrieval is True
    assert RefreshConfig.from_params({"merge_retrieval": False}, {"ONEPIECE_REFRESH_MERGE_RETRIEVAL": "true"}).merge_retrieval


def test_bad_configuration_is_named():
    with pytest.raises(UserError, match="window_minutes must be an integer, got 'soon'"):
        RefreshConfig.from_params({}, {"ONEPIECE_REFRESH_WINDOW_MINUTES": "soon"})
    with pytest.raises(UserError, match="worker counts must be at least 1"):
        RefreshConfig.from_params({}, {"ONEPIECE_SCORE_WORKERS": "0"})
    with pytest.raises(UserError, match="protocol must be grpc or http"):
        RefreshConfig.from_params({}, {"ONEPIECE_TRITON_PROTOCOL": "smoke"})
    with pytest.raises(UserError, match="merge_retrieval must be true or false, got 'maybe'"):
        RefreshConfig.from_params({}, {"ONEPIECE_REFRESH_MERGE_RETRIEVAL": "maybe"})


def test_pin_roundtrip_keeps_the_previous_version(tmp_path):
    data = str(tmp_path)
    assert read_pin(data, "onepiece_ranker") is None
    write_pin(data, "onepiece_ranker", 1)
    pin = write_pin(data, "onepiece_ranker", 2, metric="click_auc", value=0.61)
    assert read_pin(data, "onepiece_ranker") == pin
    assert (pin["version"], pin["previous_version"], pin["value"]) == (2, 1, 0.61)
    with pytest.raises(UserError, match="names model 'onepiece_ranker', not 'other'"):
        read_pin(data, "other")
    (tmp_path / "serving" / "model_pin.json").write_text("{not json")
    with pytest.raises(UserError, match="model_pin.json is unreadable"):
        read_pin(data, "onepiece_ranker")


def test_drift_figures_separate_same_from_shifted_distributions():
    rng = np.random.default_rng(0)
    before = rng.normal(0, 1, 5000)
    same, shifted = rng.normal(0, 1, 5000), rng.normal(1, 1, 5000)
    assert psi(same, before) < 0.05 < psi(shifted, before)
    assert ks_distance(same, before) < 0.05 < 0.3 < ks_distance(shifted, before) <= 1
    assert ks_distance(before, before) == 0 and psi(before, np.array([])) is None


def _scores(n: int, shift: float, items: range) -> pa.Table:
    rng = np.random.default_rng(n)
    columns = {
        "request_id": [f"r{i // 4}" for i in range(n)],
        "user_id": np.arange(n) % 7,
        "query_id": np.arange(n) % 3,
        "item_id": np.array(items)[np.arange(n) % len(items)],
        **{f"p_{t}": rng.random(n).astype(np.float32) for t in ("impression", "click", "add_to_cart", "order")},
        "score": (rng.random(n) + shift).astype(np.float32),
        "rank": (np.arange(n) % 4).astype(np.int32),
        "model_name": ["m"] * n, "model_version": np.ones(n, np.int32), "feature_service": ["fs"] * n,
        "scored_at": [dt.datetime(2026, 11, 3, tzinfo=dt.UTC)] * n, "recall_source": ["upstream"] * n,
    }
    return pa.table(columns, schema=SCORES_SCHEMA)


def test_quality_figures_count_coverage_and_drift():
    now, before = _scores(400, 0.5, range(100, 150)), _scores(200, 0.0, range(125, 200))
    figures = quality_figures(now, before, candidates_in_window=500, defaulted={"unknown_items": 3})
    assert figures["coverage"] | {"defaulted": None} == {
        "scored": 400, "candidates_in_window": 500, "scored_share": 0.8, "requests": 100,
        "items": 50, "users": 7, "defaulted": None,
    }
    assert figures["drift"]["items_seen_before_share"] == 0.5  # items 125..149 of 100..149
    assert figures["drift"]["score_mean_shift"] == pytest.approx(0.5, abs=0.1)
    assert quality_figures(now, None, 400, {})["drift"] is None


def _published(data, partition: str, run_id: str) -> None:
    where = data / "scores" / partition
    where.mkdir(parents=True)
    manifest = {"run_id": run_id, "model": {"name": "m", "version": 1}, "rows": {"scores": 5}}
    (where / "_manifest.json").write_text(json.dumps(manifest))


def test_the_serving_pointer_follows_the_newest_partition_and_never_moves_back(tmp_path):
    config = RefreshConfig.from_params({"data": str(tmp_path)}, {})
    _published(tmp_path, "dt=2026-11-03/hour=00", "new")
    first = refresh.serving_table(config, dt.datetime(2026, 11, 3, tzinfo=dt.UTC))
    assert (first["partition"], first["run_id"], first["moved"]) == ("dt=2026-11-03/hour=00", "new", True)

    _published(tmp_path, "dt=2026-11-02/hour=00", "old")  # a backfill of an older date
    again = refresh.serving_table(config, dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
    assert (again["partition"], again["moved"]) == ("dt=2026-11-03/hour=00", False)
    assert refresh.previous_partition(str(tmp_path), "dt=2026-11-03/hour=00") == "dt=2026-11-02/hour=00"
    with pytest.raises(UserError, match="dt=2026-11-05/hour=00 is not published"):
        refresh.serving_table(config, dt.datetime(2026, 11, 5, tzinfo=dt.UTC))


def test_publish_refuses_a_run_that_scored_nothing(tmp_path):
    config = RefreshConfig.from_params({"data": str(tmp_path)}, {})
    with pytest.raises(UserError, match="nothing to publish"):
        refresh.publish(config, dt.datetime(2026, 11, 3, tzinfo=dt.UTC))
    assert not (tmp_path / "scores").exists()


def test_the_gate_passes_a_better_model_and_refuses_a_worse_or_unmeasured_one(tmp_path):
    from onepiece.pipeline.config import PublishConfig
    from onepiece.pipeline.publish_model import gate

    config = PublishConfig.from_params({"data": str(tmp_path), "min_gain": 0.01}, {})
    evaluation = {"metric": "click_auc", "serving_version": 3}
    assert gate(config, evaluation | {"candidate": 0.70, "serving": 0.68})["passed"]
    assert gate(config, evaluation | {"candidate": 0.60, "serving": None})["margin"] is None
    with pytest.raises(UserError, match=r"0\.6850 does not reach the serving version 3's 0\.6800 \+ min_gain 0\.01"):
        gate(config, evaluation | {"candidate": 0.685, "serving": 0.68})
    with pytest.raises(UserError, match="has no click_auc"):
        gate(config, evaluation | {"candidate": None, "serving": 0.68})


def test_check_inputs_names_what_is_missing(tiny_world, tmp_path):
    import shutil

    from onepiece.contract import ContractError

    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    config = RefreshConfig.from_params({"data": str(data), "window_minutes": 60}, {})
    with pytest.raises(UserError, match="holds no feature service: run the feature_registry DAG"):
        refresh.check_inputs(config, dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC))
    with pytest.raises(ContractError, match=r"candidates.*dt=2026-11-07.*partition is missing"):
        refresh.check_inputs(config, dt.datetime(2026, 11, 7, tzinfo=dt.UTC))
    shutil.rmtree(data / "events" / "dt=2026-11-02")
    with pytest.raises(ContractError, match=r"events.*dt=2026-11-02.*partition is missing"):
        refresh.check_inputs(config, dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC))
    assert not (data / "feast" / "registry.db").exists()  # checking registers nothing


def test_check_inputs_refuses_a_damaged_window_by_file_column_and_row(tiny_world, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    from onepiece.contract import ContractError

    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    config = RefreshConfig.from_params({"data": str(data), "window_minutes": 60}, {})
    start = dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC)
    items = data / "items" / "part-0.parquet"
    table = pq.read_table(items)
    prices = table["price"].to_pylist()
    prices[5] = -2.0
    pq.write_table(table.set_column(table.schema.get_field_index("price"), "price", pa.array(prices)), items)
    with pytest.raises(ContractError) as caught:
        refresh.check_inputs(config, start)
    assert (caught.value.table, caught.value.source, caught.value.column, caught.value.row) == (
        "items", str(items), "price", 5)
    assert "negative price (-2.0)" in str(caught.value)
    assert not (data / "_runs").exists()  # nothing staged


def test_an_hourly_run_on_the_live_day_reads_that_days_events_before_it(tiny_world, tmp_path):
    import shutil

    from onepiece.features.registry import apply
    from onepiece.features.repo import FeatureRepoConfig

    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    apply(FeatureRepoConfig(data_root=str(data)))
    config = RefreshConfig.from_params({"data": str(data), "window_minutes": 60}, {})
    inputs = refresh.check_inputs(config, dt.datetime(2026, 11, 4, 5, tzinfo=dt.UTC))  # the live day
    assert inputs["partition"] == "dt=2026-11-04/hour=05" and inputs["candidates"] > 0
    assert inputs["event_days"][-1] == "2026-11-04"
    at_midnight = refresh.check_inputs(config, dt.datetime(2026, 11, 4, tzinfo=dt.UTC))
    assert at_midnight["event_days"][-1] == "2026-11-03"  # strictly before T


def test_the_registry_update_runs_only_when_the_definitions_changed(tiny_world, tmp_path):
    import shutil

    from onepiece.features.registry import apply
    from onepiece.features.repo import PROJECT_REPO
    from onepiece.pipeline import registry
    from onepiece.pipeline.config import RegistryConfig

    data, repo = tmp_path / "data", tmp_path / "features"
    shutil.copytree(tiny_world, data)
    shutil.copytree(PROJECT_REPO, repo, ignore=shutil.ignore_patterns("__pycache__"))
    params = {"data": str(data), "feature_repo": str(repo)}
    config = RegistryConfig.from_params(params, {})
    assert config.force is False
    assert registry.definitions_changed(config)  # nothing applied over this data root yet
    apply(config.repo())
    assert not registry.definitions_changed(config)
    assert registry.definitions_changed(RegistryConfig.from_params(params | {"force": True}, {}))
    # Files an apply does not read change nothing (profiles/ is in .feastignore).
    (repo / "NOTES.md").write_text("not a definition\n")
    (repo / "profiles" / "scale.feature_store.yaml").write_text("project: elsewhere\n")
    assert not registry.definitions_changed(config)
    with open(repo / "feature_views.py", "a") as handle:
        handle.write("# an edit\n")
    assert registry.definitions_changed(config)
    with open(repo / "feature_store.yaml", "a") as handle:
        handle.write("# an edit\n")
    apply(config.repo())
    assert not registry.definitions_changed(config)


def test_histograms_use_a_log_axis_only_where_the_mass_sits_in_the_lowest_bin():
    import numpy as np

    from onepiece.pipeline.report import log_scale

    bins = np.linspace(0, 1, 41)
    near_zero = np.r_[np.full(900, 0.001), np.linspace(0.1, 0.9, 100)]
    assert log_scale(near_zero, bins)
    assert not log_scale(np.linspace(0, 1, 1000), bins)


def test_the_pin_command_rolls_out_an_exported_version_and_rolls_back(tmp_path):
    from typer.testing import CliRunner

    from onepiece.cli import app
    from onepiece.serving.export import WEIGHTS_FILE

    repo = tmp_path / "model_repo"
    for version in (1, 2):
        (repo / "onepiece_ranker" / str(version)).mkdir(parents=True)
        (repo / "onepiece_ranker" / str(version) / WEIGHTS_FILE).write_bytes(b"weights")
    data = tmp_path / "data"
    args = ["pin", "--data", str(data), "--model-repo", str(repo)]
    runner = CliRunner()

    assert "nothing pinned" in runner.invoke(app, args).output
    for version in ("1", "2"):
        assert runner.invoke(app, [*args, "--version", version]).exit_code == 0
    shown = runner.invoke(app, args).output
    assert '"version": 2' in shown and '"previous_version": 1' in shown
    result = runner.invoke(app, [*args, "--rollback"])
    assert result.exit_code == 0 and "pinned onepiece_ranker v1 (was v2)" in result.output
    refused = runner.invoke(app, [*args, "--version", "3"])
    assert refused.exit_code != 0 and "version 3 is not exported" in refused.output
    assert "Traceback" not in refused.output


def test_the_route_reuses_the_prerank_contexts_only_of_the_same_window_and_feature_service(tmp_path):
    from onepiece.pipeline.retrieval_refresh import RetrievalRefreshConfig, _published_contexts

    start = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    partition = "dt=2026-11-03/hour=00"
    config = RetrievalRefreshConfig.from_params({"data": str(tmp_path), "item_index": str(tmp_path / "idx")}, {})
    assert _published_contexts(config, start, "svc") is None  # nothing published
    contexts, scores = tmp_path / "contexts" / partition, tmp_path / "scores" / partition
    contexts.mkdir(parents=True)
    scores.mkdir(parents=True)
    window = {"start": start.isoformat(), "end": (start + dt.timedelta(hours=1)).isoformat()}
    (contexts / "_manifest.json").write_text(json.dumps({"settings": json.dumps(window)}))
    (scores / "_manifest.json").write_text(json.dumps({"model": {"feature_service": "svc"}}))
    assert _published_contexts(config, start, "svc") == contexts
    assert _published_contexts(config, start, "other_svc") is None
    six_hours = RetrievalRefreshConfig.from_params(
        {"data": str(tmp_path), "item_index": str(tmp_path / "idx"), "window_minutes": 360}, {})
    assert _published_contexts(six_hours, start, "svc") is None
    with pytest.raises(UserError, match="needs an item index"):
        RetrievalRefreshConfig.from_params({"data": str(tmp_path)}, {})


def test_the_route_computes_user_vectors_where_the_param_or_environment_says(tmp_path):
    from onepiece.pipeline.retrieval_refresh import RetrievalRefreshConfig

    base = {"data": str(tmp_path), "item_index": str(tmp_path / "idx"), "model_repo": str(tmp_path / "repo")}
    assert RetrievalRefreshConfig.from_params(base, {}).user_vectors == "inprocess"
    env = {"ONEPIECE_RETRIEVAL_USER_VECTORS": "triton", "ONEPIECE_TRITON_URLS": "h1:8001,h2:8001"}
    config = RetrievalRefreshConfig.from_params(base, env)
    assert config.user_vectors == "triton"
    assert config.serving.urls == ("h1:8001", "h2:8001") and config.serving.model_name == "onepiece_user_tower"
    assert config.serving.model_repo == str(tmp_path / "repo")
    assert RetrievalRefreshConfig.from_params(base | {"user_vectors": "inprocess"}, env).user_vectors == "inprocess"
    with pytest.raises(UserError, match="user_vectors must be one of inprocess, triton, got 'gpu'"):
        RetrievalRefreshConfig.from_params(base | {"user_vectors": "gpu"}, {})
