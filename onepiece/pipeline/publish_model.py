"""The ``model_publish`` DAG's tasks: a new model version from training to the pin.

    datasets -> train -> evaluate -> gate -> calibrate -> export -> smoke -> pin
    datasets -> retrieval (optional)

- ``datasets``: the Beam training-set job over the days with candidates (older events
  only feed contexts); the last such day is held out for evaluation (and early
  stopping), the days before it train;
- ``train``: trains the named variant (onepiece.training), or takes the checkpoint given;
- ``evaluate``: ranking metrics of the new model and of the serving (pinned) model on the
  same held-out rows (onepiece.evaluation);
- ``gate``: the new model's click AUC must reach the serving model's plus ``min_gain``;
- ``calibrate``: fits a Platt map per task head (onepiece.model.calibration) on the
  held-out day as serving sees it: hourly windows of refresh-style contexts (every
  candidate of every request, as of the window's start, as prerank_refresh assembles
  them) labelled by the events within the audit's attribution window
  (onepiece.evaluation.outcomes.label_outcomes); writes a calibrated copy of the
  checkpoint (weights unchanged, the map in config.json) that export and smoke use;
- ``export``: writes the next version into the model repository (a checkpoint exported
  before, same weights and config, is found again, so a rerun does not add a version); a
  model of another tensor layout than the loaded versions needs ``layout_change``
  "replace", which ``datasets`` checks before any work;
- ``smoke``: loads the version in Triton (the embedded server, or ``load_model`` on the
  configured servers) and scores held-out contexts, which must match in-process scores;
- ``pin``: switches the refresh DAG's pinned version (onepiece.pipeline.pin);
- ``retrieval`` (``retrieval`` Param): trains onepiece_retrieval on the same days and
  publishes it with its item index as the next onepiece_user_tower version
  (onepiece.retrieval.publish), for the ``retrieval_refresh`` DAG.

Work files live under ``<data>/_runs/model_publish/<run key>/``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece import storage
from onepiece.errors import UserError
from onepiece.pipeline.config import PublishConfig
from onepiece.pipeline.pin import read_pin, write_pin
from onepiece.serving.inprocess import probabilities_in_process

log = logging.getLogger(__name__)

SMOKE_REQUESTS = 16
SMOKE_TOLERANCE = 1e-4


def work_dir(config: PublishConfig, run_key: str) -> Path:
    return Path(config.data) / "_runs" / "model_publish" / re.sub(r"[^A-Za-z0-9_.-]", "_", run_key)


def _side_source(config: PublishConfig, feature_service: str):
    from onepiece.assembly.feast_source import FeastSideSource

    return FeastSideSource(data_root=config.data, repo_dir=config.feature_repo, feature_service=feature_service)


def _model_config(config: PublishConfig):
    from onepiece.model import ModelConfig, variant_config

    if config.checkpoint:
        from onepiece.serving.export import CONFIG_FILE

        return ModelConfig.from_json((Path(config.checkpoint) / CONFIG_FILE).read_text())
    try:
        return variant_config(config.variant)
    except ValueError as err:
        raise UserError(str(err)) from None


def datasets(config: PublishConfig, run_key: str) -> dict[str, Any]:
    """Training rows of the train days and of the held-out day (Beam, Feast as of each
    request); the train set only when there is something to train."""
    from onepiece.assembly.config import AssemblyConfig
    from onepiece.assembly.jobs import BeamSettings, run_trainset

    days = storage.list_days(config.data, "candidates")  # training rows are candidate requests
    if len(days) < 2:
        raise UserError(f"model_publish needs at least two days under {config.data}/candidates, found {len(days)}")
    eval_day = days[-1]
    train_days = days[:-1][-config.train_days :] if config.train_days else days[:-1]
    work = work_dir(config, run_key)
    model_config = _model_config(config)
    _check_layout_change(config, model_config)  # before any expensive work
    source = _side_source(config, model_config.feature_service)
    beam = BeamSettings(config.beam.runner, config.beam.workers, config.beam.args)
    run_trainset(config.data, eval_day, eval_day, work / "eval", AssemblyConfig(), source, beam)
    trains = not config.checkpoint or config.retrieval  # a model to train: the ranker, the retrieval one
    if trains:
        run_trainset(config.data, train_days[0], train_days[-1], work / "train", AssemblyConfig(), source, beam)
    return {
        "eval": str(work / "eval"),
        "train": str(work / "train") if trains else None,
        "eval_day": eval_day.isoformat(),
        "train_days": [train_days[0].isoformat(), train_days[-1].isoformat()],
    }


def _eval_rows(config: PublishConfig, sets: dict[str, Any]):
    """The held-out rows, thinned evenly to ``max_eval_requests`` (same rows every time)."""
    from onepiece.training.data import read_training_rows

    rows = read_training_rows(sets["eval"])
    if config.max_eval_requests and rows.num_rows > config.max_eval_requests:
        rows = rows.take(np.linspace(0, rows.num_rows - 1, config.max_eval_requests).astype(np.int64))
    return rows


def _log_step(epoch: int, step: int, loss: float) -> None:
    if step % 100 == 0:
        log.info("epoch %d step %d loss %.4f", epoch, step, loss)


def train(config: PublishConfig, run_key: str, sets: dict[str, Any]) -> dict[str, Any]:
    """Train the variant (or check the given checkpoint loads); returns its directory."""
    from onepiece.model import load_checkpoint

    if config.checkpoint:
        try:
            load_checkpoint(config.checkpoint)
        except Exception as err:  # the model package's own error, with our context
            raise UserError(f"checkpoint {config.checkpoint} does not load: {err}") from err
        return {"checkpoint": config.checkpoint, "trained": False}
    out = work_dir(config, run_key) / "checkpoint"
    best_epoch = _train_model(config, _model_config(config), sets, out)
    return {"checkpoint": str(out), "trained": True, "best_epoch": best_epoch}


def _train_model(config: PublishConfig, model_config, sets: dict[str, Any], out: Path) -> int:
    """Train ``model_config`` on the train days, early-stopped on the held-out rows;
    publish the checkpoint at ``out``; returns the best epoch."""
    from onepiece.storage import staged_dir
    from onepiece.training.config import TrainConfig
    from onepiece.training.data import read_training_rows
    from onepiece.training.loop import save_run
    from onepiece.training.loop import train as run_training

    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, seed=config.seed)
    train_rows, eval_rows = read_training_rows(sets["train"]), _eval_rows(config, sets)
    log.info("training %s on %d requests, evaluating on %d", model_config.name, train_rows.num_rows, eval_rows.num_rows)
    result = run_training(
        model_config, train_config, train_rows, eval_rows,
        on_step=_log_step,
        on_epoch=lambda r: log.info("epoch %d: train loss %.4f, eval %s", r["epoch"], r["train_loss"], r["eval"]),
    )
    with staged_dir(out) as staging:
        save_run(result, train_config, staging)
    return int(result.history["best_epoch"])


def retrieval(config: PublishConfig, run_key: str, sets: dict[str, Any]) -> dict[str, Any]:
    """The optional ``retrieval`` task: train ``RETRIEVAL_VARIANT`` on the ranker's train
    days and publish it as the next ``onepiece_user_tower`` version with its item index
    (``onepiece.retrieval.publish``), the items as of the held-out day's start: the
    catalogue the model could have seen, and the first window the route may serve.
    Skipped unless ``config.retrieval``; a rerun finds the version it published."""
    if not config.retrieval:
        return {"published": False, "skipped": True}
    from onepiece.model import variant_config
    from onepiece.pipeline.config import RETRIEVAL_VARIANT
    from onepiece.retrieval.publish import publish_retrieval_version

    if not sets.get("train"):
        raise UserError("the retrieval task needs the training set of the train days (none was built)")
    out = work_dir(config, run_key) / "retrieval_checkpoint"
    best_epoch = _train_model(config, variant_config(RETRIEVAL_VARIANT), sets, out)
    as_of = dt.datetime.combine(dt.date.fromisoformat(sets["eval_day"]), dt.time(), dt.UTC)
    items = storage.read_table(config.data, "items")
    published = publish_retrieval_version(out, config.serving.model_repo, items, as_of)
    return {
        "published": published["published"], "version": published["version"], "path": published["path"],
        "item_index": str(Path(published["path"]) / "item_index"), "items": published["index"]["items"],
        "item_snapshot_as_of": as_of.isoformat(), "best_epoch": best_epoch,
    }


def _serving_version(config: PublishConfig) -> int | None:
    from onepiece.serving.export import exported_versions

    pin = read_pin(config.data, config.serving.model_name)
    if pin:
        return int(pin["version"])
    versions = exported_versions(Path(config.serving.model_repo) / config.serving.model_name)
    return max(versions) if versions else None


def evaluate(config: PublishConfig, run_key: str, checkpoint: str, sets: dict[str, Any]) -> dict[str, Any]:
    """Click AUC (the gate's metric) of the new and of the serving model, same rows."""
    from onepiece.evaluation.evaluate import evaluate_model, headline
    from onepiece.model import load_checkpoint
    rows = _eval_rows(config, sets)
    candidate_doc = evaluate_model(load_checkpoint(checkpoint), rows, seed=config.seed)
    metric, candidate = headline(candidate_doc)
    serving_version = _serving_version(config)
    serving = None
    if serving_version is not None:
        version_dir = Path(config.serving.model_repo) / config.serving.model_name / str(serving_version)
        if (version_dir / "model.safetensors").is_file():
            _, serving = headline(evaluate_model(load_checkpoint(version_dir), rows, seed=config.seed))
    work = work_dir(config, run_key)
    work.mkdir(parents=True, exist_ok=True)
    (work / "metrics.json").write_text(json.dumps(candidate_doc, indent=2, sort_keys=True) + "\n")
    finite = lambda v: v if v is not None and np.isfinite(v) else None  # noqa: E731
    return {
        "metric": metric,
        "candidate": finite(candidate),
        "serving": finite(serving),
        "serving_version": serving_version,
        "eval_rows": rows.num_rows,
    }


def gate(config: PublishConfig, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Refuse a model that does not beat the serving one by ``min_gain``."""
    candidate, serving = evaluation["candidate"], evaluation["serving"]
    if candidate is None:
        raise UserError(f"the new model has no {evaluation['metric']} on the held-out day: refusing to publish")
    if serving is not None and candidate < serving + config.min_gain:
        raise UserError(
            f"the new model's {evaluation['metric']} {candidate:.4f} does not reach the serving "
            f"version {evaluation['serving_version']}'s {serving:.4f} + min_gain {config.min_gain}: "
            "not published"
        )
    return {"passed": True, "margin": None if serving is None else candidate - serving}


def _export_config(config: PublishConfig):
    from onepiece.serving.export import ExportConfig

    return ExportConfig(model_name=config.serving.model_name, layout_change=config.layout_change)  # type: ignore[arg-type]


def _check_layout_change(config: PublishConfig, model_config) -> None:
    """The export's layout check, run before training: a version of another tensor layout
    than the loaded ones needs ``layout_change="replace"``."""
    from onepiece.serving.export import check_layout_change, exported_versions, model_name_for, version_configs

    if model_name_for(model_config) != config.serving.model_name:
        return  # export refuses a checkpoint of the other model with its own message
    existing = exported_versions(Path(config.serving.model_repo) / config.serving.model_name)
    check_layout_change(_export_config(config), version_configs(existing), max(existing, default=0) + 1,
                        model_config.to_json())


def export(config: PublishConfig, checkpoint: str) -> dict[str, Any]:
    """Export the checkpoint as the next version (or find the version it already is).
    Records the served layout, and the versions a layout change left unloaded."""
    from onepiece.serving.export import (
        export_checkpoint, exported_versions, model_digest, served_versions, version_configs, version_layouts,
    )

    model_dir = Path(config.serving.model_repo) / config.serving.model_name
    export_config = _export_config(config)
    wanted = model_digest(checkpoint)
    found = [v for v, path in sorted(exported_versions(model_dir).items()) if model_digest(path) == wanted]
    if found:
        version, exported = found[0], False
    else:
        version = int(export_checkpoint(checkpoint, config.serving.model_repo, config=export_config).name)
        exported = True
    layouts = version_layouts(version_configs(exported_versions(model_dir)))
    loaded = served_versions(layouts, export_config.latest_versions)
    return {"version": version, "exported": exported, "layout": layouts[version], "loaded_versions": loaded,
            "unloaded_by_layout_change": sorted(v for v, lay in layouts.items() if lay != layouts[max(layouts)])}


# --- calibrate ------------------------------------------------------------------------


def calibration_windows(config: PublishConfig, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
    """``calibration_hours`` hourly windows of ``day`` (seeded sample, in time order) whose
    attribution horizon is logged: the events up to window end + attribution must exist,
    as the outcomes audit requires."""
    from onepiece.evaluation.outcomes import missing_event_days

    windows = []
    for hour in range(24):
        start = dt.datetime.combine(day, dt.time(hour), dt.UTC)
        end = start + dt.timedelta(hours=1)
        if not missing_event_days(config.data, start, end + config.calibration_attribution):
            windows.append((start, end))
    if not windows:
        raise UserError(f"no hour of {day} has its outcomes logged within {config.calibration_attribution}")
    rng = np.random.default_rng(config.seed)
    picked = rng.choice(len(windows), size=min(config.calibration_hours, len(windows)), replace=False)
    return [windows[i] for i in sorted(picked)]


def _labelled_window(
    config: PublishConfig, model, start: dt.datetime, end: dt.datetime, contexts_dir: Path, beam
) -> pa.Table | None:
    """One window's contexts (as prerank_refresh assembles them), sampled, scored with the
    raw heads and labelled with what followed; None when the window has no request."""
    from onepiece.assembly.config import AssemblyConfig
    from onepiece.assembly.jobs import run_contexts
    from onepiece.contract import CONTEXTS_SCHEMA
    from onepiece.evaluation.outcomes import label_outcomes

    source = _side_source(config, model.config.feature_service)
    run_contexts(config.data, start, end, contexts_dir, AssemblyConfig(), source, beam)
    contexts = storage.read_partition(contexts_dir, "contexts").select(CONTEXTS_SCHEMA.names)
    if contexts.num_rows == 0:
        return None
    most = config.calibration_requests_per_hour
    if most and contexts.num_rows > most:  # a seeded sample of the window's requests
        rng = np.random.default_rng([config.seed, int(start.timestamp())])
        contexts = contexts.take(np.sort(rng.choice(contexts.num_rows, size=most, replace=False)))
    probs = probabilities_in_process(model, contexts)
    lengths = pc.list_value_length(contexts["cand_item_id"]).to_numpy(zero_copy_only=False)
    rows = pa.table({
        "request_id": np.repeat(contexts["request_id"].to_numpy(zero_copy_only=False), lengths),
        "item_id": pc.list_flatten(contexts["cand_item_id"]),
        **{name: pa.array(p) for name, p in probs.items()},
    })
    return label_outcomes(config.data, rows, start, end + config.calibration_attribution)


def _finite(value: float | None) -> float | None:
    return round(float(value), 6) if value is not None and np.isfinite(value) else None


def fit_calibration(config: PublishConfig, checkpoint: str, day: dt.date, work: Path, out: Path) -> dict[str, Any]:
    """Fit the Platt map of every task head on ``calibration_hours`` hours of ``day`` as
    serving scores them (contexts and Beam job under ``work``), write ``out``: the
    checkpoint's weights with the fitted map in its config.json. Returns the figures (also
    in ``work/calibration.json``): the parameters, and per task the mean predicted against
    the realised rate and the log loss before and after, on the fit data."""
    import dataclasses
    import shutil

    from onepiece.assembly.jobs import BeamSettings
    from onepiece.contract.schemas import TASKS
    from onepiece.evaluation.metrics import auc
    from onepiece.model import calibration, load_checkpoint
    from onepiece.serving.export import CONFIG_FILE, WEIGHTS_FILE
    from onepiece.storage import staged_dir

    model = load_checkpoint(checkpoint)
    model.config = dataclasses.replace(model.config, calibration={})  # fit on the raw heads
    beam = BeamSettings(config.beam.runner, config.beam.workers, config.beam.args)
    windows = calibration_windows(config, day)
    labelled = [
        _labelled_window(config, model, start, end, work / "contexts" / f"hour={start.hour:02d}", beam)
        for start, end in windows
    ]
    if not any(t is not None for t in labelled):
        raise UserError(f"the calibration windows of {day} hold no requests: {windows}")
    rows = pa.concat_tables([t for t in labelled if t is not None])
    fitted, report = {}, {}
    for task in TASKS:
        y = rows[f"y_{task}"].to_numpy(zero_copy_only=False).astype(np.int8)
        raw = rows[f"p_{task}"].to_numpy().astype(np.float64)
        params = calibration.fit_platt(calibration.logits_of(raw), y)
        after = raw if params is None else calibration.calibrated(calibration.logits_of(raw), params)
        if params:
            fitted[task] = params
        report[task] = {
            "params": params, "positives": int(y.sum()),
            "before": calibration.figures(raw, y), "after": calibration.figures(after, y),
            "auc": _finite(auc(y, raw)), "auc_after": _finite(auc(y, after)),
        }
    figures = {
        "checkpoint": str(checkpoint), "fit_day": day.isoformat(),
        "windows": [[s.isoformat(), e.isoformat()] for s, e in windows],
        "attribution_hours": config.calibration_attribution.total_seconds() / 3600,
        "requests": int(pc.count_distinct(rows["request_id"]).as_py()), "rows": rows.num_rows,
        "tasks": report,
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "calibration.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    with staged_dir(out) as staging:
        shutil.copyfile(Path(checkpoint) / WEIGHTS_FILE, staging / WEIGHTS_FILE)
        model_config = dataclasses.replace(model.config, calibration=fitted)
        (staging / CONFIG_FILE).write_text(model_config.to_json() + "\n")
    return figures


def calibrate(config: PublishConfig, run_key: str, checkpoint: str, sets: dict[str, Any]) -> dict[str, Any]:
    """The ``calibrate`` task: ``fit_calibration`` on the held-out day (never a training
    day); export and smoke then use the calibrated copy. ``calibration_hours`` 0 skips the
    fit (the checkpoint is published as it is)."""
    if not config.calibration_hours:
        return {"checkpoint": checkpoint, "calibrated": False}
    day = dt.date.fromisoformat(sets["eval_day"])
    if day <= dt.date.fromisoformat(sets["train_days"][-1]):  # no leakage from the training days
        raise UserError(f"calibration day {day} is not after the training days {sets['train_days']}")
    work = work_dir(config, run_key)
    out = work / "calibrated_checkpoint"
    figures = fit_calibration(config, checkpoint, day, work / "calibration", out)
    summary = {
        t: {"params": r["params"], "predicted_over_realised": [r["before"]["predicted_over_realised"],
                                                               r["after"]["predicted_over_realised"]],
            "log_loss": [r["before"]["log_loss"], r["after"]["log_loss"]]}
        for t, r in figures["tasks"].items()
    }
    log.info("calibration on %s (%d rows; before -> after): %s", day, figures["rows"], summary)
    return {"checkpoint": str(out), "calibrated": True, "figures": str(work / "calibration" / "calibration.json"),
            "fit_day": figures["fit_day"], "train_days": sets["train_days"], "rows": figures["rows"],
            "tasks": summary}


def smoke(config: PublishConfig, checkpoint: str, version: int, sets: dict[str, Any]) -> dict[str, Any]:
    """Load the version in Triton, score held-out contexts, compare with in-process."""
    import pyarrow.parquet as pq

    from onepiece.contract import CONTEXTS_SCHEMA
    from onepiece.model import load_checkpoint
    from onepiece.serving.client import TritonClientConfig, TritonRankerClient
    from onepiece.serving.export import CONFIG_FILE

    files = sorted(Path(sets["eval"]).glob("*.parquet"))
    contexts = pa.concat_tables([pq.read_table(f) for f in files]).select(CONTEXTS_SCHEMA.names)
    contexts = contexts.slice(0, SMOKE_REQUESTS)
    expected = probabilities_in_process(load_checkpoint(checkpoint), contexts)
    config_json = (Path(checkpoint) / CONFIG_FILE).read_text()

    def served_scores(urls: tuple[str, ...]) -> dict[str, np.ndarray]:
        client_config = TritonClientConfig(
            urls=urls, model_name=config.serving.model_name, model_version=version,
            protocol=config.serving.protocol,
        )
        with TritonRankerClient(client_config) as client:
            client.preflight(config_json)
            return client.score_contexts(contexts, "held-out contexts")

    if config.serving.urls:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        module = grpcclient if config.serving.protocol == "grpc" else httpclient
        for url in config.serving.urls:
            module.InferenceServerClient(url).load_model(config.serving.model_name)
        got = served_scores(config.serving.urls)
    else:
        from onepiece.serving.server import TritonServerConfig, embedded_triton

        server_config = TritonServerConfig(Path(config.serving.model_repo), models=(config.serving.model_name,))
        with embedded_triton(server_config) as server:
            url = server.grpc_url if config.serving.protocol == "grpc" else server.http_url
            got = served_scores((url,))
    gap = max(float(np.max(np.abs(got[k] - expected[k]), initial=0.0)) for k in expected)
    if not gap <= SMOKE_TOLERANCE:
        raise UserError(
            f"smoke test of {config.serving.model_name} v{version}: served scores differ from "
            f"in-process scores by {gap:.2e} (tolerance {SMOKE_TOLERANCE}); not pinned"
        )
    return {"version": version, "candidates": int(len(next(iter(got.values())))), "max_abs_gap": gap}


def pin(config: PublishConfig, version: int, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Switch the refresh DAG to ``version``."""
    return write_pin(
        config.data, config.serving.model_name, version,
        metric=evaluation["metric"], value=evaluation["candidate"],
        evaluated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
