"""Pre-LN transformer layers on scaled_dot_product_attention, with a KV cache.

``x = x + MHSA(LN x); x = x + FFN(LN x)``. A forward over new positions may pass a
:class:`KVCache` holding the keys/values of earlier positions; the new positions' keys
and values are appended to it, so block-wise reasoning adds only M query rows per step.

The cache writes into preallocated buffers when autograd is off (serving: no copy of
the whole cache per step) and concatenates when autograd is on (training: in-place
writes would invalidate tensors saved for backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onepiece.model.config import ModelConfig


class KVCache:
    """Keys/values of every layer for the positions seen so far, each (B, h, N, dh)."""

    def __init__(self, n_layers: int, capacity: int) -> None:
        self.capacity = capacity
        self.length = 0
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

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
        self, x: torch.Tensor, mask: torch.Tensor, cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        # (B, n, d) -> (B, h, n, dh)
        q, k, v = (t.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, h, N_so_far, dh)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
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
        self, x: torch.Tensor, mask: torch.Tensor, cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x), mask, cache, layer)
        return x + self.ffn(self.ln_ffn(x))


class Backbone(nn.Module):
    """L layers. Hidden states are the last layer's residual stream (heads apply LN)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.n_layers))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        """x (B, n, d) new positions; mask (B, 1, n, N_cached + n) -> (B, n, d)."""
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache, i)
        if cache is not None:
            cache.length += x.shape[1]
        return x
