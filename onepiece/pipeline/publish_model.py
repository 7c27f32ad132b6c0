"""The ``model_publish`` DAG's tasks: a new model version from training to the pin.

    datasets -> train -> evaluate -> gate -> export -> smoke -> pin

- ``datasets``: the Beam training-set job over the logged days; the last logged day is
  held out for evaluation (and early stopping), the days before it train;
- ``train``: trains the named variant (onepiece.training), or takes the checkpoint given;
- ``evaluate``: ranking metrics of the new model and of the serving (pinned) model on the
  same held-out rows (onepiece.evaluation);
- ``gate``: the new model's click AUC must reach the serving model's plus ``min_gain``;
- ``export``: writes the next version into the model repository (a checkpoint exported
  before is found again, so a rerun does not add a version);
- ``smoke``: loads the version in Triton (the embedded server, or ``load_model`` on the
  configured servers) and scores held-out contexts, which must match in-process scores;
- ``pin``: switches the refresh DAG's pinned version (onepiece.pipeline.pin).

Work files live under ``<data>/_runs/model_publish/<run key>/``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from onepiece import storage
from onepiece.errors import UserError
from onepiece.pipeline.config import PublishConfig
from onepiece.pipeline.pin import read_pin, write_pin

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

    days = storage.list_days(config.data, "events")
    if len(days) < 2:
        raise UserError(f"model_publish needs at least two logged days under {config.data}/events, found {len(days)}")
    eval_day = days[-1]
    train_days = days[:-1][-config.train_days :] if config.train_days else days[:-1]
    work = work_dir(config, run_key)
    source = _side_source(config, _model_config(config).feature_service)
    beam = BeamSettings(config.beam.runner, config.beam.workers, config.beam.args)
    run_trainset(config.data, eval_day, eval_day, work / "eval", AssemblyConfig(), source, beam)
    if not config.checkpoint:
        run_trainset(config.data, train_days[0], train_days[-1], work / "train", AssemblyConfig(), source, beam)
    return {
        "eval": str(work / "eval"),
        "train": None if config.checkpoint else str(work / "train"),
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
    from onepiece.storage import staged_dir
    from onepiece.training.config import TrainConfig
    from onepiece.training.data import read_training_rows
    from onepiece.training.loop import save_run
    from onepiece.training.loop import train as run_training

    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, seed=config.seed)
    train_rows, eval_rows = read_training_rows(sets["train"]), _eval_rows(config, sets)
    log.info("training %s on %d requests, evaluating on %d", config.variant, train_rows.num_rows, eval_rows.num_rows)
    result = run_training(
        _model_config(config), train_config, train_rows, eval_rows,
        on_step=_log_step,
        on_epoch=lambda r: log.info("epoch %d: train loss %.4f, eval %s", r["epoch"], r["train_loss"], r["eval"]),
    )
    out = work_dir(config, run_key) / "checkpoint"
    with staged_dir(out) as staging:
        save_run(result, train_config, staging)
    return {"checkpoint": str(out), "trained": True, "best_epoch": result.history["best_epoch"]}


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


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(config: PublishConfig, checkpoint: str) -> dict[str, Any]:
    """Export the checkpoint as the next version (or find the version it already is)."""
    from onepiece.serving.export import WEIGHTS_FILE, export_checkpoint, exported_versions

    model_dir = Path(config.serving.model_repo) / config.serving.model_name
    weights = _digest(Path(checkpoint) / WEIGHTS_FILE)
    for version, path in sorted(exported_versions(model_dir).items()):
        if _digest(path / WEIGHTS_FILE) == weights:
            return {"version": version, "exported": False}
    written = export_checkpoint(checkpoint, config.serving.model_repo)
    return {"version": int(written.name), "exported": True}


def smoke(config: PublishConfig, checkpoint: str, version: int, sets: dict[str, Any]) -> dict[str, Any]:
    """Load the version in Triton, score held-out contexts, compare with in-process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from onepiece.contract import CONTEXTS_SCHEMA
    from onepiece.model import load_checkpoint, score, tensorize
    from onepiece.serving.client import TritonClientConfig, TritonRankerClient, scatter_to_candidates
    from onepiece.serving.export import CONFIG_FILE

    files = sorted(Path(sets["eval"]).glob("*.parquet"))
    contexts = pa.concat_tables([pq.read_table(f) for f in files]).select(CONTEXTS_SCHEMA.names)
    contexts = contexts.slice(0, SMOKE_REQUESTS)
    model = load_checkpoint(checkpoint)
    inputs = tensorize(contexts, model.config, fixed_shape=True)
    assert inputs.cand_flat_index is not None  # set by tensorize for context rows
    expected = scatter_to_candidates(
        {f"p_{t}": p.numpy() for t, p in score(model, inputs).items()}, inputs.cand_flat_index.numpy(), contexts
    )
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
