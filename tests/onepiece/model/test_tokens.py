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


def test_id_dropout_reads_ids_as_unknown_in_training_only() -> None:
    """``ModelConfig.id_dropout``: in training about that share of the ids go to the OOV
    bucket (issue 17: the item ids were memorised after one epoch), per id and not per
    token, so the same item in two places is dropped or kept together until the next
    draw (once per ``OnePiece.forward``); in evaluation every id is read."""
    from dataclasses import replace

    import pytest

    from onepiece.model import OnePiece
    from onepiece.model.tokens import HashedEmbedding

    torch.manual_seed(0)
    table = HashedEmbedding(20_001, 4, dropout=0.3)
    ids = torch.arange(20_000)
    oov = table.weight[0]
    table.train()
    dropped = (table(ids) == oov).all(dim=-1)
    assert 0.28 < dropped.float().mean().item() < 0.32
    again = (table(ids.flip(0)) == oov).all(dim=-1).flip(0)
    assert torch.equal(dropped, again)  # the same ids until the next draw
    table.resample_dropout()
    assert not torch.equal(dropped, (table(ids) == oov).all(dim=-1))
    table.eval()
    assert not (table(ids) == oov).all(dim=-1).any()

    config = replace(tiny_config(), id_dropout=0.5)
    assert ItemEmbeddings(config).item.dropout == 0.5 and UserAdapter(config).user.dropout == 0.5
    assert ItemEmbeddings(config).category.dropout == 0.0  # side features are always read
    model = OnePiece(config).train()
    before = model.encoder.item_embeddings.item._dropped
    from model_helpers import contexts_table, random_rows

    from onepiece.model.inputs import tensorize

    model(tensorize(contexts_table(random_rows(3)), config))
    after = model.encoder.item_embeddings.item._dropped
    assert after is not None and after is not before  # a fresh draw per training forward
    with pytest.raises(ValueError, match="id_dropout"):
        replace(tiny_config(), id_dropout=1.0)
