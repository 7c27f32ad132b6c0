"""Id admission (``ModelConfig.id_min_count``): which item and user ids a model learns.

Counted on the training rows before the first step: an item's count is its exposures as
a candidate (the labelled examples its embedding learns from), a user's the requests it
made. Ids below the threshold are read as the unknown id (``tokens.HashedEmbedding``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from onepiece.model import OnePiece


def frequent_ids(values: pa.Array | pa.ChunkedArray, min_count: int) -> np.ndarray:
    """The distinct ids of ``values`` that occur at least ``min_count`` times."""
    counts = pc.value_counts(values)
    if isinstance(counts, pa.ChunkedArray):
        counts = counts.combine_chunks()
    keep = pc.greater_equal(counts.field("counts"), min_count)
    return counts.field("values").filter(keep).to_numpy(zero_copy_only=False).astype(np.int64)


def admit_ids(model: OnePiece, rows: pa.Table) -> dict[str, int]:
    """Admit the ids of ``rows`` frequent enough for ``model.config.id_min_count``; returns
    how many item and user ids were admitted (for the training history)."""
    min_count = model.config.id_min_count
    exposed = pc.list_flatten(rows["label_impression"])
    items = pc.list_flatten(rows["cand_item_id"]).filter(pc.greater(exposed, 0))
    admitted = {"item": frequent_ids(items, min_count), "user": frequent_ids(rows["user_id"], min_count)}
    encoder = model.encoder
    encoder.item_embeddings.item.admit(torch.from_numpy(admitted["item"]))
    encoder.user_adapter.user.admit(torch.from_numpy(admitted["user"]))
    return {f"admitted_{name}_ids": len(ids) for name, ids in admitted.items()}
