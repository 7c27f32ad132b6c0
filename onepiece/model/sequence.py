"""Context engineering: the input sequence [IH | PA | SD | CIS] and its roles.

Each segment is padded to its own width and the padding is masked (``masks.Roles``), so
IH, PA and candidate sets of different lengths share one batch. Position signals:

* IH: learned position by recency (0 = most recent event) plus the event-type embedding;
* PA: position inside its own BOS..EOS group, plus group and token-kind embeddings
  (BOS/EOS marker tokens carry no item; they are the kind embedding alone);
* SD: its own positions (0 = user token, 1 = query token);
* CIS: NO position (a position would leak the upstream order, and so the label).

With HSTU's time buckets (``hstu_time_buckets``) the roles also carry each token's age
(``Roles.age``): an IH event's ``ih_age_days``, 0 (the request time) for every other token.

A learned segment-type embedding is added to every token. Candidates are tokens of the
sequence only in ranking mode with block reasoning; otherwise the heads score them
against the user state from their adapter vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from onepiece.contract.schemas import EVENT_TYPES
from onepiece.model.config import ModelConfig
from onepiece.model.inputs import N_CAND_SET, N_ITEM_NUM, N_PA_GROUPS, ModelInputs
from onepiece.model.matches import context_matches, n_match
from onepiece.model.masks import N_SEGMENTS, SEG_CAND, SEG_IH, SEG_PA, SEG_SD, Roles
from onepiece.model.tokens import ItemEmbeddings, QueryAdapter, UserAdapter, adapter_mlp, structural_embedding

N_SD = 2  # user token, query token


@dataclass
class Context:
    tokens: torch.Tensor  # (B, N, d)
    roles: Roles  # each (B, N)
    cand_valid: torch.Tensor  # (B, C) bool
    #: (B, C, n_match(config)) context-match statistics of the candidates (``context_match_features``)
    cand_matches: torch.Tensor | None = None


def _length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    # lengths (B, 1) -> (B, width) bool
    return torch.arange(width, device=lengths.device)[None, :] < lengths


class ContextEncoder(nn.Module):
    """Model inputs -> token sequence, roles, and candidate/item vectors for the heads."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.config = config
        self.item_embeddings = ItemEmbeddings(config)  # tables shared by IH, PA, CIS
        self.item_adapter = adapter_mlp(self.item_embeddings.width, d)  # IH and PA
        # with shared_candidate_adapter the candidates go through the IH/PA item adapter
        self.cand_adapter = None if config.shared_candidate_adapter else adapter_mlp(self.item_embeddings.width, d)
        # the candidate-set numerics (price against the request's candidates) join the
        # candidate token through their own adapter, so an IH/PA token and the same item as
        # a candidate still share the item adapter's vector
        self.cand_set = adapter_mlp(N_CAND_SET, d) if config.candidate_set_features else None
        # the candidate's match statistics against its context join its token the same way
        self.match_adapter = adapter_mlp(n_match(config), d) if config.context_match_features else None
        self.user_adapter = UserAdapter(config)
        self.query_adapter = QueryAdapter(config)
        std = config.structural_embedding_std
        self.segment = structural_embedding(N_SEGMENTS, d, std)
        self.ih_position = structural_embedding(config.ih_max_len, d, std)
        self.ih_event = structural_embedding(len(EVENT_TYPES) + 1, d, std)  # +1: unknown type
        self.pa_position = structural_embedding(config.pa_per_group + 2, d, std)
        self.pa_group = structural_embedding(N_PA_GROUPS, d, std)
        self.pa_kind = structural_embedding(3, d, std)
        self.sd_position = structural_embedding(N_SD, d, std)

    def items(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        """Shared item adapter (IH, PA; retrieval item vectors): (..., 3) -> (..., d).
        ``num`` may carry the candidate-set numerics after the item statistics: ignored."""
        return self.item_adapter(self.item_embeddings(cat, num[..., :N_ITEM_NUM]))

    def candidates(self, cat: torch.Tensor, num: torch.Tensor, matches: torch.Tensor | None = None) -> torch.Tensor:
        """Candidate tokens: (B, C, 3) ids and (B, C, N_ITEM_NUM + N_CAND_SET) -> (B, C, d);
        ``matches`` (B, C, n_match(config)) from ``match_stats`` when the model reads them."""
        adapter = self.item_adapter if self.cand_adapter is None else self.cand_adapter
        tokens = adapter(self.item_embeddings(cat, num[..., :N_ITEM_NUM]))
        if self.cand_set is not None:
            tokens = tokens + self.cand_set(num[..., N_ITEM_NUM:])
        if self.match_adapter is not None:
            assert matches is not None, "context_match_features: pass the candidates' match_stats"
            tokens = tokens + self.match_adapter(matches.to(tokens.dtype))
        return tokens

    def match_stats(
        self,
        x: ModelInputs,
        cand_cat: torch.Tensor | None = None,
        cand_num: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The candidates' context-match statistics (B, C, n_match(config)), or None when the model
        does not read them. ``cand_cat``/``cand_num`` default to x's candidates; ``rows``
        (G,) picks each candidate group's context row of x (the shared-context layout)."""
        if self.match_adapter is None:
            return None
        context = (x.ih_item_cat, x.ih_item_num, x.ih_event_type, x.ih_len, x.pa_item_cat, x.pa_group, x.pa_kind,
                   x.pa_len)
        age = x.ih_age_days if self.config.match_time_features else None
        if rows is not None:
            context = tuple(t.index_select(0, rows) for t in context)
            age = None if age is None else age.index_select(0, rows)
        cands = (x.cand_item_cat, x.cand_item_num) if cand_cat is None else (cand_cat, cand_num)
        return context_matches(cands[0], cands[1], *context, ih_age_days=age)

    def history(self, x: ModelInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """IH tokens (B, Lih, d) and their validity (B, Lih)."""
        width = x.ih_item_cat.shape[1]
        valid = _length_mask(x.ih_len, width)
        recency = (x.ih_len - 1 - torch.arange(width, device=valid.device)[None, :]).clamp(
            0, self.config.ih_max_len - 1
        )
        tokens = (
            self.items(x.ih_item_cat, x.ih_item_num)
            + self.ih_event(x.ih_event_type.clamp(-1, len(EVENT_TYPES) - 1) + 1)
            + self.ih_position(recency)
        )
        return tokens, valid

    def anchors(self, x: ModelInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """PA tokens (B, Lpa, d) and their validity (B, Lpa)."""
        valid = _length_mask(x.pa_len, x.pa_item_cat.shape[1])
        is_item = (x.pa_kind == 0).unsqueeze(-1)  # (B, Lpa, 1)
        item = self.items(x.pa_item_cat, x.pa_item_num) * is_item
        tokens = (
            item
            + self.pa_kind(x.pa_kind.clamp(0, 2))
            + self.pa_group(x.pa_group.clamp(0, N_PA_GROUPS - 1))
            + self.pa_position(x.pa_pos.clamp(0, self.config.pa_per_group + 1))
        )
        return tokens, valid

    def situation(self, x: ModelInputs) -> torch.Tensor:
        """SD tokens (B, 2, d): user, query."""
        user = self.user_adapter(x.user_cat)
        query = self.query_adapter(x.query_cat, x.query_pieces, x.query_num)
        return torch.stack([user, query], dim=1) + self.sd_position.weight[None]

    def candidate_tokens(
        self, x: ModelInputs, matches: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate tokens as the sequence's CIS segment carries them (G, C, d), and
        their validity (G, C): for the shared-context layout, where they follow a cached
        context instead of being concatenated to it."""
        valid = _length_mask(x.cand_len, x.cand_item_cat.shape[1])
        return self.candidates(x.cand_item_cat, x.cand_item_num, matches) + self.segment.weight[SEG_CAND], valid

    def forward(self, x: ModelInputs, with_candidates: bool) -> Context:
        config = self.config
        segments: list[tuple[int, torch.Tensor, torch.Tensor, bool]] = []  # seg, tok, valid, cand
        segments.append((SEG_IH, *self.history(x), False))
        if config.use_pa:
            segments.append((SEG_PA, *self.anchors(x), False))
        if config.use_sd:
            sd = self.situation(x)
            segments.append((SEG_SD, sd, torch.ones(sd.shape[:2], dtype=torch.bool, device=sd.device), False))
        cand_valid = _length_mask(x.cand_len, x.cand_item_cat.shape[1])
        matches = None
        if with_candidates:
            matches = self.match_stats(x)
            cands = self.candidates(x.cand_item_cat, x.cand_item_num, matches)
            segments.append((SEG_CAND, cands, cand_valid, True))
        tokens, seg_codes, valid, slot, age = [], [], [], [], []
        timed = config.attention == "hstu" and config.hstu_time_buckets > 0  # only its bias reads ages
        for code, tok, ok, is_cand in segments:
            n = ok.shape[1]
            if timed:  # days before the request: the IH events' ages; every other token 0
                age.append(x.ih_age_days * ok if code == SEG_IH else torch.zeros(ok.shape, device=ok.device))
            tokens.append(tok + self.segment.weight[code])
            seg_codes.append(torch.full((1, n), code, dtype=torch.long, device=ok.device))
            valid.append(ok)
            slot_ids = torch.arange(n, device=ok.device)[None]  # (1, n)
            slot.append(slot_ids if is_cand else torch.full_like(slot_ids, -1))
        seq = torch.cat(tokens, dim=1)  # (B, N, d)
        n = seq.shape[1]
        # structural roles are shared by the batch: (1, N); validity is (B, N)
        roles = Roles(
            segment=torch.cat(seg_codes, dim=1),
            block=torch.zeros((1, n), dtype=torch.long, device=seq.device),
            slot=torch.cat(slot, dim=1),
            valid=torch.cat(valid, dim=1),
            index=torch.arange(n, device=seq.device)[None],
            age=torch.cat(age, dim=1) if timed else None,
        )
        return Context(seq, roles, cand_valid, matches)
