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

from onepiece.assembly.job_args import job_parser, job_settings
from onepiece.assembly.jobs import run_trainset


def parser() -> argparse.ArgumentParser:
    p = job_parser(__doc__.splitlines()[0])
    p.add_argument("--from-day", required=True, type=dt.date.fromisoformat)
    p.add_argument("--to-day", required=True, type=dt.date.fromisoformat)
    return p


def run(argv: list[str] | None = None) -> dict:
    """Parse job flags (the rest go to Beam), run the job, return its manifest."""
    args, beam_args = parser().parse_known_args(argv)
    data, config, side_source, beam_settings = job_settings(args, beam_args)
    return run_trainset(data, args.from_day, args.to_day, args.out, config, side_source, beam_settings)


if __name__ == "__main__":
    manifest = run(sys.argv[1:])
    print(manifest["rows"])
