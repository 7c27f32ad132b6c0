"""Beam job: context rows for the candidate requests of [start, end), as of T = start.

    python beam_jobs/assemble_contexts.py --data DATA --start 2026-11-09T00:00:00Z \
        --end 2026-11-10T00:00:00Z --out OUT [--runner FnApiRunner --workers 2] [beam flags]

Unknown flags go to the runner (``--flink_master=...``, ``--project=...``); see
onepiece/beam_options.py. The transforms are in onepiece/assembly/transforms.py.
"""

from __future__ import annotations

import argparse
import sys

from onepiece.assembly.job_args import job_parser, job_settings, utc_time
from onepiece.assembly.jobs import run_contexts


def parser() -> argparse.ArgumentParser:
    p = job_parser(__doc__.splitlines()[0])
    p.add_argument("--start", required=True, type=utc_time, help="ISO time; every row is as of it")
    p.add_argument("--end", required=True, type=utc_time, help="ISO time, exclusive")
    return p


def run(argv: list[str] | None = None) -> dict:
    """Parse job flags (the rest go to Beam), run the job, return its manifest."""
    args, beam_args = parser().parse_known_args(argv)
    data, config, side_source, beam_settings = job_settings(args, beam_args)
    return run_contexts(data, args.start, args.end, args.out, config, side_source, beam_settings)


if __name__ == "__main__":
    manifest = run(sys.argv[1:])
    print(manifest["rows"])
