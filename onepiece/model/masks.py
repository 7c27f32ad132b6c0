"""Attention masks, built in one place from per-position roles.

Every position of a sequence has a role: which segment it belongs to, which reasoning
block (0 = the context), which candidate slot it stands for (-1 if none), whether it is
padding, and its index in the sequence. The mask between any query rows and key columns
is a pure function of their roles and two switches, so the full (uncached) sequence and
a cached reasoning step use exactly the same rules.

Rules (a query may attend to a key when all hold):

* the key is not padding;
* the key is not in a later reasoning block, so the context never sees reasoning and
  block k never sees block k+1;
* candidate-derived keys (candidate tokens and their reasoning tokens, ``slot >= 0``):
  with ``candidates_visible`` everything may see them (bidirectional context including
  CIS); otherwise only positions of the SAME candidate slot see them, so one
  candidate's score does not depend on the others;
* ``causal``: the key does not come after the query in the sequence;
* without ``context_sees_candidates``, context positions (``slot < 0``: IH, PA, SD)
  never see candidate-derived keys. The context's keys and values then do not depend
  on the candidates, so one request's context can be encoded once and shared by all its
  candidate groups (``OnePiece`` shared-context layout); candidates still see the whole
  context and, with ``candidates_visible``, each other within their group.

The structural fields (segment, block, slot, index) are the same for every sequence of
a batch, so they are kept with batch dimension 1 and only ``valid`` is per sequence: the
structure is computed once per (Nq, Nk) and padding is added as a [B, 1, 1, Nk] term.
Only what varies is materialised, and SDPA broadcasts the rest: a bidirectional context
with visible candidates (onePiece ranking) has no structural restriction, so its mask is
the (B, 1, 1, Nk) key padding alone, or no mask at all when nothing is padded (the
attention kernel then reads no mask) instead of building and reading B x N^2 floats.
The mask is additive (0 or a large negative, not -inf) so that a padding query row,
which sees nothing, still gives finite outputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from onepiece.model.inputs import SECONDS_PER_DAY

SEG_IH, SEG_PA, SEG_SD, SEG_CAND, SEG_REASON = range(5)
N_SEGMENTS = 5
MASKED = -1e9  # additive; finite so fully masked (padding) rows stay finite


@dataclass
class Roles:
    """Per-position roles: structural fields (1, N) or (B, N); ``valid`` (B, N)."""

    segment: torch.Tensor  # int64 segment code
    block: torch.Tensor  # int64, 0 = context, k = reasoning step k
    slot: torch.Tensor  # int64 candidate slot, -1 if not candidate-derived
    valid: torch.Tensor  # bool, False for padding
    index: torch.Tensor  # int64 position in the sequence
    #: float32 (B, N) days from the token's event to the request (IH: ``ih_age_days``;
    #: every other token 0, the request time); None = every token at the request time.
    #: Set only for a model whose attention bias reads time (``hstu_time_buckets``).
    age: torch.Tensor | None = None

    def cat(self, other: Roles) -> Roles:
        age = None
        if self.age is not None or other.age is not None:
            a, b = self.ages(), other.ages()
            rows = max(a.shape[0], b.shape[0])  # a (1, N) zeros row stands for every sequence
            age = torch.cat([a.expand(rows, -1), b.expand(rows, -1)], dim=1)
        return Roles(
            *(torch.cat([a, b], dim=1) for a, b in zip(self.astuple(), other.astuple())), age=age
        )

    def astuple(self) -> tuple[torch.Tensor, ...]:
        """The structural fields and validity (not ``age``)."""
        return (self.segment, self.block, self.slot, self.valid, self.index)

    def ages(self) -> torch.Tensor:
        """``age``, zeros (1, N) when it is None."""
        if self.age is not None:
            return self.age
        return torch.zeros(self.segment.shape, dtype=torch.float32, device=self.segment.device)

    def rows(self, index: torch.Tensor) -> Roles:
        """The roles of sequences ``index`` [G] (the per-sequence fields, validity and age,
        picked; the structural (1, N) fields shared)."""
        age = None if self.age is None else self.age.index_select(0, index)
        return dataclasses.replace(self, valid=self.valid.index_select(0, index), age=age)

    @property
    def length(self) -> int:
        return int(self.segment.shape[1])


def allowed(
    q: Roles, k: Roles, *, causal: bool, candidates_visible: bool, context_sees_candidates: bool = True
) -> torch.Tensor:
    """Boolean structure (1 or B, Nq, Nk) before padding: True = may attend."""
    qi = lambda t: t[:, :, None]  # noqa: E731  (., Nq, 1)
    ki = lambda t: t[:, None, :]  # noqa: E731  (., 1, Nk)
    ok = ki(k.block) <= qi(q.block)
    if not candidates_visible:
        ok = ok & ((ki(k.slot) < 0) | (ki(k.slot) == qi(q.slot)))
    if not context_sees_candidates:
        ok = ok & ((ki(k.slot) < 0) | (qi(q.slot) >= 0))
    if causal:
        ok = ok & (ki(k.index) <= qi(q.index))
    return ok


def relative_distance(q: Roles, k: Roles) -> torch.Tensor:
    """Query position minus key position (B, Nq, Nk), for a relative attention bias.

    Positions count valid tokens only, so they do not depend on padding: a context
    position (block 0, slot -1: IH, PA, SD) is the number of valid context positions
    before it; every other position (candidates and reasoning tokens) is the number of
    valid context positions, one past the context, the same for all of them (as HSTU's
    targets share one position; a candidate's slot would leak the upstream order). Query
    rows that belong to the context must come with the whole context (q is k, as in
    every full-sequence pass); other query rows take the count from k's context (none:
    0, as for a group's own keys after a shared context prefix)."""

    def positions(r: Roles, count: torch.Tensor | None) -> torch.Tensor:
        context = (r.block == 0) & (r.slot < 0)  # (1|B, N)
        valid = (context & r.valid).long()  # (B, N)
        total = valid.sum(1, keepdim=True) if count is None else count  # (B, 1)
        return torch.where(context, valid.cumsum(1) - 1, total)

    key = positions(k, None)
    context_count = ((k.block == 0) & (k.slot < 0) & k.valid).sum(1, keepdim=True)  # (B, 1)
    return positions(q, context_count)[:, :, None] - key[:, None, :]


def relative_seconds(q: Roles, k: Roles) -> torch.Tensor:
    """Query time minus key time in seconds (1|B, Nq, Nk), for a relative time bias: a
    token's time is the request's minus its ``age`` (IH events) or the request's (every
    other token), so the gap is (key age - query age) days."""
    return (k.ages()[:, None, :] - q.ages()[:, :, None]) * SECONDS_PER_DAY


def attention_mask(
    q: Roles,
    k: Roles,
    *,
    causal: bool,
    candidates_visible: bool,
    context_sees_candidates: bool = True,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor | None:
    """Additive mask for scaled_dot_product_attention (0 = attend), broadcastable to
    (B, 1, Nq, Nk): (1|B, 1, Nq, Nk) with a structural restriction, (B, 1, 1, Nk) with
    key padding only, None when every query may attend to every key."""
    return cut_masks(
        q,
        k,
        [(slice(None), k.length)],
        causal=causal,
        candidates_visible=candidates_visible,
        context_sees_candidates=context_sees_candidates,
        dtype=dtype,
    )[0]


def cut_masks(
    q: Roles,
    k: Roles,
    cuts: list[tuple[slice, int]],
    *,
    causal: bool,
    candidates_visible: bool,
    context_sees_candidates: bool = True,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor | None]:
    """``attention_mask`` of each (query rows, first n keys) cut of (q, k), from one
    structure and one padding computation: the masks of the cached reasoning steps (block
    k's rows against the keys up to block k). A cut without a structural restriction gets
    the key padding alone (a view) or None, like ``attention_mask``."""
    structure = allowed(
        q, k, causal=causal, candidates_visible=candidates_visible, context_sees_candidates=context_sees_candidates
    )
    padding = None
    if not bool(k.valid.all()):
        padding = torch.zeros(k.valid.shape, dtype=dtype, device=structure.device)
        padding = padding.masked_fill_(~k.valid, MASKED)[:, None, None]  # (B, 1, 1, Nk)
    masks: list[torch.Tensor | None] = []
    for rows, keys in cuts:
        part = structure[:, rows, :keys]
        mask = None
        if not bool(part.all()):
            mask = torch.zeros(part.shape, dtype=dtype, device=part.device)
            mask = mask.masked_fill_(~part, MASKED)[:, None]  # (1|B, 1, Nq, Nk)
        if padding is not None:
            mask = padding[..., :keys] if mask is None else mask + padding[..., :keys]
        masks.append(mask)
    return masks
