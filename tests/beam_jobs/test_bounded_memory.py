"""A crawler-like account holding most events: the training-set and contexts jobs stay
under a stated memory limit, measured over the whole process tree (the job's process,
the runner and its SDK worker processes).

The limit, 4 GB, is the issue's target for any stage's process-tree peak. On the plain
tiny world the runner and its two SDK workers peak at about 0.85 GB; this log holds nine
times the requests and events, and the bounded jobs add copies linear in them (the
runner's shuffle, the worker holding the crawler's shard): 2.9-3.2 GB for training and
1.3-1.4 GB for contexts (0.55 GB with the refresh's default, its one worker in the job's
process: BeamSettings.in_process). Joining each request to all of its user's (or
query's) events, as before issue 22, took 8.6 GB and 4.6 GB on this log (docs/results.md). The sampler
kills the tree at the limit, so a regression fails fast instead of taking the machine's
memory; ONEPIECE_MEMORY_CEILING_GB raises that ceiling (not the limit) to measure how
far an unbounded version goes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
from conftest import LIVE_DAY, midnight, read_output

from onepiece import storage
from onepiece.memory import GB, TreePeak
from onepiece.world import WorldConfig, generate_world

pytestmark = pytest.mark.slow

LIMIT_GB = 4.0
CEILING_GB = float(os.environ.get("ONEPIECE_MEMORY_CEILING_GB", LIMIT_GB))
#: The tiny world with one account holding 90% of the requests, twice the traffic, and
#: a higher click rate, so the crawler's history (its IH events) is long.
CRAWLER_WORLD = dataclasses.replace(
    WorldConfig.tiny(0), crawler_share=0.9, requests_per_user_day=6.0, target_ctr=0.2
)
REPO = Path(__file__).parents[2]
JOB = Path(__file__).with_name("snapshot_job.py")


@pytest.fixture(scope="module")
def crawler_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crawler_world") / "data"
    generate_world(CRAWLER_WORLD, root)
    events = storage.read_table(str(root), "events")
    top = max(c["counts"] for c in pc.value_counts(events["user_id"]).to_pylist())
    assert top / events.num_rows > 0.8  # one account holds most of the events
    return root


def run_measured(args: list[str], log: Path) -> tuple[TreePeak, int]:
    """Run snapshot_job.py in its own process; the peak RSS of its whole tree."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(JOB), *args], stdout=out, stderr=subprocess.STDOUT, env=env)
        with TreePeak(proc.pid, ceiling_bytes=int(CEILING_GB * GB)) as peak:
            code = proc.wait(timeout=900)
    return peak, code


@pytest.mark.parametrize("job", ["training", "contexts", "contexts-in-process"])
def test_a_crawler_log_builds_under_the_memory_limit(crawler_world, tmp_path, job):
    out = tmp_path / job
    if job == "contexts-in-process":  # the refresh's default: its one worker in the job's process
        args = ["contexts", str(crawler_world), str(out), midnight(LIVE_DAY).isoformat(),
                midnight(LIVE_DAY + dt.timedelta(days=1)).isoformat(), "--in-process"]
    elif job == "training":
        args = [job, str(crawler_world), str(out), str(LIVE_DAY - dt.timedelta(days=3)),
                str(LIVE_DAY - dt.timedelta(days=1))]
    else:
        args = [job, str(crawler_world), str(out), midnight(LIVE_DAY).isoformat(),
                midnight(LIVE_DAY + dt.timedelta(days=1)).isoformat()]
    peak, code = run_measured(args, tmp_path / "job.log")
    assert not peak.exceeded, f"{job}: the process tree passed {CEILING_GB} GB and was stopped"
    assert code == 0, (tmp_path / "job.log").read_text()[-3000:]
    print(f"{job}: peak process-tree RSS {peak.peak_gb:.2f} GB (limit {LIMIT_GB} GB)")
    assert peak.peak_gb < LIMIT_GB
    assert read_output(out).num_rows > 0
