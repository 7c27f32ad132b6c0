"""A Feast offline store whose point-in-time join is one DuckDB ASOF JOIN.

Feast's DuckDB offline store (ibis) builds a string row id from the join keys and the
time of every entity row, inner-joins every visible feature row to it, numbers them in
a window and joins the first back: about 60% of a refresh's query (issue 22, item 5).
This store is that store with one method replaced. ``get_historical_features`` keys on
the join key and the time directly::

    entity ASOF LEFT JOIN view ON key = key AND entity_time >= view_time

which picks, per entity row, the latest feature row stamped at or before its time;
Feast's other rules are kept exactly:

- ttl: the picked row is served only if ``view_time >= entity_time - ttl`` (Feast keeps
  rows with ``view_time + ttl >= entity_time``; the picked row is the latest, so when it
  is too old every visible row is). A ttl of 0 or None sets no bound, as in Feast;
- ties on the event time are broken by the source's created timestamp, latest first
  (``ORDER BY created DESC`` on Feast's own DuckDB connection, as Feast's window does);
  rows equal in both are served in no defined order, by Feast as here;
- an entity row with no visible feature row (unknown id, null key, every row past the
  ttl) keeps nulls; duplicate entity rows each get the answer.

Unlike Feast's join, the entity rows come back in the order of the entity frame, with
all their columns unchanged, followed by the feature columns.

Handled here: pandas entity frames with a datetime event column, FeatureViews over
Parquet FileSources without field mapping, one join key per view (a projection's
join-key map honoured), ttl, created timestamps, full feature names either way.
Anything else (on-demand views, other sources, several join keys per view, an SQL
entity frame, ``filter_by_created_timestamp`` on a view with created timestamps, a
feature column named like an entity column) goes to Feast's own DuckDB store unchanged,
as does everything that is not ``get_historical_features`` (materialisation, writes,
logging, monitoring).

Selected in ``feature_store.yaml`` with ``offline_store: type:
onepiece.features.asof_store.AsofDuckDBOfflineStore``; ``type: duckdb`` is Feast's store.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import StrictStr

from feast.data_format import ParquetFormat
from feast.feature_view import FeatureView
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.duckdb import (
    DuckDBOfflineStore,
    DuckDBOfflineStoreConfig,
    _read_data_source,
    _write_data_source,
)
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage

#: The ``offline_store: type:`` that selects this store in feature_store.yaml.
STORE_TYPE = f"{__name__}.AsofDuckDBOfflineStore"
ROW = "__onepiece_row"  # entity row number, carried through the join
TIME = "__onepiece_time"  # entity time as TIMESTAMPTZ


class AsofDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Feast's DuckDB offline store settings; only the type differs."""

    type: StrictStr = STORE_TYPE


@dataclass(frozen=True)
class _ViewJoin:
    """What one feature view contributes to the join (all names resolved)."""

    source_sql: str  # a DuckDB query over the view's source, on Feast's connection
    source_key: str  # the join key's column in the source
    entity_key: str  # the join key's column in the entity frame
    timestamp_field: str
    created_timestamp_column: str | None
    columns: tuple[tuple[str, str], ...]  # (source column, output column)
    ttl: timedelta | None


class AsofDuckDBOfflineStore(DuckDBOfflineStore):
    """Feast's DuckDB offline store with the point-in-time join done by an ASOF JOIN."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        plan = _plan(feature_views, feature_refs, entity_df, full_feature_names)
        if plan is None or kwargs or (
            filter_by_created_timestamp
            and any(source.created_timestamp_column for _, source, _ in plan[1])
        ):
            return DuckDBOfflineStore.get_historical_features(
                config=config,
                feature_views=feature_views,
                feature_refs=feature_refs,
                entity_df=entity_df,
                registry=registry,
                project=project,
                full_feature_names=full_feature_names,
                filter_by_created_timestamp=filter_by_created_timestamp,
                **kwargs,
            )
        assert isinstance(entity_df, pd.DataFrame)  # _plan answers None otherwise
        event_timestamp_col, views = plan
        repo_path = str(config.repo_path)
        tables = [_read_data_source(source, repo_path) for _, source, _ in views]
        backends = {id(ibis.get_backend(table)): ibis.get_backend(table) for table in tables}
        if len(backends) != 1:  # Feast reads every file source on ibis's default DuckDB
            raise RuntimeError(f"feature sources on {len(backends)} DuckDB connections")
        (backend,) = backends.values()
        joins = [
            _view_join(view, source, refs, table, full_feature_names)
            for (view, source, refs), table in zip(views, tables, strict=True)
        ]
        entity = pa.Table.from_pandas(entity_df, preserve_index=False)
        times = entity[event_timestamp_col]
        return AsofRetrievalJob(
            connection=backend.con,
            entity=entity,
            event_timestamp_col=event_timestamp_col,
            joins=tuple(joins),
            full_feature_names=full_feature_names,
            metadata=RetrievalMetadata(
                features=feature_refs,
                keys=[c for c in entity_df.columns if c != event_timestamp_col],
                min_event_timestamp=pc.min(times).as_py(),
                max_event_timestamp=pc.max(times).as_py(),
            ),
            repo_path=repo_path,
        )


def _plan(
    feature_views: list[FeatureView],
    feature_refs: list[str],
    entity_df: pd.DataFrame | str,
    full_feature_names: bool,
) -> tuple[str, list[tuple[FeatureView, FileSource, list[str]]]] | None:
    """(entity time column, [(view, its source, its features)]) if the ASOF join can
    answer, else None."""
    if not isinstance(entity_df, pd.DataFrame) or not feature_views:
        return None
    schema = dict(zip(entity_df.columns, entity_df.dtypes, strict=True))
    try:
        event_timestamp_col = offline_utils.infer_event_timestamp_from_entity_df(schema)
    except Exception:  # Feast's store raises its own error for this
        return None
    if not pd.api.types.is_datetime64_any_dtype(schema[event_timestamp_col]):
        return None
    views: list[tuple[FeatureView, FileSource, list[str]]] = []
    outputs: set[str] = set(entity_df.columns)
    planned_refs = 0
    for view in feature_views:
        source = view.batch_source
        parquet = isinstance(source, FileSource) and (
            isinstance(source.file_format, ParquetFormat)
            or (source.file_format is None and source.path.endswith(".parquet"))
        )
        if type(source) is not FileSource or not parquet or source.field_mapping:
            return None
        assert isinstance(source, FileSource)
        if not isinstance(view, FeatureView) or len(view.entity_columns) != 1:
            return None
        if _entity_key(view) not in entity_df.columns:
            return None
        prefix = f"{view.projection.name_to_use()}:"
        refs = [ref.split(":")[1] for ref in feature_refs if ref.startswith(prefix)]
        planned_refs += len(refs)
        for name in _output_names(view, refs, full_feature_names):
            if name in outputs:  # a collision Feast's join would resolve its own way
                return None
            outputs.add(name)
        views.append((view, source, refs))
    if planned_refs != len(feature_refs):  # on-demand views or refs of no view
        return None
    return event_timestamp_col, views


def _source_key(view: FeatureView) -> str:
    return view.entity_columns[0].name


def _entity_key(view: FeatureView) -> str:
    key = _source_key(view)
    return (view.projection.join_key_map or {}).get(key, key)


def _output_names(view: FeatureView, refs: list[str], full_feature_names: bool) -> list[str]:
    """Feast's column names: ``feature``, or ``<view or alias>__feature``."""
    if not full_feature_names:
        return list(refs)
    prefix = view.projection.name_alias or view.name
    return [f"{prefix}__{name}" for name in refs]


def _view_join(
    view: FeatureView, source: FileSource, refs: list[str], table, full_feature_names: bool
) -> _ViewJoin:
    return _ViewJoin(
        source_sql=ibis.to_sql(table, dialect="duckdb"),
        source_key=_source_key(view),
        entity_key=_entity_key(view),
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        columns=tuple(zip(refs, _output_names(view, refs, full_feature_names), strict=True)),
        ttl=view.ttl or None,
    )


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def asof_sql(entity_name: str, joins: tuple[_ViewJoin, ...]) -> str:
    """The point-in-time join over the registered entity table ``entity_name``.

    Its columns are ROW, TIME and the entity join keys; the answer has ROW and the
    feature columns, one row per entity row, in ROW order.
    """
    # Entity times as TIMESTAMPTZ: naive times are taken as UTC (Feast's connection is).
    ctes = [
        f"e AS (SELECT * REPLACE (CAST({_q(TIME)} AS TIMESTAMPTZ) AS {_q(TIME)}) "
        f"FROM {_q(entity_name)})"
    ]
    selects = [f"e.{_q(ROW)}"]
    froms = ["e"]
    for i, join in enumerate(joins):
        f = f"f{i}"
        ts, created = _q(join.timestamp_field), join.created_timestamp_column
        features = ", ".join(f"{_q(src)} AS {_q(out)}" for src, out in join.columns)
        latest = (
            # one row per (key, time): the latest created, as Feast's window orders them
            f" QUALIFY row_number() OVER (PARTITION BY {_q(join.source_key)}, {ts} "
            f"ORDER BY {_q(created)} DESC) = 1"
            if created
            else ""
        )
        ctes.append(
            f"{f} AS (SELECT {_q(join.source_key)} AS k, CAST({ts} AS TIMESTAMPTZ) AS t"
            f"{', ' if features else ''}{features} FROM ({join.source_sql}) AS s "
            f"WHERE {ts} IS NOT NULL{latest})"
        )
        for _, out in join.columns:
            value = f"{f}.{_q(out)}"
            if join.ttl is not None:
                micros = join.ttl // timedelta(microseconds=1)
                bound = f"e.{_q(TIME)} - to_microseconds({micros})"
                value = f"CASE WHEN {f}.t >= {bound} THEN {value} END"
            selects.append(f"{value} AS {_q(out)}")
        froms.append(
            f"ASOF LEFT JOIN {f} ON e.{_q(join.entity_key)} = {f}.k AND e.{_q(TIME)} >= {f}.t"
        )
    return (
        f"WITH {', '.join(ctes)} SELECT {', '.join(selects)} FROM {' '.join(froms)} "
        f"ORDER BY e.{_q(ROW)}"
    )


class AsofRetrievalJob(RetrievalJob):
    """The ASOF join, run when its answer is asked for, on Feast's DuckDB connection."""

    def __init__(
        self,
        connection,
        entity: pa.Table,
        event_timestamp_col: str,
        joins: tuple[_ViewJoin, ...],
        full_feature_names: bool,
        metadata: RetrievalMetadata,
        repo_path: str,
    ) -> None:
        super().__init__()
        self._connection = connection
        self._entity = entity
        self._event_timestamp_col = event_timestamp_col
        self._joins = joins
        self._full_feature_names = full_feature_names
        self._metadata = metadata
        self._repo_path = repo_path

    def _join_input(self) -> pa.Table:
        """Row numbers, the entity times and the join keys the views use."""
        keys = dict.fromkeys(join.entity_key for join in self._joins)
        columns = {ROW: pa.array(np.arange(self._entity.num_rows, dtype=np.int64))}
        columns |= {key: self._entity[key] for key in keys}
        columns[TIME] = self._entity[self._event_timestamp_col]
        return pa.table(columns)

    def to_sql(self) -> str:
        return asof_sql("entity_df", self._joins)

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        name = f"onepiece_entity_{uuid.uuid4().hex}"
        # Feast's connection: the sources are temporary views on it.
        self._connection.register(name, self._join_input())
        try:
            found = self._connection.sql(asof_sql(name, self._joins)).to_arrow_table()
        finally:
            self._connection.unregister(name)
        if found.num_rows != self._entity.num_rows:
            raise RuntimeError(
                f"ASOF join returned {found.num_rows} rows for {self._entity.num_rows} entity rows"
            )
        result = self._entity
        for column in found.column_names[1:]:
            result = result.append_column(column, found[column])
        return result

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list:
        return []  # on-demand views are delegated to Feast's store

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._metadata

    def persist(
        self,
        storage: SavedDatasetStorage,
        allow_overwrite: bool = False,
        timeout: int | None = None,
    ) -> None:
        _write_data_source(
            ibis.memtable(self._to_arrow_internal(timeout)),
            storage.to_data_source(),
            self._repo_path,
            "overwrite",
            allow_overwrite,
        )
