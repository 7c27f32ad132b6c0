"""Benchmark: context assembly with Beam against the same logic in one process.

    .venv/bin/python benchmarks/context_assembly.py [--cache DIR] [--workers 2] [--runner dask]

On the default world (WorldConfig()) and on a world with twice the users (twice the
requests and events, same catalogue), it builds the contexts of the live day (a refresh
at T = live-day midnight) twice:

- beam:    onepiece.assembly.jobs.run_contexts on FnApiRunner (or ``--runner dask``: an
           embedded Dask LocalCluster), ``--workers`` processes, Parquet in and out
           (the production job);
- single:  onepiece.assembly.contexts.assemble_local in this process (read with
           storage.read_table, DuckDB with as many threads as cores), same output.

Both use the same side-feature source (point-in-time snapshot lookups), so the figures
compare the assembly itself. Worlds are generated once into the cache. The last stdout
line is one JSON object; beam_over_single is the throughput ratio (1/3 = "within 3x"),
time_ratio_2x_data the Beam wall time on 2x the data over 1x (linear if <= 2.2). Beam's
fixed cost (worker start-up, pipeline translation: several seconds) weighs less as the
data grows, hence also beam_over_single_2x.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from onepiece import storage
from onepiece.assembly import AssemblyConfig
from onepiece.assembly.contexts import assemble_local
from onepiece.assembly.jobs import BeamSettings, run_contexts
from onepiece.assembly.side import SnapshotSideSource
from onepiece.world import WorldConfig, generate_world


def world(cache: Path, config: WorldConfig, name: str) -> Path:
    root = cache / name
    stamp = root / ".config.json"
    wanted = json.dumps(dataclasses.asdict(config), default=str, sort_keys=True)
    if not (stamp.exists() and stamp.read_text() == wanted):
        shutil.rmtree(root, ignore_errors=True)
        generate_world(config, root)
        stamp.write_text(wanted)
    return root


def side_source(root: Path) -> SnapshotSideSource:
    r = str(root)
    return SnapshotSideSource(
        storage.read_table(r, "items"), storage.read_table(r, "users"), storage.read_table(r, "queries")
    )


def single_process(root: Path, start: dt.datetime, end: dt.datetime, source) -> tuple:
    """The reference: the contexts of [start, end) as of ``start`` in this process (read
    with storage.read_table, DuckDB with as many threads as cores); (table, counts, wall s)."""
    began = time.perf_counter()
    r = str(root)
    days = [start.date() + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    have = set(storage.list_days(r, "candidates"))
    cands = storage.read_table(r, "candidates", [d for d in days if d in have])
    events = storage.read_table(r, "events", [d for d in storage.list_days(r, "events") if d < start.date()])
    table, counts = assemble_local(
        cands, events, source, AssemblyConfig(), as_of=start, window=(start, end),
        threads=os.cpu_count() or 1,
    )
    return table, counts, time.perf_counter() - began


def measure(root: Path, config: WorldConfig, beam: BeamSettings, scratch: Path) -> dict[str, float]:
    live = config.day(config.days)
    start = dt.datetime.combine(live, dt.time(), dt.UTC)
    end = start + dt.timedelta(days=1)
    source = side_source(root)

    table, counts, single_s = single_process(root, start, end, source)

    r = str(root)
    began = time.perf_counter()
    manifest = run_contexts(
        r, start, end, scratch / root.name, side_source=source,
        beam_settings=beam,
    )
    beam_s = time.perf_counter() - began
    assert manifest["rows"]["contexts"] == table.num_rows, "Beam and single-process disagree"
    return {
        "contexts": table.num_rows,
        "candidates": counts.rows["candidates"],
        "events_read": manifest["rows"]["events_read"],
        "single_s": single_s,
        "beam_s": beam_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=".cache/benchmarks/context_assembly")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runner", default="FnApiRunner", help="FnApiRunner or dask")
    args = parser.parse_args()
    beam = BeamSettings(runner=args.runner, workers=args.workers)
    logging.disable(logging.WARNING)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    base = WorldConfig()
    double = dataclasses.replace(base, n_users=2 * base.n_users)
    worlds = [(world(cache, base, "default"), base), (world(cache, double, "double_users"), double)]

    with tempfile.TemporaryDirectory() as scratch:
        one, two = (measure(root, cfg, beam, Path(scratch)) for root, cfg in worlds)

    beam_rate = one["contexts"] / one["beam_s"]
    single_rate = one["contexts"] / one["single_s"]
    figures = {
        "contexts": one["contexts"],
        "candidates": one["candidates"],
        "events_read": one["events_read"],
        "runner": args.runner,
        "workers": args.workers,
        "cores": os.cpu_count(),
        "beam_s": round(one["beam_s"], 2),
        "single_process_s": round(one["single_s"], 2),
        "beam_contexts_per_s": round(beam_rate, 1),
        "single_process_contexts_per_s": round(single_rate, 1),
        "beam_events_per_s": round(one["events_read"] / one["beam_s"], 1),
        "single_process_events_per_s": round(one["events_read"] / one["single_s"], 1),
        "beam_over_single": round(beam_rate / single_rate, 3),
        "beam_within_3x": beam_rate * 3 >= single_rate,
        "beam_s_2x": round(two["beam_s"], 2),
        "single_process_s_2x": round(two["single_s"], 2),
        "beam_over_single_2x": round(
            (two["contexts"] / two["beam_s"]) / (two["contexts"] / two["single_s"]), 3
        ),
        "contexts_2x": two["contexts"],
        "events_read_2x": two["events_read"],
        "time_ratio_2x_data": round(two["beam_s"] / one["beam_s"], 3),
        "single_time_ratio_2x_data": round(two["single_s"] / one["single_s"], 3),
    }
    figures["linear"] = figures["time_ratio_2x_data"] <= 2.2 and figures["single_time_ratio_2x_data"] <= 2.2
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
