"""The ``prerank_refresh`` DAG's tasks: one function per task, for the run at time T.

The run scores the candidates requested in the window [T, T + window) as of T: every
context, anchor and side feature uses only what was observed strictly before T (the
assembly job's rule), so a backfill of an old date writes what the scheduled run wrote.

Everything a run produces is staged under ``<data>/_runs/prerank_refresh/<partition>/``
(a root that readers ignore) and only the ``publish`` task moves it into place:

    check_inputs ─> merge_retrieval ──┐
                                      ├─> assemble_contexts ─> score ─> report ─> guard ─> publish ─> serving_table
    ensure_model_served ──────────────┘

- ``merge_retrieval`` (the ``merge_retrieval`` option; a no-op when it is off) merges the
  window's upstream candidates with the retrieval route's published partition of the
  same window (``onepiece.retrieval.merge``) into the staging root's ``candidates/``,
  which the contexts job then reads; ``check_inputs`` has checked that partition, and a
  missing one fails the run by name (no silent fallback to the upstream alone).
- ``assemble_contexts`` runs the Beam contexts job; the side features are fetched from
  Feast INSIDE that job (``onepiece.assembly.feast_source.FeastSideSource``, one
  point-in-time query per entity kind as of T), so there is no separate feature task.
- ``score`` starts the embedded tritonserver for the duration of the Beam scoring job
  (Airflow tasks are separate processes, a server cannot outlive its task), or uses the
  configured Triton URLs, and writes the scores partition into the staging root; each
  row's ``recall_source`` comes from the candidates the run scored, and a merged run's
  manifest records the merge (``merge``: the retrieval partition and its MergeCounts).
- ``guard`` checks the staged partition (coverage, volume, defaulted side features,
  degenerate scores, drift, served vs in-process scores on a sample;
  ``onepiece.pipeline.guard``) and refuses to let it be published when a check fails,
  unless forced.
- ``publish`` moves the contexts and scores partitions into place (each in one rename),
  so a failed run publishes nothing and a rerun replaces a partition in one step.
- ``serving_table`` points ``<data>/serving/prerank_scores.json`` at the newest published
  partition: the pre-ranker's documented serving table (see README).

Every function takes the RefreshConfig and T, returns a small JSON-able dict (XCom) and
may be rerun: the staging root is rebuilt from scratch by ``check_inputs``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from onepiece import storage
from onepiece.contract import SCORES_SCHEMA, ContractError, conform, validate_manifest
from onepiece.contract.schemas import TIMESTAMP
from onepiece.errors import UserError
from onepiece.pipeline.config import RefreshConfig, as_utc
from onepiece.pipeline.pin import read_pin

MANIFEST_NAME = "_manifest.json"
SERVING_POINTER = Path("serving") / "prerank_scores.json"
_MICRO = dt.timedelta(microseconds=1)


def partition_of(start: dt.datetime) -> str:
    """The scores partition of a run starting at ``start`` (as the scoring job names it)."""
    start = as_utc(start)
    return f"dt={start.date().isoformat()}/hour={start.hour:02d}"


def staging_root(config: RefreshConfig, start: dt.datetime) -> Path:
    return Path(config.data) / "_runs" / "prerank_refresh" / partition_of(start)


def _remove_staging(config: RefreshConfig, start: dt.datetime) -> None:
    """Remove the run's staging root and the parents it leaves empty."""
    root = staging_root(config, start)
    shutil.rmtree(root, ignore_errors=True)
    for parent in (root.parent, root.parent.parent, root.parent.parent.parent):
        try:
            parent.rmdir()
        except OSError:
            break


def _window(config: RefreshConfig, start: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    start = as_utc(start)
    return start, start + config.window


def _days(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    last = (end - _MICRO).date()
    return [start.date() + dt.timedelta(days=i) for i in range((last - start.date()).days + 1)]


# --- check_inputs ---------------------------------------------------------------------


def check_inputs(config: RefreshConfig, start: dt.datetime) -> dict[str, Any]:
    """``check_window`` (and, with ``merge_retrieval``, the retrieval partition of the
    window), then reset the run's staging root."""
    checked = check_window(config, start)
    if config.merge_retrieval:
        checked["retrieval"] = check_retrieval(config, start)
    _remove_staging(config, start)
    return checked


def check_window(config: RefreshConfig, start: dt.datetime) -> dict[str, Any]:
    """Check a window's inputs exist and conform (every DAG that assembles contexts).

    Every file the contexts job will read (the window's candidates, the look-back's
    events, items, users, queries) is checked against the contract by the same check the
    job and the CLI run (``onepiece.assembly.jobs.check_contexts_inputs``): the first
    damaged file, column and row fail the task by name. It also fails when the Feast
    registry was never applied.
    """
    from onepiece.assembly.config import AssemblyConfig
    from onepiece.assembly.jobs import check_contexts_inputs
    from onepiece.features.repo import open_store, repo_config

    start, end = _window(config, start)
    root = config.data
    checked = check_contexts_inputs(root, start, end, AssemblyConfig())
    # The files are checked: read the two columns the counts need, nothing else.
    candidates = pa.concat_tables(
        [pq.read_table(f, columns=["request_id", "request_timestamp"]) for f in checked.files("candidates")]
    )
    in_window = pc.and_(
        pc.greater_equal(candidates["request_timestamp"], pa.scalar(start, TIMESTAMP)),
        pc.less(candidates["request_timestamp"], pa.scalar(end, TIMESTAMP)),
    )
    window_rows = candidates.filter(in_window)
    repo = _feature_repo(config)
    registry = str(repo_config(repo).registry.path)
    # Opening a store on a missing file registry would create an empty one.
    missing = "://" not in registry and not Path(registry).exists()
    if missing or not open_store(repo).list_feature_services():
        raise UserError(
            f"the Feast registry of {repo.repo_dir} over {root} holds no feature service: "
            "run the feature_registry DAG (or `onepiece features apply`) first"
        )
    return {
        "partition": partition_of(start),
        "window": [start.isoformat(), end.isoformat()],
        "candidates": window_rows.num_rows,
        "requests": pc.count_distinct(window_rows["request_id"]).as_py(),
        "event_days": [d.isoformat() for d in checked.days("events")],
        "check_s": checked.seconds,
    }


def _feature_repo(config: RefreshConfig):
    from onepiece.features.repo import PROJECT_REPO, FeatureRepoConfig

    return FeatureRepoConfig(
        repo_dir=Path(config.feature_repo) if config.feature_repo else PROJECT_REPO,
        data_root=config.data,
    )


# --- merge_retrieval ------------------------------------------------------------------

RETRIEVAL_TABLE = "retrieval"
MERGE_NAME = "_merge.json"


def retrieval_partition(config: RefreshConfig, start: dt.datetime) -> Path:
    """The retrieval route's partition of the window at ``start`` (what a merge reads)."""
    return Path(config.data) / RETRIEVAL_TABLE / partition_of(start)


def check_retrieval(config: RefreshConfig, start: dt.datetime) -> dict[str, Any]:
    """The retrieval partition a merged run reads: published, and its files conform."""
    from onepiece.inputs import check_partition

    directory = retrieval_partition(config, start)
    if not (directory / MANIFEST_NAME).is_file():
        raise UserError(
            f"merge_retrieval is on but the retrieval partition {directory} is not published: run "
            f"retrieval_refresh for {as_utc(start).isoformat()} first (same window_minutes), or turn "
            "merge_retrieval off to score the upstream candidates alone"
        )
    checked = check_partition(str(directory), RETRIEVAL_TABLE)
    return {"partition": f"{RETRIEVAL_TABLE}/{partition_of(start)}", "rows": checked.rows}


def _window_candidates(config: RefreshConfig, start: dt.datetime) -> pa.Table:
    """The upstream candidates of the window (``CANDIDATES_SCHEMA``)."""
    begin, end = _window(config, start)
    rows = storage.read_table(config.data, "candidates", _days(begin, end))
    ts = rows["request_timestamp"]
    return rows.filter(pc.and_(pc.greater_equal(ts, pa.scalar(begin, TIMESTAMP)), pc.less(ts, pa.scalar(end, TIMESTAMP))))


def merged_root(config: RefreshConfig, start: dt.datetime) -> Path:
    """Where a merged run stages its candidates (a data root holding ``candidates/``)."""
    return staging_root(config, start) / "merged"


def merge_retrieval(config: RefreshConfig, start: dt.datetime) -> dict[str, Any]:
    """With ``merge_retrieval``: the window's upstream candidates merged with the route's
    partition, staged as ``candidates/dt=.../`` under ``merged_root`` (one file per day),
    the counts in ``_merge.json`` beside them. Off: nothing to do."""
    from dataclasses import asdict

    from onepiece.retrieval.merge import merge_candidates

    if not config.merge_retrieval:
        return {"merged": False}
    directory = retrieval_partition(config, start)
    routed = storage.read_partition(directory, RETRIEVAL_TABLE)
    merged, counts = merge_candidates(_window_candidates(config, start), routed)
    root = merged_root(config, start)
    shutil.rmtree(root, ignore_errors=True)
    days = pc.strftime(merged["request_timestamp"], format="%Y-%m-%d")
    for day in _days(*_window(config, start)):  # every day of the window, even an empty one
        part = root / "candidates" / storage.day_partition(day)
        storage.write_parquet(merged.filter(pc.equal(days, day.isoformat())), part / "part-00000.parquet")
    route_manifest = json.loads((directory / MANIFEST_NAME).read_text())
    document = {
        "retrieval_partition": f"{RETRIEVAL_TABLE}/{partition_of(start)}",
        "retrieval_run_id": route_manifest["run_id"],
        "candidates": merged.num_rows,
        "counts": asdict(counts),
    }
    storage.write_json_atomic(document, root / MERGE_NAME)
    return {"merged": True, **document}


def merge_document(config: RefreshConfig, start: dt.datetime) -> dict[str, Any] | None:
    """The staged merge's record, or None when the run did not merge."""
    path = merged_root(config, start) / MERGE_NAME
    return json.loads(path.read_text()) if config.merge_retrieval and path.is_file() else None


# --- ensure_model_served --------------------------------------------------------------


def ensure_model_served(config: RefreshConfig) -> dict[str, Any]:
    """The model version this run scores with, checked to be servable.

    The version is the ``model_version`` Param, else the pin, else the newest one.
    With Triton URLs: every server must report that version ready with the expected
    config (the client's preflight). Embedded: the model repository must hold the
    version's weights and its version policy must load it; the server itself is
    started by the scoring task.
    """
    serving = config.serving
    pin = read_pin(config.data, serving.model_name)
    wanted = config.model_version or (pin["version"] if pin else None)
    if serving.urls:
        from onepiece.serving.client import TritonClientConfig, TritonRankerClient

        client_config = TritonClientConfig(
            urls=serving.urls, model_name=serving.model_name, model_version=wanted,
            protocol=serving.protocol,
        )
        with TritonRankerClient(client_config) as client:
            served = client.preflight()
        version, config_json = served.version, served.config_json
    else:
        from onepiece.serving.export import check_exported, check_served

        model_dir = Path(serving.model_repo) / serving.model_name
        exported = check_exported(serving.model_repo, serving.model_name)
        version = wanted or max(exported)  # the newest version always has the served layout
        try:
            check_served(serving.model_repo, serving.model_name, version)
        except UserError as err:
            source = "the model_version Param" if config.model_version else "serving/model_pin.json"
            raise UserError(f"{err} (version {version} from {source})" if wanted else str(err)) from None
        config_json = (model_dir / str(version) / "config.json").read_text()
    feature_service = json.loads(config_json).get("feature_service") or "onepiece_ranker_v1"
    return {
        "model_name": serving.model_name,
        "version": version,
        "feature_service": feature_service,
        "config_json": config_json,
        "pinned": pin is not None and pin["version"] == version,
    }


# --- assemble_contexts ----------------------------------------------------------------


def assemble_contexts(config: RefreshConfig, start: dt.datetime, model: dict[str, Any]) -> dict[str, Any]:
    """Build the run's context rows (Beam), side features from Feast as of T, staged."""
    out = staging_root(config, start) / "contexts" / partition_of(start)
    candidates = str(merged_root(config, start)) if merge_document(config, start) else None
    if config.merge_retrieval and candidates is None:
        raise UserError(f"merge_retrieval is on but {merged_root(config, start)} holds no merged candidates: "
                        "rerun the DAG from check_inputs")
    manifest = build_contexts(config, start, out, model["feature_service"], candidates)
    return {"rows": manifest["rows"], "defaulted": manifest["defaulted"], "dropped": manifest["dropped"]}


def build_contexts(config: RefreshConfig, start: dt.datetime, out: Path, feature_service: str,
                   candidates_root: str | None = None) -> dict[str, Any]:
    """The Beam contexts job for the window at ``start`` into ``out`` (candidates from
    ``candidates_root`` when given, else the data root's); its manifest."""
    from onepiece.assembly.config import AssemblyConfig
    from onepiece.assembly.feast_source import FeastSideSource
    from onepiece.assembly.jobs import BeamSettings, run_contexts

    start, end = _window(config, start)
    source = FeastSideSource(data_root=config.data, repo_dir=config.feature_repo, feature_service=feature_service)
    beam = BeamSettings(config.beam.runner, config.beam.contexts_workers, config.beam.args,
                        in_process=config.beam.contexts_in_process)
    return run_contexts(config.data, start, end, out, AssemblyConfig(), source, beam, candidates_root)


# --- score ----------------------------------------------------------------------------


def score(config: RefreshConfig, start: dt.datetime, model: dict[str, Any]) -> dict[str, Any]:
    """Score the staged contexts on Triton (Beam, RemoteModelHandler) into the staging root."""
    from onepiece.serving.score_job import ScoreJobConfig, score_window

    start, end = _window(config, start)
    job = ScoreJobConfig(
        data=str(staging_root(config, start)),
        start=start,
        end=end,
        urls=config.serving.urls,
        model_name=config.serving.model_name,
        model_version=int(model["version"]),
        expected_config_json=model["config_json"],
        feature_service=model["feature_service"],
        protocol=config.serving.protocol,
        max_failed_requests=config.max_failed_requests,
        runner=config.beam.runner,
        workers=config.beam.score_workers,
        beam_args=config.beam.args,
    )
    manifest = score_window(job, config.serving.model_repo)
    merge = record_sources(config, start)
    return {"rows": manifest["rows"], "model": manifest["model"], "run_id": manifest["run_id"],
            "merge": merge["counts"] if merge else None}


def record_sources(config: RefreshConfig, start: dt.datetime) -> dict[str, Any] | None:
    """Set every staged score row's ``recall_source`` from the candidates the run scored
    (the merged ones, else the window's upstream ones), rewriting each shard in place;
    a merged run's manifest gets the merge's record. Returns that record (or None)."""
    from onepiece.retrieval.merge import with_sources

    staged = staging_root(config, start) / "scores" / partition_of(start)
    merge = merge_document(config, start)
    if merge:
        candidates = storage.read_table(str(merged_root(config, start)), "candidates", _days(*_window(config, start)))
    else:
        candidates = _window_candidates(config, start)
    for path in sorted(staged.glob("*.parquet")):
        rows = conform(pq.read_table(path), "scores", str(path))
        storage.write_parquet(with_sources(rows, candidates, str(path)), path)
    if merge:
        manifest_path = staged / MANIFEST_NAME
        manifest = json.loads(manifest_path.read_text())
        manifest["merge"] = json.dumps(merge, sort_keys=True)
        validate_manifest(manifest, str(manifest_path))
        storage.write_json_atomic(manifest, manifest_path)
    return merge


# --- report ---------------------------------------------------------------------------


def published_partitions(data: str) -> list[str]:
    """Published scores partitions (``dt=.../hour=...``, with a manifest), sorted."""
    base = Path(data) / "scores"
    return sorted(
        str(p.parent.relative_to(base))
        for p in base.glob(f"dt=*/hour=*/{MANIFEST_NAME}")
    )


def previous_partition(data: str, partition: str) -> str | None:
    """The published partition a run is compared with (drift in the report, volume and
    drift in the guard): the same hour a day earlier when it is published (traffic has a
    daily cycle), else the newest published partition before ``partition``."""
    earlier = [p for p in published_partitions(data) if p < partition]
    start = dt.datetime.strptime(partition, "dt=%Y-%m-%d/hour=%H")
    day_before = partition_of(start - dt.timedelta(days=1))
    if day_before in earlier:
        return day_before
    return earlier[-1] if earlier else None


def report(config: RefreshConfig, start: dt.datetime, inputs: dict[str, Any]) -> dict[str, Any]:
    """Write the quality report into the staged partition; returns its headline figures."""
    from onepiece.pipeline.report import write_report

    start, end = _window(config, start)
    partition = partition_of(start)
    staged = staging_root(config, start) / "scores" / partition
    scores = storage.read_partition(staged, "scores")
    contexts_manifest = json.loads(
        (staging_root(config, start) / "contexts" / partition / MANIFEST_NAME).read_text()
    )
    previous = previous_partition(config.data, partition)
    previous_rows = storage.read_partition(Path(config.data) / "scores" / previous, "scores") if previous else None
    manifest = json.loads((staged / MANIFEST_NAME).read_text())
    merge = merge_document(config, start)
    figures = write_report(
        scores,
        previous_rows,
        staged,
        title=f"prerank_refresh {partition} (as of {start.isoformat()})",
        # A merged run scores the merged candidates: coverage is measured against them.
        candidates_in_window=int(merge["candidates"] if merge else inputs["candidates"]),
        defaulted=contexts_manifest.get("defaulted") or {},
        run={
            "partition": partition,
            "window": [start.isoformat(), end.isoformat()],
            "previous_partition": previous,
            "model": manifest["model"],
            "scores_run_id": manifest["run_id"],
            "merge": merge,
        },
    )
    return {"coverage": figures["coverage"], "drift": figures["drift"]}


# --- guard ----------------------------------------------------------------------------

REFUSED_ROOT = Path("_refused") / "prerank_refresh"


def _requests_in(directory: Path) -> int:
    import pyarrow.parquet as pq

    ids = [pq.read_table(f, columns=["request_id"])["request_id"] for f in sorted(directory.glob("*.parquet"))]
    return pc.count_distinct(pa.chunked_array([c for col in ids for c in col.chunks], pa.string())).as_py() if ids else 0


def _sampled_gap(config: RefreshConfig, version: int, scores: pa.Table, contexts: pa.Table) -> float | None:
    """Served vs in-process probabilities on a sample of requests, or None when the
    served version's weights are not in the model repository (remote servers)."""
    from onepiece.model import load_checkpoint
    from onepiece.pipeline.guard import sample_gap, sample_requests
    from onepiece.serving.export import exported_versions
    from onepiece.serving.inprocess import probabilities_in_process

    weights = exported_versions(Path(config.serving.model_repo) / config.serving.model_name).get(version)
    sample = sample_requests(contexts, config.guard.sample_requests)
    if weights is None or sample.num_rows == 0:
        return None
    return sample_gap(scores, sample, probabilities_in_process(load_checkpoint(weights), sample))


def guard(config: RefreshConfig, start: dt.datetime) -> dict[str, Any]:
    """Check the staged partition before it is published (``onepiece.pipeline.guard``).

    Writes the verdict beside the rows and into the manifest; on a failed check (and no
    ``force``) copies the report for the operator and raises :class:`GuardRefused`.
    """
    from onepiece.contract import CONTEXTS_SCHEMA
    from onepiece.pipeline.guard import GuardRefused, Previous, evaluate, refusal_message, verdict, write_verdict
    from onepiece.pipeline.report import REPORT_JSON

    partition = partition_of(start)
    root = staging_root(config, start)
    staged = root / "scores" / partition
    scores = storage.read_partition(staged, "scores")
    contexts = storage.read_partition(root / "contexts" / partition, "contexts").select(CONTEXTS_SCHEMA.names)
    figures = json.loads((staged / REPORT_JSON).read_text())
    manifest_path = staged / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    version = int(manifest["model"]["version"])
    last = previous_partition(config.data, partition)
    previous = None
    if last:
        published = Path(config.data) / "scores" / last
        last_model = json.loads((published / MANIFEST_NAME).read_text())["model"]
        day_before = last == partition_of(as_utc(start) - dt.timedelta(days=1))
        previous = Previous(last, _requests_in(published), int(last_model["version"]), day_before)
    gap = _sampled_gap(config, version, scores, contexts)
    checks = evaluate(config.guard, scores, contexts, figures, version, previous, gap)
    document = verdict(config.guard, checks)
    manifest["guard"] = json.dumps(document, sort_keys=True)
    storage.write_json_atomic(manifest, manifest_path)
    if not document["passed"] and not document["forced"]:
        refused = Path(config.data) / REFUSED_ROOT / partition
        with storage.staged_dir(refused) as out:
            for path in sorted(staged.glob("_*")):
                shutil.copyfile(path, out / path.name)
            write_verdict(document, out)
        raise GuardRefused(refusal_message(partition, checks, refused))
    return {"passed": document["passed"], "forced": document["forced"], "failed": document["failed"]}


# --- publish --------------------------------------------------------------------------


def publish(config: RefreshConfig, start: dt.datetime) -> dict[str, Any]:
    """Check the staged partition once more, then move contexts and scores into place."""
    partition = partition_of(start)
    root = staging_root(config, start)
    staged_scores = root / "scores" / partition
    staged_contexts = root / "contexts" / partition
    if not (staged_scores / MANIFEST_NAME).is_file():
        raise UserError(f"nothing to publish: {staged_scores} holds no scored partition")
    rows = storage.read_partition(staged_scores, "scores")
    if not rows.schema.equals(SCORES_SCHEMA, check_metadata=False):
        raise ContractError("scores", str(staged_scores), "staged rows do not match SCORES_SCHEMA")
    manifest = json.loads((staged_scores / MANIFEST_NAME).read_text())
    validate_manifest(manifest, str(staged_scores / MANIFEST_NAME))
    if manifest["rows"]["scores"] != rows.num_rows:
        raise UserError(f"{staged_scores}: manifest counts {manifest['rows']['scores']} rows, files hold {rows.num_rows}")
    final = Path(config.data) / "scores" / partition
    if staged_contexts.is_dir():
        storage.publish_dir(staged_contexts, Path(config.data) / "contexts" / partition)
    storage.publish_dir(staged_scores, final)
    shutil.rmtree(Path(config.data) / REFUSED_ROOT / partition, ignore_errors=True)  # a stale refusal
    _remove_staging(config, start)
    return {"partition": partition, "path": str(final), "rows": rows.num_rows, "run_id": manifest["run_id"]}


# --- serving_table --------------------------------------------------------------------


def serving_table(config: RefreshConfig, start: dt.datetime) -> dict[str, Any]:
    """Point ``<data>/serving/prerank_scores.json`` at the newest published partition.

    The pre-ranker reads the pointer, then the partition it names (Parquet, one row per
    (request_id, item_id), with ``score`` and ``rank``). A backfill of an older date
    publishes its partition without moving the pointer back.
    """
    partition = partition_of(start)
    newest = published_partitions(config.data)[-1:]
    if partition not in published_partitions(config.data):
        raise UserError(f"scores partition {partition} is not published under {config.data}")
    pointer_path = Path(config.data) / SERVING_POINTER
    current = json.loads(pointer_path.read_text()) if pointer_path.is_file() else None
    target = newest[0]
    manifest = json.loads((Path(config.data) / "scores" / target / MANIFEST_NAME).read_text())
    pointer = {
        "partition": target,
        "path": str(Path("scores") / target),
        "run_id": manifest["run_id"],
        "model": manifest["model"],
        "rows": manifest["rows"]["scores"],
    }
    if current != pointer:
        storage.write_json_atomic(pointer, pointer_path)
    return pointer | {"moved": current != pointer}
