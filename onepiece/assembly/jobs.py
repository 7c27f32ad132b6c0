"""The drivers of the two assembly jobs: resolve inputs, run the Beam pipeline, publish.

``run_contexts`` builds context rows for the candidate requests of [start, end), all as
of T = start. ``run_trainset`` builds training rows for the requests of days D1..D2 that
have at least one click, each as of its own request time, with per-candidate labels.

Both check every input file against the contract first (``onepiece.inputs``: a damaged
file stops the run by name before the pipeline starts), stage their output beside
``out`` and publish it in one step with the manifest (``_manifest.json``) inside; a
contract violation anywhere fails the run by name and nothing is published. Outputs are
byte-identical across reruns and worker counts: the shard count is fixed
(``AssemblyConfig.shards``), each shard is one file written from one sorted table, and
every list column has a defined order.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa

from onepiece import storage
from onepiece.assembly import transforms as T
from onepiece.assembly.config import AssemblyConfig
from onepiece.assembly.contexts import SideSource
from onepiece.beam_options import pipeline_session, release
from onepiece.beam_portable import SUMMARY_NAME, Routed, RunSummary, check_runner_support, read_summary
from onepiece.contract import CONTEXTS_SCHEMA, TRAINING_SCHEMA, ContractError, validate_manifest
from onepiece.errors import UserError
from onepiece.inputs import CheckedInputs, check_run_inputs

MANIFEST_NAME = "_manifest.json"
_MICRO = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class JobSpec:
    """What one run reads and writes, resolved by the driver before the pipeline starts."""

    table: str  # "contexts" or "training" (the contract table of the rows)
    schema: pa.Schema
    cand_files: list[str]
    ev_files: list[str]
    window: tuple[dt.datetime, dt.datetime]  # candidate requests with time in [start, end)
    as_of: dt.datetime | None  # the refresh time T; None: each request's own time
    partition: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class BeamSettings:
    """Which runner runs the job (see onepiece.beam_options)."""

    runner: str = "FnApiRunner"
    workers: int = 2
    extra: tuple[str, ...] = field(default_factory=tuple)
    # One local worker inside the job's process (onepiece.beam_options.pipeline_options).
    in_process: bool = False


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def event_days(root: str, first: dt.date, last: dt.date, optional_last: bool = False) -> list[dt.date]:
    """The events partitions of [first, last] that must exist.

    Days before the log's first partition are skipped (the log has a beginning); every
    later day must be there, or the run fails naming the missing partition. With
    ``optional_last``, a missing ``last`` day is skipped (labels spilling past midnight).
    """
    available = storage.list_days(root, "events")
    if not available:
        raise ContractError("events", f"{root}/events", "table is missing (no partitions)")
    days = [d for d in _days(first, last) if d >= available[0]]
    if optional_last and days and days[-1] == last and last not in available:
        days = days[:-1]
    return days


def check_contexts_inputs(
    root: str, start: dt.datetime, end: dt.datetime, config: AssemblyConfig = AssemblyConfig(),
    candidates_root: str | None = None,
) -> CheckedInputs:
    """Check every file a contexts run of [start, end) reads: the candidates of the
    window's days (under ``candidates_root`` when given), the events of the look-back
    before T = start, the side tables."""
    start, end = _utc(start), _utc(end)
    cand_days = _days(start.date(), (end - _MICRO).date())
    ev_days = event_days(root, (start - config.lookback).date(), (start - _MICRO).date())
    return check_run_inputs(root, cand_days, ev_days, candidates_root=candidates_root)


def check_trainset_inputs(
    root: str, from_day: dt.date, to_day: dt.date, config: AssemblyConfig = AssemblyConfig()
) -> CheckedInputs:
    """Check every file a trainset run of days from_day..to_day reads."""
    first = from_day - dt.timedelta(days=config.lookback.days + 1)
    last = to_day + dt.timedelta(days=1)  # events of late requests may spill past midnight
    ev_days = event_days(root, first, last, optional_last=True)
    return check_run_inputs(root, _days(from_day, to_day), ev_days)


def _fingerprints(root: str, files: list[str]) -> list[dict[str, str]]:
    base = str(Path(root).absolute())
    return [
        {"path": str(Path(f).relative_to(base)) if f.startswith(base) else f,
         "fingerprint": storage.fingerprint_files([f])}
        for f in files
    ]


def default_side_source(data: str) -> SideSource:
    """The Feast-backed side features of the project's feature repo over ``data``."""
    from onepiece.assembly.feast_source import FeastSideSource

    return FeastSideSource(data_root=data)


def run_contexts(
    data: str,
    start: dt.datetime,
    end: dt.datetime,
    out: str | Path,
    config: AssemblyConfig = AssemblyConfig(),
    side_source: SideSource | None = None,
    beam_settings: BeamSettings = BeamSettings(),
    candidates_root: str | None = None,
) -> dict[str, Any]:
    """Context rows for the candidate requests with request_timestamp in [start, end).

    Every row is as of T = start: IH, PA and side features use only what was observed
    strictly before T. The candidates come from ``candidates_root``'s ``candidates/``
    table when given (a refresh's merged candidates), else from ``data``'s. Returns the
    manifest written beside the rows.
    """
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise UserError(f"--end ({end.isoformat()}) must be after --start ({start.isoformat()})")
    root = storage.data_root(data)
    checked = check_contexts_inputs(root, start, end, config, candidates_root)
    spec = JobSpec(
        "contexts", CONTEXTS_SCHEMA, checked.files("candidates"), checked.files("events"),
        (start, end), start,
        partition=f"{start.isoformat()}..{end.isoformat()}",
        settings={"job": "contexts", "start": start.isoformat(), "end": end.isoformat()},
    )
    return _run(root, out, spec, config, side_source or default_side_source(root), beam_settings)


def run_trainset(
    data: str,
    from_day: dt.date,
    to_day: dt.date,
    out: str | Path,
    config: AssemblyConfig = AssemblyConfig(),
    side_source: SideSource | None = None,
    beam_settings: BeamSettings = BeamSettings(),
) -> dict[str, Any]:
    """Training rows for the clicked requests of days from_day..to_day (inclusive).

    Each row is as of its own request time, with labels per candidate for every task.
    """
    if to_day < from_day:
        raise UserError(f"--to-day ({to_day}) must not be before --from-day ({from_day})")
    root = storage.data_root(data)
    checked = check_trainset_inputs(root, from_day, to_day, config)
    window = (
        dt.datetime.combine(from_day, dt.time(), dt.UTC),
        dt.datetime.combine(to_day + dt.timedelta(days=1), dt.time(), dt.UTC),
    )
    spec = JobSpec(
        "training", TRAINING_SCHEMA, checked.files("candidates"), checked.files("events"),
        window, None,
        partition=f"{from_day.isoformat()}..{to_day.isoformat()}",
        settings={"job": "trainset", "from_day": from_day.isoformat(), "to_day": to_day.isoformat()},
    )
    return _run(root, out, spec, config, side_source or default_side_source(root), beam_settings)


def _run(
    root: str,
    out: str | Path,
    spec: JobSpec,
    config: AssemblyConfig,
    side_source: SideSource,
    beam_settings: BeamSettings,
) -> dict[str, Any]:
    """Run the pipeline of ``spec`` into a staging dir; publish it with its manifest."""
    began = time.monotonic()
    check = getattr(side_source, "check", None)
    if check is not None:  # e.g. the Feast registry: fail here, not inside a worker
        check()
    inputs = _fingerprints(root, spec.cand_files + spec.ev_files)
    as_of, schema = spec.as_of, spec.schema
    settings = {
        **spec.settings,
        "assembly": json.loads(config.to_json()),
        "side_source": type(side_source).__name__,
        "runner": beam_settings.runner,
    }
    run_id = hashlib.sha256(
        json.dumps([settings, inputs], sort_keys=True).encode()
    ).hexdigest()[:16]
    with storage.staged_dir(out) as staging, pipeline_session(
        beam_settings.runner, beam_settings.workers, beam_settings.extra, beam_settings.in_process
    ) as options:
        # The run summary (counts, rejections) is written where the workers write the
        # output (a remote runner's workers cannot reach a local temp dir); removed
        # before publishing.
        summary_path = staging / SUMMARY_NAME
        with beam.Pipeline(options=options) as p:
            cands = p | "ReadCandidates" >> T.ReadContractTable("candidates", spec.cand_files)
            events = p | "ReadEvents" >> T.ReadContractTable("events", spec.ev_files)
            window = cands[T.ROWS] | "SelectWindow" >> Routed(T.SelectWindowFn(*spec.window), T.ROWS)
            summary = [cands["summary"], events["summary"], window["summary"]]
            ev_rows = events[T.ROWS]
            if as_of is not None:
                cut = ev_rows | "PointInTime" >> Routed(T.CutEventsFn(as_of, config.lookback), T.ROWS)
                ev_rows = cut[T.ROWS]
                summary.append(cut["summary"])
            rows, assembly_summary = (window[T.ROWS], ev_rows) | "AssembleContexts" >> T.AssembleContexts(
                config, as_of, side_source, schema
            )
            written = rows | "WriteShards" >> T.WriteShards(str(staging), schema)
            # Last, so that a runner computing only the final step still runs them all.
            _ = (*summary, *assembly_summary, written) | "RunSummary" >> RunSummary(str(summary_path))
            check_runner_support(p, beam_settings.runner)  # a clear error, not a silently dropped step
        release(p.result)
        found = read_summary(summary_path)
        summary_path.unlink()
        _raise_first_rejection(found["problems"])
        counters = found["counts"]
        _check_accounting(counters)
        manifest = _manifest(spec.table, spec.partition, run_id, began, counters, inputs, settings)
        validate_manifest(manifest, str(Path(out) / MANIFEST_NAME))
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _raise_first_rejection(lines: list[str]) -> None:
    """Fail the run with the first contract violation any step reported (sorted: stable)."""
    if not lines:
        return
    first = json.loads(lines[0])
    more = f" (and {len(lines) - 1} more violations)" if len(lines) > 1 else ""
    raise ContractError(
        first["table"], first["source"], first["problem"] + more, first["column"], first["row"]
    )


def _check_accounting(counters: dict[str, int]) -> None:
    """Every candidate row of the window is in a request, every request is written or
    dropped with a reason; otherwise the run fails (nothing is published)."""
    cands_in, cands_used = counters.get("candidates_in_window", 0), counters.get("candidates", 0)
    requests = counters.get("requests", 0)
    accounted = counters.get("rows_written", 0) + counters.get("dropped_request_without_click", 0)
    if cands_in != cands_used or requests != accounted:
        raise RuntimeError(
            f"the Beam run lost rows: {cands_in} candidate rows in the window, {cands_used} "
            f"assembled; {requests} requests, {accounted} written or dropped"
        )


def _manifest(
    table: str,
    partition: str,
    run_id: str,
    began: float,
    counters: dict[str, int],
    inputs: list[dict[str, str]],
    settings: dict[str, Any],
) -> dict[str, Any]:
    rows = {
        "candidates_read": counters.get("candidates_rows_read", 0),
        "events_read": counters.get("events_rows_read", 0),
        "requests": counters.get("requests", 0),
        "candidates": counters.get("candidates", 0),
        table: counters.get("rows_written", 0),
    }
    # The reasons a run of this kind can have are always listed, zero or not.
    always = "event_at_or_after_as_of" if table == "contexts" else "request_without_click"
    dropped = {always: 0}
    dropped |= {k.removeprefix("dropped_"): v for k, v in counters.items() if k.startswith("dropped_")}
    defaulted = {f"unknown_{kind}": 0 for kind in ("items", "users", "queries")}
    defaulted |= {
        k.removeprefix("defaulted_"): v for k, v in counters.items() if k.startswith("defaulted_")
    }
    return {
        "table": table,
        "partition": partition,
        "run_id": run_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_time_s": round(time.monotonic() - began, 3),
        "rows": rows,
        "inputs": inputs,
        "dropped": dict(sorted(dropped.items())),
        "defaulted": dict(sorted(defaulted.items())),
        "model": None,
        "settings": json.dumps(settings, sort_keys=True),
    }
