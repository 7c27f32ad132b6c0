"""Beam job: training rows for the clicked requests of days D1..D2, with labels.

    python beam_jobs/build_training_set.py --data DATA --from-day 2026-11-01 \
        --to-day 2026-11-07 --out OUT [--runner FnApiRunner --workers 2] [beam flags]

Each row is the request's context as of its own request time, plus per-candidate labels
for impression, click, add_to_cart and order. Unknown flags go to the runner.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from onepiece.assembly import AssemblyConfig
from onepiece.assembly.feast_source import FeastSideSource
from onepiece.assembly.jobs import BeamSettings, run_trainset


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="data root (default $ONEPIECE_DATA, then ./data)")
    p.add_argument("--from-day", required=True, type=dt.date.fromisoformat)
    p.add_argument("--to-day", required=True, type=dt.date.fromisoformat)
    p.add_argument("--out", required=True, help="directory to publish into")
    p.add_argument("--runner", default="FnApiRunner")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shards", type=int, default=AssemblyConfig.shards)
    p.add_argument("--feature-repo", default=None, help="Feast repo (default: features/)")
    return p


def run(argv: list[str] | None = None) -> dict:
    """Parse job flags (the rest go to Beam), run the job, return its manifest."""
    from onepiece.storage import data_root

    args, beam_args = parser().parse_known_args(argv)
    data = data_root(args.data)
    return run_trainset(
        data, args.from_day, args.to_day, args.out, AssemblyConfig(shards=args.shards),
        FeastSideSource(data_root=data, repo_dir=args.feature_repo),
        BeamSettings(args.runner, args.workers, tuple(beam_args)),
    )


if __name__ == "__main__":
    manifest = run(sys.argv[1:])
    print(manifest["rows"])
