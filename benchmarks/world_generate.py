"""Benchmark: generating the synthetic world (the issue's done-when size by default).

Generates `--users 2000 --items 5000 --queries 300 --days 8 --seed 7` (and the default
7 warm-up days) into a temporary directory, then the same world with half the days (and
half the warm-up), and times the simulation alone (no Parquet writing or contract
validation). Prints figures and, as the LAST stdout line,
one JSON object: wall_s, events, events_per_s, candidate_rows, peak_rss_mb,
simulate_share (simulation time / full wall time) and half_days_wall_ratio (wall time of
D days / wall time of D/2 days; ~2 means linear in days). All measured in this run.

    .venv/bin/python benchmarks/world_generate.py [--users 2000 --items 5000 --queries 300 --days 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onepiece.world import WorldConfig, generate_world  # noqa: E402
from onepiece.world.generate import day_rng, simulated_days  # noqa: E402
from onepiece.world.entities import build_world  # noqa: E402
from onepiece.world.traffic import daily_prices, simulate_day  # noqa: E402


def simulate_only(config: WorldConfig) -> float:
    """Seconds to simulate every day without writing anything."""
    started = time.perf_counter()
    world = build_world(config)
    prices = daily_prices(world)
    biases = None
    for day in simulated_days(config):
        _, biases = simulate_day(world, day, prices, day_rng(config, day), biases)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    config = WorldConfig(seed=args.seed, n_users=args.users, n_items=args.items,
                         n_queries=args.queries, days=args.days)
    with tempfile.TemporaryDirectory() as tmp:
        full = generate_world(config, Path(tmp) / "full")
        half = generate_world(dataclasses.replace(config, days=max(2, config.days // 2),
                                                  warmup_days=config.warmup_days // 2), Path(tmp) / "half")
    sim_s = simulate_only(config)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "wall_s": round(full.wall_time_s, 2),
        "events": full.total_events,
        "events_by_type": full.events,
        "requests": full.requests,
        "candidate_rows": full.candidates,
        "events_per_s": round(full.total_events / full.wall_time_s),
        "ctr": round(full.ctr, 4),
        "cvr": round(full.cvr, 4),
        "peak_rss_mb": round(peak_mb),
        "simulate_s": round(sim_s, 2),
        "simulate_share": round(sim_s / full.wall_time_s, 3),
        "half_days_wall_ratio": round(full.wall_time_s / half.wall_time_s, 2),
    }
    print(f"world {config.n_users} users x {config.n_items} items x {config.n_queries} queries, "
          f"{config.days} days: {full.total_events:,} events, {full.candidates:,} candidate rows "
          f"in {full.wall_time_s:.1f} s (simulation alone {sim_s:.1f} s)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
