"""Peak resident memory of a whole process tree, sampled in a background thread.

A Beam job's memory lives in its SDK worker processes, not in the process that launched
it, so the sampler sums the RSS of a root process and all its descendants.
"""

from __future__ import annotations

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
