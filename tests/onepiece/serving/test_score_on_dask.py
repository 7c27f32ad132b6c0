"""The scoring job on Beam's DaskRunner writes the same bytes as on the FnApiRunner."""

from __future__ import annotations

import json

import pytest
from serving_helpers import job_config, partition_files, synthetic_contexts, write_context_run

from onepiece.beam_options import DASK_SCHEDULER_ENV
from onepiece.serving.score_job import run_scoring

pytestmark = [pytest.mark.scale, pytest.mark.slow]


def test_scoring_job_on_dask_writes_the_default_runners_bytes(tmp_path, ranker_server, monkeypatch):
    monkeypatch.delenv(DASK_SCHEDULER_ENV, raising=False)  # an embedded LocalCluster
    write_context_run(tmp_path, [synthetic_contexts(40, seed=s, max_cands=9) for s in (21, 22)])
    urls = (ranker_server.grpc_url,)
    default = run_scoring(job_config(tmp_path, urls, model_version=1))
    want = partition_files(tmp_path)
    on_dask = run_scoring(job_config(tmp_path, urls, model_version=1, runner="dask", workers=2))
    got = partition_files(tmp_path)
    parquet = lambda files: {k: v for k, v in files.items() if k.endswith(".parquet")}  # noqa: E731
    assert sorted(parquet(want)) == ["part-00000.parquet", "part-00001.parquet"]
    assert parquet(got) == parquet(want)
    assert on_dask["rows"] == default["rows"] and on_dask["rows"]["context_rows"] == 80
    assert json.loads(got["_manifest.json"])["dropped"] == {}
