"""Peak resident memory and CPU seconds of a whole process tree.

A Beam job's memory and CPU time live in its SDK worker processes (and an embedded
tritonserver's in the server and its Python-backend stub), not in the process that
launched them, so both measures cover a root process and all its descendants.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import psutil

GB = 1024**3


def tree_rss(root: psutil.Process) -> int:
    """Bytes resident in ``root`` and all its descendants right now (gone ones count 0)."""
    total = 0
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            pass
    return total


@dataclass
class TreePeak:
    """Samples ``tree_rss(pid)`` every ``interval_s`` until stopped; keeps the peak.

    With ``ceiling_bytes`` set, the whole tree is killed as soon as a sample exceeds it
    (``exceeded`` is then True), so a run that would grow without bound cannot take the
    machine's memory from its neighbours.
    """

    pid: int
    interval_s: float = 0.25
    ceiling_bytes: int | None = None
    peak_bytes: int = 0
    exceeded: bool = False

    def __post_init__(self) -> None:
        self._root = psutil.Process(self.pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-rss", daemon=True)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GB

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = tree_rss(self._root)
            self.peak_bytes = max(self.peak_bytes, rss)
            if self.ceiling_bytes is not None and rss > self.ceiling_bytes:
                self.exceeded = True
                self._kill_tree()
                return
            self._stop.wait(self.interval_s)

    def _kill_tree(self) -> None:
        try:
            procs = self._root.children(recursive=True) + [self._root]
        except psutil.Error:
            return
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass


def _cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of ``proc`` and of the children it has reaped."""
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _descendants_cpu() -> dict[tuple[int, float], float]:
    out: dict[tuple[int, float], float] = {}
    try:
        procs = psutil.Process().children(recursive=True)
    except psutil.Error:
        return out
    for proc in procs:
        try:
            out[(proc.pid, proc.create_time())] = _cpu_s(proc)
        except psutil.Error:  # exited between listing and reading
            pass
    return out


class TreeCpu:
    """CPU seconds (user + system) spent by this process and all its descendants between
    ``__enter__`` and ``__exit__``: ``cpu_s``.

    Descendants that exit in between are counted through the kernel's accounting of
    reaped children (``os.times``: a child's time, with its own reaped children's, is
    added to its parent when the parent waits for it); those still running at the end
    are read directly, less what they had used at the start. A process orphaned in
    between (its parent exited without waiting for it) is not counted.
    """

    def __init__(self) -> None:
        self.cpu_s = 0.0

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self) -> TreeCpu:
        self._own0, self._tree0 = self._own(), _descendants_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        own, tree = self._own(), _descendants_cpu()
        running = sum(cpu - self._tree0.get(key, 0.0) for key, cpu in tree.items())
        # Alive at the start, reaped since: os.times counts their whole life.
        before = sum(cpu for key, cpu in self._tree0.items() if key not in tree)
        self.cpu_s = own - self._own0 + running - before
