"""Jobs in spawned processes: the same results and progress as one after another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onepiece.training.parallel import run_jobs


def square_with_progress(x: int, report=None) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    for step in range(x):
        if report is not None:
            report(step)
    return x * x


def _run(workers: int) -> tuple[dict, list]:
    seen: list = []
    results = run_jobs(
        square_with_progress, {"a": (3,), "b": (2,), "c": (1,)}, workers,
        on_event=lambda name, event: seen.append((name, event)),
        on_done=lambda name, result: seen.append((name, "done", result)),
    )
    return results, seen


def _per_job(seen: list, name: str) -> list:
    return [s[1:] for s in seen if s[0] == name]


def test_one_worker_runs_the_jobs_in_order() -> None:
    results, seen = _run(1)
    assert list(results.items()) == [("a", 9), ("b", 4), ("c", 1)]
    assert seen[:4] == [("a", 0), ("a", 1), ("a", 2), ("a", "done", 9)]


def test_a_failing_job_raises() -> None:
    with pytest.raises(ValueError, match="negative"):
        run_jobs(square_with_progress, {"a": (-1,)}, 1)


@pytest.mark.slow
def test_two_workers_give_the_same_results_and_events_before_done() -> None:
    results, seen = _run(2)
    assert list(results.items()) == [("a", 9), ("b", 4), ("c", 1)]
    for name, n in (("a", 3), ("b", 2), ("c", 1)):
        assert _per_job(seen, name) == [(step,) for step in range(n)] + [("done", n * n)]
    with pytest.raises(ValueError, match="negative"):
        run_jobs(square_with_progress, {"a": (1,), "b": (-1,)}, 2)


@pytest.mark.slow
def test_two_workers_survive_beams_multiprocessing_patch() -> None:
    # Importing Beam's RunInference machinery replaces multiprocessing.managers.AutoProxy
    # for the whole process; a manager-queue design then failed to pickle its proxy.
    import apache_beam.utils.multi_process_shared  # noqa: F401

    results, seen = _run(2)
    assert list(results.items()) == [("a", 9), ("b", 4), ("c", 1)]
    assert _per_job(seen, "a") == [(0,), (1,), (2,), ("done", 9)]


def report_pid_then_sleep(pid_file: str, report=None) -> None:
    # Written then renamed: the test must never read a half-written pid.
    Path(f"{pid_file}.tmp").write_text(str(os.getpid()))
    os.replace(f"{pid_file}.tmp", pid_file)
    time.sleep(120)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.slow
def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; sys.path.insert(0, sys.argv[1]); import test_parallel as t; "
         "from onepiece.training.parallel import run_jobs; "
         "run_jobs(t.report_pid_then_sleep, {'a': (sys.argv[2],), 'b': (sys.argv[2] + '.b',)}, 2)",
         str(Path(__file__).parent), str(pid_file)],
    )
    pid_files = (pid_file, Path(f"{pid_file}.b"))
    try:
        deadline = time.monotonic() + 60
        while not all(p.exists() for p in pid_files) and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(p.read_text()) for p in pid_files]
        assert all(_alive(w) for w in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "a worker trained on after its parent was killed"
    finally:
        parent.kill()
        for path in pid_files:  # both workers, whatever the outcome
            if path.exists() and _alive(int(path.read_text())):
                os.kill(int(path.read_text()), signal.SIGKILL)
