"""Retrieval serving: every item's vector z_v from the item adapter, for NN search, and
every context's user vector r_k (the user tower)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from onepiece.contract.validate import ContractError
from onepiece.model.inputs import (
    ITEM_CAT_FEATURES,
    ITEM_NUM_FEATURES,
    _scalar_values,
    _transform,
    tensorize_contexts,
)
from onepiece.model.model import OnePiece


def export_item_vectors(
    model: OnePiece, items: pa.Table, batch_size: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors for a table of items (``item_id`` + the contract's item features).

    Returns (ids int64 [N], vectors float32 [N, d]) in the table's row order; the score
    of an item for a user is <r_k, z_v>.
    """
    needed = ["item_id"] + [f.name for f in ITEM_CAT_FEATURES + ITEM_NUM_FEATURES]
    missing = [name for name in needed if name not in items.column_names]
    if missing:
        raise ContractError("items", "<export_item_vectors>", "required column is missing", missing[0])
    ids = items.column("item_id").to_numpy().astype(np.int64)
    cat = np.stack(
        [ids] + [_scalar_values(items, f.name, f, "int64") for f in ITEM_CAT_FEATURES], axis=1
    )
    num = np.stack(
        [_transform(f, _scalar_values(items, f.name, f, "float64")) for f in ITEM_NUM_FEATURES],
        axis=1,
    ).astype(np.float32)
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            c = torch.from_numpy(cat[start : start + batch_size]).to(device)
            n = torch.from_numpy(num[start : start + batch_size]).to(device)
            out.append(model.encoder.items(c, n).float().cpu().numpy())
    vectors = np.concatenate(out) if out else np.zeros((0, model.config.d_model), np.float32)
    return ids, vectors


def click_step(config) -> int:
    """The step whose user vector r_k the route searches with: the click task's."""
    return config.task_steps()["click"]


def user_vectors(model, rows: pa.Table, batch_size: int = 256) -> np.ndarray:
    """r_k at the click step for every context or training row: [R, d] float32, in row
    order, candidates not read (a row without any gets its vector too). The rows go in
    fixed batches of ``batch_size``, each padded to its longest (``tensorize_contexts``),
    so the same rows give the same bytes; the Triton user tower is sent the same batches
    (``TritonRankerClient.user_vectors``)."""
    step = click_step(model.config)
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, rows.num_rows, batch_size):
                inputs = tensorize_contexts(rows.slice(start, batch_size), model.config)
                out.append(model.encode_users(inputs)[:, step].float().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.config.d_model), np.float32)
