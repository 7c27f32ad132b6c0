"""A real Airflow 3 deployment for tests: scheduler, dag-processor and API server on a
throwaway AIRFLOW_HOME (SQLite, LocalExecutor).

Airflow 3 runs scheduled and backfill runs only through these processes: the
dag-processor parses the DAG folder into the database, the scheduler queues the task
instances on its LocalExecutor, and each task talks to the API server's Execution API.
``airflow dags test`` needs none of them; ``airflow backfill create`` needs all three.

Every process gets its own session (process group), so :meth:`AirflowServices.stop`
kills it with whatever it forked (executor workers, task supervisors, tritonserver).
The API server listens on a free port of 127.0.0.1, so parallel sessions don't collide.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dag_helpers import AIRFLOW, REPO_ROOT, airflow, read_metadata, tail

#: The processes a backfill needs (no triggerer: these DAGs defer nothing).
COMPONENTS = ("dag-processor", "scheduler", "api-server")
_FINISHED = ("success", "failed")


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def services_env(env: dict[str, str], port: int) -> dict[str, str]:
    """``env`` (an :func:`dag_helpers.airflow_env`) plus what the processes must share."""
    return env | {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",  # the machine's cores
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # Signed by the scheduler, checked by the API server: one secret for both.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        # Only the runs a test creates (backfills, triggers): no cron runs of "today".
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    }


@dataclass
class AirflowServices:
    """The running processes of one Airflow home, and what a test asks of them."""

    home: Path
    env: dict[str, str]
    port: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def log(self, component: str) -> Path:
        return self.home / f"{component}.out"

    def start(self) -> None:
        for component in COMPONENTS:
            args = [component]
            if component == "api-server":  # tasks need the Execution API only
                args += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                         "--apps", "execution"]
            with open(self.log(component), "wb") as out:
                self.processes[component] = subprocess.Popen(
                    [AIRFLOW, *args], env=self.env, cwd=REPO_ROOT, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )

    def stop(self, grace_s: float = 15) -> None:
        """SIGTERM every process group, then SIGKILL what is left after ``grace_s``."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Children may outlive their leader: kill the whole group either way.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """An ``airflow`` CLI call against this deployment."""
        return airflow(self.env, *args, timeout=timeout)

    def query(self, sql: str, *params) -> list[tuple]:
        """Read the metadata database (SQLite; read-only, waits while it is locked)."""
        return read_metadata(self.home, sql, *params)

    def _check_alive(self, waiting_for: str) -> None:
        for component, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(
                    f"airflow {component} exited ({process.returncode}) while waiting for "
                    f"{waiting_for}\n{self.diagnostics()}"
                )

    def _wait(self, what: str, done, timeout_s: float, every_s: float = 2):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive(what)
            with contextlib.suppress(sqlite3.OperationalError, OSError):
                if result := done():
                    return result
            time.sleep(every_s)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{self.diagnostics()}")

    def wait_until_ready(self, dag_id: str, timeout_s: float = 180) -> None:
        """The Execution API answers and the dag-processor has stored ``dag_id``."""

        def ready() -> bool:
            url = f"http://127.0.0.1:{self.port}/execution/health"
            with urllib.request.urlopen(url, timeout=5) as response:
                healthy = response.status == 200
            parsed = self.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", dag_id)
            return healthy and bool(parsed)

        self._wait(f"the API server on port {self.port} and the DAG {dag_id}", ready, timeout_s)

    def wait_for_runs(self, dag_id: str, count: int, timeout_s: float) -> list[dict]:
        """Wait until ``count`` runs of ``dag_id`` have finished; return them, oldest first."""

        def finished() -> list[dict] | None:
            rows = self.query(
                "SELECT run_id, run_type, logical_date, state FROM dag_run WHERE dag_id = ? "
                "ORDER BY logical_date", dag_id,
            )
            runs = [dict(zip(("run_id", "run_type", "logical_date", "state"), row)) for row in rows]
            return runs if len(runs) >= count and all(r["state"] in _FINISHED for r in runs) else None

        return self._wait(f"{count} finished runs of {dag_id}", finished, timeout_s, every_s=5)

    def diagnostics(self, lines: int = 40) -> str:
        """Task states, the tails of the failed tasks' logs and of every process's output."""
        parts = []
        with contextlib.suppress(sqlite3.Error, OSError):
            states = self.query("SELECT dag_id, run_id, task_id, state FROM task_instance ORDER BY run_id")
            parts.append("task instances:\n" + "\n".join(f"  {' '.join(map(str, s))}" for s in states))
            for dag_id, run_id, task_id, state in states:
                if state in ("failed", "upstream_failed", "up_for_retry"):
                    for log in sorted(self.home.glob(f"logs/dag_id={dag_id}/run_id={run_id}/task_id={task_id}/*.log")):
                        parts.append(f"--- {log.relative_to(self.home)}\n" + _tail_file(log, lines))
        for component in self.processes:
            parts.append(f"--- airflow {component}\n" + _tail_file(self.log(component), lines))
        return "\n".join(parts)


def _tail_file(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"({err})"


@contextlib.contextmanager
def airflow_services(home: Path, env: dict[str, str], dag_id: str) -> Iterator[AirflowServices]:
    """Migrate ``home``'s database, start the processes, wait until ``dag_id`` is parsed
    and the API server answers; stop every process group on exit."""
    port = free_port()
    services = AirflowServices(home, services_env(env, port), port)
    migrated = services.cli("db", "migrate")
    assert migrated.returncode == 0, tail(migrated)
    try:
        services.start()
        services.wait_until_ready(dag_id)
        yield services
    finally:
        services.stop()
