"""Run one assembly job on the real Beam runner with snapshot side features, as a process
of its own, so a test can measure its whole process tree (the SDK workers included).

    python tests/beam_jobs/snapshot_job.py training DATA OUT FIRST_DAY LAST_DAY
    python tests/beam_jobs/snapshot_job.py contexts DATA OUT START END [--in-process]

``--in-process``: one local worker, run inside this process (BeamSettings.in_process).
"""

from __future__ import annotations

import datetime as dt
import sys

from onepiece import storage
from onepiece.assembly.jobs import BeamSettings, run_contexts, run_trainset
from onepiece.assembly.side import SnapshotSideSource


def main(argv: list[str]) -> None:
    in_process = "--in-process" in argv
    kind, data, out, first, last = [a for a in argv if a != "--in-process"]
    beam = BeamSettings(workers=1, in_process=True) if in_process else BeamSettings()
    side = SnapshotSideSource(*(storage.read_table(data, t) for t in ("items", "users", "queries")))
    if kind == "training":
        first_day, last_day = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
        run_trainset(data, first_day, last_day, out, side_source=side, beam_settings=beam)
    elif kind == "contexts":
        start, end = dt.datetime.fromisoformat(first), dt.datetime.fromisoformat(last)
        run_contexts(data, start, end, out, side_source=side, beam_settings=beam)
    else:
        raise SystemExit(f"unknown job {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
