"""The scoring job's local worker count (issue 22): the refresh now scores with one Beam
worker instead of the two of its other jobs. One and two workers must publish the same
bytes for the same window: the scores partition and every manifest field that is not
a time."""

from __future__ import annotations

import json

import pytest
from serving_helpers import PARTITION, job_config, partition_files, synthetic_contexts, write_context_run

from onepiece.serving.score_job import MANIFEST_NAME, run_scoring

pytestmark = pytest.mark.slow

TIMES = ("created_at", "wall_time_s")


def test_one_and_two_workers_publish_the_same_bytes(tmp_path, ranker_server):
    # Three shards of uneven size, several chunks each: with two workers the shards and
    # chunks arrive in another order than with one.
    shards = [synthetic_contexts(n, seed=s, max_cands=11) for n, s in ((90, 31), (40, 32), (70, 33))]
    published = {}
    for workers in (2, 1):
        data = tmp_path / f"w{workers}"
        write_context_run(data, shards)
        # max_in_flight 1 with the fixture's preferred batch of 32: chunks of 32 sequences.
        run_scoring(job_config(data, (ranker_server.grpc_url,), model_version=1, workers=workers, max_in_flight=1))
        published[workers] = partition_files(data)

    one, two = published[1], published[2]
    assert sorted(one) == ["_manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for name in one:
        if name != MANIFEST_NAME:
            assert one[name] == two[name], f"{name} differs between one and two workers"
    manifests = [json.loads(p[MANIFEST_NAME]) for p in (one, two)]
    assert manifests[0]["rows"]["scores"] == sum(
        sum(len(c) for c in t["cand_item_id"].to_pylist()) for t in shards
    )
    for m in manifests:
        for key in TIMES:
            m.pop(key)
        for entry in m["inputs"]:  # the same files under two data roots
            entry["path"] = entry["path"].split("contexts/", 1)[1]
    assert manifests[0] == manifests[1]
