"""Mask properties, checked on backbone outputs (not on the mask tensor alone)."""

from __future__ import annotations

import torch

from onepiece.model.backbone import Backbone
from onepiece.model.masks import SEG_CAND, SEG_IH, SEG_REASON, Roles, attention_mask
from onepiece.model.config import ModelConfig

torch.manual_seed(0)  # perturbations below are random vectors: a constant shift is erased by LayerNorm
CONFIG = ModelConfig(d_model=16, n_heads=2, n_layers=2)
N_CTX, M, K = 5, 3, 2  # 2 history tokens + 3 candidates; K blocks of M


def _roles(batch: int = 2) -> Roles:
    seg = [SEG_IH] * 2 + [SEG_CAND] * 3 + [SEG_REASON] * (M * K)
    block = [0] * N_CTX + [k for k in range(1, K + 1) for _ in range(M)]
    slot = [-1, -1] + list(range(M)) * (K + 1)
    n = len(seg)
    as_t = lambda v: torch.tensor(v).expand(batch, n)  # noqa: E731
    valid = torch.ones(batch, n, dtype=torch.bool)
    return Roles(as_t(seg), as_t(block), as_t(slot), valid, as_t(list(range(n))))


def _run(x: torch.Tensor, **switches: bool) -> torch.Tensor:
    torch.manual_seed(1)
    backbone = Backbone(CONFIG).eval()
    roles = _roles(x.shape[0])
    out = backbone(x, attention_mask(roles, roles, **switches))
    return out


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().amax(dim=(0, 2)) > 1e-6  # per position


def test_context_is_blind_to_reasoning_blocks_and_block_k_to_block_k_plus_1():
    x = torch.randn(2, N_CTX + M * K, 16)
    for causal in (False, True):
        base = _run(x, causal=causal, candidates_visible=True)
        y = x.clone()
        y[:, N_CTX + M :] += torch.randn(16)  # change block 2 only
        changed = _changed(base, _run(y, causal=causal, candidates_visible=True))
        assert not changed[: N_CTX + M].any()  # context and block 1 unchanged
        assert changed[N_CTX + M :].all()
        z = x.clone()
        z[:, N_CTX : N_CTX + M] += torch.randn(16)  # change block 1
        changed = _changed(base, _run(z, causal=causal, candidates_visible=True))
        assert not changed[:N_CTX].any() and changed[N_CTX:].any()


def test_invisible_candidates_do_not_see_each_other():
    x = torch.randn(2, N_CTX + M * K, 16)
    y = x.clone()
    y[:, 2] += torch.randn(16)  # candidate slot 0's base token
    invisible = _changed(_run(x, causal=False, candidates_visible=False), _run(y, causal=False, candidates_visible=False))
    slot = _roles().slot[0]
    assert not invisible[:2].any()  # history does not see candidates
    assert invisible[slot == 0].all() and not invisible[slot > 0].any()
    visible = _changed(_run(x, causal=False, candidates_visible=True), _run(y, causal=False, candidates_visible=True))
    assert visible.all()  # bidirectional context: everything sees candidate 0


def test_causal_mask_hides_later_tokens():
    x = torch.randn(1, N_CTX + M * K, 16)
    y = x.clone()
    y[:, 3] += torch.randn(16)
    changed = _changed(_run(x, causal=True, candidates_visible=True), _run(y, causal=True, candidates_visible=True))
    assert not changed[:3].any() and changed[3:].all()


def test_padding_keys_are_masked_and_padding_rows_stay_finite():
    roles = _roles(1)
    roles.valid[0, 1] = False
    mask = attention_mask(roles, roles, causal=False, candidates_visible=True)[0, 0]
    assert (mask[:, 1] < -1e8).all() and (mask[:, 0] == 0).all()
    x = torch.randn(1, roles.length, 16)
    y = x.clone()
    y[:, 1] += torch.randn(16)  # the padding position's input
    a, b = _run_roles(x, roles), _run_roles(y, roles)
    assert torch.isfinite(a).all()
    changed = _changed(a, b)
    assert changed[1] and not changed[[0] + list(range(2, roles.length))].any()

    roles.valid[0, :] = False  # a fully padded sequence stays finite
    assert torch.isfinite(_run_roles(x, roles)).all()


def _run_roles(x: torch.Tensor, roles: Roles) -> torch.Tensor:
    torch.manual_seed(1)
    backbone = Backbone(CONFIG).eval()
    return backbone(x, attention_mask(roles, roles, causal=False, candidates_visible=True))


def test_the_mask_materialises_only_what_varies():
    """SDPA broadcasts the mask: a bidirectional context with visible candidates needs no
    mask without padding and a (B, 1, 1, N) key mask with it; structure adds query rows."""
    ctx = _roles(2)
    n_ctx = Roles(*(t[:, :N_CTX] for t in ctx.astuple()))  # no reasoning blocks
    assert attention_mask(n_ctx, n_ctx, causal=False, candidates_visible=True) is None
    n_ctx.valid[1, 0] = False
    padded = attention_mask(n_ctx, n_ctx, causal=False, candidates_visible=True)
    assert padded is not None and padded.shape == (2, 1, 1, N_CTX)
    assert (padded[1, 0, 0, 0] < -1e8) and (padded[0] == 0).all()
    causal = attention_mask(n_ctx, n_ctx, causal=True, candidates_visible=True)
    assert causal is not None and causal.shape == (2, 1, N_CTX, N_CTX)
    full = attention_mask(ctx, ctx, causal=False, candidates_visible=True)  # blocks: structure
    assert full is not None and full.shape[2:] == (ctx.length, ctx.length)


def test_returning_only_some_rows_equals_selecting_them_from_all_outputs():
    """``rows``: the last layer computes only the rows read (B_0), as the full pass would."""
    torch.manual_seed(1)
    backbone = Backbone(CONFIG).eval()
    x = torch.randn(2, N_CTX + M * K, CONFIG.d_model)
    roles = _roles(2)
    roles.valid = roles.valid.clone()
    roles.valid[1, 1] = False  # a padded key
    for switches in ({"causal": True, "candidates_visible": False}, {"causal": False, "candidates_visible": True}):
        mask = attention_mask(roles, roles, **switches)
        with torch.no_grad():
            full = backbone(x, mask)
            same = backbone(x, mask, rows=torch.tensor([[2, 3, 4]]))  # the same rows in every sequence
            own = backbone(x, mask, rows=torch.tensor([[4], [1]]))  # one row per sequence
        torch.testing.assert_close(same, full[:, 2:5], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(own, torch.stack([full[0, 4:5], full[1, 1:2]]), atol=1e-6, rtol=1e-6)
