"""Independent training jobs (one model each) on several cores, one process per job.

Small models barely speed up with more torch threads, while two models trained side by
side use two cores fully. Every job seeds itself (``fit`` does), so a job's numbers do
not depend on where it runs: ``workers=1`` runs the jobs here, one after another, and
gives the same results. Workers are spawned, not forked (torch's thread pools do not
survive a fork). A job reports progress through its last argument, ``report(event)``;
the caller sees ``on_event(name, event)`` in this process, in order, before the job's
``on_done(name, result)``.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.connection
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

Report = Callable[[Any], None]

#: The event queue of a worker process, set by the pool's initializer. A plain
#: multiprocessing queue handed over at process start (a manager's proxy does not survive
#: libraries that replace multiprocessing.managers.AutoProxy, as one in the test session did).
_EVENTS: Any = None
_JOB_DONE = "__job_done__"  # sent after a job's last event: the queue delivers in order


def _init_worker(events: Any) -> None:
    global _EVENTS
    _EVENTS = events
    threading.Thread(target=_exit_with_parent, name="exit-with-parent", daemon=True).start()


def _exit_with_parent() -> None:
    # A parent killed by a signal (SIGTERM from a scheduler, SIGKILL) cannot shut the pool
    # down; without this its workers would train on, orphaned, until their rows finish.
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)


def _put(name: str, event: Any) -> None:
    _EVENTS.put((name, event))


def _run_job(fn: Callable[..., Any], name: str, args: tuple, reports: bool) -> Any:
    try:
        return fn(*args, functools.partial(_put, name) if reports else None)
    finally:
        _EVENTS.put((name, _JOB_DONE))


def run_jobs(
    fn: Callable[..., Any],
    jobs: dict[str, tuple],
    workers: int = 1,
    on_event: Callable[[str, Any], None] | None = None,
    on_done: Callable[[str, Any], None] | None = None,
) -> dict[str, Any]:
    """``fn(*args, report)`` for every ``name: args`` of ``jobs``; results by name, in
    the order of ``jobs``. ``fn`` must be a module-level function (it is pickled)."""
    if workers <= 1 or len(jobs) <= 1:
        results = {}
        for name, args in jobs.items():
            report = functools.partial(on_event, name) if on_event is not None else None
            results[name] = fn(*args, report)
            if on_done is not None:
                on_done(name, results[name])
        return results

    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    ended: set[str] = set()
    results: dict[str, Any] = {}

    def drain(wait_for: str | None = None) -> None:
        """Hand queued events to ``on_event``; with ``wait_for``, until that job's end
        marker (its events all precede it)."""
        while True:
            try:
                waiting = wait_for is not None and wait_for not in ended
                name, event = events.get(timeout=1.0) if waiting else events.get_nowait()
            except queue.Empty:
                if wait_for is not None and wait_for not in ended:
                    continue
                return
            if event == _JOB_DONE:
                ended.add(name)
            elif on_event is not None:
                on_event(name, event)

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx,
                             initializer=_init_worker, initargs=(events,)) as pool:
        futures = {pool.submit(_run_job, fn, name, args, on_event is not None): name for name, args in jobs.items()}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                drain()
                for future in sorted(done, key=lambda f: list(jobs).index(futures[f])):
                    name = futures[future]
                    results[name] = future.result()  # a failed job raises here
                    drain(wait_for=name)
                    if on_done is not None:
                        on_done(name, results[name])
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return {name: results[name] for name in jobs}
