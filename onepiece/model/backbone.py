"""Pre-LN transformer layers on scaled_dot_product_attention, with a KV cache; or HSTU layers.

``x = x + MHSA(LN x); x = x + FFN(LN x)``. A forward over new positions may pass a
:class:`KVCache` holding the keys/values of earlier positions; the new positions' keys
and values are appended to it, so block-wise reasoning adds only M query rows per step.
A forward may also ask for the outputs of some rows only (``rows``, e.g. the candidate
positions whose hidden states are B_0): the last layer then runs the queries, output
projection and FFN of those rows alone; every position's keys and values are still used.

Serving (autograd and autocast off, e.g. ``score()`` on the CPU): the context's fused
QKV projection is written by batched GEMMs straight into a preallocated (B, capacity, 3d)
buffer, so the cache IS the projection output and the context's keys and values are
never copied (a reasoning block's M rows are projected by one GEMM and copied in). With
autocast on (CUDA bf16) keys/values are copied into preallocated buffers; with autograd
on (training) they are concatenated (in-place writes would invalidate tensors saved for
backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onepiece.model.config import ModelConfig
from onepiece.model.pointwise_attention import pointwise_attention, position_buckets
from onepiece.model.prefix_attention import ContextPrefix, attend_pointwise_with_prefix, attend_with_prefix


class KVCache:
    """Keys/values of every layer for the positions seen so far."""

    def __init__(self, n_layers: int, capacity: int) -> None:
        self.capacity = capacity
        self.length = 0
        self.projections: list[torch.Tensor | None] = [None] * n_layers  # (B, capacity, 3d)
        self.keys: list[torch.Tensor | None] = [None] * n_layers  # (B, h, N, dh)
        self.values: list[torch.Tensor | None] = [None] * n_layers

    def gathered(self, index: torch.Tensor) -> KVCache:
        """A cache for len(index) sequences whose first ``length`` positions are this
        cache's sequences ``index`` [G]: a request's context, encoded once, becomes the
        prefix of each of its candidate groups (one copy of its keys and values per group;
        the group's own rows then go in after it, with the same capacity)."""
        out = KVCache(len(self.projections), self.capacity)
        out.length = self.length
        for store, into in ((self.projections, out.projections), (self.keys, out.keys), (self.values, out.values)):
            for layer, t in enumerate(store):
                into[layer] = None if t is None else t.index_select(0, index)
        return out

    @staticmethod
    def projects_in_place(x: torch.Tensor) -> bool:
        """Whether :meth:`project` serves this forward (no autograd, no autocast)."""
        return not torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)

    def project(self, layer: int, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Write ``x @ weight.T`` of the (B, n, d) new positions at ``self.length`` of the
        layer's buffer; return the projections of all positions so far (B, length + n, 3d)."""
        b, n, _ = x.shape
        buffer = self.projections[layer]
        if buffer is None:
            buffer = self.projections[layer] = x.new_empty(b, self.capacity, weight.shape[0])
        end = self.length + n
        if self.length == 0:  # the context: B GEMMs of N rows each, straight into the buffer
            torch.bmm(x, weight.t().expand(b, -1, -1), out=buffer[:, :end])
        else:  # a block of M rows: one GEMM over B*M rows (B tiny GEMMs are slow) + a small copy
            buffer[:, self.length : end] = F.linear(x, weight)
        return buffer[:, :end]

    def append(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add (B, h, n, dh) new keys/values at ``self.length``; return all so far."""
        start, n = self.length, k.shape[2]
        past_k, past_v = self.keys[layer], self.values[layer]
        if torch.is_grad_enabled():
            if past_k is not None and past_v is not None:
                k = torch.cat([past_k[:, :, :start], k], dim=2)
                v = torch.cat([past_v[:, :, :start], v], dim=2)
            self.keys[layer], self.values[layer] = k, v
            return k, v
        if past_k is None or past_v is None:
            b, h, _, dh = k.shape
            past_k = self.keys[layer] = k.new_empty(b, h, self.capacity, dh)
            past_v = self.values[layer] = v.new_empty(b, h, self.capacity, dh)
        past_k[:, :, start : start + n] = k
        past_v[:, :, start : start + n] = v
        return past_k[:, :, : start + n], past_v[:, :, : start + n]


def select_rows(t: torch.Tensor, rows: torch.Tensor, dim: int) -> torch.Tensor:
    """Entries ``rows`` of ``t`` along ``dim`` (1 for (B, N, d) states, 2 for a mask's query
    rows): ``rows`` (1, M) are the same positions in every sequence, (B, M) one per sequence."""
    if rows.shape[0] == 1:
        return t.index_select(dim, rows[0])
    shape = list(t.shape)
    shape[0], shape[dim] = rows.shape
    index = rows[:, :, None] if dim == 1 else rows[:, None, :, None]
    return t.expand(rows.shape[0], *t.shape[1:]).gather(dim, index.expand(shape))


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        # No biases in the layers' linear maps (pre-LN makes them redundant, and a bias
        # costs one more pass over every (tokens x width) output on the CPU).
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.dropout = config.dropout

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        rows: torch.Tensor | None = None,
        prefix: ContextPrefix | None = None,
    ) -> torch.Tensor:
        """x (B, n, d) new positions -> (B, n, d); with ``rows`` (1 or B, M) only those
        positions query (-> (B, M, d)) while every position's key and value is used. With
        a ``prefix`` the queries also attend to its context keys, ahead of the cache's."""
        b, n, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, N, d) -> (B, h, N, dh), a view
            return t.view(b, t.shape[1], self.n_heads, d // self.n_heads).transpose(1, 2)

        if cache is not None and cache.projects_in_place(x):
            qkv = cache.project(layer, x, self.qkv.weight)  # (B, N_so_far, 3d)
            q, k, v = qkv[:, -n:, :d], heads(qkv[:, :, d : 2 * d]), heads(qkv[:, :, 2 * d :])
        else:
            q, k, v = self.qkv(x).split(d, dim=2)
            k, v = heads(k), heads(v)
            if cache is not None:
                k, v = cache.append(layer, k, v)  # (B, h, N_so_far, dh)
        if rows is not None:
            q = select_rows(q, rows, 1)
            if mask is not None and mask.shape[2] > 1:
                mask = select_rows(mask, rows, 2)
        n = q.shape[1]
        q = heads(q)
        if prefix is not None:
            return self.proj(attend_with_prefix(q, k, v, mask, prefix, layer).transpose(1, 2).reshape(b, n, d))
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if mask is None else mask.to(q.dtype),
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, h, n, dh)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Layer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.ln_attn = nn.LayerNorm(d)
        self.attn = SelfAttention(config)
        self.ln_ffn = nn.LayerNorm(d)
        self.ffn = nn.Sequential(
            nn.Linear(d, config.ffn_mult * d, bias=False),
            nn.GELU(),
            nn.Linear(config.ffn_mult * d, d, bias=False),
            nn.Dropout(config.dropout),
        )

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        rows: torch.Tensor | None = None,
        prefix: ContextPrefix | None = None,
        distance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        del distance  # softmax attention has no relative bias (positions are in the tokens)
        attended = self.attn(self.ln_attn(x), mask, cache, layer, rows, prefix)
        x = (x if rows is None else select_rows(x, rows, 1)) + attended
        return x + self.ffn(self.ln_ffn(x))


class RelativeBias(nn.Module):
    """HSTU's relative attention bias, shared by the heads: one learned scalar per
    relative-position bucket (``pointwise_attention.position_buckets``) plus, with
    ``config.hstu_time_buckets``, one per log bucket of the time between the query's and
    the key's events (``pointwise_attention.time_buckets``), as the reference's
    ``RelativeBucketedTimeAndPositionBasedBias``; both N(0, 0.02^2) at init, as there."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_buckets = config.hstu_position_buckets
        self.weight = nn.Parameter(torch.empty(2 * self.n_buckets).normal_(std=0.02))
        self.time_weight = None
        if config.hstu_time_buckets:  # buckets 0 .. n: the top one holds every longer gap
            self.time_weight = nn.Parameter(torch.empty(config.hstu_time_buckets + 1).normal_(std=0.02))

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        """``distance`` (., 1 or 2, n, N) int: channel 0 the relative distances
        (``masks.relative_distance``), channel 1 (with time buckets) the time buckets
        (``Reasoner._distance``) -> bias (., 1, n, N)."""
        bias = self.weight[position_buckets(distance[:, :1], self.n_buckets)]
        if self.time_weight is not None:
            assert distance.shape[1] == 2, "time buckets: the distances must carry the time channel"
            bias = bias + self.time_weight[distance[:, 1:]]
        return bias


class HSTULayer(nn.Module):
    """One HSTU layer (Zhai et al. 2024): U, V, Q, K = split(SiLU(f1(LN x)));
    A = SiLU(Q K^T / sqrt(dh) + rab) / n (``pointwise_attention``); x + f2(LN(A V) * U).
    No FFN: the gate U is the layer's pointwise transformation. The same calling
    convention as ``Layer`` (cache, ``rows``, shared-context ``prefix``); ``distance`` are
    the query-key relative distances and time buckets (1|B, 1|2, n, N) for the bias
    (``RelativeBias``; None: no bias)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.uvqk = nn.Linear(d, 4 * d, bias=False)  # f1
        self.out = nn.Linear(d, d)  # f2
        self.rab = RelativeBias(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        rows: torch.Tensor | None = None,
        prefix: ContextPrefix | None = None,
        distance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, n, d) new positions -> (B, n, d), or (B, M, d) with ``rows``."""
        b, n, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, N, d) -> (B, h, N, dh)
            return t.reshape(b, t.shape[1], self.n_heads, d // self.n_heads).transpose(1, 2)

        u, v, q, k = F.silu(self.uvqk(F.layer_norm(x, (d,), eps=1e-6))).split(d, dim=2)  # (B, n, d) each
        k, v = heads(k), heads(v)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, h, N_so_far, dh)
        if rows is not None:
            x, u, q = select_rows(x, rows, 1), select_rows(u, rows, 1), select_rows(q, rows, 1)
            if mask is not None and mask.shape[2] > 1:
                mask = select_rows(mask, rows, 2)
            if distance is not None and distance.shape[2] > 1:
                distance = select_rows(distance, rows, 2)
        m = q.shape[1]
        bias = None if distance is None else self.rab(distance)  # (1|B, 1, m, N)
        if prefix is not None:
            context_bias = None if prefix.distance is None else self.rab(prefix.distance)
            attended = attend_pointwise_with_prefix(heads(q), k, v, mask, bias, prefix, layer, context_bias)
        else:
            attended = pointwise_attention(heads(q), k, v, mask, bias)  # (B, h, m, dh)
        attended = attended.transpose(1, 2).reshape(b, m, d)
        return x + self.dropout(self.out(F.layer_norm(attended, (d,), eps=1e-6) * u))


class Backbone(nn.Module):
    """L layers (``Layer``, or ``HSTULayer`` with ``config.attention == "hstu"``). Hidden
    states are the last layer's residual stream (heads apply LN)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        kind = HSTULayer if config.attention == "hstu" else Layer
        self.layers = nn.ModuleList(kind(config) for _ in range(config.n_layers))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        rows: torch.Tensor | None = None,
        prefix: ContextPrefix | None = None,
        distance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, n, d) new positions; mask broadcastable to (B, 1, n, N_cached + n), None
        = attend everywhere (``masks.attention_mask``) -> (B, n, d). With ``rows`` (1 or
        B, M) only those positions' outputs are returned, (B, M, d): the last layer then
        runs its queries, output projection and FFN on those M rows alone (the others'
        outputs would be discarded; their keys and values are still computed and cached).
        A ``prefix`` (``prefix_attention``) adds shared context keys ahead of the cache's.
        ``distance`` (1|B, 1|2, n, N_cached + n): relative distances (and time buckets)
        for HSTU's bias (``RelativeBias``)."""
        n, last = x.shape[1], len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache, i, rows if i == last else None, prefix, distance)
        if cache is not None:
            cache.length += n
        return x
