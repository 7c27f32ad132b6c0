"""Attention of candidate groups over a shared context prefix, without copying it per group.

In the shared-context layout a group's queries (its C candidate rows, then each reasoning
block's rows) attend to two sets of keys: its request's context, the same for every group
of that request, and the group's own positions. Copying the context's keys and values
into every group (``KVCache.gathered``, the reference) costs a copy per group and runs
attention as many tiny (C x N) problems. Here softmax attention is split exactly in two:

    softmax([s_ctx, s_own]) [V_ctx; V_own]
        = (exp(s_ctx - m) V_ctx + exp(s_own - m) V_own) / (sum exp(s_ctx - m) + sum exp(s_own - m))

with m the row maximum over both parts. The context part runs with the groups of one
request folded into the query dimension: a request-by-request grid (R, G_max) of groups,
so each request is one (G_max * C x N_ctx) GEMM against its context's keys. The own part
is a small batched product per group. Inference only (the context's keys come from the
in-place cache); every step's mask over the context must be key padding alone, which the
caller checks (``Reasoner``).

HSTU's pointwise attention (``pointwise_attention``) has no softmax: its output is a plain
sum over the allowed keys divided by their count, so the two parts are simply added and
divided by the context's valid count plus the group's own allowed count
(``attend_pointwise_with_prefix``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from onepiece.model.masks import MASKED
from onepiece.model.pointwise_attention import allowed_keys


@dataclass
class ContextPrefix:
    """The contexts of a micro-batch of groups, in request layout, and the grid that folds
    the groups into it."""

    keys: list[torch.Tensor]  # per layer (R, h, N_ctx, dh)
    values: list[torch.Tensor]  # per layer (R, h, N_ctx, dh)
    mask: torch.Tensor | None  # (R, 1, 1, N_ctx) additive key padding, None = none
    grid: torch.Tensor  # (G,) each group's cell in the flattened (R, G_max) grid
    rows: int  # R
    width: int  # G_max
    #: HSTU attention: (R, 1|2, 1, N_ctx) distance from a group's rows (all at one position,
    #: one past the context, at the request time) to each context key, and the time
    #: buckets with ``hstu_time_buckets`` (``Reasoner._distance``); None = none
    distance: torch.Tensor | None = None

    @staticmethod
    def grid_of(group_context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(contexts used, in order; each group's grid cell; G_max) for ``group_context`` [G]."""
        contexts, local = torch.unique(group_context, return_inverse=True)
        order = torch.argsort(local, stable=True)
        counts = torch.bincount(local, minlength=len(contexts))
        first = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(local)
        rank[order] = torch.arange(len(local), device=local.device) - first[local[order]]
        width = int(counts.max()) if len(counts) else 1
        return contexts, local * width + rank, width

    def to_grid(self, t: torch.Tensor) -> torch.Tensor:
        """(G, h, n, X) group layout -> (R, h, G_max * n, X), empty cells zero."""
        g, h, n, x = t.shape
        cells = t.new_zeros(self.rows * self.width, h, n, x)
        cells[self.grid] = t
        return cells.view(self.rows, self.width, h, n, x).transpose(1, 2).reshape(self.rows, h, self.width * n, x)

    def from_grid(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """(R, h, G_max * n, X) -> (G, h, n, X), the groups' cells only."""
        r, h, _, x = t.shape
        cells = t.view(r, h, self.width, n, x).transpose(1, 2).reshape(r * self.width, h, n, x)
        return cells[self.grid]


def attend_with_prefix(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    prefix: ContextPrefix,
    layer: int,
) -> torch.Tensor:
    """q (G, h, n, dh) against [the prefix's context keys | own keys k, v (G, h, L, dh)];
    ``mask`` (additive, broadcastable to (G, 1, n, L)) covers the own keys -> (G, h, n, dh)."""
    n, scale = q.shape[2], q.shape[-1] ** -0.5
    ctx_scores = torch.matmul(prefix.to_grid(q), prefix.keys[layer].transpose(2, 3)).mul_(scale)  # (R, h, Gn, N)
    if prefix.mask is not None:
        ctx_scores += prefix.mask.to(q.dtype)
    own_scores = torch.matmul(q, k.transpose(2, 3)).mul_(scale)  # (G, h, n, L)
    if mask is not None:
        own_scores += mask.to(q.dtype)
    top = torch.maximum(prefix.from_grid(ctx_scores.amax(-1, keepdim=True), n), own_scores.amax(-1, keepdim=True))
    own = own_scores.sub_(top).exp_()  # (G, h, n, L)
    ctx = ctx_scores.sub_(prefix.to_grid(top)).exp_()  # (R, h, Gn, N); empty cells: exp(s)
    total = prefix.from_grid(ctx.sum(-1, keepdim=True), n) + own.sum(-1, keepdim=True)
    out = prefix.from_grid(torch.matmul(ctx, prefix.values[layer]), n)  # (G, h, n, dh)
    return out.add_(torch.matmul(own, v)).div_(total)


def attend_pointwise_with_prefix(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    bias: torch.Tensor | None,
    prefix: ContextPrefix,
    layer: int,
    context_bias: torch.Tensor | None,
) -> torch.Tensor:
    """``pointwise_attention`` of q (G, h, n, dh) over [the prefix's context keys | own keys
    k, v (G, h, L, dh)]; ``mask`` and ``bias`` (broadcastable to (G, h, n, L)) cover the own
    keys, ``context_bias`` (R, 1, 1, N_ctx) the context's -> (G, h, n, dh). Exact: the sum
    over both parts divided by the total count of allowed keys."""
    n, scale = q.shape[2], q.shape[-1] ** -0.5
    ctx_scores = torch.matmul(prefix.to_grid(q), prefix.keys[layer].transpose(2, 3)).mul_(scale)  # (R, h, Gn, N)
    if context_bias is not None:
        ctx_scores += context_bias
    ctx = F.silu(ctx_scores)
    ctx_count = torch.full((prefix.rows, 1, 1, 1), float(ctx.shape[-1]), dtype=q.dtype, device=q.device)
    if prefix.mask is not None:
        ctx_allowed = (prefix.mask > MASKED / 2).to(q.dtype)  # (R, 1, 1, N)
        ctx = ctx * ctx_allowed
        ctx_count = ctx_allowed.sum(-1, keepdim=True)
    out = prefix.from_grid(torch.matmul(ctx, prefix.values[layer]), n)  # (G, h, n, dh)
    own_scores = torch.matmul(q, k.transpose(2, 3)).mul_(scale)  # (G, h, n, L)
    if bias is not None:
        own_scores += bias
    own_allowed = allowed_keys(mask, own_scores.shape, q.dtype).to(q.device)
    own = F.silu(own_scores) * own_allowed
    count = ctx_count[torch.div(prefix.grid, prefix.width, rounding_mode="floor")] + own_allowed.sum(-1, keepdim=True)
    return out.add_(torch.matmul(own, v)).div_(count.clamp(min=1.0))
