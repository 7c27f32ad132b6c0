"""Hand-built context rows (CONTEXTS_SCHEMA) and tiny configs for the model tests (a uniquely named module, imported by the tests; conftest.py only holds fixtures)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa

from onepiece.contract.schemas import CONTEXTS_SCHEMA, ITEM_FEATURES, LABEL_COLUMNS, TRAINING_SCHEMA
from onepiece.model.config import ModelConfig

AS_OF = dt.datetime(2026, 11, 4, tzinfo=dt.UTC)


def item_columns(segment: str, ids: list[int], rng: np.random.Generator) -> dict[str, Any]:
    """Parallel list columns of one item segment, side features drawn at random."""
    cols: dict[str, Any] = {f"{segment}_item_id": ids}
    for f in ITEM_FEATURES:
        if f.categorical:
            cols[f"{segment}_{f.name}"] = [int(i % 7) if i >= 0 else -1 for i in ids]
        elif pa.types.is_integer(f.type):
            cols[f"{segment}_{f.name}"] = [int(v) for v in rng.integers(0, 500, len(ids))]
        else:
            cols[f"{segment}_{f.name}"] = [float(v) for v in rng.random(len(ids))]
    return cols


def context_row(
    request: str,
    user_id: int,
    query_id: int,
    ih: list[int],
    pa_items: list[tuple[int, int]],
    cands: list[int],
    seed: int = 0,
    query_text: str | None = "red Shoes",
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    row: dict[str, Any] = {
        "request_id": request,
        "user_id": user_id,
        "query_id": query_id,
        "as_of": AS_OF,
        "user_age_bucket": 3,
        "user_gender": 1,
        "user_region_id": 17,
        "query_query_text": query_text,
        "query_popularity_7d": 12.0,
        "ih_event_type": [1 + (i % 3) for i in range(len(ih))],
        "ih_ts": [AS_OF - dt.timedelta(hours=len(ih) - i) for i in range(len(ih))],
        "pa_group": [g for g, _ in pa_items],
    }
    row |= item_columns("ih", ih, rng)
    row |= item_columns("pa", [i for _, i in pa_items], rng)
    row |= item_columns("cand", cands, rng)
    return row


def random_rows(n: int, seed: int = 0, max_cands: int = 9) -> list[dict[str, Any]]:
    """Rows with variable IH, PA and candidate counts (some empty, some unknown ids)."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n):
        ih = [int(x) for x in rng.integers(-1, 300, rng.integers(0, 12))]
        pa_items = sorted(
            (int(g), int(i)) for g, i in zip(rng.integers(0, 3, rng.integers(0, 10)), rng.integers(0, 300, 10))
        )
        cands = [int(x) for x in rng.choice(300, rng.integers(1, max_cands + 1), replace=False)]
        rows.append(
            context_row(f"r{r}", int(rng.integers(-1, 60)), int(rng.integers(0, 20)), ih, pa_items, cands, seed=r)
        )
    return rows


def contexts_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=CONTEXTS_SCHEMA)


def training_table(rows: list[dict[str, Any]], seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    for row in rows:
        n = len(row["cand_item_id"])
        for name in LABEL_COLUMNS:
            row[name] = [int(v) for v in rng.integers(0, 2, n)]
    return pa.Table.from_pylist(rows, schema=TRAINING_SCHEMA)


def tiny_config(**overrides: Any) -> ModelConfig:
    base = dict(
        d_model=32, n_layers=2, n_heads=4, id_dim=16, side_dim=8, item_vocab=512,
        shop_vocab=64, category_vocab=64, user_vocab=128, user_side_vocab=64,
        query_vocab=64, piece_vocab=128, ih_max_len=16, pa_per_group=4, group_size=4,
    )
    return ModelConfig(**(base | overrides))
