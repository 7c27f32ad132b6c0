"""The command-line flags the assembly job scripts (beam_jobs/*.py) share.

Each script adds its own window flags; unknown flags go to the Beam runner.
"""

from __future__ import annotations

import argparse
import datetime as dt

from onepiece.assembly.config import AssemblyConfig
from onepiece.assembly.feast_source import FeastSideSource
from onepiece.assembly.jobs import BeamSettings


def utc_time(value: str) -> dt.datetime:
    """An ISO time for argparse; a naive time is UTC."""
    parsed = dt.datetime.fromisoformat(value)
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed


def job_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", default=None, help="data root (default $ONEPIECE_DATA, then ./data)")
    p.add_argument("--out", required=True, help="directory to publish into")
    p.add_argument("--runner", default="FnApiRunner")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shards", type=int, default=AssemblyConfig.shards)
    p.add_argument("--feature-repo", default=None, help="Feast repo (default: features/)")
    return p


def job_settings(
    args: argparse.Namespace, beam_args: list[str]
) -> tuple[str, AssemblyConfig, FeastSideSource, BeamSettings]:
    """(data root, assembly config, Feast side source, Beam settings) from parsed flags."""
    from onepiece.storage import data_root

    data = data_root(args.data)
    return (
        data,
        AssemblyConfig(shards=args.shards),
        FeastSideSource(data_root=data, repo_dir=args.feature_repo),
        BeamSettings(args.runner, args.workers, tuple(beam_args)),
    )
