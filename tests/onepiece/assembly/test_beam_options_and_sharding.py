"""Runner options (named explicitly) and the stable shard function."""

import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

from onepiece.assembly.sharding import shard_of, split_by_shard
from onepiece.beam_options import DASK_RUNNER, DASK_SCHEDULER_ENV, pipeline_options, pipeline_session


def test_default_is_the_portable_local_runner_with_worker_processes():
    options = pipeline_options()
    assert options.view_as(StandardOptions).runner == "FnApiRunner"
    direct = options.view_as(DirectOptions)
    assert direct.direct_running_mode == "multi_processing"
    assert direct.direct_num_workers == 2


def test_one_worker_in_process_runs_in_the_drivers_process_and_only_locally():
    direct = pipeline_options(workers=1, in_process=True).view_as(DirectOptions)
    assert (direct.direct_running_mode, direct.direct_num_workers) == ("in_memory", 1)
    # Several workers stay processes; the switch is a local runner's only.
    assert pipeline_options(workers=2, in_process=True).view_as(DirectOptions).direct_running_mode == "multi_processing"
    assert pipeline_options(workers=1).view_as(DirectOptions).direct_running_mode == "multi_processing"
    flink = pipeline_options("FlinkRunner", workers=1, extra=["--flink_master=host:8081"], in_process=True)
    assert flink.view_as(StandardOptions).runner == "FlinkRunner"
    assert not {"direct_running_mode", "direct_num_workers"} & set(flink.get_all_options(drop_default=True))
    assert flink.get_all_options()["flink_master"] == "host:8081"
    with pipeline_session("FnApiRunner", 1, in_process=True) as options:
        assert options.view_as(DirectOptions).direct_running_mode == "in_memory"


def test_other_runners_get_only_their_own_flags():
    options = pipeline_options("FlinkRunner", extra=["--flink_master=host:8081"])
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    assert options.get_all_options()["flink_master"] == "host:8081"
    assert options.view_as(DirectOptions).direct_running_mode != "multi_processing"
    with pytest.raises(ValueError, match="workers"):
        pipeline_options(workers=0)


def test_the_dask_runner_takes_its_scheduler_from_the_environment_or_a_flag(monkeypatch):
    from apache_beam.runners.dask.dask_runner import DaskOptions

    monkeypatch.setenv(DASK_SCHEDULER_ENV, "tcp://scheduler:8786")
    with pipeline_session("dask") as options:
        assert options.view_as(StandardOptions).runner == DASK_RUNNER
        assert options.view_as(DaskOptions).address == "tcp://scheduler:8786"
    with pipeline_session("DaskRunner", extra=["--dask_client_address=tcp://other:8786"]) as options:
        assert options.view_as(DaskOptions).address == "tcp://other:8786"


def test_shards_are_stable_spread_and_cover_every_row():
    ids = pa.array(np.arange(10_000, dtype=np.int64))
    shards = shard_of(ids, 4)
    assert np.array_equal(shards, shard_of(ids, 4))
    counts = np.bincount(shards, minlength=4)
    assert counts.min() > 2000  # consecutive ids spread evenly
    table = pa.table({"user_id": ids, "x": np.arange(10_000)})
    parts = list(split_by_shard(table, "user_id", 4))
    assert [s for s, _ in parts] == [0, 1, 2, 3]
    assert sorted(np.concatenate([p["x"].to_numpy() for _, p in parts]).tolist()) == list(range(10_000))
    for s, part in parts:
        assert set(shard_of(part["user_id"], 4)) == {s}


def test_the_local_runner_sends_its_workers_every_byte_once_while_sending_is_slow():
    # The stream the FnApiRunner writes a bundle's input into (as _GrpcDataChannel
    # builds it). Unguarded (time-based, 1 s), a flush racing the writer dropped every
    # chunk written while a slow send was in flight: whole elements lost on big runs.
    import time

    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    from apache_beam.runners.worker.data_plane import ClosableOutputStream

    pipeline_options()
    sent: list[bytes] = []

    def slow_send(data: bytes) -> None:
        sent.append(data)
        time.sleep(0.3)  # a full send queue to a busy worker

    stream = ClosableOutputStream.create(slow_send, slow_send, worker_handlers.DATA_BUFFER_TIME_LIMIT_MS)
    chunks = [bytes([i]) * 1000 for i in range(60)]
    for chunk in chunks:  # spans more than one flush period of the unguarded stream
        stream.write(chunk)
        time.sleep(0.025)
    stream.close()
    assert b"".join(sent) == b"".join(chunks)
