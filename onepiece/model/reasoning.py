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
from onepiece.model.masks import SEG_REASON, Roles, attention_mask, cut_masks
from onepiece.model.tokens import structural_embedding


@dataclass
class BlockSpec:
    """Where B_0 sits in the base sequence and what roles its reasoning tokens get."""

    positions: torch.Tensor  # (1 or B, M) indices into the base sequence
    slot: torch.Tensor  # (1, M) candidate slot per block position, -1 if none
    valid: torch.Tensor  # (B, M) bool


class Reasoner(nn.Module):
    """Base pass plus K reasoning steps; returns [B_0, ..., B_K] stacked (B, M, K+1, d)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        # E_rpe[k], k >= 1
        self.rpe = structural_embedding(max(config.num_steps, 1), config.d_model, config.structural_embedding_std)

    def _mask(self, q: Roles, k: Roles, like: torch.Tensor) -> torch.Tensor | None:
        return attention_mask(
            q,
            k,
            causal=self.config.causal,
            candidates_visible=self.config.candidates_visible,
            dtype=like.dtype,
        )

    def _step_masks(self, q: Roles, k: Roles, cuts: list[tuple[slice, int]], like: torch.Tensor) -> list:
        return cut_masks(
            q,
            k,
            cuts,
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
        # B_0 (B, M, d): the base pass's last layer runs only the block positions' rows
        blocks = [self.backbone(tokens, self._mask(roles, roles, tokens), cache, spec.positions)]
        if not k_steps:
            return torch.stack(blocks, dim=2)  # (B, M, 1, d)
        # The masks of every step, before the loop: step k's query rows (block k, or the
        # whole sequence up to it without the cache) against the keys up to block k.
        block_roles = self._block_roles(spec, n)
        all_roles = roles.cat(block_roles)
        ends = [n + step * m for step in range(1, k_steps + 1)]  # keys visible to block k
        if cache is not None:
            cuts = [(slice(end - n - m, end - n), end) for end in ends]
            masks = self._step_masks(block_roles, all_roles, cuts, tokens)
        else:
            masks = self._step_masks(all_roles, all_roles, [(slice(end), end) for end in ends], tokens)
        seq_tokens = tokens
        for step, mask in enumerate(masks, start=1):
            new_tokens = blocks[-1] + self.rpe.weight[step - 1]  # (B, M, d)
            if cache is not None:
                out = self.backbone(new_tokens, mask, cache)
            else:
                seq_tokens = torch.cat([seq_tokens, new_tokens], dim=1)
                out = self.backbone(seq_tokens, mask)[:, -m:]
            blocks.append(out)  # B_k (B, M, d)
        return torch.stack(blocks, dim=2)  # (B, M, K+1, d)
