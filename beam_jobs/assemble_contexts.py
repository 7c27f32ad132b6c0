"""Beam job: context rows for the candidate requests of [start, end), as of T = start.

    python beam_jobs/assemble_contexts.py --data DATA --start 2026-11-09T00:00:00Z \
        --end 2026-11-10T00:00:00Z --out OUT [--runner FnApiRunner --workers 2] [beam flags]

Unknown flags go to the runner (``--flink_master=...``, ``--project=...``); see
onepiece/beam_options.py. The transforms are in onepiece/assembly/transforms.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from onepiece.assembly import AssemblyConfig
from onepiece.assembly.feast_source import FeastSideSource
from onepiece.assembly.jobs import BeamSettings, run_contexts


def _time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="data root (default $ONEPIECE_DATA, then ./data)")
    p.add_argument("--start", required=True, type=_time, help="ISO time; every row is as of it")
    p.add_argument("--end", required=True, type=_time, help="ISO time, exclusive")
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
    return run_contexts(
        data, args.start, args.end, args.out, AssemblyConfig(shards=args.shards),
        FeastSideSource(data_root=data, repo_dir=args.feature_repo),
        BeamSettings(args.runner, args.workers, tuple(beam_args)),
    )


if __name__ == "__main__":
    manifest = run(sys.argv[1:])
    print(manifest["rows"])
