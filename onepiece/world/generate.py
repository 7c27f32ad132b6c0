"""Generate a whole world into a data root, atomically."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from onepiece.contract import EVENT_TYPES
from onepiece.storage import day_partition, staged_dir
from onepiece.world import writer
from onepiece.world.config import WorldConfig
from onepiece.world.entities import build_world
from onepiece.world.stats import count_day, snapshots
from onepiece.world.traffic import Biases, Mechanics, daily_prices, simulate_day

#: progress(step description, steps done, steps in all)
Progress = Callable[[str, int, int], None]


@dataclass
class WorldSummary:
    """What a generated world holds (also written, minus the wall time, to world.json)."""

    out: str
    history_days: list[str]
    live_day: str
    requests: int  # requests of the history days 1..D
    warmup_days: list[str] = field(default_factory=list)  # logged days before day 1 (events only)
    warmup_requests: int = 0
    live_requests: int = 0  # requests of the live day D+1 (the day the demo scores)
    candidates: int = 0  # candidate rows over all days
    events: dict[str, int] = field(default_factory=dict)  # every logged day's: warm-up, history, live
    item_rows: int = 0
    user_rows: int = 0
    query_rows: int = 0
    unknown_items: int = 0  # distinct item ids in candidates without any feature row
    unknown_users: int = 0  # distinct user ids in candidates without a profile row
    ctr: float = 0.0  # clicks / impressions
    cvr: float = 0.0  # orders / clicks
    wall_time_s: float = 0.0

    @property
    def total_events(self) -> int:
        return sum(self.events.values())


def simulated_days(config: WorldConfig) -> range:
    """Every simulated day, in order: the warm-up days (negative), days 1..D, the live day."""
    return range(-config.warmup_days, config.days + 1)


def day_rng(config: WorldConfig, day: int) -> np.random.Generator:
    """The random stream of world day ``day``; warm-up days draw from a stream of their
    own, keyed by the distance before day 1."""
    return np.random.default_rng([config.seed, 11, -day] if day < 0 else [config.seed, 10, day])


def generate_world(
    config: WorldConfig, out: str | Path, progress: Progress | None = None
) -> WorldSummary:
    """Simulate ``config`` and publish its tables under ``out`` in one step.

    ``out`` is replaced as a whole; on any error nothing is written.
    """
    started = time.perf_counter()
    report = progress or (lambda step, done, total: None)
    steps = config.warmup_days + config.days + 2
    world = build_world(config)
    prices = daily_prices(world)
    mech = Mechanics()
    out = Path(out)
    counts, biases = [], None
    events = dict.fromkeys(EVENT_TYPES, 0)
    item_seen = np.zeros(config.n_items, dtype=bool)
    user_seen = np.zeros(config.n_users, dtype=bool)
    requests = live_requests = warmup_requests = candidate_rows = 0
    with staged_dir(out) as root:
        for day in simulated_days(config):
            live, warmup = day == config.days, day < 0
            label = (f"warm-up day {config.warmup_days + day + 1}/{config.warmup_days} {config.day(day)}"
                     if warmup else f"day {day + 1}/{config.days + 1} {config.day(day)}" + (" (live)" if live else ""))
            report(label, config.warmup_days + day, steps)
            traffic, biases = simulate_day(world, day, prices, day_rng(config, day), biases, mech)
            part = day_partition(config.day(day))
            # The live day's log is written too: an hourly refresh at T reads its events
            # before T, as a live log would hold them (every job reads strictly before T).
            writer.write_table(writer.events_table(world, day, traffic), "events", root,
                               f"events/{part}/part-0.parquet", day, world)
            events["impression"] += traffic.funnel.shown.size
            events["click"] += int(traffic.funnel.click.sum())
            events["add_to_cart"] += int(traffic.funnel.add_to_cart.sum())
            events["order"] += int(traffic.funnel.order.sum())
            if not live:  # the published daily statistics end where the live day starts
                counts.append(count_day(world, traffic))
            if warmup:  # a log from before the candidates table's retention: events only
                warmup_requests += traffic.user.size
                continue
            writer.write_table(writer.candidates_table(world, day, traffic), "candidates", root,
                               f"candidates/{part}/part-0.parquet", day, world)
            candidate_rows += traffic.candidates.size
            item_seen[traffic.candidates.ravel()] = True
            user_seen[traffic.user] = True
            if live:
                live_requests = traffic.user.size
            else:
                requests += traffic.user.size

        report("statistics and snapshots", steps - 1, steps)
        snaps = snapshots(world, counts)
        items = writer.items_table(world, snaps, prices)
        users = writer.users_table(world)
        queries = writer.queries_table(world, snaps)
        writer.write_table(items, "items", root, "items/part-0.parquet", None, world)
        writer.write_table(users, "users", root, "users/part-0.parquet", None, world)
        writer.write_table(queries, "queries", root, "queries/part-0.parquet", None, world)
        writer.write_truth(world, root)

        summary = WorldSummary(
            out=str(out),
            history_days=[config.day(d).isoformat() for d in range(config.days)],
            live_day=config.day(config.days).isoformat(),
            requests=requests,
            warmup_days=[config.day(d).isoformat() for d in range(-config.warmup_days, 0)],
            warmup_requests=warmup_requests,
            live_requests=live_requests,
            candidates=candidate_rows,
            events=events,
            item_rows=items.num_rows,
            user_rows=users.num_rows,
            query_rows=queries.num_rows,
            unknown_items=int((item_seen & ~world.catalog.known).sum()),
            unknown_users=int((user_seen & ~world.users.known).sum()),
            ctr=events["click"] / max(events["impression"], 1),
            cvr=events["order"] / max(events["click"], 1),
        )
        _write_manifest(root / "world.json", config, summary, biases, mech)
        report("publishing", steps, steps)
    summary.wall_time_s = time.perf_counter() - started
    return summary


def _write_manifest(path: Path, config: WorldConfig, summary: WorldSummary,
                    biases: Biases | None, mech: Mechanics) -> None:
    facts = asdict(summary)
    del facts["wall_time_s"], facts["out"]  # keep the file identical across reruns
    document = {
        "config": config.to_json(),
        "summary": facts,
        "truth": {"mechanics": asdict(mech), "biases": asdict(biases) if biases else None},
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
