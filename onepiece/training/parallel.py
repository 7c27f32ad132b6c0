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
import queue
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

Report = Callable[[Any], None]


def _put(events: Any, name: str, event: Any) -> None:
    events.put((name, event))


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
    results: dict[str, Any] = {}
    with ctx.Manager() as manager, ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
        events = manager.Queue()

        def drain() -> None:
            # A manager queue's put returns once the item is stored: when a job is
            # done, all its events are already here.
            while True:
                try:
                    name, event = events.get_nowait()
                except queue.Empty:
                    return
                if on_event is not None:
                    on_event(name, event)

        futures = {
            pool.submit(fn, *args, functools.partial(_put, events, name) if on_event is not None else None): name
            for name, args in jobs.items()
        }
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                drain()
                for future in sorted(done, key=lambda f: list(jobs).index(futures[f])):
                    name = futures[future]
                    results[name] = future.result()
                    if on_done is not None:
                        on_done(name, results[name])
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return {name: results[name] for name in jobs}
