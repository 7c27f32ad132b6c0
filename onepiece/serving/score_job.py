"""The scoring job's driver: contexts in, a published ``scores/`` partition out.

1. Context rows for [start, end) come from ``--contexts`` or, by default, from
   ``<data>/contexts/dt=YYYY-MM-DD/hour=HH/``; when that is empty the Beam contexts job
   (onepiece.assembly.jobs.run_contexts) builds it there first.
2. A preflight against Triton pins the model version and checks its config and
   FeatureService before anything is scored.
3. A Beam pipeline (runner named explicitly, onepiece.beam_options) reads the context
   shards in chunks, scores them through TritonRankerHandler (ScoreChunks), fuses the
   task probabilities into one score, ranks each request, and writes one Parquet file per
   context shard into a staging directory. Chunks that fail after every retry go to a
   dead-letter output.
4. The driver checks that every candidate was scored exactly once, writes the manifest,
   and publishes the partition in one step. With dead letters beyond the allowed count
   nothing is published; the failed requests are written to
   ``<data>/_dead_letter/scores/<partition>/requests.jsonl``.

``scored_at`` is the run's logical time (``start``, the as-of time of every context), not
the wall clock, so a rerun writes identical bytes; the manifest's created_at is the wall
clock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import apache_beam as beam
import pyarrow.compute as pc
import pyarrow.parquet as pq

from onepiece import storage
from onepiece.beam_options import pipeline_session, release
from onepiece.beam_portable import SUMMARY_NAME, Routed, RunSummary, check_runner_support, read_summary
from onepiece.contract import ContractError, validate_manifest
from onepiece.errors import UserError
from onepiece.serving.beam_scoring import (
    CHUNKS,
    FAILED,
    RANKED,
    SCORED,
    FuseAndRank,
    ReadContextChunks,
    ScoreChunks,
    ShardWriter,
    TritonRankerHandler,
    dead_letters,
)
from onepiece.serving.client import TritonClientConfig, TritonRankerClient
from onepiece.serving.fusion import FusionConfig
from onepiece.serving.scoring import ModelStamp

MANIFEST_NAME = "_manifest.json"


@dataclass(frozen=True)
class ScoreJobConfig:
    """One scoring run. ``urls`` are Triton gRPC (or HTTP) addresses, HOST:PORT."""

    data: str
    start: dt.datetime
    end: dt.datetime
    urls: tuple[str, ...]
    contexts_dir: str | None = None  # default: <data>/contexts/<partition>
    model_name: str = "onepiece_ranker"
    model_version: int | None = None  # None: newest version ready on every server
    expected_config_json: str | None = None  # the checkpoint's config.json, if known
    feature_service: str | None = None  # None: the served version's own
    fusion: FusionConfig = field(default_factory=FusionConfig)
    protocol: Literal["grpc", "http"] = "grpc"
    max_in_flight: int = 4  # concurrent requests per worker
    max_failed_requests: int = 0  # dead-lettered requests tolerated before refusing to publish
    runner: str = "FnApiRunner"
    # Local runners' worker processes. One keeps a one-instance server busy (4 requests
    # in flight); more pay off with more served instances (BeamConfig.score_workers).
    workers: int = 1
    beam_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            utc = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
            object.__setattr__(self, name, utc)
        if self.end <= self.start:
            raise UserError(f"--end ({self.end.isoformat()}) must be after --start ({self.start.isoformat()})")

    @property
    def partition(self) -> str:
        start = self.start.astimezone(dt.UTC)
        return f"dt={start.date().isoformat()}/hour={start.hour:02d}"

    def client_config(self) -> TritonClientConfig:
        return TritonClientConfig(
            urls=self.urls, model_name=self.model_name, model_version=self.model_version,
            protocol=self.protocol, max_in_flight=self.max_in_flight,
        )


def contexts_location(config: ScoreJobConfig) -> Path:
    return Path(config.contexts_dir or Path(storage.data_root(config.data)) / "contexts" / config.partition)


def needs_contexts(config: ScoreJobConfig) -> bool:
    """Whether the run builds its contexts (none given, none at the default place)."""
    from onepiece.assembly.jobs import MANIFEST_NAME as CONTEXTS_MANIFEST

    return config.contexts_dir is None and not (contexts_location(config) / CONTEXTS_MANIFEST).is_file()


def ensure_contexts(config: ScoreJobConfig, feature_service: str) -> tuple[Path, dict[str, Any]]:
    """The context shards of the run and their manifest; built first when absent."""
    from onepiece.assembly.jobs import MANIFEST_NAME as CONTEXTS_MANIFEST

    where = contexts_location(config)
    manifest_path = where / CONTEXTS_MANIFEST
    if not manifest_path.is_file():
        if config.contexts_dir is not None:
            raise UserError(f"--contexts {where} holds no context run (no {CONTEXTS_MANIFEST})")
        from onepiece.assembly import AssemblyConfig
        from onepiece.assembly.feast_source import FeastSideSource
        from onepiece.assembly.jobs import BeamSettings, run_contexts

        root = storage.data_root(config.data)
        run_contexts(
            root, config.start, config.end, where, AssemblyConfig(),
            FeastSideSource(data_root=root, feature_service=feature_service),
            BeamSettings(config.runner, config.workers, config.beam_args),
        )
    manifest = json.loads(manifest_path.read_text())
    want = f"{config.start.isoformat()}..{config.end.isoformat()}"
    if manifest.get("partition") != want:
        raise UserError(
            f"contexts at {where} were built for {manifest.get('partition')}, not for {want}"
        )
    return where, manifest


def _preflight(config: ScoreJobConfig) -> tuple[ModelStamp, Any]:
    with TritonRankerClient(config.client_config()) as client:
        served = client.preflight(config.expected_config_json, config.feature_service)
    return ModelStamp(served.name, served.version, served.feature_service), served


def run_scoring(config: ScoreJobConfig) -> dict[str, Any]:
    """Score the candidates of [start, end) and publish ``scores/<partition>``; returns the
    manifest."""
    began = time.monotonic()
    stamp, served = _preflight(config)
    contexts_dir, contexts_manifest = ensure_contexts(config, stamp.feature_service)
    files = sorted(str(p) for p in contexts_dir.glob("*.parquet"))
    if not files:
        raise ContractError("contexts", str(contexts_dir), "no context shards (Parquet files)")
    candidates = sum(
        int(pc.sum(pc.list_value_length(pq.read_table(f, columns=["cand_item_id"])["cand_item_id"])).as_py() or 0)
        for f in files
    )
    root = storage.data_root(config.data)
    final = Path(root) / "scores" / config.partition
    # Pin the version for the workers: they score exactly what preflight checked.
    pinned = dataclasses.replace(config, model_version=stamp.version)
    handler = TritonRankerHandler(
        pinned.client_config(), config.expected_config_json, stamp.feature_service
    )
    max_sequences = served.preferred_batch_size * config.max_in_flight
    group_size = served.model_config.group_size
    with storage.staged_dir(final) as staging, pipeline_session(
        config.runner, config.workers, config.beam_args
    ) as options:
        summary_path = staging / SUMMARY_NAME  # counts and dead letters (removed below)
        with beam.Pipeline(options=options) as p:
            chunks = (
                p
                | "ListContextShards" >> beam.Create(list(enumerate(files)))
                | "ReadContextChunks" >> Routed(ReadContextChunks(group_size, max_sequences), CHUNKS)
            )
            scored = chunks[CHUNKS] | "ScoreOnTriton" >> Routed(ScoreChunks(handler), SCORED, FAILED)
            ranked = scored[SCORED] | "FuseAndRank" >> Routed(
                FuseAndRank(config.fusion, stamp, config.start), RANKED
            )
            written = (
                ranked[RANKED]
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShards" >> beam.Map(ShardWriter(str(staging)))
            )
            dead_records = scored[FAILED] | "DeadLetters" >> beam.FlatMap(dead_letters)
            # Last, so that a runner computing only the final step still runs them all.
            _ = (
                chunks["summary"], scored["summary"], ranked["summary"], written, dead_records
            ) | "RunSummary" >> RunSummary(str(summary_path))
            check_runner_support(p, config.runner)  # a clear error, not a silently dropped step
        release(p.result)
        summary = read_summary(summary_path)
        summary_path.unlink()
        counters = summary["counts"]
        dead = summary["problems"]
        if len(dead) > config.max_failed_requests:
            _write_dead_letters(root, config.partition, dead)
            raise UserError(
                f"{len(dead)} requests could not be scored (allowed {config.max_failed_requests}); "
                f"nothing published. First error: {json.loads(dead[0])['error']}. Dead letters: "
                f"{Path(root) / '_dead_letter' / 'scores' / config.partition / 'requests.jsonl'}"
            )
        written = sum(pq.read_metadata(f).num_rows for f in staging.glob("*.parquet"))
        if not dead and written != candidates:
            raise UserError(
                f"scored {written} rows for {candidates} candidates in {contexts_dir}: every "
                "candidate must be scored exactly once; nothing published"
            )
        if not any(staging.glob("*.parquet")):
            from onepiece.contract import SCORES_SCHEMA

            storage.write_parquet(SCORES_SCHEMA.empty_table(), staging / "part-00000.parquet")
        manifest = _manifest(config, stamp, served, files, root, counters, written, dead, contexts_manifest, began)
        validate_manifest(manifest, str(final / MANIFEST_NAME))
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _write_dead_letters(root: str, partition: str, lines: list[str]) -> None:
    where = Path(root) / "_dead_letter" / "scores" / partition
    with storage.staged_dir(where) as staging:
        (staging / "requests.jsonl").write_text("\n".join(lines) + "\n")


def _manifest(
    config: ScoreJobConfig,
    stamp: ModelStamp,
    served: Any,
    files: list[str],
    root: str,
    counters: dict[str, int],
    written: int,
    dead: list[str],
    contexts_manifest: dict[str, Any],
    began: float,
) -> dict[str, Any]:
    from onepiece.serving.client import describe

    base = str(Path(root).absolute())
    inputs = [
        {
            "path": str(Path(f).relative_to(base)) if f.startswith(base) else f,
            "fingerprint": storage.fingerprint_files([f]),
        }
        for f in files
    ]
    settings = {
        "job": "scores",
        "start": config.start.isoformat(),
        "end": config.end.isoformat(),
        "fusion": json.loads(config.fusion.to_json()),
        "model_config_sha256": served.config_sha256,
        "runner": config.runner,
        "protocol": config.protocol,
        "contexts_run_id": contexts_manifest.get("run_id"),
    }
    run_id = hashlib.sha256(json.dumps([settings, inputs], sort_keys=True).encode()).hexdigest()[:16]
    model = describe(served)
    return {
        "table": "scores",
        "partition": config.partition,
        "run_id": run_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_time_s": round(time.monotonic() - began, 3),
        "rows": {
            "context_rows": counters.get("context_rows_read", 0),
            "requests_scored": counters.get("requests_scored", 0),
            "scores": written,
        },
        "inputs": inputs,
        "dropped": {"inference_failed": len(dead)} if dead else {},
        "defaulted": dict(contexts_manifest.get("defaulted") or {}),
        "model": {"name": model["name"], "version": model["version"], "feature_service": model["feature_service"]},
        "settings": json.dumps(settings, sort_keys=True),
    }


def score_window(config: ScoreJobConfig, model_repo: str | Path = "model_repo") -> dict[str, Any]:
    """Run the job against ``config.urls``, or, when there are none, against an embedded
    tritonserver over ``model_repo`` that is started for the run and always stopped.

    When the run builds its contexts, its input files are checked first, so a damaged
    input is named before any server starts (the contexts job checks them again).
    """
    if needs_contexts(config):
        from onepiece.assembly.jobs import check_contexts_inputs

        check_contexts_inputs(storage.data_root(config.data), config.start, config.end)
    if config.urls:
        return run_scoring(config)
    from onepiece.serving.export import check_exported
    from onepiece.serving.server import TritonServerConfig, embedded_triton

    check_exported(model_repo, config.model_name)
    server_config = TritonServerConfig(Path(model_repo), models=(config.model_name,))
    with embedded_triton(server_config) as server:
        url = server.grpc_url if config.protocol == "grpc" else server.http_url
        return run_scoring(dataclasses.replace(config, urls=(url,)))
