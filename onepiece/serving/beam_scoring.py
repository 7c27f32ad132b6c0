"""Beam pieces of the scoring job: read context chunks, score them on Triton, write shards.

Beam has no Triton model handler; :class:`TritonRankerHandler` subclasses Beam's
``RemoteModelHandler`` (retries with backoff and client-side throttling around
``request``) and calls :class:`onepiece.serving.client.TritonRankerClient` (sharding over
servers, failover). :class:`ScoreChunks` calls the handler per chunk, as RunInference
would, and routes chunks that still fail to the dead letters. (RunInference itself is
not used: its batching flushes in finish_bundle and its exception handling uses tagged
outputs, neither of which Beam's DaskRunner carries; see onepiece/beam_portable.py.)
Counts are COUNT records for the run summary, not runner metrics.

An element is ``(shard, chunk, contexts)``: the index of the context file it came from,
its chunk number in that file, and whole context rows (an Arrow table) sized to the
served preferred batch size times the client's in-flight requests. Scores keep the shard
of their context file, so the output layout (``part-<shard>.parquet``) never depends on
worker count or arrival order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.ml.inference.base import PredictionResult, RemoteModelHandler

from onepiece.beam_portable import PROBLEM, WRITTEN, count
from onepiece.serving.client import TritonClientConfig, TritonRankerClient, TritonUnavailable
from onepiece.serving.fusion import FusionConfig
from onepiece.serving.scoring import ModelStamp, chunk_rows, scores_table

NAMESPACE = "onepiece_scoring"
CHUNKS, SCORED, FAILED, RANKED = "chunks", "scored", "failed", "ranked"
Element = tuple[int, int, pa.Table]


class TritonRankerHandler(RemoteModelHandler[Element, PredictionResult, TritonRankerClient]):
    """RunInference handler: one element (a chunk of context rows) per request."""

    def __init__(
        self,
        client_config: TritonClientConfig,
        expected_config_json: str | None = None,
        feature_service: str | None = None,
        # The client already retries with backoff and fails over between servers; Beam's
        # own retry (5 s initial delay) is one more round for a fleet that was restarting.
        num_retries: int = 1,
        throttle_delay_secs: int = 1,
    ) -> None:
        super().__init__(
            namespace=NAMESPACE,
            num_retries=num_retries,
            throttle_delay_secs=throttle_delay_secs,
            retry_filter=_worth_retrying,
        )
        self.client_config = client_config
        self.expected_config_json = expected_config_json
        self.feature_service = feature_service

    def create_client(self) -> TritonRankerClient:
        import atexit

        client = TritonRankerClient(self.client_config)
        client.preflight(self.expected_config_json, self.feature_service)
        # Beam has no teardown hook for handler clients: close before the interpreter
        # dismantles grpc, or its channel's __del__ fails noisily.
        atexit.register(client.close)
        return client

    def request(
        self,
        batch: Sequence[Element],
        model: TritonRankerClient,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        results = []
        for element in batch:
            shard, chunk, contexts = element
            probs = model.score_contexts(contexts, source=f"context shard {shard} chunk {chunk}")
            results.append(PredictionResult(element, probs, model_id=str(model.served.version)))
        return results

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"min_batch_size": 1, "max_batch_size": 1}  # elements are already batches


def _worth_retrying(err: Exception) -> bool:
    """Another round only for a fleet that failed this batch while it was thought healthy;
    a rejected request, or a fleet already known down, goes to the dead letters at once."""
    return isinstance(err, TritonUnavailable) and not err.circuit_open


class ReadContextChunks(beam.DoFn):
    """(shard, path) -> (shard, chunk, rows) with at most ``max_sequences`` sequences."""

    def __init__(self, group_size: int, max_sequences: int) -> None:
        self.group_size, self.max_sequences = group_size, max_sequences

    def process(self, shard_path: tuple[int, str]):
        from onepiece.contract import conform

        shard, path = shard_path
        table = conform(pq.read_table(path), "contexts", path)
        yield count("context_rows_read", table.num_rows)
        for chunk, rows in enumerate(chunk_rows(table, self.group_size, self.max_sequences)):
            yield CHUNKS, (shard, chunk, rows)


class ScoreChunks(beam.DoFn):
    """(shard, chunk, rows) -> (SCORED, PredictionResult), or (FAILED, ([element], error))
    once the handler's retries are spent. The client opens on first use, so a fleet that
    is down at start dead-letters its chunks like one that fails later."""

    def __init__(self, handler: TritonRankerHandler) -> None:
        self.handler = handler
        self.client: TritonRankerClient | None = None

    def process(self, element: Element):
        try:
            if self.client is None:
                self.client = self.handler.create_client()
            (result,) = self.handler.run_inference([element], self.client)
        except Exception as err:  # noqa: BLE001 - every failure is a dead letter
            yield FAILED, ([element], f"{type(err).__name__}: {err}")
            return
        yield SCORED, result

    def teardown(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class FuseAndRank(beam.DoFn):
    """PredictionResult -> (shard, (chunk, score rows))."""

    def __init__(self, fusion: FusionConfig, model: ModelStamp, scored_at: dt.datetime) -> None:
        self.fusion, self.model, self.scored_at = fusion, model, scored_at

    def process(self, result: PredictionResult):
        shard, chunk, contexts = result.example
        table = scores_table(
            contexts, result.inference, self.fusion, self.model, self.scored_at,
            source=f"context shard {shard} chunk {chunk}",
        )
        yield count("scores_rows", table.num_rows)
        yield count("requests_scored", contexts.num_rows)
        yield RANKED, (shard, (chunk, table))


@dataclass(frozen=True)
class ShardWriter:
    """Writes one shard's scores, sorted, as ``part-<shard>.parquet`` (same rows, same bytes)."""

    out_dir: str

    def __call__(self, keyed: tuple[int, Iterable[tuple[int, pa.Table]]]) -> tuple[str, str]:
        from onepiece.contract import SCORES_SCHEMA
        from onepiece.storage import write_parquet

        shard, chunks = keyed
        parts = [table for _, table in sorted(chunks, key=lambda c: c[0])]
        table = pa.concat_tables(parts) if parts else SCORES_SCHEMA.empty_table()
        table = table.sort_by([("request_id", "ascending"), ("rank", "ascending")]).combine_chunks()
        name = f"part-{shard:05d}.parquet"
        write_parquet(table, Path(self.out_dir) / name)
        return WRITTEN, name


def dead_letters(failed: tuple[Any, Any]) -> Iterator[tuple[str, str]]:
    """One PROBLEM record (a JSON line) per context row of a chunk that could not be scored."""
    import json

    batch, error = failed
    message = str(error[1] if isinstance(error, tuple) and len(error) > 1 else error)
    for shard, chunk, contexts in batch:
        for request_id in contexts.column("request_id").to_pylist():
            yield PROBLEM, json.dumps(
                {"request_id": request_id, "shard": shard, "chunk": chunk, "error": message},
                sort_keys=True,
            )
