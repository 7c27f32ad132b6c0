"""Beam runner options in one place: every job names its runner explicitly.

The default is Beam's in-process portable runner (FnApiRunner) in multi-processing mode
with two worker processes. We do not default to ``DirectRunner``: since Beam 2.68 it may
first try the Prism runner, which downloads a binary at run time and fails offline.
Flink, Spark and Dataflow are reached by options only (``extra``; ``--beam-arg`` on the
CLI; unknown flags of the beam_jobs scripts). Their job servers are fetched at run time,
so none of them runs on this offline machine; the flags are::

    --runner=FlinkRunner --flink_master=HOST:8081 \
        --environment_type=DOCKER --sdk_container_image=IMAGE
    --runner=SparkRunner --spark_master_url=spark://HOST:7077 \
        --environment_type=DOCKER --sdk_container_image=IMAGE
    --runner=DataflowRunner --project=PROJECT --region=REGION \
        --temp_location=gs://BUCKET/tmp --sdk_container_image=IMAGE

Beam's DaskRunner runs the jobs on a ``dask.distributed`` cluster: runner ``dask`` (or
``DaskRunner``) with the scheduler at ``$ONEPIECE_DASK_SCHEDULER`` (``tcp://HOST:8786``;
or pass ``--dask_client_address``); without one, :func:`pipeline_session` starts a
LocalCluster of ``workers`` processes on 127.0.0.1 for the run. The cluster's workers
must import this package (same environment). See onepiece/beam_portable.py for what the
jobs avoid so that they run there unchanged.

IMAGE is a Beam Python 3.11 SDK image with this project installed (or use
``--extra_package=dist/onepiece_prerank-0.1.0.tar.gz``); ``--environment_type=LOOPBACK``
runs the SDK in the submitting process, for a local Flink or Spark test cluster. On a
cluster, the data root, the output directory and the Feast repository must be reachable
from the workers (shared filesystem or object store).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers

LOCAL_RUNNERS = frozenset({"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner"})
DASK_RUNNERS = frozenset({"dask", "DaskRunner"})
DASK_SCHEDULER_ENV = "ONEPIECE_DASK_SCHEDULER"
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def guard_local_data_plane() -> None:
    """Stop the local runner from losing (or repeating) the data it sends its workers.

    The FnApiRunner streams each bundle's input to its SDK worker processes through a
    ``TimeBasedBufferingClosableOutputStream`` (``DATA_BUFFER_TIME_LIMIT_MS`` = 1 s). Its
    timer thread flushes with get(), send(), clear() while the runner thread keeps
    writing into the same buffer without that lock (Beam 2.77): whatever is written
    while a send blocks (the 100 MB send queue is full, the worker is busy) is cleared
    unsent, and a close() during a flush sends those bytes twice. On large runs whole
    elements vanished, e.g. one shard's part of a Parquet row group before GroupByUser.
    With the limit at 0 the runner uses the size-based stream: written and sent by one
    thread, never cleared behind the writer's back.
    """
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def pipeline_options(
    runner: str = "FnApiRunner",
    workers: int = 2,
    extra: Sequence[str] = (),
    in_process: bool = False,
) -> PipelineOptions:
    """PipelineOptions for ``runner``; local runners run ``workers`` worker processes.

    With ``in_process`` and one worker, a local runner runs that worker inside this
    process instead (Beam's ``in_memory`` running mode: the SDK worker is called
    directly, its data plane is a list in memory, no gRPC and no subprocess), so the
    job pays no worker start-up and no second import of what the driver has imported
    already (Feast, for the contexts job). With more workers it is ignored (processes
    are the point then); other runners ignore it too.

    ``extra`` is passed through unchanged (and wins over the defaults), so any runner's
    own flags (``--flink_master``, ``--project``, ...) reach it.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if runner in DASK_RUNNERS:
        return PipelineOptions([f"--runner={DASK_RUNNER}", *extra])
    flags = [f"--runner={runner}"]
    if runner in LOCAL_RUNNERS:
        guard_local_data_plane()  # read when the runner starts its data server
        mode = "in_memory" if in_process and workers == 1 else "multi_processing"
        flags += [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]
    return PipelineOptions(flags + list(extra))


@contextlib.contextmanager
def pipeline_session(
    runner: str = "FnApiRunner", workers: int = 2, extra: Sequence[str] = (), in_process: bool = False
) -> Iterator[PipelineOptions]:
    """PipelineOptions for one run, with what the runner needs around it.

    For Dask: the scheduler of ``--dask_client_address`` or $ONEPIECE_DASK_SCHEDULER,
    else an embedded LocalCluster of ``workers`` processes, closed after the run.
    """
    if runner not in DASK_RUNNERS:
        yield pipeline_options(runner, workers, extra, in_process)
        return
    if any(flag.startswith("--dask_client_address") for flag in extra):
        yield pipeline_options(runner, workers, extra)
        return
    address = os.environ.get(DASK_SCHEDULER_ENV)
    if address:
        yield pipeline_options(runner, workers, [f"--dask_client_address={address}", *extra])
        return
    with local_dask_cluster(workers) as address:
        yield pipeline_options(runner, workers, [f"--dask_client_address={address}", *extra])


@contextlib.contextmanager
def local_dask_cluster(workers: int = 2) -> Iterator[str]:
    """A ``dask.distributed`` LocalCluster of worker processes on 127.0.0.1; its address."""
    try:
        from distributed import LocalCluster
    except ImportError as err:  # the `scale` extra of `make setup`
        raise RuntimeError(
            "the Dask runner needs the 'distributed' package (pip install '.[scale]')"
        ) from err
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True,
        host="127.0.0.1", dashboard_address="127.0.0.1:0",  # a free port, never 8787
    ) as cluster:
        yield cluster.scheduler_address


def release(result) -> None:
    """Close what a finished run keeps open (the DaskRunner's client to the scheduler)."""
    client = getattr(result, "client", None)
    if client is not None:
        client.close()
