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

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from onepiece.model.backbone import Backbone, KVCache
from onepiece.model.config import ModelConfig
from onepiece.model.masks import (
    MASKED,
    SEG_CAND,
    SEG_REASON,
    Roles,
    allowed,
    attention_mask,
    cut_masks,
    relative_distance,
    relative_seconds,
)
from onepiece.model.pointwise_attention import time_buckets
from onepiece.model.prefix_attention import ContextPrefix
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
        #: Serving the shared-context layout: fold a request's groups against its context
        #: (``prefix_attention``); False runs the reference (the context copied per group).
        self.fold_groups = True

    def _rules(self) -> dict[str, bool]:
        c = self.config
        return {
            "causal": c.causal,
            "candidates_visible": c.candidates_visible,
            "context_sees_candidates": c.context_sees_candidates,
        }

    def _mask(self, q: Roles, k: Roles, like: torch.Tensor) -> torch.Tensor | None:
        return attention_mask(q, k, **self._rules(), dtype=like.dtype)

    def _step_masks(self, q: Roles, k: Roles, cuts: list[tuple[slice, int]], like: torch.Tensor) -> list:
        return cut_masks(q, k, cuts, **self._rules(), dtype=like.dtype)

    def _distance(self, q: Roles, k: Roles) -> torch.Tensor | None:
        """HSTU attention: what its bias reads (``backbone.RelativeBias``), the relative
        distances (B, 1, Nq, Nk), with ``hstu_time_buckets`` stacked with the time buckets
        of the query-key gaps (B, 2, Nq, Nk); None for softmax attention (its positions are
        learned token embeddings). Computed once per pass, shared by the layers."""
        if self.config.attention != "hstu":
            return None
        distance = relative_distance(q, k)
        if not self.config.hstu_time_buckets:
            return distance[:, None]
        time = time_buckets(relative_seconds(q, k), self.config.hstu_time_buckets)
        return torch.stack([distance, time.expand_as(distance)], dim=1)

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
        mask, distance = self._mask(roles, roles, tokens), self._distance(roles, roles)
        b0 = self.backbone(tokens, mask, cache, spec.positions, distance=distance)
        return self._reason(b0, tokens, roles, spec, cache)

    def encode_context(self, tokens: torch.Tensor, roles: Roles, room: int) -> KVCache:
        """The shared-context layout's first half: the context alone (R, Nctx, d) through
        every layer, for its keys and values only (the last layer computes no query row),
        in a cache with ``room`` free positions for a group's candidates and reasoning
        blocks. Exact when the context never sees candidate-derived positions."""
        cache = KVCache(len(self.backbone.layers), roles.length + room)
        none = torch.zeros((1, 0), dtype=torch.long, device=tokens.device)
        self.backbone(tokens, self._mask(roles, roles, tokens), cache, none, distance=self._distance(roles, roles))
        return cache

    def forward_groups(
        self,
        context: KVCache,
        context_roles: Roles,
        group_context: torch.Tensor,
        cands: torch.Tensor,
        cand_valid: torch.Tensor,
    ) -> torch.Tensor:
        """The second half: candidate groups (G, C, d) against the cached keys and values
        of their contexts (``group_context`` [G] rows of ``context``): the C candidate rows
        and then each reasoning block's C rows, as in the per-sequence cached path
        -> (G, C, K+1, d). ``context_roles`` are the R contexts' roles."""
        n, c = context_roles.length, cands.shape[1]
        assert context.capacity >= n + c * (self.config.num_steps + 1), "encode_context: too little room"
        device = cands.device
        slot = torch.arange(c, device=device)[None]  # (1, C)
        cand_roles = Roles(
            segment=torch.full_like(slot, SEG_CAND),
            block=torch.zeros_like(slot),
            slot=slot,
            valid=cand_valid,
            index=n + slot,
        )
        spec = BlockSpec(n + slot, slot, cand_valid)
        prefix = self._prefix(context, context_roles, group_context, spec)
        if prefix is not None:  # the context stays in request layout; the cache holds the group's own rows
            cache = KVCache(len(self.backbone.layers), c * (self.config.num_steps + 1))
            mask, distance = self._mask(cand_roles, cand_roles, cands), self._distance(cand_roles, cand_roles)
            b0 = self.backbone(cands, mask, cache, prefix=prefix, distance=distance)
            return self._reason(b0, None, cand_roles, spec, cache, prefix)
        cache = context.gathered(group_context)  # the reference: the context copied per group
        roles = context_roles.rows(group_context).cat(cand_roles)
        mask, distance = self._mask(cand_roles, roles, cands), self._distance(cand_roles, roles)
        b0 = self.backbone(cands, mask, cache, distance=distance)  # (G, C, d)
        return self._reason(b0, None, roles, spec, cache)

    def _prefix(
        self, context: KVCache, context_roles: Roles, group_context: torch.Tensor, spec: BlockSpec
    ) -> ContextPrefix | None:
        """The context as a shared prefix (``prefix_attention``) when it can be: serving (the
        cache holds the context's projections, or its keys and values for HSTU layers, which
        project with a SiLU and are not written in place) and every query row of every step may see
        every context key but padding; otherwise None (the gathered reference path)."""
        buffers = context.projections  # softmax layers: the in-place (R, capacity, 3d) projections
        in_place = all(b is not None for b in buffers)
        stored = all(t is not None for t in context.keys + context.values)  # HSTU layers: keys, values
        if not self.fold_groups or not (in_place or stored) or torch.is_grad_enabled():
            return None
        one = dataclasses.replace(spec, valid=spec.valid[:1])  # structure only: validity is not read
        rows = Roles(torch.full_like(one.slot, SEG_CAND), torch.zeros_like(one.slot), one.slot, one.valid, one.positions)
        if self.config.num_steps:
            rows = rows.cat(self._block_roles(one, int(one.positions.max()) + 1))
        keys = dataclasses.replace(context_roles, valid=context_roles.valid[:1])
        if not bool(allowed(rows, keys, **self._rules()).all()):
            return None
        contexts, grid, width = ContextPrefix.grid_of(group_context)
        n, d = context_roles.length, self.config.d_model
        h = self.config.n_heads

        def heads(t: torch.Tensor) -> torch.Tensor:  # (R, N, d) -> (R, h, N, dh)
            return t.reshape(t.shape[0], n, h, d // h).transpose(1, 2)

        if in_place:
            picked = [b.index_select(0, contexts)[:, :n] for b in buffers if b is not None]  # (R', N, 3d)
            ctx_keys = [heads(p[..., d : 2 * d]) for p in picked]
            ctx_values = [heads(p[..., 2 * d :]) for p in picked]
        else:  # (R', h, N, dh) per layer
            ctx_keys = [t.index_select(0, contexts)[:, :, :n] for t in context.keys if t is not None]
            ctx_values = [t.index_select(0, contexts)[:, :, :n] for t in context.values if t is not None]
        picked_roles = context_roles.rows(contexts)
        valid = picked_roles.valid
        mask = None
        if not bool(valid.all()):
            mask = torch.zeros(valid.shape, dtype=ctx_keys[0].dtype, device=valid.device)
            mask = mask.masked_fill_(~valid, MASKED)[:, None, None]
        distance = None
        if self.config.attention == "hstu":  # a group's rows all sit one past the context
            one_row = Roles(rows.segment[:, :1], rows.block[:, :1], rows.slot[:, :1], rows.valid[:, :1], rows.index[:, :1])
            distance = self._distance(one_row, picked_roles)  # (R', 1|2, 1, N)
        return ContextPrefix(
            keys=ctx_keys,
            values=ctx_values,
            mask=mask,
            grid=grid,
            rows=len(contexts),
            width=width,
            distance=distance,
        )

    def _reason(
        self,
        b0: torch.Tensor,
        tokens: torch.Tensor | None,
        roles: Roles,
        spec: BlockSpec,
        cache: KVCache | None,
        prefix: ContextPrefix | None = None,
    ) -> torch.Tensor:
        """[B_0, ..., B_K] (B, M, K+1, d): the K steps after the base pass, against the
        ``cache`` of the base sequence (``roles``; after a shared ``prefix`` if given) or,
        without it, re-running ``tokens``."""
        k_steps, m, n = self.config.num_steps, spec.slot.shape[1], roles.length
        blocks = [b0]
        if not k_steps:
            return torch.stack(blocks, dim=2)  # (B, M, 1, d)
        tokens = b0 if tokens is None else tokens  # only the dtype is read when cached
        # The masks of every step, before the loop: step k's query rows (block k, or the
        # whole sequence up to it without the cache) against the keys up to block k.
        block_roles = self._block_roles(spec, int(roles.index.max()) + 1)
        all_roles = roles.cat(block_roles)
        ends = [n + step * m for step in range(1, k_steps + 1)]  # keys visible to block k
        if cache is not None:
            cuts = [(slice(end - n - m, end - n), end) for end in ends]
            masks = self._step_masks(block_roles, all_roles, cuts, tokens)
            distance = self._distance(block_roles, all_roles)
        else:
            cuts = [(slice(end), end) for end in ends]
            masks = self._step_masks(all_roles, all_roles, cuts, tokens)
            distance = self._distance(all_roles, all_roles)
        distances = [None if distance is None else distance[:, :, rows, :keys] for rows, keys in cuts]
        seq_tokens = tokens
        for step, (mask, dist) in enumerate(zip(masks, distances), start=1):
            new_tokens = blocks[-1] + self.rpe.weight[step - 1]  # (B, M, d)
            if cache is not None:
                out = self.backbone(new_tokens, mask, cache, prefix=prefix, distance=dist)
            else:
                seq_tokens = torch.cat([seq_tokens, new_tokens], dim=1)
                out = self.backbone(seq_tokens, mask, distance=dist)[:, -m:]
            blocks.append(out)  # B_k (B, M, d)
        return torch.stack(blocks, dim=2)  # (B, M, K+1, d)
