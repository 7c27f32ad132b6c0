"""Model properties on outputs: candidate visibility, permutation, padding, KV cache,
shared-context scoring, and score()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_helpers import contexts_table, random_rows, tiny_config

from onepiece.contract.schemas import TASKS
from onepiece.model import OnePiece, score, tensorize
from onepiece.model.backbone import RelativeBias
from onepiece.model.inputs import ModelInputs, candidate_scores


def _model(**overrides) -> tuple[OnePiece, object]:
    torch.manual_seed(0)
    config = tiny_config(**overrides)
    return OnePiece(config).eval(), config


def _full_group_inputs(config, seed: int = 0) -> ModelInputs:
    rows = random_rows(4, seed=seed, max_cands=config.group_size)
    for row, n in zip(rows, (config.group_size, config.group_size, 2, 3)):
        for key in [k for k in row if k.startswith("cand_")]:
            row[key] = (row[key] * config.group_size)[:n]
        row["cand_item_id"] = list(range(100 + n * 10, 100 + n * 10 + n))
    return tensorize(contexts_table(rows), config)


def _all_logits(model: OnePiece, x: ModelInputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return torch.stack([out.logits[t] for t in TASKS], dim=-1)  # (B, C, S, T)


def _change_candidate(x: ModelInputs, slot: int) -> ModelInputs:
    cat, num = x.cand_item_cat.clone(), x.cand_item_num.clone()
    cat[:, slot, 0] += 7777
    num[:, slot] += 0.5
    return ModelInputs(**(x.tensors() | {"cand_item_cat": cat, "cand_item_num": num}))


@pytest.mark.parametrize("visible", [False, True])
def test_changing_one_candidate_and_the_others(visible):
    model, config = _model(candidates_visible=visible, num_steps=3)
    x = _full_group_inputs(config)
    base, changed = _all_logits(model, x), _all_logits(model, _change_candidate(x, 0))
    rows = x.cand_len[:, 0] == config.group_size
    diff = (base - changed).abs()[rows]  # (B', C, S, T)
    assert (diff[:, 0] > 1e-6).any()  # the changed candidate's own scores move
    others = diff[:, 1:]
    if visible:
        assert (others.amax(dim=(2, 3)) > 1e-6).all()
    else:
        assert others.max() < 1e-6


@pytest.mark.parametrize("visible", [False, True])
def test_permuting_candidates_permutes_the_scores(visible):
    model, config = _model(candidates_visible=visible)
    x = _full_group_inputs(config)
    perm = torch.randperm(config.group_size, generator=torch.Generator().manual_seed(3))
    rows = x.cand_len[:, 0] == config.group_size
    x = x.select(rows.nonzero()[:, 0])
    permuted = ModelInputs(
        **(x.tensors() | {"cand_item_cat": x.cand_item_cat[:, perm], "cand_item_num": x.cand_item_num[:, perm]})
    )
    torch.testing.assert_close(_all_logits(model, permuted), _all_logits(model, x)[:, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["onepiece", "onepiece_invisible", "hstu", "rearec", "dlrm", "onepiece_retrieval"])
def test_padding_does_not_change_real_outputs(variant):
    from onepiece.model import variant_config

    sizes = {k: getattr(tiny_config(), k) for k in ("d_model", "id_dim", "side_dim", "item_vocab", "ih_max_len", "pa_per_group", "group_size")}
    config = variant_config(variant, **sizes)
    torch.manual_seed(0)
    model = OnePiece(config).eval()
    table = contexts_table(random_rows(6, seed=1))
    tight = tensorize(table, config)
    padded = tensorize(table, config, fixed_shape=True)
    assert padded.ih_item_cat.shape[1] > tight.ih_item_cat.shape[1]
    a, b = score(model, tight), score(model, padded)
    c = tight.cand_item_cat.shape[1]
    for task in TASKS:
        torch.testing.assert_close(b[task][:, :c], a[task], atol=1e-5, rtol=1e-5)
        assert (b[task][:, c:] == 0).all()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"candidates_visible": False}, {"causal": True}, {"mode": "retrieval", "num_steps": 2},
     {"reasoning": "last_token", "causal": True},
     {"attention": "hstu", "causal": True, "candidates_visible": False, "hstu_time_buckets": 128}],
    ids=["onepiece", "invisible", "causal", "retrieval", "rearec", "hstu_time"],
)
def test_kv_cache_equals_full_recomputation(overrides):
    model, config = _model(num_steps=3, **overrides) if "num_steps" not in overrides else _model(**overrides)
    for module in model.modules():  # HSTU: a relative position and time bias large enough to show
        if isinstance(module, RelativeBias):
            torch.nn.init.normal_(module.weight, std=1.0)
            torch.nn.init.normal_(module.time_weight, std=1.0)
    x = tensorize(contexts_table(random_rows(6, seed=2)), config)
    with torch.no_grad():
        cached, full = model(x, cached=True), model(x, cached=False)
    training_path = model(x, cached=True)  # autograd on: the cache concatenates
    for task in TASKS:
        torch.testing.assert_close(cached.logits[task], full.logits[task], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(training_path.logits[task].detach(), cached.logits[task], atol=1e-5, rtol=1e-5)
    steps = cached.logits["click"].shape[-1]
    assert steps == config.num_steps + 1
    # the steps really differ: reasoning is not a no-op
    assert (cached.logits["click"][..., 0] - cached.logits["click"][..., -1]).abs().max() > 1e-4


def test_invisible_candidates_allow_one_sequence_per_request():
    """With mutually invisible candidates, scoring a request's candidates in one sequence
    (group_size=0, shared context) equals scoring them in groups of C."""
    model, config = _model(candidates_visible=False)
    table = contexts_table(random_rows(5, seed=4, max_cands=11))
    grouped = tensorize(table, config)
    whole = tensorize(table, tiny_config(candidates_visible=False, group_size=0))
    a = candidate_scores(grouped, score(model, grouped))
    b = candidate_scores(whole, score(model, whole))
    n = sum(len(ids) for ids in table.column("cand_item_id").to_pylist())
    for task in TASKS:
        assert a[task].shape == (n,) and (a[task] > 0).all()
        np.testing.assert_allclose(a[task], b[task], atol=1e-5, rtol=1e-5)


def test_score_reads_each_task_from_its_supervising_step():
    model, config = _model()
    x = tensorize(contexts_table(random_rows(4, seed=5)), config)
    probs = score(model, x)
    with torch.no_grad():
        logits = model(x).logits
    valid = torch.arange(x.cand_item_cat.shape[1])[None] < x.cand_len
    for task, step in config.task_steps().items():
        expected = torch.sigmoid(logits[task][..., step]) * valid
        torch.testing.assert_close(probs[task], expected)
        assert probs[task].shape == valid.shape and ((probs[task] > 0) == valid).all()
    assert config.task_steps() == {"impression": 1, "click": 2, "add_to_cart": 3, "order": 3}
    assert model.training is False


def test_score_restores_training_mode_and_has_no_grad():
    model, config = _model()
    model.train()
    probs = score(model, tensorize(contexts_table(random_rows(2)), config))
    assert model.training and not probs["click"].requires_grad


def test_unknown_ids_score_without_error():
    model, config = _model()
    rows = random_rows(2, seed=6)
    for row in rows:
        row["user_id"] = -1
        row["cand_item_id"] = [-1] * len(row["cand_item_id"])
        row["ih_item_id"] = [-5] * len(row["ih_item_id"])
    probs = score(model, tensorize(contexts_table(rows), config))
    assert all(torch.isfinite(p).all() for p in probs.values())


@pytest.mark.parametrize("variant", ["onepiece", "dlrm", "rearec", "onepiece_retrieval"])
def test_empty_batches_and_requests_without_candidates(variant):
    from onepiece.model import variant_config

    config = variant_config(variant, d_model=32, group_size=4)
    model = OnePiece(config).eval()
    rows = random_rows(3, seed=8)
    rows[1] = {k: ([] if k.startswith("cand_") else v) for k, v in rows[1].items()}
    table = contexts_table(rows)
    x = tensorize(table, config)
    assert 1 not in x.request_row.tolist()
    flat = candidate_scores(x, score(model, x))
    assert flat["click"].shape == (len(rows[0]["cand_item_id"]) + len(rows[2]["cand_item_id"]),)
    empty = tensorize(table.slice(0, 0), config)
    assert empty.batch_size == 0 and empty.cand_item_cat.shape[-1] == 3
    assert score(model, empty)["order"].shape[0] == 0


def test_chunked_scoring_equals_one_forward():
    model, config = _model()
    x = tensorize(contexts_table(random_rows(7, seed=9)), config)
    whole, chunked = score(model, x, chunk_size=0), score(model, x, chunk_size=2)
    uncached = score(model, x, chunk_size=3, cached=False)
    for task in TASKS:
        torch.testing.assert_close(chunked[task], whole[task], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(uncached[task], whole[task], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["onepiece", "onepiece_invisible", "hstu_pa", "rearec_pa", "onepiece_retrieval", "dlrm_pa"])
def test_trimmed_scoring_equals_the_padded_reference(variant):
    """score() chunks sequences in length order and cuts each chunk's all-padding columns;
    on fixed-shape (wire) inputs it gives the untrimmed scores, in the input order."""
    from onepiece.model import variant_config

    sizes = {k: getattr(tiny_config(), k) for k in ("d_model", "id_dim", "side_dim", "item_vocab", "ih_max_len", "pa_per_group", "group_size")}
    config = variant_config(variant, **sizes)
    torch.manual_seed(0)
    model = OnePiece(config).eval()
    x = tensorize(contexts_table(random_rows(9, seed=11)), config, fixed_shape=True)
    assert not bool((x.length_order() == torch.arange(x.batch_size)).all())  # the order matters
    padded = score(model, x, chunk_size=3, trim=False)
    trimmed = score(model, x, chunk_size=3)
    for task in TASKS:
        assert trimmed[task].shape == padded[task].shape == x.cand_item_cat.shape[:2]
        assert float((trimmed[task] - padded[task]).abs().max()) <= 1e-5
        assert ((trimmed[task] > 0) == (padded[task] > 0)).all()


def test_trim_padding_cuts_to_the_longest_real_length():
    config = tiny_config()
    x = tensorize(contexts_table(random_rows(6, seed=12)), config, fixed_shape=True)
    assert x.ih_item_cat.shape[1] == config.ih_max_len
    cut = x.trim_padding()
    for length, names in {"ih_len": ("ih_item_cat", "ih_event_type", "ih_age_days"), "pa_len": ("pa_kind", "pa_pos"), "cand_len": ("cand_item_num", "cand_flat_index")}.items():
        longest = int(getattr(x, length).max())
        for name in names:
            assert getattr(cut, name).shape[1] == longest
            torch.testing.assert_close(getattr(cut, name), getattr(x, name)[:, :longest])
            assert (getattr(x, name)[:, longest:] == getattr(x, name)[0, -1]).all()  # only padding cut
    assert cut.user_cat is x.user_cat
    empty = tensorize(contexts_table(random_rows(1, seed=12))[:0], config, fixed_shape=True)
    assert empty.trim_padding().ih_item_cat.shape == (0, 1, 3)


def test_a_head_that_reads_sd_sees_the_request_directly():
    """``head_reads_sd`` (a diagnostic): the head reads the user and query tokens itself."""
    model, config = _model(head_reads_sd=True)
    x = tensorize(contexts_table(random_rows(5, seed=13)), config)
    whole, chunked = score(model, x, chunk_size=0), score(model, x, chunk_size=2, cached=False)
    with torch.no_grad():
        out = model(x)
    steps = config.task_steps()
    for task in TASKS:  # score() reads the same logits as forward(), chunked or not
        torch.testing.assert_close(chunked[task], whole[task], atol=1e-5, rtol=1e-5)
        expected = torch.sigmoid(out.logits[task][..., steps[task]]) * out.cand_valid
        torch.testing.assert_close(whole[task], expected, atol=1e-5, rtol=1e-5)
    # Blind the head to the candidates' states: what is left is the request alone, the
    # same for every candidate of a request and different between users.
    with torch.no_grad():
        model.head.tasks.hidden.weight[:, : config.d_model] = 0
        logits = model(x).logits["click"][..., 0]  # (B, C)
        other_user = ModelInputs(**(x.tensors() | {"user_cat": x.user_cat + 1}))
        moved = model(other_user).logits["click"][..., 0]
    valid = out.cand_valid
    for row in range(x.batch_size):
        assert float(logits[row][valid[row]].std(unbiased=False)) < 1e-5
    assert float((moved - logits)[valid].abs().max()) > 1e-4


def test_head_reads_sd_needs_sd_and_the_block_head():
    from onepiece.model import variant_config

    for bad in ({"use_sd": False}, {"backbone": "dlrm", "num_steps": 0}, {"reasoning": "last_token"}):
        with pytest.raises(ValueError, match="head_reads_sd"):
            variant_config("onepiece", head_reads_sd=True, **bad)
