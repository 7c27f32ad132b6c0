"""Beam composite transforms for the assembly jobs. They only wire the pure functions.

Elements are Arrow tables (one Parquet row group, or one shard's rows), never single
events: every step is a vectorised call on a whole batch. The data flow:

    ReadContractTable   Parquet files -> conformed batches (bad batches -> rejections)
    ShardBy             batch -> (shard, rows of that shard), by a stable id hash
    AssembleUserShards  per user shard: CIS, IH (and labels)  + request keys by query
    AssembleAnchors     per query shard: PA for those requests, routed back by user
    JoinSegments        per user shard: IH/CIS joined with PA  -> id-only contexts
    FetchSideFeatures   all shards' (id, as_of) keys -> ONE side-feature call per run
    JoinSideFeatures    per user shard: features joined, rows sorted -> final table
    WriteShards         shard i -> part-0000i-*.parquet (one file per shard)

Rejections (contract violations) and counts are records for the run summary
(onepiece.beam_portable): the driver fails the run with the first rejection, by name,
before anything is published, and builds the manifest from the counts, never from
runner metrics. The same graph runs on the FnApiRunner and on Dask.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from onepiece.assembly import anchors, contexts, history, labels, requests, side
from onepiece.assembly.config import AssemblyConfig
from onepiece.assembly.sharding import concat_or_empty, split_by_shard
from onepiece.beam_portable import PROBLEM, WRITTEN, Routed, count
from onepiece.contract import CANDIDATES_SCHEMA, EVENTS_SCHEMA, ContractError, conform

ROWS = "rows"
_DAY = re.compile(r"dt=(\d{4}-\d{2}-\d{2})")
#: Candidates carry their source file, so a duplicate across files can be named.
SOURCE = "_source"
SOURCED_CANDIDATES = pa.schema(
    [f for f in CANDIDATES_SCHEMA if f.name != "recall_source"]
    + [pa.field(SOURCE, pa.dictionary(pa.int32(), pa.string()))]
)
IDS_REQUEST_KEYS = requests.REQUEST_SCHEMA


def rejection(err: ContractError) -> str:
    """A contract violation as one JSON line (sortable, so the first is the same each run)."""
    return json.dumps(
        {
            "table": err.table,
            "source": err.source,
            "problem": err.problem,
            "column": err.column,
            "row": err.row,
        },
        sort_keys=True,
    )


def user_events(events: pa.Table, training: bool, ih_length: int) -> pa.Table:
    """Events the user shards need: all types for training labels; for a refresh (one T)
    each user's last ``ih_length`` IH events of the batch, so a crawler's log is capped
    before the shuffle."""
    if training:
        return events
    return history.last_ih_events(events, ih_length)


def anchor_events(events: pa.Table, as_of: dt.datetime | None, window: dt.timedelta) -> pa.Table:
    """Events the query shards need, as anchor events. A refresh (one T) sums them per
    batch before the shuffle; training keeps one row per event (each request has its T)."""
    if as_of is None:
        return anchors.pa_events(events)
    return anchors.anchor_counts(events, as_of, window)


class ConformBatches(beam.DoFn):
    """(path, batch) -> the batch cast to the contract; a bad batch becomes a rejection.

    Beam's parquet IO yields one batch per row group, so a rejection's row number counts
    from the start of its row group (the file has one row group unless it is large).
    """

    def __init__(self, table: str) -> None:
        self.table = table

    def process(self, element: tuple[str, pa.Table]):
        path, batch = element
        match = _DAY.search(path)
        day = dt.date.fromisoformat(match.group(1)) if match else None
        try:
            conformed = conform(batch, self.table, path, day)
        except ContractError as err:
            yield count(f"rejected_{self.table}_batches", 1)
            yield PROBLEM, rejection(err)
            return
        yield count(f"{self.table}_rows_read", conformed.num_rows)
        if self.table == "candidates":
            # recall_source is not used downstream: leave it out of the shuffle.
            zeros = pa.array(np.zeros(conformed.num_rows, dtype=np.int32))
            source = pa.DictionaryArray.from_arrays(zeros, pa.array([path]))
            conformed = conformed.drop_columns(["recall_source"]).append_column(SOURCE, source)
        yield ROWS, conformed


class CutEventsFn(beam.DoFn):
    """A refresh at T sees only events with T - lookback <= ts < T; later ones are counted."""

    def __init__(self, as_of: dt.datetime, lookback: dt.timedelta) -> None:
        self.as_of, self.lookback = as_of, lookback

    def process(self, events: pa.Table):
        yield count("dropped_event_at_or_after_as_of", contexts.count_at_or_after(events, self.as_of))
        yield ROWS, contexts.events_before(events, self.as_of, self.lookback)


class SelectWindowFn(beam.DoFn):
    """The candidate rows of the run's window [start, end), counted."""

    def __init__(self, start: dt.datetime, end: dt.datetime) -> None:
        self.start, self.end = start, end

    def process(self, cands: pa.Table):
        selected = requests.select_window(cands, self.start, self.end)
        yield count("candidates_in_window", selected.num_rows)
        yield ROWS, selected


class ReadRowGroupsFn(beam.DoFn):
    """path -> (path, one row group as a table) for each row group of the Parquet file.

    Beam's FileSystems open the file, so s3:// and gs:// paths work on a cluster.
    (Beam's parquet IO is not used: its reads go through splittable ranges and
    Reshuffle, which the Dask runner does not translate.)
    """

    def process(self, path: str):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as handle:
            parquet = pq.ParquetFile(handle)
            for i in range(parquet.num_row_groups):
                yield path, parquet.read_row_group(i)


class ReadContractTable(beam.PTransform):
    """A contract table's Parquet files, conformed: {"rows": batches, "summary": records}."""

    def __init__(self, table: str, files: list[str]) -> None:
        super().__init__()
        self.table, self.files = table, sorted(files)

    def expand(self, pbegin):
        return (
            pbegin
            | "ListFiles" >> beam.Create(self.files)
            | "ReadParquet" >> beam.ParDo(ReadRowGroupsFn())
            | "Conform" >> Routed(ConformBatches(self.table), ROWS)
        )


class ShardBy(beam.PTransform):
    """batch -> (shard, rows of the batch in that shard), by a stable hash of ``column``."""

    def __init__(self, column: str, shards: int) -> None:
        super().__init__()
        self.column, self.shards = column, shards

    def expand(self, batches):
        column, shards = self.column, self.shards
        return batches | "Split" >> beam.FlatMap(lambda t: split_by_shard(t, column, shards))


class AssembleUserShardsFn(beam.DoFn):
    """Per user shard: requests with CIS and IH (and labels); request keys routed by query."""

    USERS, BY_QUERY = "users", "by_query"

    def __init__(self, config: AssemblyConfig, as_of: dt.datetime | None) -> None:
        self.config, self.as_of = config, as_of

    def process(self, element):
        shard, grouped = element
        cands = concat_or_empty(list(grouped["cands"]), SOURCED_CANDIDATES)
        events = concat_or_empty(list(grouped["events"]), EVENTS_SCHEMA)
        if cands.num_rows == 0:
            return
        bad = list(self._violations(cands))
        if bad:
            for err in bad:
                yield PROBLEM, rejection(err)
            return
        training = self.as_of is None
        table = contexts.user_segments(cands, events, self.config, self.as_of, training)
        yield count("requests", table.num_rows)
        yield count("candidates", cands.num_rows)
        if training:
            keep = labels.has_click(table)
            dropped = table.num_rows - int(pc.sum(keep).as_py() or 0)
            yield count("dropped_request_without_click", dropped)
            table = table.filter(keep)
        yield self.USERS, (shard, table)
        keys = requests.request_keys(table)
        for query_shard, part in split_by_shard(keys, "query_id", self.config.shards):
            yield self.BY_QUERY, (query_shard, part)

    @staticmethod
    def _violations(cands: pa.Table):
        dups = requests.duplicate_candidates(cands)
        for request_id, item_id in zip(dups["request_id"].to_pylist(), dups["item_id"].to_pylist()):
            rows = cands.filter(
                pc.and_(
                    pc.equal(cands["request_id"], request_id),
                    pc.equal(cands["item_id"], item_id),
                )
            )
            sources = sorted(set(rows[SOURCE].to_pylist()))
            yield ContractError(
                "candidates",
                ", ".join(sources),
                f"duplicate candidate row: request_id={request_id!r} item_id={item_id} "
                f"appears {rows.num_rows} times",
                column="request_id,item_id",
            )
        for request_id in requests.inconsistent_requests(cands):
            rows = cands.filter(pc.equal(cands["request_id"], request_id))
            yield ContractError(
                "candidates",
                ", ".join(sorted(set(rows[SOURCE].to_pylist()))),
                f"the rows of request {request_id!r} disagree on user, query or time",
                column="request_id",
            )


class AssembleAnchorsFn(beam.DoFn):
    """Per query shard: PA of every request there, routed back to its user shard."""

    def __init__(self, config: AssemblyConfig) -> None:
        self.config = config

    def process(self, element):
        _, grouped = element
        keys = concat_or_empty(list(grouped["requests"]), IDS_REQUEST_KEYS)
        if keys.num_rows == 0:
            return
        events = concat_or_empty(list(grouped["events"]), anchors.ANCHOR_EVENTS_SCHEMA)
        found = anchors.preference_anchors_from(keys, events, self.config)
        table = contexts.add_anchors(keys, found)
        table = table.select(["request_id", "user_id"] + anchors.PA_SCHEMA.names)
        yield from split_by_shard(table, "user_id", self.config.shards)


def join_segments(element) -> tuple[int, pa.Table | None]:
    """(user shard, {users, anchors, seed}) -> id-only contexts of the shard (None if empty)."""
    shard, grouped = element
    users = [t for t in grouped["users"] if t.num_rows]
    if not users:
        return shard, None
    table = pa.concat_tables(users).combine_chunks()
    pa_rows = pa.concat_tables(list(grouped["anchors"])).combine_chunks()
    table = table.take(pc.sort_indices(table["request_id"]))
    pa_rows = pa_rows.take(pc.sort_indices(pa_rows["request_id"]))
    if not table["request_id"].equals(pa_rows["request_id"]):
        raise RuntimeError(f"shard {shard}: anchors do not match the shard's requests")
    return shard, contexts.add_anchors(table, pa_rows.select(anchors.PA_SCHEMA.names))


class FetchSideFeaturesFn(beam.DoFn):
    """All shards' (id, as_of) keys, gathered under one key -> side features, in ONE
    call per run (a GroupByKey, not a combiner: runs on every runner)."""

    FEATURES = "features"

    def __init__(self, side_source: contexts.SideSource) -> None:
        self.side_source = side_source

    def process(self, gathered: tuple[int, list[dict[str, pa.Table] | None]]):
        keys = side.merge_keys([part for part in gathered[1] if part is not None])
        if not any(t.num_rows for t in keys.values()):  # no requests: nothing to fetch
            features = side.DefaultSideSource()(keys)
        else:
            features = self.side_source(keys)
        for kind, n in sorted(features.unknown.items()):
            yield count(f"defaulted_unknown_{kind}", int(n))
        yield self.FEATURES, features


class JoinSideFeaturesFn(beam.DoFn):
    """Per user shard (its id-only rows grouped with the run's features): join the side
    features, cast to the contract, sort the rows."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema

    def process(self, element):
        shard, grouped = element
        (table,) = grouped["ids"]
        if table is None:
            yield ROWS, (shard, self.schema.empty_table())
            return
        (features,) = grouped["features"]
        joined, missing = side.join_side_features(table, features)
        for reason, n in sorted(missing.items()):
            yield count(f"defaulted_{reason}", n)
        final = contexts.finish(joined, self.schema)
        yield count("rows_written", final.num_rows)
        yield ROWS, (shard, final)


def shard_file_name(shard: int) -> str:
    """The file of one output shard (the name Beam's file sinks give one file per shard)."""
    return f"part-{shard:05d}-00000-of-00001.parquet"


class WriteShardFn(beam.DoFn):
    """(shard, table) -> ``<out_dir>/part-0000i-00000-of-00001.parquet``; a WRITTEN record.

    Each shard is one sorted table, written in one call: the same bytes on every run and
    runner. Written aside and renamed, so a retried bundle never leaves half a file.
    """

    def __init__(self, out_dir: str, schema: pa.Schema) -> None:
        self.out_dir, self.schema = out_dir, schema

    def process(self, element: tuple[int, pa.Table]):
        import os

        from onepiece.storage import write_parquet

        shard, table = element
        name = shard_file_name(shard)
        tmp = f"{self.out_dir}/.{name}.tmp-{os.getpid()}"
        try:
            write_parquet(table.cast(self.schema), tmp)
            os.replace(tmp, f"{self.out_dir}/{name}")
        finally:  # a failed write leaves nothing behind to be published
            if os.path.exists(tmp):
                os.remove(tmp)
        yield WRITTEN, name


class WriteShards(beam.PTransform):
    """One Parquet file per shard; returns the WRITTEN records for the run summary."""

    def __init__(self, out_dir: str, schema: pa.Schema) -> None:
        super().__init__()
        self.out_dir, self.schema = out_dir, schema

    def expand(self, shard_tables):
        return shard_tables | "Write" >> beam.ParDo(WriteShardFn(self.out_dir, self.schema))


class AssembleContexts(beam.PTransform):
    """Conformed candidates and events -> final context (or training) rows per shard.

    ``as_of`` is the refresh time T (events must already be cut to before T), or None for
    training rows (each request is its own as_of). Returns (rows by shard, the summary
    records of its steps).
    """

    def __init__(
        self,
        config: AssemblyConfig,
        as_of: dt.datetime | None,
        side_source: contexts.SideSource,
        schema: pa.Schema,
    ) -> None:
        super().__init__()
        self.config, self.as_of = config, as_of
        self.side_source, self.schema = side_source, schema

    def expand(self, inputs):
        cands, events = inputs
        shards = self.config.shards
        training = self.as_of is None
        cands_by_user = cands | "CandsByUser" >> ShardBy("user_id", shards)
        events_by_user = (
            events
            | "UserEvents" >> beam.Map(user_events, training, self.config.ih_length)
            | "EventsByUser" >> ShardBy("user_id", shards)
        )
        events_by_query = (
            events
            | "AnchorEvents" >> beam.Map(anchor_events, self.as_of, self.config.pa_window)
            | "EventsByQuery" >> ShardBy("query_id", shards)
        )
        user_parts = (
            {"cands": cands_by_user, "events": events_by_user}
            | "GroupByUser" >> beam.CoGroupByKey()
            | "AssembleUserShards"
            >> Routed(
                AssembleUserShardsFn(self.config, self.as_of),
                AssembleUserShardsFn.USERS, AssembleUserShardsFn.BY_QUERY,
            )
        )
        anchor_parts = (
            {"requests": user_parts[AssembleUserShardsFn.BY_QUERY], "events": events_by_query}
            | "GroupByQuery" >> beam.CoGroupByKey()
            | "AssembleAnchors" >> beam.ParDo(AssembleAnchorsFn(self.config))
        )
        users = user_parts[AssembleUserShardsFn.USERS]
        seed = users.pipeline | "SeedShards" >> beam.Create([(i, None) for i in range(shards)])
        ids = (
            {"users": users, "anchors": anchor_parts, "seed": seed}
            | "GroupShards" >> beam.CoGroupByKey()
            | "JoinSegments" >> beam.Map(join_segments)
        )
        # Every shard sends its keys (or None) under one key: exactly one fetch per run.
        fetched = (
            ids
            | "EntityKeys" >> beam.Map(lambda kv: (0, None if kv[1] is None else side.entity_keys(kv[1])))
            | "AllKeys" >> beam.GroupByKey()
            | "FetchSideFeatures"
            >> Routed(FetchSideFeaturesFn(self.side_source), FetchSideFeaturesFn.FEATURES)
        )
        # The run's features go to every shard by a join, not a side input.
        features = fetched[FetchSideFeaturesFn.FEATURES] | "ToEveryShard" >> beam.FlatMap(
            lambda f: [(i, f) for i in range(shards)]
        )
        joined = (
            {"ids": ids, "features": features}
            | "GroupWithFeatures" >> beam.CoGroupByKey()
            | "JoinSideFeatures" >> Routed(JoinSideFeaturesFn(self.schema), ROWS)
        )
        summary = [user_parts["summary"], fetched["summary"], joined["summary"]]
        return joined[ROWS], summary

