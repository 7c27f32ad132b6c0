"""Beam job: score every candidate of [start, end) through Triton and publish scores/.

    python beam_jobs/score_candidates.py --data DATA --start 2026-11-04T00:00:00Z \
        --end 2026-11-05T00:00:00Z [--url HOST:PORT ...] [--model-repo model_repo] \
        [--model-version N] [--checkpoint CKPT_DIR] [--contexts DIR] \
        [--runner FnApiRunner --workers 1] [beam flags]

Without --url an embedded tritonserver over --model-repo is started for the run and
stopped after it. Unknown flags go to the runner (see onepiece/beam_options.py). The
pipeline is in onepiece/serving/score_job.py and onepiece/serving/beam_scoring.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from onepiece.serving.fusion import FusionConfig
from onepiece.serving.score_job import ScoreJobConfig, score_window


def _time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="data root (default $ONEPIECE_DATA, then ./data)")
    p.add_argument("--start", required=True, type=_time, help="ISO time; contexts are as of it")
    p.add_argument("--end", required=True, type=_time, help="ISO time, exclusive")
    p.add_argument("--url", action="append", default=[], help="Triton HOST:PORT (repeatable)")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument("--model-repo", default="model_repo")
    p.add_argument("--model-version", type=int, default=None)
    p.add_argument("--checkpoint", default=None, help="check the served config against it")
    p.add_argument("--feature-service", default=None)
    p.add_argument("--contexts", default=None, help="context run to score (default: built)")
    p.add_argument("--max-failed-requests", type=int, default=0)
    p.add_argument("--runner", default="FnApiRunner")
    p.add_argument("--workers", type=int, default=1, help="local runner processes (one per served instance)")
    for name, default in FusionConfig().__dict__.items():
        if isinstance(default, float):
            p.add_argument(f"--fusion-{name}", type=float, default=default)
    return p


def config_from_args(args: argparse.Namespace, beam_args: list[str]) -> ScoreJobConfig:
    from onepiece.storage import data_root

    fusion = FusionConfig(
        **{k: getattr(args, f"fusion_{k}") for k, v in FusionConfig().__dict__.items() if isinstance(v, float)}
    )
    expected = (Path(args.checkpoint) / "config.json").read_text() if args.checkpoint else None
    return ScoreJobConfig(
        data=data_root(args.data), start=args.start, end=args.end, urls=tuple(args.url),
        contexts_dir=args.contexts, model_version=args.model_version,
        expected_config_json=expected, feature_service=args.feature_service, fusion=fusion,
        protocol=args.protocol, max_failed_requests=args.max_failed_requests,
        runner=args.runner, workers=args.workers, beam_args=tuple(beam_args),
    )


def run(argv: list[str] | None = None) -> dict:
    """Parse job flags (the rest go to Beam), run the job, return its manifest."""
    args, beam_args = parser().parse_known_args(argv)
    return score_window(config_from_args(args, beam_args), args.model_repo)


if __name__ == "__main__":
    manifest = run(sys.argv[1:])
    print(manifest["rows"])
