"""Pure Arrow functions of the scoring job: context chunks, and score rows from probabilities."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract import SCORES_SCHEMA, TASKS, ContractError
from onepiece.contract.schemas import ITEM_FEATURES
from onepiece.serving.fusion import FusionConfig, fuse, rank_within_requests

_PRICE = next(f for f in ITEM_FEATURES if f.name == "price")


@dataclass(frozen=True)
class ModelStamp:
    """The served model every score row names."""

    name: str
    version: int
    feature_service: str


def sequences_per_row(contexts: pa.Table, group_size: int) -> np.ndarray:
    """How many model sequences (candidate groups of at most C) each context row becomes."""
    lengths = pc.fill_null(pc.list_value_length(contexts.column("cand_item_id")), 0)
    lengths = lengths.to_numpy(zero_copy_only=False).astype(np.int64)
    return -(-lengths // group_size) if group_size else np.minimum(lengths, 1)


def chunk_rows(contexts: pa.Table, group_size: int, max_sequences: int) -> Iterator[pa.Table]:
    """Consecutive slices of whole rows with at most ``max_sequences`` sequences each (a row
    bigger than that is a chunk of its own). Requests are never split across chunks, so
    ranks can be computed per chunk."""
    per_row = sequences_per_row(contexts, group_size)
    start, total = 0, 0
    for i, n in enumerate(per_row):
        if total and total + n > max_sequences:
            yield contexts.slice(start, i - start)
            start, total = i, 0
        total += int(n)
    if contexts.num_rows > start:
        yield contexts.slice(start, contexts.num_rows - start)


def scores_table(
    contexts: pa.Table,
    probs: dict[str, np.ndarray],
    fusion: FusionConfig,
    model: ModelStamp,
    scored_at: dt.datetime,
    source: str = "<contexts>",
) -> pa.Table:
    """One SCORES_SCHEMA row per candidate, sorted by (request_id, rank).

    ``probs`` maps ``p_<task>`` to per-candidate probabilities aligned with the flattened
    ``cand_item_id`` lists (see ``client.scatter_to_candidates``).
    """
    lengths = pc.fill_null(pc.list_value_length(contexts.column("cand_item_id")), 0)
    rows = np.repeat(np.arange(contexts.num_rows), lengths.to_numpy(zero_copy_only=False))
    take = pa.array(rows, pa.int64())
    item_id = pc.list_flatten(contexts.column("cand_item_id")).to_numpy(zero_copy_only=False)
    price = pc.fill_null(pc.list_flatten(contexts.column("cand_price")), _PRICE.default)
    for task in TASKS:
        values = probs[f"p_{task}"]
        if len(values) != len(item_id) or np.isnan(values).any():
            raise ContractError(
                "scores", source, f"p_{task}: {np.isnan(values).sum()} of {len(item_id)} "
                "candidates have no probability (model output does not cover the candidates)"
            )
    score = fuse(
        probs["p_click"], probs["p_order"], price.to_numpy(zero_copy_only=False), fusion
    )
    request_id = contexts.column("request_id").take(take)
    n = len(item_id)
    columns = {
        "request_id": request_id,
        "user_id": contexts.column("user_id").take(take),
        "query_id": contexts.column("query_id").take(take),
        "item_id": pa.array(item_id, pa.int64()),
        **{f"p_{task}": pa.array(probs[f"p_{task}"], pa.float32()) for task in TASKS},
        "score": pa.array(score, pa.float32()),
        "rank": pa.array(
            rank_within_requests(request_id.combine_chunks(), score, item_id), pa.int32()
        ),
        "model_name": pa.array([model.name] * n, pa.string()),
        "model_version": pa.array(np.full(n, model.version, np.int32)),
        "feature_service": pa.array([model.feature_service] * n, pa.string()),
        "scored_at": pa.array([scored_at] * n, SCORES_SCHEMA.field("scored_at").type),
        # The contexts carry no candidate source; the refresh fills it (merge.with_sources).
        "recall_source": pa.nulls(n, pa.string()),
    }
    table = pa.table(columns, schema=SCORES_SCHEMA)
    return table.sort_by([("request_id", "ascending"), ("rank", "ascending")])
