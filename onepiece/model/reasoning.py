"""Block-wise latent reasoning: K steps, each appending a block of M hidden states.

B_0 is the base pass's hidden states at the block positions (candidates in ranking, SD
tokens in retrieval, the last context token for ReaRec-style reasoning). Step k feeds
B_{k-1} + E_rpe[k] as M new tokens; their outputs are B_k. The mask (``masks``) keeps
the context blind to every block and block k blind to block k+1, so:

* ``cached`` (the serving path): step k computes only M new query rows against the
  cached keys/values of the context and earlier blocks;
* ``uncached`` (the reference): step k re-runs the whole sequence
  [context, block 1..k]. Both give the same B_k (tested to 1e-5 in float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from onepiece.model.backbone import Backbone, KVCache
from onepiece.model.config import ModelConfig
from onepiece.model.masks import SEG_REASON, Roles, attention_mask, mask_rows


@dataclass
class BlockSpec:
    """Where B_0 sits in the base sequence and what roles its reasoning tokens get."""

    positions: torch.Tensor  # (1 or B, M) indices into the base sequence
    slot: torch.Tensor  # (1, M) candidate slot per block position, -1 if none
    valid: torch.Tensor  # (B, M) bool


def _gather(h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    # h (B, N, d), positions (1 or B, M) -> (B, M, d)
    index = positions.unsqueeze(-1).expand(h.shape[0], -1, h.shape[-1])
    return torch.gather(h, 1, index)


class Reasoner(nn.Module):
    """Base pass plus K reasoning steps; returns [B_0, ..., B_K] stacked (B, M, K+1, d)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.rpe = nn.Embedding(max(config.num_steps, 1), config.d_model)  # E_rpe[k], k >= 1

    def _mask(self, q: Roles, k: Roles, like: torch.Tensor) -> torch.Tensor | None:
        return attention_mask(
            q,
            k,
            causal=self.config.causal,
            candidates_visible=self.config.candidates_visible,
            dtype=like.dtype,
        )

    def _block_roles(self, spec: BlockSpec, start: int) -> Roles:
        """Roles of all K reasoning blocks, positions start .. start + K*M - 1."""
        k_steps, m = self.config.num_steps, spec.slot.shape[1]
        device = spec.slot.device
        step = torch.arange(1, k_steps + 1, device=device).repeat_interleave(m)[None]  # (1, K*M)
        return Roles(
            segment=torch.full_like(step, SEG_REASON),
            block=step,
            slot=spec.slot.repeat(1, k_steps),
            valid=spec.valid.repeat(1, k_steps),
            index=(start + torch.arange(k_steps * m, device=device))[None],
        )

    def forward(
        self, tokens: torch.Tensor, roles: Roles, spec: BlockSpec, cached: bool = True
    ) -> torch.Tensor:
        """tokens (B, N, d), roles of the N positions -> (B, M, K+1, d)."""
        k_steps, m, n = self.config.num_steps, spec.slot.shape[1], roles.length
        cache = KVCache(len(self.backbone.layers), n + k_steps * m) if cached and k_steps else None
        h = self.backbone(tokens, self._mask(roles, roles, tokens), cache)  # (B, N, d)
        blocks = [_gather(h, spec.positions)]  # B_0 (B, M, d)
        if not k_steps:
            return torch.stack(blocks, dim=2)  # (B, M, 1, d)
        # Masks of every step at once; step k uses rows of block k and keys up to it.
        block_roles = self._block_roles(spec, n)
        all_roles = roles.cat(block_roles)
        rows = all_roles if cache is None else block_roles
        mask = self._mask(rows, all_roles, h)  # rows: N + K*M or K*M; keys N + K*M
        seq_tokens = tokens
        for step in range(1, k_steps + 1):
            new_tokens = blocks[-1] + self.rpe.weight[step - 1]  # (B, M, d)
            end = n + step * m  # keys visible to block k
            if cache is not None:
                rows_k = mask_rows(mask, slice((step - 1) * m, step * m), end)
                out = self.backbone(new_tokens, rows_k, cache)
            else:
                seq_tokens = torch.cat([seq_tokens, new_tokens], dim=1)
                out = self.backbone(seq_tokens, mask_rows(mask, slice(end), end))[:, -m:]
            blocks.append(out)  # B_k (B, M, d)
        return torch.stack(blocks, dim=2)  # (B, M, K+1, d)
