"""Configuration of the three DAGs: Airflow Params first, then environment variables,
then the embedded defaults (a local data root, the project's model repository and feature
repository, an embedded tritonserver, Beam's in-process runner).

A Param left empty ("" or 0 where noted) means "not set here": the environment variable
decides, else the default. Nothing machine-specific is hard-coded; every path is
resolved at run time.

Environment variables (all optional):

==============================  ==========================================================
ONEPIECE_DATA                   data root (contract tables, scores, pin, reports)
ONEPIECE_MODEL_REPO             Triton model repository (default: the project's model_repo/)
ONEPIECE_TRITON_URLS            comma-separated Triton HOST:PORT; empty: embedded server
ONEPIECE_TRITON_PROTOCOL        grpc (default) or http
ONEPIECE_FEATURE_REPO           Feast feature repository (default: the project's features/)
ONEPIECE_BEAM_RUNNER            Beam runner (default FnApiRunner; dask; see onepiece.beam_options)
ONEPIECE_DASK_SCHEDULER         dask.distributed scheduler (tcp://HOST:8786) for runner dask;
                                empty: an embedded LocalCluster of ONEPIECE_BEAM_WORKERS
ONEPIECE_FEAST_PROFILE          local (default) or scale (features/profiles/)
ONEPIECE_BEAM_WORKERS           local Beam worker processes (default 2)
ONEPIECE_SCORE_WORKERS          local Beam worker processes of the scoring job (default 1:
                                one keeps an embedded one-instance Triton busy; raise it
                                with the served instances, e.g. for a remote fleet)
ONEPIECE_CONTEXTS_WORKERS       local Beam worker processes of the refresh's contexts job
                                (default 1: its time is start-up, mostly Feast's import)
ONEPIECE_CONTEXTS_IN_PROCESS    true (default): with one contexts worker, run it inside
                                the task's process (no worker start-up, no second Feast
                                import); false: a worker process (local runners only)
ONEPIECE_BEAM_ARGS              extra Beam flags, shell-quoted (--flink_master=..., ...)
ONEPIECE_REFRESH_WINDOW_MINUTES scoring window after the logical date (default 60)
ONEPIECE_REFRESH_MERGE_RETRIEVAL true: the refresh scores the upstream candidates merged
                                with the retrieval route's partition (default false)
ONEPIECE_MAX_FAILED_REQUESTS    dead-lettered requests tolerated per run (default 0)
ONEPIECE_AUDIT_ATTRIBUTION_HOURS how long after a window its outcomes count (default 6;
                                the audit, and model_publish's calibration labels)
==============================  ==========================================================
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from onepiece.errors import UserError
from onepiece.pipeline.guard import GuardConfig
from onepiece.storage import DATA_ENV, data_root

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_MODEL_REPO = PROJECT_ROOT / "model_repo"


def _pick(params: Mapping[str, Any], key: str, env: Mapping[str, str], env_key: str) -> str:
    """The Param if set, else the environment variable, else ''. A Param of "" or 0 is
    "not set" (Airflow Params need a default of their own type)."""
    value = params.get(key)
    if value not in (None, "", 0):
        return str(value)
    return env.get(env_key, "")


def _bool(text: str, name: str) -> bool:
    """A switch: true/1/yes or false/0/no (any case); '' is false."""
    value = str(text).strip().lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise UserError(f"{name} must be true or false, got {text!r}")


def _int(text: str, default: int, name: str) -> int:
    if text in ("", None):
        return default
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{name} must be an integer, got {text!r}") from None


def _abs(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def as_utc(value: dt.datetime) -> dt.datetime:
    """A timezone-aware UTC datetime (Airflow hands out pendulum DateTimes)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC)
    return dt.datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond, tzinfo=dt.UTC,
    )


@dataclass(frozen=True)
class BeamConfig:
    runner: str = "FnApiRunner"
    workers: int = 2
    args: tuple[str, ...] = ()
    # The scoring job's own count: its work is Triton's, so one local worker (4 requests
    # in flight) keeps a one-instance server busy; a second one only adds its start-up
    # (torch imported again) and competes for the cores. Measured on 100k candidates with
    # the embedded server: 0.8x the CPU seconds, 0.6 GB less, same bytes (docs/results.md).
    score_workers: int = 1
    # The refresh's contexts job: its time is fixed costs (the worker that fetches the
    # side features imports Feast, about 6 s), not per candidate; a second worker adds
    # its own start-up (about 2 CPU s at 250k candidates) for little work (docs/results.md).
    contexts_workers: int = 1
    # With one contexts worker, run it inside the task's process (Beam's in_memory mode):
    # no worker start-up, and Feast is imported once, by the driver (docs/results.md).
    contexts_in_process: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1 or self.score_workers < 1 or self.contexts_workers < 1:
            raise UserError(f"Beam worker counts must be at least 1, got {self}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any], env: Mapping[str, str]) -> BeamConfig:
        return cls(
            runner=_pick(params, "beam_runner", env, "ONEPIECE_BEAM_RUNNER") or "FnApiRunner",
            workers=_int(_pick(params, "beam_workers", env, "ONEPIECE_BEAM_WORKERS"), 2, "beam_workers"),
            args=tuple(shlex.split(_pick(params, "beam_args", env, "ONEPIECE_BEAM_ARGS"))),
            score_workers=_int(
                _pick(params, "score_workers", env, "ONEPIECE_SCORE_WORKERS"), 1, "score_workers"
            ),
            contexts_workers=_int(
                _pick(params, "contexts_workers", env, "ONEPIECE_CONTEXTS_WORKERS"), 1, "contexts_workers"
            ),
            contexts_in_process=_bool(
                _pick(params, "contexts_in_process", env, "ONEPIECE_CONTEXTS_IN_PROCESS") or "true",
                "contexts_in_process",
            ),
        )


@dataclass(frozen=True)
class ServingConfig:
    """Where the model is served: an embedded tritonserver over ``model_repo`` (no URLs)
    or running Triton servers at ``urls``."""

    model_repo: str
    model_name: str = "onepiece_ranker"
    urls: tuple[str, ...] = ()
    protocol: Literal["grpc", "http"] = "grpc"

    @classmethod
    def from_params(cls, params: Mapping[str, Any], env: Mapping[str, str]) -> ServingConfig:
        urls = _pick(params, "triton_urls", env, "ONEPIECE_TRITON_URLS")
        protocol = _pick(params, "triton_protocol", env, "ONEPIECE_TRITON_PROTOCOL") or "grpc"
        if protocol not in ("grpc", "http"):
            raise UserError(f"triton protocol must be grpc or http, got {protocol!r}")
        return cls(
            model_repo=_abs(
                _pick(params, "model_repo", env, "ONEPIECE_MODEL_REPO") or str(PROJECT_MODEL_REPO)
            ),
            urls=tuple(u.strip() for u in urls.split(",") if u.strip()),
            protocol=protocol,  # type: ignore[arg-type]
        )


def _feature_repo(params: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    repo = _pick(params, "feature_repo", env, "ONEPIECE_FEATURE_REPO")
    return _abs(repo) if repo else None


def _window(params: Mapping[str, Any], env: Mapping[str, str]) -> dt.timedelta:
    """The refresh window (the refresh and the audit of its outcomes read the same one)."""
    minutes = _int(_pick(params, "window_minutes", env, "ONEPIECE_REFRESH_WINDOW_MINUTES"), 60, "window_minutes")
    return dt.timedelta(minutes=minutes)


def _data(params: Mapping[str, Any], env: Mapping[str, str]) -> str:
    return _abs(data_root(_pick(params, "data", env, DATA_ENV) or None))


@dataclass(frozen=True)
class RefreshConfig:
    """One pre-rank refresh: score the candidates of [T, T + window) as of T.

    ``model_version`` None scores with the pinned version (``onepiece.pipeline.pin``),
    else the newest exported (embedded) or ready (remote) one. ``merge_retrieval`` scores
    the upstream candidates merged with the retrieval route's published partition of the
    same window (``onepiece.retrieval.merge``); the run fails when it is missing.
    """

    data: str
    serving: ServingConfig
    window: dt.timedelta = dt.timedelta(hours=1)
    model_version: int | None = None
    feature_repo: str | None = None  # None: the project's features/
    beam: BeamConfig = BeamConfig()
    max_failed_requests: int = 0
    guard: GuardConfig = GuardConfig()
    merge_retrieval: bool = False

    def __post_init__(self) -> None:
        if self.window <= dt.timedelta(0):
            raise UserError(f"the refresh window must be positive, got {self.window}")

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> RefreshConfig:
        params = params or {}
        env = os.environ if env is None else env
        version = _int(str(params.get("model_version") or ""), 0, "model_version")
        return cls(
            data=_data(params, env),
            serving=ServingConfig.from_params(params, env),
            window=_window(params, env),
            model_version=version or None,
            feature_repo=_feature_repo(params, env),
            beam=BeamConfig.from_params(params, env),
            max_failed_requests=_int(
                _pick(params, "max_failed_requests", env, "ONEPIECE_MAX_FAILED_REQUESTS"), 0,
                "max_failed_requests",
            ),
            guard=GuardConfig.from_params(params),
            merge_retrieval=_bool(
                _pick(params, "merge_retrieval", env, "ONEPIECE_REFRESH_MERGE_RETRIEVAL"), "merge_retrieval"),
        )


@dataclass(frozen=True)
class RegistryConfig:
    """The feature registry update: which repository, over which data root.

    ``force`` runs plan/validate/apply even when the definitions are unchanged since the
    last apply; it never overrides the compatibility check.
    """

    data: str
    feature_repo: str | None = None
    force: bool = False

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> RegistryConfig:
        params = params or {}
        env = os.environ if env is None else env
        return cls(
            data=_data(params, env),
            feature_repo=_feature_repo(params, env),
            force=bool(params.get("force", False)),
        )

    def repo(self):
        from onepiece.features.repo import PROJECT_REPO, FeatureRepoConfig

        return FeatureRepoConfig(
            repo_dir=Path(self.feature_repo) if self.feature_repo else PROJECT_REPO,
            data_root=self.data,
        )


#: The variant the product trains and publishes by default: ``onepiece_invisible``, the
#: paper's bidirectional mask with the candidates mutually invisible (issue 17, sessions
#: 15-16, 3 seeds on three worlds: never behind the paper's mask, pooled +0.002 click AUC;
#: within noise of DLRM on each world; docs/results.md). Its context never sees the
#: candidates, so it is served with the shared-context layout: each request's context is
#: encoded once, and a candidate's score does not depend on its group. A repository
#: serving paper-mask versions (``onepiece``, the per-group layout) switches with
#: ``layout_change="replace"`` (``ExportConfig``).
PRODUCT_VARIANT = "onepiece_invisible"
#: The retrieval model the ``model_publish`` DAG trains beside the ranker when asked.
RETRIEVAL_VARIANT = "onepiece_retrieval"


@dataclass(frozen=True)
class PublishConfig:
    """Model publishing: train a variant (or take ``checkpoint``), gate it, export it.

    Days are counted from the days with candidates: the last one is held out for
    evaluation, the ``train_days`` before it train. ``min_gain`` is the click-AUC margin
    the new model must reach over the serving one (negative: tolerate a small loss).
    """

    data: str
    serving: ServingConfig
    checkpoint: str | None = None
    variant: str = PRODUCT_VARIANT
    train_days: int = 0  # 0: every candidates day before the held-out one
    epochs: int = 4
    batch_size: int = 64
    seed: int = 0
    min_gain: float = 0.0
    #: Held-out requests used for early stopping and the gate (evenly thinned; 0: all).
    max_eval_requests: int = 2000
    #: Calibration (the ``calibrate`` task): hourly windows of the held-out day to fit the
    #: heads' Platt maps on (seeded sample; 0: publish the raw heads), requests sampled
    #: per window (0: all), and the attribution of outcomes (the audit's rule and default).
    calibration_hours: int = 4
    calibration_requests_per_hour: int = 500
    calibration_attribution: dt.timedelta = dt.timedelta(hours=6)
    feature_repo: str | None = None
    beam: BeamConfig = BeamConfig()
    #: The ``retrieval`` task: also train ``RETRIEVAL_VARIANT`` on the same days and
    #: publish it as the next onepiece_user_tower version with its item index.
    retrieval: bool = False
    #: A new version whose tensor layout differs from the loaded versions' (the first
    #: shared-context model after paper-mask ones): "refuse" (checked before training) or
    #: "replace" (serve the new layout; the older versions stay on disk, unloaded).
    layout_change: str = "refuse"

    def __post_init__(self) -> None:
        if self.layout_change not in ("refuse", "replace"):
            raise UserError(f"layout_change must be refuse or replace, got {self.layout_change!r}")

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> PublishConfig:
        params = params or {}
        env = os.environ if env is None else env
        checkpoint = str(params.get("checkpoint") or "")
        return cls(
            data=_data(params, env),
            serving=ServingConfig.from_params(params, env),
            checkpoint=_abs(checkpoint) if checkpoint else None,
            variant=str(params.get("variant") or PRODUCT_VARIANT),
            train_days=_int(str(params.get("train_days") or ""), 0, "train_days"),
            epochs=_int(str(params.get("epochs") or ""), 4, "epochs"),
            batch_size=_int(str(params.get("batch_size") or ""), 64, "batch_size"),
            seed=_int(str(params.get("seed") or ""), 0, "seed"),
            min_gain=float(params.get("min_gain") or 0.0),
            max_eval_requests=_int(str(params.get("max_eval_requests", "")), 2000, "max_eval_requests"),
            calibration_hours=_int(str(params.get("calibration_hours", "")), 4, "calibration_hours"),
            calibration_requests_per_hour=_int(
                str(params.get("calibration_requests_per_hour", "")), 500, "calibration_requests_per_hour"),
            calibration_attribution=dt.timedelta(hours=_int(
                _pick(params, "attribution_hours", env, "ONEPIECE_AUDIT_ATTRIBUTION_HOURS"), 6, "attribution_hours")),
            feature_repo=_feature_repo(params, env),
            beam=BeamConfig.from_params(params, env),
            retrieval=bool(params.get("retrieval", False)),
            layout_change=str(params.get("layout_change") or "refuse"),
        )


@dataclass(frozen=True)
class AuditConfig:
    """The outcomes audit: at T, measure the refresh run whose window and attribution
    horizon have both passed, i.e. the run of T - window - attribution."""

    data: str
    window: dt.timedelta = dt.timedelta(hours=1)
    attribution: dt.timedelta = dt.timedelta(hours=6)
    top_k: int = 20

    def __post_init__(self) -> None:
        if self.window <= dt.timedelta(0) or self.attribution < dt.timedelta(0) or self.top_k < 1:
            raise UserError(f"audit: window must be positive, attribution >= 0 and top_k >= 1, got {self}")

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> AuditConfig:
        params = params or {}
        env = os.environ if env is None else env
        hours = _int(_pick(params, "attribution_hours", env, "ONEPIECE_AUDIT_ATTRIBUTION_HOURS"), 6, "attribution_hours")
        return cls(
            data=_data(params, env),
            window=_window(params, env),
            attribution=dt.timedelta(hours=hours),
            top_k=_int(str(params.get("top_k") or ""), 20, "top_k"),
        )


def scheduled_dag_args(schedule_env: str, default_schedule: str, env: Mapping[str, str] | None = None) -> dict[str, object]:
    """The ``@dag`` arguments every scheduled onePiece DAG shares: a cron schedule from
    ``schedule_env``, the start ``$ONEPIECE_REFRESH_START``, no catch-up (backfills are
    explicit), one run at a time, the shared retry policy and the ``onepiece`` tag."""
    env = os.environ if env is None else env
    return {
        "schedule": env.get(schedule_env, default_schedule),
        "start_date": dt.datetime.fromisoformat(env.get("ONEPIECE_REFRESH_START", "2026-11-01T00:00:00+00:00")),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": task_retry_args(env),
        "tags": ["onepiece"],
    }


def task_retry_args(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """Airflow ``default_args`` for retries on transient failures, shared by every DAG:
    ``$ONEPIECE_TASK_RETRIES`` (default 2) every ``$ONEPIECE_RETRY_DELAY_S`` s (default 30)."""
    env = os.environ if env is None else env
    return {
        "retries": int(env.get("ONEPIECE_TASK_RETRIES", "2")),
        "retry_delay": dt.timedelta(seconds=int(env.get("ONEPIECE_RETRY_DELAY_S", "30"))),
    }
