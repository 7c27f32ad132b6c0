"""Benchmark: the refresh's real path on windows of growing size, stage by stage.

    .venv/bin/python benchmarks/refresh_scale.py [--candidates 250000,500000,1000000]
        [--per-request 200] [--users 2000] [--workers 1] [--no-in-process] [--score-workers 1]
        [--runner FnApiRunner]
        [--cache .cache/benchmarks/refresh_scale]

1. A synthetic world (the default WorldConfig with ``--per-request`` candidates per
   request and ``--users`` users; generated once into the cache) and the Feast registry
   over it. A freshly initialised model of the product variant (speed does not depend
   on the weights) exported like the product's (one CPU instance, one torch thread).
2. For every size in ``--candidates``: the window from the live day's midnight that
   holds about that many candidates (whole minutes: the refresh's window knob), then the
   ``prerank_refresh`` DAG's task bodies in order, the same library calls
   (``onepiece.pipeline.refresh``): check_inputs, ensure_model_served, contexts (Beam
   job, Feast side features as of T), score (Beam job on an embedded tritonserver),
   report, guard, publish. Each stage's wall seconds, CPU seconds of the whole process
   tree (Beam SDK workers, tritonserver and its stub included; onepiece.memory.TreeCpu)
   and peak RSS of the tree (TreePeak).
3. On the same contexts, in the same run: the model's in-process candidates/s
   (onepiece.serving.inprocess, one torch thread like a Triton instance), and the
   single-process DuckDB contexts reference of benchmarks/context_assembly.py with the
   same Feast side source (``contexts_over_single``).

``job_cands_per_s`` is the largest window's candidates over the score stage's wall time
(server start, preflight, Beam pipeline, publish into staging); ``job_over_model`` its
ratio to the in-process rate. ``time_ratio_2x``: for the contexts and score stages, the
time of the largest window over the time of the one with about half its candidates,
scaled to exactly twice the candidates (time x 2 / candidate ratio); the larger of the
two. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from context_assembly import single_process, world  # benchmarks/: the script's own folder

from onepiece import storage
from onepiece.memory import GB, TreeCpu, TreePeak
from onepiece.world import WorldConfig


@dataclasses.dataclass
class Stage:
    wall_s: float
    cpu_s: float
    peak_rss_gb: float

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in dataclasses.asdict(self).items()}


def log(message: str) -> None:
    """Progress on stderr: stdout ends with the JSON line."""
    print(message, file=sys.stderr, flush=True)


def timed(stages: dict[str, Stage], name: str, call):
    """Run ``call()`` as stage ``name``: wall, process-tree CPU and peak RSS."""
    with TreePeak(os.getpid()) as peak, TreeCpu() as cpu:
        began = time.perf_counter()
        result = call()
        wall = time.perf_counter() - began
    stages[name] = Stage(wall, cpu.cpu_s, peak.peak_bytes / GB)
    log(f"  {name}: {wall:.1f} s wall, {cpu.cpu_s:.1f} s CPU, {peak.peak_bytes / GB:.2f} GB")
    return result


def window_minutes(data: Path, live: dt.date, target: int) -> tuple[int, int]:
    """The shortest whole-minute window from ``live``'s midnight holding >= ``target``
    candidates, and its candidate count."""
    cands = storage.read_table(str(data), "candidates", [live]).select(["request_timestamp"])
    start = np.datetime64(dt.datetime.combine(live, dt.time()), "us")
    minutes = (cands["request_timestamp"].to_numpy().astype("datetime64[us]") - start) // np.timedelta64(1, "m")
    counts = np.cumsum(np.bincount(minutes.astype(np.int64), minlength=24 * 60))
    if counts[-1] < target:
        raise SystemExit(
            f"the live day holds {counts[-1]} candidates, fewer than {target}: raise --users or --per-request"
        )
    m = int(np.searchsorted(counts, target)) + 1
    return m, int(counts[m - 1])


def export_model(root: Path) -> Path:
    from onepiece.model import OnePiece, save_checkpoint, variant_config
    from onepiece.pipeline.config import PRODUCT_VARIANT
    from onepiece.serving.export import ExportConfig, export_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(OnePiece(variant_config(PRODUCT_VARIANT)), root / "checkpoint")
    repo = root / "model_repo"
    export_checkpoint(checkpoint, repo, version=1, config=ExportConfig(instance_kind="cpu"))
    return repo


def model_rate(repo: Path, contexts_dir: Path) -> tuple[float, float]:
    """In-process candidates per second and per CPU second of the served weights on the
    staged contexts (1 thread)."""
    from onepiece.model import load_checkpoint
    from onepiece.serving.export import exported_versions
    from onepiece.serving.inprocess import probabilities_in_process

    contexts = storage.read_partition(contexts_dir, "contexts")
    n = int(pc.sum(pc.list_value_length(contexts["cand_item_id"])).as_py())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_checkpoint(exported_versions(repo / "onepiece_ranker")[1])
        probabilities_in_process(model, contexts.slice(0, 8))  # warm-up
        began, cpu = time.perf_counter(), time.process_time()
        probabilities_in_process(model, contexts)
        return n / (time.perf_counter() - began), n / (time.process_time() - cpu)
    finally:
        torch.set_num_threads(threads)


def refresh(config, start: dt.datetime, repo: Path, with_model: bool, with_single: bool) -> dict:
    """One refresh at ``start`` through the DAG's task bodies, stage by stage."""
    from onepiece.assembly.feast_source import FeastSideSource
    from onepiece.pipeline import refresh as tasks

    stages: dict[str, Stage] = {}
    inputs = timed(stages, "check_inputs", lambda: tasks.check_inputs(config, start))
    model = timed(stages, "ensure_model_served", lambda: tasks.ensure_model_served(config))
    contexts = timed(stages, "contexts", lambda: tasks.assemble_contexts(config, start, model))
    scored = timed(stages, "score", lambda: tasks.score(config, start, model))
    timed(stages, "report", lambda: tasks.report(config, start, inputs))
    timed(stages, "guard", lambda: tasks.guard(config, start))
    staged_contexts = tasks.staging_root(config, start) / "contexts" / tasks.partition_of(start)
    extra: dict = {}
    if with_model:
        rate, per_cpu = model_rate(repo, staged_contexts)
        extra |= {"model_cands_per_s": rate, "model_cands_per_cpu_s": per_cpu}
        log(f"  model in-process: {rate:.0f} candidates/s, {per_cpu:.0f} per CPU s")
    if with_single:
        source = FeastSideSource(data_root=config.data, feature_service=model["feature_service"])
        table, _, single_s = single_process(Path(config.data), start, start + config.window, source)
        assert table.num_rows == contexts["rows"]["contexts"], "Beam and single-process disagree"
        extra["single_s"] = single_s
        log(f"  contexts single-process: {single_s:.1f} s")
    published = timed(stages, "publish", lambda: tasks.publish(config, start))
    candidates = scored["rows"]["scores"]
    assert published["rows"] == candidates == inputs["candidates"], (published, scored, inputs)
    return {"candidates": candidates, "requests": inputs["requests"], "stages": stages, **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default="250000,500000,1000000",
                        help="comma-separated window sizes, in candidates")
    parser.add_argument("--per-request", type=int, default=200, help="the world's candidates per request")
    parser.add_argument("--users", type=int, default=WorldConfig().n_users)
    parser.add_argument("--workers", type=int, default=1, help="local Beam workers of the contexts job")
    parser.add_argument("--score-workers", type=int, default=1, help="local Beam workers of the scoring job")
    parser.add_argument("--in-process", action=argparse.BooleanOptionalAction, default=True,
                        help="with one contexts worker, run it in the job's process (BeamConfig.contexts_in_process)")
    parser.add_argument("--runner", default="FnApiRunner")
    parser.add_argument("--cache", default=".cache/benchmarks/refresh_scale")
    parser.add_argument("--no-model", action="store_true", help="skip the in-process model rate")
    parser.add_argument("--no-single", action="store_true", help="skip the single-process contexts")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    from onepiece.features.registry import apply
    from onepiece.features.repo import FeatureRepoConfig
    from onepiece.pipeline.config import BeamConfig, RefreshConfig, ServingConfig
    from onepiece.pipeline.guard import GuardConfig

    sizes = sorted(int(s) for s in args.candidates.split(","))
    cache = Path(args.cache).absolute()
    cache.mkdir(parents=True, exist_ok=True)
    config = WorldConfig(candidates_per_request=args.per_request, n_users=args.users)
    began = time.perf_counter()
    data = world(cache, config, f"world_c{args.per_request}_u{args.users}")
    log(f"world: {time.perf_counter() - began:.1f} s")
    apply(FeatureRepoConfig(data_root=str(data)))
    repo = export_model(cache)
    live = config.day(config.days)
    start = dt.datetime.combine(live, dt.time(), dt.UTC)

    runs = []
    for size in sizes:
        minutes, expected = window_minutes(data, live, size)
        log(f"window {minutes} min: {expected} candidates")
        refresh_config = RefreshConfig(
            data=str(data), serving=ServingConfig(model_repo=str(repo)),
            window=dt.timedelta(minutes=minutes),
            beam=BeamConfig(args.runner, score_workers=args.score_workers, contexts_workers=args.workers,
                            contexts_in_process=args.in_process),
            # A fresh model's scores are what they are; the guard's work is still done.
            guard=GuardConfig(force=True),
        )
        last = size == sizes[-1]
        run = refresh(refresh_config, start, repo, with_model=last and not args.no_model,
                      with_single=last and not args.no_single)
        runs.append(run | {"window_minutes": minutes})

    big = runs[-1]
    stages = big["stages"]
    job_rate = big["candidates"] / stages["score"].wall_s
    figures: dict = {
        "candidates": big["candidates"],
        "requests": big["requests"],
        "window_minutes": big["window_minutes"],
        "job_cands_per_s": round(job_rate, 1),
        "job_cands_per_cpu_s": round(big["candidates"] / stages["score"].cpu_s, 1),
        "refresh_cands_per_s": round(big["candidates"] / sum(s.wall_s for s in stages.values()), 1),
        "peak_rss_gb": round(max(s.peak_rss_gb for r in runs for s in r["stages"].values()), 3),
        "stages": {name: s.rounded() for name, s in stages.items()},
        "sizes": [
            {"candidates": r["candidates"], "window_minutes": r["window_minutes"],
             "stages_wall_s": {n: round(s.wall_s, 2) for n, s in r["stages"].items()}}
            for r in runs
        ],
    }
    if "model_cands_per_s" in big:
        figures["model_cands_per_s"] = round(big["model_cands_per_s"], 1)
        figures["job_over_model"] = round(job_rate / big["model_cands_per_s"], 3)
        figures["model_cands_per_cpu_s"] = round(big["model_cands_per_cpu_s"], 1)
        # Load-independent: the job's CPU seconds (every process) per candidate against
        # the model's alone.
        figures["job_over_model_cpu"] = round(figures["job_cands_per_cpu_s"] / big["model_cands_per_cpu_s"], 3)
    if "single_s" in big:
        figures["contexts_single_s"] = round(big["single_s"], 2)
        figures["contexts_over_single"] = round(big["single_s"] / stages["contexts"].wall_s, 3)
    half = [r for r in runs[:-1] if 1.5 <= big["candidates"] / r["candidates"] <= 2.5]
    if half:
        small = half[-1]
        scale = 2 * small["candidates"] / big["candidates"]
        by_stage = {
            name: round(stages[name].wall_s / small["stages"][name].wall_s * scale, 3)
            for name in ("contexts", "score")
        }
        figures["time_ratio_2x_by_stage"] = by_stage
        figures["time_ratio_2x"] = max(by_stage.values())
    figures |= {"runner": args.runner, "workers": args.workers, "score_workers": args.score_workers,
                "in_process": args.in_process, "per_request": args.per_request,
                "users": args.users, "cores": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
