"""Helpers for the DAG tests: a throwaway Airflow home, `airflow dags test` runs, tiny models."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an Airflow CLI call on a private AIRFLOW_HOME (SQLite)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "ONEPIECE_"))
    }
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        # Tests fail fast instead of retrying (the DAGs retry twice by default).
        "ONEPIECE_TASK_RETRIES": "0",
        "ONEPIECE_BEAM_WORKERS": "1",
    }
    return env | extra


def airflow(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AIRFLOW, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def dags_test(env: dict[str, str], dag_id: str, date: str, conf: dict | None = None) -> subprocess.CompletedProcess:
    """`airflow dags test DAG_ID DATE [-c CONF]`: one real DAG run, tasks in this order."""
    args = ["dags", "test", dag_id, date]
    if conf:
        args += ["-c", json.dumps(conf)]
    return airflow(env, *args)


def read_metadata(home: Path, sql: str, *params) -> list[tuple]:
    """Rows of the Airflow metadata database of ``home`` (SQLite, opened read-only)."""
    uri = f"file:{home / 'airflow.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
        return db.execute(sql, params).fetchall()


def last_run_task_states(home: Path, dag_id: str) -> dict[str, str]:
    """{task_id: state} of the newest run of ``dag_id`` in ``home``'s database."""
    rows = read_metadata(
        home,
        "SELECT ti.task_id, ti.state FROM task_instance ti JOIN dag_run dr "
        "ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
        "WHERE dr.id = (SELECT MAX(id) FROM dag_run WHERE dag_id = ?)",
        dag_id,
    )
    return dict(rows)


def asset_events(home: Path, asset: str) -> int:
    """How many events the Asset named ``asset`` has received in ``home``'s database."""
    rows = read_metadata(
        home, "SELECT COUNT(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.name = ?", asset
    )
    return rows[0][0]


def tail(result: subprocess.CompletedProcess, lines: int = 60) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


def tiny_checkpoint(directory: Path, seed: int) -> Path:
    """A freshly initialised tiny model (tests never need trained weights)."""
    import torch

    from onepiece.model import ModelConfig, OnePiece, save_checkpoint

    config = ModelConfig(
        d_model=32, n_layers=2, n_heads=4, id_dim=16, side_dim=8, item_vocab=512,
        shop_vocab=64, category_vocab=64, user_vocab=128, user_side_vocab=64,
        query_vocab=64, piece_vocab=128, ih_max_len=16, pa_per_group=4, group_size=4,
    )
    torch.manual_seed(seed)
    return save_checkpoint(OnePiece(config), directory)


#: A tiny onepiece_retrieval model (the retrieval route's DAG tests).
TINY_RETRIEVAL = dict(
    d_model=32, n_heads=2, n_layers=1, id_dim=16, side_dim=8, item_vocab=8192, shop_vocab=64,
    category_vocab=64, user_vocab=512, query_vocab=64, piece_vocab=256, ih_max_len=30, pa_per_group=10,
)


def route_model(data: Path, out: Path, t: dt.datetime) -> Path:
    """A tiny onepiece_retrieval checkpoint trained on the days before ``t`` (seconds)."""
    from onepiece import storage
    from onepiece.assembly.config import AssemblyConfig
    from onepiece.assembly.contexts import assemble_local
    from onepiece.assembly.side import SnapshotSideSource
    from onepiece.model import save_checkpoint, variant_config
    from onepiece.training.config import TrainConfig
    from onepiece.training.loop import train

    r = str(data)
    days = [d for d in storage.list_days(r, "candidates") if d < t.date()]
    side = SnapshotSideSource(*(storage.read_table(r, name) for name in ("items", "users", "queries")))
    rows, _ = assemble_local(storage.read_table(r, "candidates", days), storage.read_table(r, "events"),
                             side, AssemblyConfig())
    result = train(variant_config("onepiece_retrieval", **TINY_RETRIEVAL),
                   TrainConfig(epochs=1, batch_size=32, threads=1, seed=0, patience=99), rows.slice(20), rows.slice(0, 20))
    return save_checkpoint(result.model, out)


def route_index(data: Path, checkpoint: Path, t: dt.datetime) -> Path:
    """The item index of ``checkpoint`` over ``data``'s items as of ``t``, beside it."""
    from onepiece import storage
    from onepiece.retrieval.index import build_item_index

    build_item_index(checkpoint, storage.read_table(str(data), "items"), t, checkpoint / "item_index")
    return checkpoint / "item_index"


#: A version whose model fails at inference: the failure injected into scoring.
BROKEN_EXECUTE = '''

class TritonPythonModel(TritonPythonModel):  # noqa: F811
    """This version fails every inference request."""

    def execute(self, requests):
        raise RuntimeError("injected scoring failure")
'''

#: Small dynamic batches for the tiny world's few requests.
EXPORT = dict(preferred_batch_sizes=(16, 32), max_batch_size=32, max_queue_delay_us=500)
