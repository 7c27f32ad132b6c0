"""The faithful baselines (issue 17 item 4): HSTU's pointwise attention and its relative
position bias, and DLRM's dot-product interaction with DIN target attention, each
against a plain reference written out here."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from model_helpers import contexts_table, random_rows, tiny_config

from onepiece.contract.schemas import TASKS
from onepiece.model import OnePiece, score, tensorize
from onepiece.model.backbone import HSTULayer, Layer
from onepiece.model.config import ModelConfig
from onepiece.model.inputs import ModelInputs
from onepiece.model.dlrm import DINAttention, dot_interactions
from onepiece.model.masks import SEG_CAND, SEG_IH, Roles, attention_mask, relative_distance, relative_seconds
from onepiece.model.pointwise_attention import pointwise_attention, position_buckets, time_buckets
from onepiece.model.variants import variant_config

# --- HSTU attention ---------------------------------------------------------------


def _reference_pointwise(q, k, v, allowed, bias):
    """Loops: out[b, h, i] = sum_j silu(<q_i, k_j> / sqrt(dh) + bias_ij) v_j / #{j allowed}."""
    b, h, n, dh = q.shape
    out = torch.zeros(b, h, n, v.shape[-1], dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            for i in range(n):
                keys = [j for j in range(k.shape[2]) if allowed[bi, i, j]]
                for j in keys:
                    s = float(q[bi, hi, i] @ k[bi, hi, j]) / math.sqrt(dh) + float(bias[bi, i, j])
                    out[bi, hi, i] += s / (1 + math.exp(-s)) * v[bi, hi, j].double() / len(keys)
    return out.float()


def _roles(valid: torch.Tensor, n_ctx: int) -> Roles:
    """A context of n_ctx positions then candidates; ``valid`` (B, N)."""
    n = valid.shape[1]
    index = torch.arange(n)[None]
    slot = torch.where(index < n_ctx, -1, index - n_ctx)
    return Roles(
        segment=torch.where(index < n_ctx, SEG_IH, SEG_CAND),
        block=torch.zeros_like(index),
        slot=slot,
        valid=valid,
        index=index,
    )


@pytest.mark.parametrize("causal, visible", [(True, False), (False, True), (True, True)])
def test_pointwise_attention_equals_the_plain_sum(causal, visible):
    torch.manual_seed(0)
    b, h, n_ctx, c, dh = 3, 2, 6, 3, 4
    n = n_ctx + c
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[0, 4:n_ctx] = False  # a padded context
    valid[1, n - 1] = False  # a padded candidate slot
    roles = _roles(valid, n_ctx)
    mask = attention_mask(roles, roles, causal=causal, candidates_visible=visible)
    q, k, v = (torch.randn(b, h, n, dh) for _ in range(3))
    bias = torch.randn(b, n, n)
    got = pointwise_attention(q, k, v, mask, bias[:, None])
    allowed = torch.ones(b, n, n, dtype=torch.bool) if mask is None else (mask[:, 0] == 0).expand(b, n, n)
    expected = _reference_pointwise(q, k, v, allowed, bias)
    rows = valid  # padding query rows are never read
    torch.testing.assert_close(got.transpose(1, 2)[rows], expected.transpose(1, 2)[rows], atol=1e-5, rtol=1e-4)


def test_pointwise_attention_is_not_a_softmax():
    """Weights do not sum to one: doubling the number of identical keys leaves the output
    (a mean over the allowed keys of silu-weighted values) unchanged, and a key whose
    score is very negative contributes ~0 instead of taking a share."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 1, 1, 4), torch.randn(1, 1, 1, 4), torch.randn(1, 1, 1, 4)
    one = pointwise_attention(q, k, v, None, None)
    two = pointwise_attention(q, k.repeat(1, 1, 2, 1), v.repeat(1, 1, 2, 1), None, None)
    torch.testing.assert_close(one, two)
    s = float(q[0, 0, 0] @ k[0, 0, 0]) / 2
    torch.testing.assert_close(one, F.silu(torch.tensor(s)) * v)


def test_position_buckets():
    d = torch.arange(0, 100_000)
    bucket = position_buckets(d, 32)
    assert torch.equal(bucket[:8], torch.arange(8))  # exact below 8
    assert bool((bucket[1:] >= bucket[:-1]).all())  # monotone
    assert int(bucket.max()) == 31  # clamped into the table's half
    assert int(bucket[8]) == 8 and int(bucket[10]) == 8 and int(bucket[11]) == 9  # log(11/8)/0.301 = 1.06
    back = position_buckets(-d[1:], 32)  # keys after the query: the other half
    assert torch.equal(back, bucket[1:] + 32)
    assert int(position_buckets(torch.tensor(0), 32)) == 0


def test_time_buckets_are_the_references_log_buckets():
    """floor(ln(max(|dt|, 1)) / 0.301) clamped to the count, on known gaps in seconds."""
    gaps = torch.tensor([0.0, 0.5, 1.0, 2.0, 60.0, 3600.0, 86400.0, -86400.0, 365 * 86400.0, 1e30])
    want = [0, 0, 0, 2, 13, 27, 37, 37, 57, 128]  # ln 2 / 0.301 = 2.30; ln 60 / 0.301 = 13.6; ...
    assert time_buckets(gaps, 128).tolist() == want
    assert time_buckets(gaps, 30).tolist() == [min(w, 30) for w in want]  # the top bucket holds the rest


def test_relative_seconds_are_key_age_minus_query_age():
    """A token's time is the request's minus its age: an IH event 2 days old against a
    candidate (age 0) is 2 days before it; tokens without ages sit at the request time."""
    valid = torch.ones(1, 4, dtype=torch.bool)
    roles = dataclasses.replace(_roles(valid, 3), age=torch.tensor([[3.0, 2.0, 0.5, 0.0]]))
    gap = relative_seconds(roles, roles)[0]
    assert gap[3].tolist() == [3 * 86400.0, 2 * 86400.0, 0.5 * 86400.0, 0.0]  # the candidate's row
    assert gap[1, 0] == 86400.0 and gap[0, 1] == -86400.0
    no_age = _roles(valid, 3)
    assert not relative_seconds(no_age, no_age).any()
    cands = _roles(torch.ones(1, 2, dtype=torch.bool), 0)  # a group's own rows: request time
    assert relative_seconds(cands, roles).tolist() == [[[3 * 86400.0, 2 * 86400.0, 43200.0, 0.0]] * 2]


def _hstu_logits(model: OnePiece, x: ModelInputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(x, cached=False)
    return torch.stack([out.logits[t] for t in TASKS], dim=-1) * out.cand_valid[..., None, None]


@pytest.mark.parametrize("time_buckets_on", [True, False])
def test_hstu_scores_read_the_event_ages_only_with_time_buckets(time_buckets_on):
    torch.manual_seed(0)
    config = tiny_config(attention="hstu", causal=True, candidates_visible=False, num_steps=0,
                         hstu_time_buckets=128 if time_buckets_on else 0)
    model = OnePiece(config).eval()
    for layer in model.reasoner.backbone.layers:  # a bias large enough to show
        assert (layer.rab.time_weight is not None) is time_buckets_on
        torch.nn.init.normal_(layer.rab.weight, std=1.0)
        if time_buckets_on:
            torch.nn.init.normal_(layer.rab.time_weight, std=1.0)
    x = tensorize(contexts_table(random_rows(6, seed=4)), config)
    assert x.ih_age_days.max() > 0
    older = ModelInputs(**(x.tensors() | {"ih_age_days": x.ih_age_days * 30}))  # hours -> days apart
    moved = (_hstu_logits(model, older) - _hstu_logits(model, x)).abs().max()
    if time_buckets_on:
        assert moved > 1e-4
    else:
        assert moved == 0


def test_time_buckets_need_hstu_attention():
    with pytest.raises(ValueError, match="hstu_time_buckets=128 needs attention='hstu'"):
        tiny_config(hstu_time_buckets=128)
    with pytest.raises(ValueError, match="hstu_time_buckets must be >= 0"):
        tiny_config(attention="hstu", hstu_time_buckets=-1)


def test_relative_distance_counts_valid_positions_only():
    """Padding moves no position: the same sequence with extra padding in its context gives
    the same distances between its valid positions; candidates sit one past the context."""
    n_ctx, c = 5, 2
    tight = torch.tensor([[True, True, True, False, False, True, True]])
    roles = _roles(tight, n_ctx)
    dist = relative_distance(roles, roles)[0]
    assert dist[5, 0] == 3 and dist[5, 2] == 1 and dist[6, 5] == 0  # 3 valid context tokens
    assert dist[2, 0] == 2 and dist[0, 2] == -2
    padded = torch.tensor([[True, False, True, False, True, False, False, True, True]])
    roles2 = _roles(padded, 7)
    dist2 = relative_distance(roles2, roles2)[0]
    keep = torch.tensor([0, 2, 4, 7, 8])
    torch.testing.assert_close(dist2[keep][:, keep], dist[[0, 1, 2, 5, 6]][:, [0, 1, 2, 5, 6]])
    # a group's own rows after a shared context prefix: the same distance 0 among them
    cands = _roles(torch.ones(1, c, dtype=torch.bool), 0)
    assert not relative_distance(cands, cands).any()


def test_hstu_layer_has_no_ffn_and_row_selection_matches():
    torch.manual_seed(0)
    config = tiny_config(attention="hstu", n_heads=2)
    layer = HSTULayer(config).eval()
    assert not any(isinstance(m, torch.nn.GELU) for m in layer.modules())
    torch.nn.init.normal_(layer.rab.weight, std=1.0)
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[0, 1] = False
    roles = _roles(valid, 4)
    mask = attention_mask(roles, roles, causal=True, candidates_visible=False)
    distance = relative_distance(roles, roles)[:, None]
    x = torch.randn(2, 7, config.d_model)
    with torch.no_grad():
        full = layer(x, mask, None, 0, distance=distance)
        rows = torch.tensor([[4, 5, 6]])
        part = layer(x, mask, None, 0, rows, distance=distance)
        without_bias = layer(x, mask, None, 0, distance=None)
    torch.testing.assert_close(part, full[:, 4:])
    assert (full - without_bias).abs().max() > 1e-3  # the bias is used
    # the U gate: with U = SiLU(0) = 0 the attention is gated off, only f2's bias is added
    with torch.no_grad():
        layer.uvqk.weight[: config.d_model] = 0
        torch.testing.assert_close(layer(x, mask, None, 0, distance=distance), x + layer.out.bias)


def test_hstu_variants_are_pointwise_and_the_old_row_is_softmax():
    for name in ("hstu", "hstu_pa"):
        config = variant_config(name)
        assert config.attention == "hstu" and config.causal and not config.candidates_visible
        assert config.shares_context
        assert all(isinstance(layer, HSTULayer) for layer in OnePiece(config).reasoner.backbone.layers)
    old = variant_config("hstu_softmax")
    assert old.attention == "softmax"
    assert all(isinstance(layer, Layer) for layer in OnePiece(old).reasoner.backbone.layers)


def test_an_old_config_json_rebuilds_the_old_models():
    # (variant, the fields it had not yet (a field's later ones neither), the value in effect)
    cases = (("hstu", ("attention", "hstu_time_buckets"), "softmax"), ("dlrm", ("dlrm_interaction",), "concat"),
             ("hstu", ("hstu_time_buckets",), 0))
    for name, fields, before in cases:
        data = json.loads(variant_config(name).to_json())
        for field in fields:
            del data[field]  # written before the field existed
        assert getattr(ModelConfig.from_json(json.dumps(data)), fields[0]) == before


def test_an_hstu_checkpoint_from_before_time_buckets_loads_into_its_rebuilt_model():
    """An HSTU config.json without ``hstu_time_buckets`` rebuilds a model without the time
    weights, so its state dict (position bias only) loads strictly."""
    sizes = {k: getattr(tiny_config(), k) for k in ("d_model", "id_dim", "side_dim", "item_vocab")}
    data = json.loads(variant_config("hstu", **sizes).to_json())
    del data["hstu_time_buckets"]
    old_config = ModelConfig.from_json(json.dumps(data))
    state = {k: v for k, v in OnePiece(variant_config("hstu", **sizes)).state_dict().items() if "time_weight" not in k}
    OnePiece(old_config).load_state_dict(state, strict=True)
    assert variant_config("hstu").hstu_time_buckets == variant_config("hstu_pa").hstu_time_buckets == 128


@pytest.mark.parametrize("variant", ["hstu", "hstu_pa"])
def test_hstu_scores_do_not_depend_on_padding_or_chunking(variant):
    torch.manual_seed(0)
    base = variant_config(variant)
    config = tiny_config(attention="hstu", causal=True, candidates_visible=False, num_steps=0, use_pa=base.use_pa)
    model = OnePiece(config)
    for module in model.modules():
        if isinstance(module, HSTULayer):
            torch.nn.init.normal_(module.rab.weight, std=1.0)
    x = tensorize(contexts_table(random_rows(9, seed=4, max_cands=9)), config)
    reference = score(model, x, trim=False, chunk_size=0)
    got = score(model, x, chunk_size=2)  # chunks in length order, each trimmed of padding
    for task, probs in reference.items():
        assert (got[task] - probs).abs().max() <= 1e-5


# --- DLRM -------------------------------------------------------------------------


def test_dot_interactions_are_the_upper_triangle_of_pairwise_dots():
    torch.manual_seed(0)
    z = torch.randn(2, 3, 5, 4)  # (B, C, F, d)
    got = dot_interactions(z)
    assert got.shape == (2, 3, 5 * 4 // 2)  # F(F-1)/2 pairs, no self products
    expected = torch.stack([(z[..., i, :] * z[..., j, :]).sum(-1) for i in range(5) for j in range(i + 1, 5)], -1)
    torch.testing.assert_close(got, expected)
    # symmetric: swapping two vectors only permutes the terms (each pair once)
    swapped = z[..., [1, 0, 2, 3, 4], :]
    torch.testing.assert_close(dot_interactions(swapped).sort(-1).values, got.sort(-1).values)
    same = torch.ones(1, 4, 3)  # four identical vectors: every term is |z|^2
    assert torch.equal(dot_interactions(same), torch.full((1, 6), 3.0))


def test_din_pools_a_weighted_sum_that_ignores_padding():
    torch.manual_seed(0)
    din = DINAttention(8)
    target, keys = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    valid = torch.tensor([[True] * 5, [True, True, False, False, False]])
    pooled = din(target, keys, valid)
    changed = keys.clone()
    changed[1, 3] += 10.0  # a padded key
    torch.testing.assert_close(din(target, changed, valid)[1], pooled[1])
    # no softmax: the pool is sum_l w(t, k_l) k_l with the MLP's raw weights
    h = din.target(target)[:, :, None] + din.key(keys)[:, None] + din.product(target[:, :, None] * keys[:, None])
    w = din.weight(din.act(h)).squeeze(-1) * valid[:, None]
    torch.testing.assert_close(pooled, torch.einsum("bcl,bld->bcd", w, keys))


@pytest.mark.parametrize("variant, use_pa, n_vectors", [("dlrm", False, 11), ("dlrm_pa", True, 12)])
def test_dlrm_is_dot_interaction_with_din(variant, use_pa, n_vectors):
    """Vectors: the bottom-MLP output, item/shop/category, user id + 3 profile fields,
    query id + pieces, DIN over the IH (and the PA)."""
    config = variant_config(variant)
    assert config.dlrm_interaction == "dot" and config.use_pa is use_pa
    core = OnePiece(config).dlrm
    assert core.tasks.hidden.in_features == config.d_model + n_vectors * (n_vectors - 1) // 2
    assert variant_config("dlrm_mlp").dlrm_interaction == "concat"


def test_dlrm_scores_through_score():
    torch.manual_seed(0)
    config = tiny_config(backbone="dlrm", num_steps=0, dlrm_interaction="dot")
    model = OnePiece(config)
    x = tensorize(contexts_table(random_rows(6, seed=2, max_cands=7)), config)
    reference = score(model, x, trim=False, chunk_size=0)
    got = score(model, x, chunk_size=2)
    for task, probs in reference.items():
        assert (got[task] - probs).abs().max() <= 1e-5
        assert probs.max() > 0
