"""The tensor contract: tensorize() on hand-built context rows."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import torch
from model_helpers import context_row, contexts_table, random_rows, tiny_config, training_table

from onepiece.contract.validate import ContractError
from onepiece.model.inputs import (
    PA_BOS,
    PA_EOS,
    PA_ITEM,
    TENSOR_SPECS,
    ModelInputs,
    candidate_values,
    tensorize,
)


def _fnv1a_reference(text: str) -> int:
    h = 2166136261
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 16777619) % 2**32
    return h


def test_model_inputs_hold_exactly_the_tensor_specs():
    rows = random_rows(6)
    fields = [f.name for f in dataclasses.fields(ModelInputs)]
    assert fields[: len(TENSOR_SPECS)] == list(TENSOR_SPECS)
    x = tensorize(contexts_table(rows), tiny_config())
    for name, spec in TENSOR_SPECS.items():
        t = getattr(x, name)
        assert t.dtype == spec.torch_dtype, name
        assert t.dim() == len(spec.shape) + 1, name
        for got, want in zip(t.shape[1:], spec.shape):
            assert want == -1 or got == want, name
    assert ModelInputs.from_tensors(x.tensors()).tensors().keys() == x.tensors().keys()


def test_from_tensors_names_a_bad_input():
    rows = random_rows(6)
    tensors = tensorize(contexts_table(rows), tiny_config()).tensors()
    tensors["ih_len"] = tensors["ih_len"].float()
    with pytest.raises(ValueError, match="ih_len"):
        ModelInputs.from_tensors(tensors)


def test_ih_keeps_the_most_recent_events_oldest_first():
    config = tiny_config(ih_max_len=3)
    row = context_row("r", 1, 2, ih=[10, 11, 12, 13, 14], pa_items=[], cands=[5])
    x = tensorize(contexts_table([row]), config)
    assert x.ih_len.tolist() == [[3]]
    assert x.ih_item_cat[0, :, 0].tolist() == [12, 13, 14]
    assert x.ih_event_type[0].tolist() == row["ih_event_type"][2:]


def test_ih_age_days_is_the_age_at_as_of_kept_like_the_events():
    """(as_of - ih_ts) in days for the kept events; a future ts clamps to 0, a null ts and a
    null ih_ts list give 0, padding is 0; a list of another length is refused."""
    config = tiny_config(ih_max_len=3)
    row = context_row("r", 1, 2, ih=[10, 11, 12, 13, 14], pa_items=[], cands=[5])
    as_of = row["as_of"]
    row["ih_ts"] = [as_of - dt.timedelta(days=d) for d in (9.0, 5.0, 2.5)] + [None, as_of + dt.timedelta(hours=6)]
    short = context_row("s", 1, 2, ih=[20], pa_items=[], cands=[5]) | {"ih_ts": [as_of - dt.timedelta(hours=36)]}
    untimed = context_row("u", 1, 2, ih=[30, 31], pa_items=[], cands=[5]) | {"ih_ts": None}
    x = tensorize(contexts_table([row, short, untimed]), config)
    assert x.ih_age_days.dtype == torch.float32
    np.testing.assert_allclose(x.ih_age_days.numpy(), [[2.5, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # trimmed and selected with the other IH tensors
    trimmed = tensorize(contexts_table([short]), config, fixed_shape=True).trim_padding()
    assert trimmed.ih_age_days.shape == trimmed.ih_event_type.shape == (1, 1)
    bad = context_row("b", 1, 2, ih=[1, 2], pa_items=[], cands=[5]) | {"ih_ts": [as_of]}
    with pytest.raises(ContractError, match="ih_ts"):
        tensorize(contexts_table([bad]), config)


def test_pa_groups_are_wrapped_sorted_and_truncated():
    config = tiny_config(pa_per_group=2)
    # group 2 listed before group 0 on purpose; group 1 is empty; group 0 is too long
    pa_items = [(2, 30), (0, 1), (0, 2), (0, 3)]
    x = tensorize(contexts_table([context_row("r", 1, 2, [], pa_items, [5])]), config)
    n = int(x.pa_len[0, 0])
    assert n == (2 + 2) + (1 + 2)
    assert x.pa_kind[0, :n].tolist() == [PA_BOS, PA_ITEM, PA_ITEM, PA_EOS, PA_BOS, PA_ITEM, PA_EOS]
    assert x.pa_group[0, :n].tolist() == [0, 0, 0, 0, 2, 2, 2]
    assert x.pa_pos[0, :n].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert x.pa_item_cat[0, :n, 0].tolist() == [-1, 1, 2, -1, -1, 30, -1]


def test_empty_history_and_anchors_give_zero_lengths():
    x = tensorize(contexts_table([context_row("r", 1, 2, [], [], [5, 6])]), tiny_config())
    assert x.ih_len.tolist() == [[0]] and x.pa_len.tolist() == [[0]]
    assert x.cand_len.tolist() == [[2]]


def test_unknown_ids_and_null_features_fall_back_to_defaults():
    row = context_row("r", -1, -1, [-1], [(0, -1)], [-1, 7], query_text=None)
    row["user_age_bucket"] = None
    row["cand_price"][1] = None
    x = tensorize(contexts_table([row]), tiny_config())
    assert x.user_cat[0].tolist()[:2] == [-1, -1]
    assert x.cand_item_cat[0, 0].tolist() == [-1, -1, -1]
    assert x.cand_item_num[0, 1, 0].item() == 0.0  # default price 0 -> log1p(0)
    assert (x.query_pieces == -1).all()


def test_query_pieces_use_a_stable_case_insensitive_hash():
    rows = [
        context_row("a", 1, 2, [], [], [5], query_text="Red shoes"),
        context_row("b", 1, 2, [], [], [5], query_text=" red  SHOES extra "),
    ]
    x = tensorize(contexts_table(rows), tiny_config(query_max_pieces=8))
    expected = [_fnv1a_reference(w) for w in ("red", "shoes", "extra")]
    assert x.query_pieces[0].tolist() == expected[:2] + [-1]
    assert x.query_pieces[1].tolist() == expected


def test_candidates_are_split_into_groups_covering_each_once():
    rows = random_rows(8, seed=3, max_cands=11)
    table = contexts_table(rows)
    config = tiny_config(group_size=4)
    x = tensorize(table, config)
    counts = [len(r["cand_item_id"]) for r in rows]
    index = x.cand_flat_index
    assert sorted(index[index >= 0].tolist()) == list(range(sum(counts)))
    assert (x.cand_len <= 4).all() and (x.cand_len >= 1).all()
    assert np.bincount(x.request_row.numpy(), minlength=len(rows)).tolist() == [
        -(-c // 4) for c in counts
    ]
    flat_ids = np.concatenate([r["cand_item_id"] for r in rows])
    valid = index >= 0
    assert (x.cand_item_cat[..., 0][valid].numpy() == flat_ids[index[valid].numpy()]).all()


def test_group_size_zero_puts_a_request_in_one_sequence():
    rows = random_rows(5, seed=4, max_cands=11)
    x = tensorize(contexts_table(rows), tiny_config(group_size=0))
    assert x.request_row.tolist() == list(range(5))
    assert x.cand_len[:, 0].tolist() == [len(r["cand_item_id"]) for r in rows]


def test_shuffle_is_deterministic_and_stays_inside_a_request():
    rows = random_rows(6, seed=5, max_cands=11)
    table = contexts_table(rows)
    config = tiny_config(group_size=3)
    plain = tensorize(table, config)
    a = tensorize(table, config, shuffle_seed=7)
    b = tensorize(table, config, shuffle_seed=7)
    assert torch.equal(a.cand_flat_index, b.cand_flat_index)
    assert not torch.equal(a.cand_flat_index, plain.cand_flat_index)
    starts = np.cumsum([0] + [len(r["cand_item_id"]) for r in rows])
    idx, req = a.cand_flat_index.numpy(), a.request_row.numpy()
    owner = np.searchsorted(starts, idx, side="right") - 1
    assert (owner[idx >= 0] == np.broadcast_to(req[:, None], idx.shape)[idx >= 0]).all()


def test_fixed_shape_pads_to_configured_widths():
    rows = random_rows(6)
    config = tiny_config()
    x = tensorize(contexts_table(rows), config, fixed_shape=True)
    assert x.ih_item_cat.shape[1] == config.ih_max_len
    assert x.pa_item_cat.shape[1] == 3 * (config.pa_per_group + 2)
    assert x.cand_item_cat.shape[1] == config.group_size
    assert x.query_pieces.shape[1] == config.query_max_pieces


def test_mismatched_parallel_lists_are_reported_by_column():
    row = context_row("r", 1, 2, [1, 2], [], [5])
    row["ih_shop_id"] = [1]
    with pytest.raises(ContractError, match="ih_shop_id.*row 0"):
        tensorize(contexts_table([row]), tiny_config(), source="ctx.parquet")


def test_missing_column_is_reported():
    table = contexts_table(random_rows(2)).drop_columns(["pa_group"])
    with pytest.raises(ContractError, match="pa_group"):
        tensorize(table, tiny_config())


def test_candidate_values_gather_labels_like_the_slots():
    rows = random_rows(5, seed=6, max_cands=9)
    table = training_table(rows)
    x = tensorize(table, tiny_config(group_size=3), shuffle_seed=1)
    labels = candidate_values(table, "label_click", x)
    flat = np.concatenate([r["label_click"] for r in rows])
    idx = x.cand_flat_index.numpy()
    assert (labels.numpy()[idx >= 0] == flat[idx[idx >= 0]]).all()
    assert (labels.numpy()[idx < 0] == 0).all()


def test_tensorize_is_independent_of_chunking():
    rows = random_rows(6)
    table = contexts_table(rows)
    chunked = pa.concat_tables([table.slice(0, 2), table.slice(2)])
    a = tensorize(table, tiny_config(), fixed_shape=True)
    b = tensorize(chunked, tiny_config(), fixed_shape=True)
    for name in TENSOR_SPECS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_tensorize_contexts_keeps_every_row_and_reads_no_candidate():
    """The user tower's input: one row per context row (a request without candidates
    too), the context tensors tensorize() gives that row, candidate tensors of width 0;
    the user vectors are those the full forward computes."""
    from onepiece.model import OnePiece
    from onepiece.model.inputs import CONTEXT_TENSORS, served_inputs, tensorize_contexts

    rows = random_rows(7, seed=3)
    rows[2] = context_row("r2", 5, 1, [3, 4], [(0, 7)], cands=[], seed=2)  # no candidates
    table = contexts_table(rows)
    config = tiny_config(mode="retrieval", reasoning="block")
    x = tensorize_contexts(table, config)
    assert x.batch_size == 7 and x.cand_item_cat.shape == (7, 0, 3) and (x.cand_len == 0).all()
    assert tuple(served_inputs("user_tower")) == CONTEXT_TENSORS
    full = tensorize(table.filter(pa.array([i != 2 for i in range(7)])), dataclasses.replace(config, group_size=0))
    kept = [0, 1, 3, 4, 5, 6]
    for name in CONTEXT_TENSORS:  # same padding: the longest row is not the empty-candidate one
        assert torch.equal(getattr(x, name)[kept], getattr(full, name)), name
    torch.manual_seed(0)
    model = OnePiece(config).eval()
    with torch.inference_mode():
        users = model.encode_users(x)  # (B, S, d)
        reference = model(full).user_vectors
    assert users.shape == (7, config.num_outputs, config.d_model)
    torch.testing.assert_close(users[kept], reference, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="model inputs missing: \\['pa_len'\\]"):
        ModelInputs.from_contexts({name: getattr(x, name) for name in CONTEXT_TENSORS if name != "pa_len"})
