"""The assembly jobs on Beam's DaskRunner write the same bytes as on the FnApiRunner."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import LIVE_DAY, leftovers, midnight, snapshot_source

from onepiece.assembly.jobs import BeamSettings, run_contexts, run_trainset
from onepiece.beam_options import DASK_SCHEDULER_ENV, local_dask_cluster

pytestmark = [pytest.mark.scale, pytest.mark.slow]

DASK = BeamSettings(runner="dask", workers=2)


@pytest.fixture(scope="module")
def dask_scheduler():
    """A dask.distributed cluster of 2 worker processes on 127.0.0.1 (its address)."""
    with local_dask_cluster(2) as address:
        yield address


def files(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix == ".parquet"}


def same_rows(a: dict, b: dict) -> None:
    assert a["rows"] == b["rows"] and a["dropped"] == b["dropped"] and a["defaulted"] == b["defaulted"]


def test_contexts_job_on_dask_writes_the_default_runners_bytes(tiny_world, tmp_path, dask_scheduler, monkeypatch):
    monkeypatch.setenv(DASK_SCHEDULER_ENV, dask_scheduler)  # a cluster named by address
    start, end = midnight(LIVE_DAY), midnight(LIVE_DAY) + dt.timedelta(hours=12)
    source = snapshot_source(tiny_world)
    default = run_contexts(str(tiny_world), start, end, tmp_path / "fnapi", side_source=source)
    on_dask = run_contexts(str(tiny_world), start, end, tmp_path / "dask", side_source=source, beam_settings=DASK)
    want = files(tmp_path / "fnapi")
    assert len(want) == 4 and files(tmp_path / "dask") == want
    same_rows(on_dask, default)
    assert default["rows"]["contexts"] > 0
    assert leftovers(tmp_path / "dask") == []


def test_training_set_job_on_an_embedded_dask_cluster_writes_the_default_runners_bytes(tiny_world, tmp_path, monkeypatch):
    monkeypatch.delenv(DASK_SCHEDULER_ENV, raising=False)  # onepiece starts a LocalCluster
    day = LIVE_DAY - dt.timedelta(days=1)
    source = snapshot_source(tiny_world)
    default = run_trainset(str(tiny_world), day, day, tmp_path / "fnapi", side_source=source)
    on_dask = run_trainset(str(tiny_world), day, day, tmp_path / "dask", side_source=source, beam_settings=DASK)
    want = files(tmp_path / "fnapi")
    assert len(want) == 4 and files(tmp_path / "dask") == want
    same_rows(on_dask, default)
    assert default["rows"]["training"] > 0
