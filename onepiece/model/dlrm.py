"""The DLRM baseline: pointwise, no generation, one output step. It shares the tokenizer
(``ContextEncoder``: its embedding tables and item adapter) with the generative models,
so the ablation rows differ in the backbone only. ``ModelConfig.dlrm_interaction``:

* "dot" (rows ``dlrm``, ``dlrm_pa``): DLRM (Naumov et al. 2019). A bottom MLP maps the
  dense features (the candidate's price, ctr, cvr, sales; the query's popularity) to one
  vector; every categorical feature contributes its embedding (candidate item, shop,
  category; user id and profile; query id and its word pieces), projected to the same
  width (DLRM's tables share one width; ours are 32 and 16 wide, so each gets a linear
  map); DIN-style target attention (Zhou et al. 2018) pools the IH (and with ``use_pa``
  the PA) for each candidate into one more vector. The pairwise dot products of all
  these vectors, concatenated with the bottom-MLP output, go into the top MLP (one per
  task, ``MultiTaskMLP``).
* "concat" (row ``dlrm_mlp``, the earlier baseline): the user, query and candidate
  vectors and softmax target-attention pools concatenated into an MLP.
"""

from __future__ import annotations

import torch
from torch import nn

from onepiece.model.config import ModelConfig
from onepiece.model.heads import MultiTaskMLP
from onepiece.model.inputs import N_CAND_SET, N_ITEM_NUM, N_QUERY_NUM, N_USER_CAT, ModelInputs
from onepiece.model.matches import n_match
from onepiece.model.sequence import ContextEncoder


def target_attention(
    target: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor, scale: float
) -> torch.Tensor:
    """Softmax target attention (the "concat" form): target (B, C, d) attends over keys
    (B, L, d) with validity (B, L) -> (B, C, d). A row without valid keys pools to zero
    (no NaN from an all-masked softmax)."""
    scores = torch.einsum("bcd,bld->bcl", target, keys) * scale  # (B, C, L)
    scores = scores.masked_fill(~valid[:, None, :], -1e4)
    weights = torch.softmax(scores, dim=-1) * valid[:, None, :]
    return torch.einsum("bcl,bld->bcd", weights, keys)


def dot_interactions(vectors: torch.Tensor) -> torch.Tensor:
    """DLRM's feature interaction: vectors (..., F, d) -> the F(F-1)/2 dot products
    <z_i, z_j>, i < j, (..., F(F-1)/2), in row-major order of the upper triangle (each
    unordered pair once, no self products)."""
    f = vectors.shape[-2]
    gram = torch.matmul(vectors, vectors.transpose(-1, -2))  # (..., F, F)
    i, j = torch.triu_indices(f, f, offset=1, device=vectors.device)
    return gram[..., i, j]


class DINAttention(nn.Module):
    """DIN's local activation unit (Zhou et al. 2018): each history token's weight for a
    target is an MLP of [target, key, target * key, target - key]; the pool is the
    weighted SUM of the keys (no softmax, so the pool keeps how much of the history
    matches). The difference term is linear, so it is folded into the target and key
    weights of the first layer: that layer is three GEMMs and no (B, C, L, 4d) concat."""

    def __init__(self, d: int, hidden: int = 36) -> None:
        super().__init__()
        self.target = nn.Linear(d, hidden)
        self.key = nn.Linear(d, hidden, bias=False)
        self.product = nn.Linear(d, hidden, bias=False)
        self.act = nn.PReLU()
        self.weight = nn.Linear(hidden, 1)

    def forward(self, target: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """target (B, C, d), keys (B, L, d), valid (B, L) -> pooled (B, C, d)."""
        h = self.target(target)[:, :, None] + self.key(keys)[:, None]  # (B, C, L, H)
        h = h + self.product(target[:, :, None] * keys[:, None])
        w = self.weight(self.act(h)).squeeze(-1) * valid[:, None, :]  # (B, C, L); padding 0
        return torch.einsum("bcl,bld->bcd", w, keys)


class DLRMCore(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.config = config
        self.dot = config.dlrm_interaction == "dot"
        if not self.dot:  # user, query, candidate, IH pool, PA pool
            self.tasks = MultiTaskMLP((3 + 1 + int(config.use_pa)) * d, 2 * d)
            return
        side = config.use_side_info
        id_dim, side_dim = config.id_dim, config.side_dim
        # each categorical embedding -> width d (item, [shop, category], user, [profile], query, [pieces])
        widths = [id_dim] + ([side_dim, side_dim] if side else []) + [id_dim]
        widths += ([side_dim] * (N_USER_CAT - 1) if side else []) + [id_dim] + ([id_dim] if side else [])
        self.embedding_maps = nn.ModuleList(nn.Linear(w, d, bias=False) for w in widths)
        # the candidate's statistics (and candidate-set numerics when the model reads them) and the query's
        self.n_cand_dense = N_ITEM_NUM + (N_CAND_SET if config.candidate_set_features else 0)
        # the candidate's context-match statistics are dense features too (when read)
        n_dense = self.n_cand_dense + N_QUERY_NUM + n_match(config)
        self.bottom = nn.Sequential(nn.Linear(n_dense, 2 * d), nn.ReLU(), nn.Linear(2 * d, d)) if side else None
        self.din_ih = DINAttention(d)
        self.din_pa = DINAttention(d) if config.use_pa else None
        n_vectors = len(widths) + int(side) + 1 + int(config.use_pa)
        n_pairs = n_vectors * (n_vectors - 1) // 2
        self.tasks = MultiTaskMLP(n_pairs + (d if side else 0), 2 * d)

    def forward(
        self, encoder: ContextEncoder, x: ModelInputs, matches: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``matches``: the candidates' ``encoder.match_stats(x)`` (None when not read)."""
        features = self._dot(encoder, x, matches) if self.dot else self._concat(encoder, x, matches)
        return {task: s[..., None] for task, s in self.tasks(features).items()}  # (B, C, 1)

    def _dot(self, encoder: ContextEncoder, x: ModelInputs, matches: torch.Tensor | None) -> torch.Tensor:
        """The top MLP's input (B, C, [d +] F(F-1)/2)."""
        side = self.config.use_side_info
        b, c = x.cand_item_cat.shape[:2]
        items, user, query = encoder.item_embeddings, encoder.user_adapter, encoder.query_adapter
        embedded = [items.item(x.cand_item_cat[..., 0])]  # per candidate (B, C, w)
        if side:
            embedded += [items.shop(x.cand_item_cat[..., 1]), items.category(x.cand_item_cat[..., 2])]
        per_request = [user.user(x.user_cat[:, 0])]  # (B, w)
        if side:
            per_request += [table(x.user_cat[:, i + 1]) for i, table in enumerate(user.profile)]
        per_request.append(query.query(x.query_cat[:, 0]))
        if side:
            present = (x.query_pieces >= 0).unsqueeze(-1)  # (B, P, 1)
            pieces = (query.pieces(x.query_pieces) * present).sum(1) / present.sum(1).clamp(min=1)
            per_request.append(pieces)
        embedded += [t[:, None].expand(b, c, t.shape[-1]) for t in per_request]
        vectors = [m(e) for m, e in zip(self.embedding_maps, embedded)]  # each (B, C, d)
        dense = None
        if self.bottom is not None:
            cand_dense = x.cand_item_num[..., : self.n_cand_dense]
            numeric = torch.cat([cand_dense, x.query_num[:, None].expand(b, c, N_QUERY_NUM)]
                                + ([] if matches is None else [matches.to(cand_dense.dtype)]), dim=-1)
            dense = self.bottom(numeric.to(vectors[0].dtype))  # (B, C, d)
            vectors.insert(0, dense)
        cands = encoder.candidates(x.cand_item_cat, x.cand_item_num, matches)  # (B, C, d) the DIN target
        vectors.append(self.din_ih(cands, *encoder.history(x)))
        if self.din_pa is not None:
            vectors.append(self.din_pa(cands, *encoder.anchors(x)))
        pairs = dot_interactions(torch.stack(vectors, dim=2))  # (B, C, F(F-1)/2)
        return pairs if dense is None else torch.cat([dense, pairs], dim=-1)

    def _concat(self, encoder: ContextEncoder, x: ModelInputs, matches: torch.Tensor | None) -> torch.Tensor:
        scale = self.config.d_model**-0.5
        cands = encoder.candidates(x.cand_item_cat, x.cand_item_num, matches)  # (B, C, d)
        sd = encoder.situation(x)  # (B, 2, d)
        parts = [sd[:, 0:1].expand_as(cands), sd[:, 1:2].expand_as(cands), cands]
        ih, ih_valid = encoder.history(x)
        parts.append(target_attention(cands, ih, ih_valid, scale))
        if self.config.use_pa:
            pa, pa_valid = encoder.anchors(x)
            parts.append(target_attention(cands, pa, pa_valid, scale))
        return torch.cat(parts, dim=-1)  # (B, C, n_parts * d)

