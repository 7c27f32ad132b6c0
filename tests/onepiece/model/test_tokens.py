"""Token embedding scale: at init the hashed ids must not drown the numeric statistics."""

from __future__ import annotations

import torch
from model_helpers import tiny_config

from onepiece.model.inputs import N_ITEM_CAT, N_ITEM_NUM
from onepiece.model.tokens import ItemEmbeddings, QueryAdapter, UserAdapter


def _rms(x: torch.Tensor) -> float:
    return float(x.detach().pow(2).mean().sqrt())


def test_fresh_id_embeddings_are_small_beside_the_numeric_features() -> None:
    """With nn.Embedding's default N(0, 1) the id/shop/category part of an item token had
    RMS ~1 against ~0.3 for the transformed statistics (ctr_7d, ...): the model memorised
    ids and on the tiny world ranked clicks worse than ctr_7d alone."""
    torch.manual_seed(0)
    config = tiny_config()
    embed = ItemEmbeddings(config)
    cat = torch.randint(0, 10_000, (64, 12, N_ITEM_CAT))
    num = torch.rand(64, 12, N_ITEM_NUM) * 0.5  # the fixed transforms' typical range
    out = embed(cat, num)  # (64, 12, width)
    ids, numeric = out[..., :-N_ITEM_NUM], out[..., -N_ITEM_NUM:]
    assert torch.equal(numeric, num)
    assert _rms(ids) < 0.1 * _rms(numeric)
    # Every hashed table (users, queries, pieces) starts at the same small scale.
    for module in (embed, UserAdapter(config), QueryAdapter(config)):
        for table in module.modules():
            if isinstance(table, torch.nn.Embedding):
                assert float(table.weight.detach().std()) < 0.05
