"""The data contract in code: the pyarrow schema of every table the scorer reads or writes.

This module is the one source of truth for table layouts (see
``../shared/docs/data-contract.md``). Every stage (world generator, Feast sources, Beam
jobs, training, Triton client, DAGs) imports its schemas from here instead of spelling
column names again.

Layout of the data root (Hive-style partitions)::

    items/      item side-feature snapshots        (Feast source)
    users/      user profile snapshots             (Feast source)
    queries/    query feature snapshots            (Feast source)
    events/dt=YYYY-MM-DD/      the search interaction log
    candidates/dt=YYYY-MM-DD/  upstream recall output to be re-scored
    scores/dt=YYYY-MM-DD/hour=HH/   pre-rank scores, one partition per run
    retrieval/dt=YYYY-MM-DD/hour=HH/  the onePiece retrieval route's candidates per run

Context rows (built by the Beam jobs) are self-contained: every item token (IH, PA, CIS)
carries its side features as parallel list columns ``{segment}_{feature}``, and the user
and query features are scalar columns. The features are joined point-in-time by the
assembly step, so the scoring step needs nothing but the context row.

Beside the layouts, each :class:`TableSpec` declares the rules its values keep; this is
the one place they are written, and ``validate.conform`` derives every check from it:

- non-null: every field with ``nullable=False`` (ids, keys, timestamps);
- ranges (``ranges``): prices, counts and statistics finite and >= 0 (items' price and
  sales_30d, queries' popularity_7d); rates finite and in [0, 1] (items' ctr_7d and
  cvr_7d); events' event_type one of EVENT_TYPES and position >= 0; the scores' rank
  >= 1 (their probabilities are the publish guard's, ``onepiece.pipeline.guard``);
- unique keys (``unique``): one candidate row per (request_id, item_id) (also in
  scores), one snapshot per (entity id, event_timestamp) in items, users and queries
  (the input check applies a key to all files of a partition together);
- the partition's time (``partition_time``): events' event_timestamp and candidates'
  request_timestamp lie inside the ``dt=`` day of the file that holds them.

``onepiece.inputs`` applies them to every file a run reads before any Beam job starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pyarrow as pa

TIMESTAMP: Final = pa.timestamp("us", tz="UTC")

# ---------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------

#: Event types of the interaction log, with their int8 codes in context rows.
EVENT_TYPES: Final[tuple[str, ...]] = ("impression", "click", "add_to_cart", "order")
EVENT_TYPE_CODE: Final[dict[str, int]] = {name: code for code, name in enumerate(EVENT_TYPES)}
#: Events that enter the interaction history (IH). Impressions do not.
IH_EVENT_TYPES: Final[tuple[str, ...]] = ("click", "add_to_cart", "order")

#: Preference-anchor groups in their fixed business order (never interleaved).
PA_GROUPS: Final[tuple[str, ...]] = ("exposed", "clicked", "ordered")
PA_GROUP_CODE: Final[dict[str, int]] = {name: code for code, name in enumerate(PA_GROUPS)}

#: Ranking tasks, in the order of the progressive reasoning steps (weakest first).
TASKS: Final[tuple[str, ...]] = ("impression", "click", "add_to_cart", "order")

# ---------------------------------------------------------------------------
# Side features: (name, type, default for an unknown entity)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """One side feature of an entity: its column, Arrow type and fallback value."""

    name: str
    type: pa.DataType
    default: object
    categorical: bool


ITEM_FEATURES: Final[tuple[FeatureSpec, ...]] = (
    FeatureSpec("shop_id", pa.int64(), -1, True),
    FeatureSpec("category_id", pa.int64(), -1, True),
    FeatureSpec("price", pa.float64(), 0.0, False),
    FeatureSpec("ctr_7d", pa.float32(), 0.0, False),
    FeatureSpec("cvr_7d", pa.float32(), 0.0, False),
    FeatureSpec("sales_30d", pa.int64(), 0, False),
)
USER_FEATURES: Final[tuple[FeatureSpec, ...]] = (
    FeatureSpec("age_bucket", pa.int32(), -1, True),
    FeatureSpec("gender", pa.int32(), -1, True),
    FeatureSpec("region_id", pa.int64(), -1, True),
)
QUERY_FEATURES: Final[tuple[FeatureSpec, ...]] = (
    FeatureSpec("query_text", pa.string(), "", False),
    FeatureSpec("popularity_7d", pa.float32(), 0.0, False),
)

# ---------------------------------------------------------------------------
# Input tables
# ---------------------------------------------------------------------------


def _entity_schema(id_column: str, features: tuple[FeatureSpec, ...]) -> pa.Schema:
    return pa.schema(
        [pa.field(id_column, pa.int64(), nullable=False)]
        + [pa.field(f.name, f.type) for f in features]
        + [pa.field("event_timestamp", TIMESTAMP, nullable=False)]
    )


ITEMS_SCHEMA: Final = _entity_schema("item_id", ITEM_FEATURES)
USERS_SCHEMA: Final = _entity_schema("user_id", USER_FEATURES)
QUERIES_SCHEMA: Final = _entity_schema("query_id", QUERY_FEATURES)

EVENTS_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("query_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("position", pa.int32()),  # rank shown; null except for impressions
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
    ]
)

CANDIDATES_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("query_id", pa.int64(), nullable=False),
        pa.field("request_timestamp", TIMESTAMP, nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("recall_source", pa.string()),  # optional column
    ]
)
#: Columns a reader fills with nulls when a file lacks them (scores published before the
#: refresh recorded each candidate's source).
OPTIONAL_COLUMNS: Final[dict[str, frozenset[str]]] = {
    "candidates": frozenset({"recall_source"}),
    "scores": frozenset({"recall_source"}),
}

# ---------------------------------------------------------------------------
# Context rows (intermediate, one row per request)
# ---------------------------------------------------------------------------

#: Segments whose tokens are items, each with its id and item side features.
ITEM_SEGMENTS: Final[tuple[str, ...]] = ("ih", "pa", "cand")
LABEL_COLUMNS: Final[tuple[str, ...]] = tuple(f"label_{task}" for task in TASKS)


def item_token_columns(segment: str) -> list[pa.Field]:
    """The parallel list columns of one item segment: id plus every item side feature."""
    fields = [pa.field(f"{segment}_item_id", pa.list_(pa.int64()))]
    fields += [pa.field(f"{segment}_{f.name}", pa.list_(f.type)) for f in ITEM_FEATURES]
    return fields


CONTEXTS_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("query_id", pa.int64(), nullable=False),
        pa.field("as_of", TIMESTAMP, nullable=False),
    ]
    + [pa.field(f"user_{f.name}", f.type) for f in USER_FEATURES]
    + [pa.field(f"query_{f.name}", f.type) for f in QUERY_FEATURES]
    + item_token_columns("ih")
    + [
        pa.field("ih_event_type", pa.list_(pa.int8())),
        pa.field("ih_ts", pa.list_(TIMESTAMP)),
    ]
    + item_token_columns("pa")
    + [pa.field("pa_group", pa.list_(pa.int8()))]
    + item_token_columns("cand")
)

#: Training rows are context rows plus per-candidate labels (parallel to cand_item_id).
TRAINING_SCHEMA: Final = pa.schema(
    list(CONTEXTS_SCHEMA) + [pa.field(name, pa.list_(pa.int8())) for name in LABEL_COLUMNS]
)

# ---------------------------------------------------------------------------
# Output: pre-rank scores
# ---------------------------------------------------------------------------

SCORES_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("query_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
    ]
    + [pa.field(f"p_{task}", pa.float32(), nullable=False) for task in TASKS]
    + [
        pa.field("score", pa.float32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.int32(), nullable=False),
        pa.field("feature_service", pa.string(), nullable=False),
        pa.field("scored_at", TIMESTAMP, nullable=False),
        # The candidate's source, as the candidates the refresh scored say: the upstream's
        # own recall_source (UPSTREAM_SOURCE where it has none), or RETRIEVAL_SOURCE for an
        # item the retrieval route added (the merge_retrieval option). Null when the rows
        # were scored outside the refresh (``onepiece score``).
        pa.field("recall_source", pa.string()),
    ]
)

# ---------------------------------------------------------------------------
# Output: the retrieval route's candidates (onepiece.retrieval.route)
# ---------------------------------------------------------------------------

#: The ``recall_source`` of the onePiece retrieval route's rows (candidates' optional column).
RETRIEVAL_SOURCE: Final = "onepiece_retrieval"
#: The ``recall_source`` of an upstream candidate that names none (merges and scores).
UPSTREAM_SOURCE: Final = "upstream"

#: Top-N items per request from the ANN index, best first: ``score`` is <r_k, z_v> (the
#: click step's user vector against the item vector), ``rank`` starts at 1; ``as_of`` is
#: the context's T (nothing at or after it reached the user vector).
RETRIEVAL_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("query_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("recall_source", pa.string(), nullable=False),
        pa.field("as_of", TIMESTAMP, nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.int32()),  # null: an unversioned checkpoint
    ]
)

# The manifest is a JSON document beside each published partition; this schema is its
# shape (checked by ``validate_manifest``). Count maps are {reason: count}.
_COUNTS = pa.map_(pa.string(), pa.int64())
MANIFEST_SCHEMA: Final = pa.schema(
    [
        pa.field("table", pa.string(), nullable=False),
        pa.field("partition", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.string(), nullable=False),  # ISO-8601 UTC
        pa.field("wall_time_s", pa.float64(), nullable=False),
        pa.field("rows", _COUNTS, nullable=False),
        pa.field(
            "inputs",
            pa.list_(pa.struct([("path", pa.string()), ("fingerprint", pa.string())])),
            nullable=False,
        ),
        pa.field("dropped", _COUNTS, nullable=False),
        pa.field("defaulted", _COUNTS, nullable=False),
        pa.field(
            "model",
            pa.struct(
                [
                    ("name", pa.string()),
                    ("version", pa.int32()),
                    ("feature_service", pa.string()),
                ]
            ),
        ),
        pa.field("settings", pa.string()),  # JSON text: run configuration (fusion weights, ...)
        pa.field("guard", pa.string()),  # JSON text: the publish guard's verdict (scores only)
        # JSON text: the retrieval partition merged into the scored candidates and the
        # merge's counts (scores of a refresh with merge_retrieval only).
        pa.field("merge", pa.string()),
    ]
)


# ---------------------------------------------------------------------------
# Value rules: what the values of a column may be (declared here, checked by validate)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueRange:
    """The values one column may hold; nulls are the schema's business (``nullable``).

    ``low`` and ``high`` are inclusive bounds; ``finite`` refuses NaN and +-inf in a
    float column; ``allowed`` lists the only values a string column may hold.
    """

    column: str
    low: float | None = None
    high: float | None = None
    finite: bool = False
    allowed: tuple[str, ...] | None = None


def non_negative(column: str) -> ValueRange:
    """Prices, counts and statistics: finite and >= 0."""
    return ValueRange(column, low=0, finite=True)


def rate(column: str) -> ValueRange:
    """Rates and probabilities: finite and in [0, 1]."""
    return ValueRange(column, low=0, high=1, finite=True)


@dataclass(frozen=True)
class UniqueKey:
    """Columns whose values no two rows of a table share; ``what`` names such a row."""

    columns: tuple[str, ...]
    what: str


@dataclass(frozen=True)
class TableSpec:
    """A table of the contract: its name, schema, where it lives under the data root,
    and the rules its values keep (ranges, a unique key, the partition's time column)."""

    name: str
    schema: pa.Schema
    partitioned_by_day: bool
    id_columns: tuple[str, ...]
    ranges: tuple[ValueRange, ...] = ()
    unique: UniqueKey | None = None
    #: A timestamp column that must lie inside the row's ``dt=`` partition day.
    partition_time: str | None = None

    def rule_columns(self) -> list[str]:
        """The columns the contract's checks read: required ones and those with a rule
        (a check reads only these; the others are nullable and free)."""
        wanted = {f.name for f in self.schema if not f.nullable}
        wanted |= {r.column for r in self.ranges}
        wanted |= set(self.unique.columns if self.unique else ())
        wanted |= {self.partition_time} if self.partition_time else set()
        return [f.name for f in self.schema if f.name in wanted]


_SNAPSHOT_KEY = ("event_timestamp",)  # one snapshot per entity and time (Feast's key)

TABLES: Final[dict[str, TableSpec]] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "items", ITEMS_SCHEMA, False, ("item_id",),
            ranges=(non_negative("price"), rate("ctr_7d"), rate("cvr_7d"), non_negative("sales_30d")),
            unique=UniqueKey(("item_id",) + _SNAPSHOT_KEY, "item snapshot"),
        ),
        TableSpec(
            "users", USERS_SCHEMA, False, ("user_id",),
            unique=UniqueKey(("user_id",) + _SNAPSHOT_KEY, "user snapshot"),
        ),
        TableSpec(
            "queries", QUERIES_SCHEMA, False, ("query_id",),
            ranges=(non_negative("popularity_7d"),),
            unique=UniqueKey(("query_id",) + _SNAPSHOT_KEY, "query snapshot"),
        ),
        TableSpec(
            "events", EVENTS_SCHEMA, True, ("request_id", "user_id", "query_id", "item_id"),
            ranges=(ValueRange("event_type", allowed=EVENT_TYPES), ValueRange("position", low=0)),
            partition_time="event_timestamp",
        ),
        TableSpec(
            "candidates", CANDIDATES_SCHEMA, True, ("request_id", "user_id", "query_id", "item_id"),
            unique=UniqueKey(("request_id", "item_id"), "candidate row"),
            partition_time="request_timestamp",
        ),
        TableSpec("contexts", CONTEXTS_SCHEMA, False, ("request_id", "user_id", "query_id")),
        TableSpec("training", TRAINING_SCHEMA, False, ("request_id", "user_id", "query_id")),
        TableSpec(
            "scores", SCORES_SCHEMA, True, ("request_id", "user_id", "query_id", "item_id"),
            # NaN or out-of-range scores are the publish guard's to refuse (or to force
            # through), so they are not contract errors here (onepiece.pipeline.guard).
            ranges=(ValueRange("rank", low=1),),
            unique=UniqueKey(("request_id", "item_id"), "candidate row"),
        ),
        TableSpec(
            "retrieval", RETRIEVAL_SCHEMA, True, ("request_id", "user_id", "query_id", "item_id"),
            ranges=(ValueRange("rank", low=1), ValueRange("score", finite=True),
                    ValueRange("recall_source", allowed=(RETRIEVAL_SOURCE,))),
            unique=UniqueKey(("request_id", "item_id"), "retrieved item"),
        ),
    )
}
INPUT_TABLES: Final[tuple[str, ...]] = ("items", "users", "queries", "events", "candidates")
