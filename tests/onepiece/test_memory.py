"""onepiece.memory.TreeCpu: CPU seconds of this process and of every descendant, those
that exit in between (a grandchild included) and those still running at the end."""

from __future__ import annotations

import subprocess
import sys
import time

from onepiece.memory import TreeCpu

SPIN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"


def test_tree_cpu_counts_exited_children_and_grandchildren():
    # The child spins 0.4 s and runs a grandchild that spins 0.6 s.
    child = SPIN.format(s=0.4) + f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {SPIN.format(s=0.6)!r}], check=True)\n"
    with TreeCpu() as tree:
        subprocess.run([sys.executable, "-c", child], check=True)
    assert 1.0 <= tree.cpu_s < 3.0, tree.cpu_s  # the spins, plus two interpreters' start-up


def test_tree_cpu_counts_a_running_child_only_from_the_start():
    script = SPIN.format(s=0.5) + "print('spun', flush=True)\ntime.sleep(30)\n"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "spun\n"  # its 0.5 s are spent before the measure
        with TreeCpu() as tree:
            time.sleep(0.3)
        assert tree.cpu_s < 0.3, tree.cpu_s
        with TreeCpu() as spinning:
            end = time.process_time() + 0.3
            while time.process_time() < end:
                pass
        # /proc reports user and system time each truncated to 10 ms ticks, at both ends of
        # the measure: allow two ticks below 0.3 (29 ticks read as 0.28999999999996 once)
        assert 0.28 - 1e-6 <= spinning.cpu_s < 0.6, spinning.cpu_s
    finally:
        child.kill()
        child.wait()
