"""Id admission (``ModelConfig.id_min_count``): rare item and user ids read as unknown."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from onepiece.model import load_checkpoint, save_checkpoint, variant_config
from onepiece.model.tokens import bucket
from onepiece.training.admission import frequent_ids
from onepiece.training.config import TrainConfig
from onepiece.training.loop import train


def test_frequent_ids_keeps_ids_at_or_above_the_count() -> None:
    values = pa.array([3, 3, 3, 5, 5, 9, -1, -1, -1], pa.int64())
    assert sorted(frequent_ids(values, 2).tolist()) == [-1, 3, 5]
    assert sorted(frequent_ids(values, 3).tolist()) == [-1, 3]
    assert frequent_ids(values, 4).tolist() == []


def test_training_admits_exposed_items_and_users_by_count(tiny_split, tiny_model, tmp_path) -> None:
    train_rows, eval_rows = tiny_split
    min_count = 3
    config = variant_config("dlrm", **(tiny_model | {"id_min_count": min_count}))
    result = train(config, TrainConfig(epochs=1, seed=0, batch_size=32, threads=1, max_unexposed=10),
                   train_rows, eval_rows)
    exposed = pc.list_flatten(train_rows["label_impression"])
    items = pc.list_flatten(train_rows["cand_item_id"]).filter(pc.greater(exposed, 0)).to_numpy()
    ids, counts = np.unique(items, return_counts=True)
    frequent, rare = ids[counts >= min_count], ids[counts < min_count]
    assert len(frequent) and len(rare), "the tiny world must hold both kinds for this test to mean anything"
    assert result.history["admitted_item_ids"] == len(frequent)

    table = result.model.encoder.item_embeddings.item
    admitted = table.admitted
    assert admitted[bucket(torch.from_numpy(frequent), table.num_embeddings)].all()
    # a rare id is read as unknown unless it shares its hash bucket with a frequent one
    rare_buckets = set(bucket(torch.from_numpy(rare), table.num_embeddings).tolist())
    rare_only = sorted(rare_buckets - set(bucket(torch.from_numpy(frequent), table.num_embeddings).tolist()))
    assert rare_only and not admitted[torch.tensor(rare_only)].any()
    rare_id = next(i for i in rare.tolist() if bucket(torch.tensor(i), table.num_embeddings).item() in rare_only)
    assert torch.equal(table(torch.tensor([rare_id])), table(torch.tensor([-1])))

    users, user_counts = np.unique(train_rows["user_id"].to_numpy(), return_counts=True)
    assert result.history["admitted_user_ids"] == int((user_counts >= min_count).sum())

    # the admission is part of the checkpoint, so serving reads ids as training did
    loaded = load_checkpoint(save_checkpoint(result.model, tmp_path / "ckpt"))
    assert torch.equal(loaded.encoder.item_embeddings.item.admitted, admitted)
    assert torch.equal(loaded.encoder.user_adapter.user.admitted, result.model.encoder.user_adapter.user.admitted)


def test_without_admission_the_checkpoint_has_no_admission_buffer() -> None:
    from onepiece.model import OnePiece

    state = OnePiece(variant_config("onepiece", item_vocab=64, user_vocab=64, id_min_count=0)).state_dict()
    assert not [k for k in state if k.endswith("admitted")]
    with pytest.raises(ValueError, match="id_min_count"):
        variant_config("onepiece", id_min_count=-1)
