"""Token embedding: hashed embedding tables, fixed-transform numerics, MLP adapters.

* Categorical ids are hashed into ``vocab - 1`` buckets; bucket 0 is the
  out-of-vocabulary bucket for negative ids (the contract's unknown id -1), so no id can
  crash a lookup.
* Item tokens: item id, shop id, category id embeddings plus the numeric statistics,
  concatenated and projected to d by an MLP adapter. IH and PA share one item adapter;
  candidates use it too (``ModelConfig.shared_candidate_adapter``) or have their own. The
  embedding TABLES are shared by all so that a candidate and the same item in the
  history start from the same id embedding (ours).
* Users: id + profile embeddings; queries: id + mean-pooled hashed word pieces +
  popularity. With ``use_side_info = False`` every adapter sees its entity id only.
"""

from __future__ import annotations

import torch
from torch import nn

from onepiece.model.config import ModelConfig
from onepiece.model.inputs import N_ITEM_NUM, N_QUERY_NUM, N_USER_CAT


def bucket(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """Hash raw int64 ids into [1, vocab); negative (unknown) ids go to bucket 0."""
    return torch.where(ids < 0, torch.zeros_like(ids), ids % (vocab - 1) + 1)


#: Init std of the hashed id tables (ours; the usual transformer 0.02). nn.Embedding's
#: default N(0, 1) gives every id a random vector of norm ~sqrt(dim) from step 0: beside
#: it the [0, 1]-scaled numeric statistics (ctr_7d, ...) are noise in the adapter's
#: input, and the model memorises ids instead of using them (on the tiny world the click
#: AUC fell below the ctr_7d feature alone). Small ids grow only where the data supports.
#: The default of ``ModelConfig.id_embedding_std`` and ``side_embedding_std``; note that
#: log1p(price) and log1p(sales_30d) are not [0, 1]-scaled (RMS ~2.5 on the learnability
#: worlds), so beside them a 0.02 category embedding is invisible (issue 17).
ID_EMBEDDING_STD = 0.02


class HashedEmbedding(nn.Embedding):
    """An embedding table indexed by raw ids (hashed, with an OOV bucket); init
    N(0, std^2), ``ModelConfig.id_embedding_std``.

    Id dropout (``ModelConfig.id_dropout``): in training, a random share ``dropout`` of
    the ids is read as the unknown id. The draw is per id, not per token, and holds until
    ``resample_dropout()`` (``OnePiece.forward`` draws once per training forward): a
    candidate and the same item in its IH or PA are dropped together, so the id still
    matches where it is kept. Evaluation reads every id."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        std: float = ID_EMBEDDING_STD,
        dropout: float = 0.0,
        admission: bool = False,
    ) -> None:
        super().__init__(num_embeddings, embedding_dim)  # draws N(0, ID_EMBEDDING_STD^2)
        if std != ID_EMBEDDING_STD:
            nn.init.normal_(self.weight, std=std)
        self.dropout = dropout
        self._dropped: torch.Tensor | None = None  # [num_embeddings] bool, the current draw
        #: Id admission (``ModelConfig.id_min_count``): which buckets hold an admitted id;
        #: the others read as the unknown id, in training and serving alike. A buffer, so
        #: the checkpoint (and the Triton model loaded from it) carries it.
        self.admitted: torch.Tensor | None
        self.register_buffer("admitted", torch.ones(num_embeddings, dtype=torch.bool) if admission else None)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=ID_EMBEDDING_STD)

    def resample_dropout(self) -> None:
        """Draw which buckets read as unknown until the next draw."""
        dropped = torch.rand(self.num_embeddings, device=self.weight.device) < self.dropout
        dropped[0] = False  # the OOV bucket itself
        self._dropped = dropped

    def admit(self, ids: torch.Tensor) -> None:
        """Admit exactly these raw ids (their buckets; the unknown bucket stays)."""
        assert self.admitted is not None, "built without admission"
        admitted = torch.zeros_like(self.admitted)
        admitted[bucket(ids.to(self.admitted.device), self.num_embeddings)] = True
        admitted[0] = True
        self.admitted.copy_(admitted)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        buckets = bucket(ids, self.num_embeddings)
        if self.admitted is not None:
            buckets = torch.where(self.admitted[buckets], buckets, torch.zeros_like(buckets))
        if self.training and self.dropout > 0:
            if self._dropped is None:
                self.resample_dropout()
            assert self._dropped is not None
            buckets = torch.where(self._dropped[buckets], torch.zeros_like(buckets), buckets)
        return super().forward(buckets)


def structural_embedding(n: int, d: int, std: float | None) -> nn.Embedding:
    """A learned position/segment/kind table (``ModelConfig.structural_embedding_std``):
    N(0, std^2) at init, or nn.Embedding's own N(0, 1) when ``std`` is None."""
    table = nn.Embedding(n, d)
    if std is not None:
        nn.init.normal_(table.weight, std=std)
    return table


def adapter_mlp(d_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.GELU(), nn.Linear(d, d))


class ItemEmbeddings(nn.Module):
    """Raw item features -> the concatenated embedding an item adapter projects."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.side = config.use_side_info
        self.item = HashedEmbedding(
            config.item_vocab, config.id_dim, config.id_embedding_std, config.id_dropout, config.id_min_count > 0
        )
        if self.side:
            self.shop = HashedEmbedding(config.shop_vocab, config.side_dim, config.side_embedding_std)
            self.category = HashedEmbedding(config.category_vocab, config.side_dim, config.side_embedding_std)
        self.width = config.id_dim + (2 * config.side_dim + N_ITEM_NUM if self.side else 0)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        # cat (..., 3) int64 [item, shop, category]; num (..., N_ITEM_NUM) -> (..., width)
        parts = [self.item(cat[..., 0])]
        if self.side:
            parts += [self.shop(cat[..., 1]), self.category(cat[..., 2]), num.to(parts[0].dtype)]
        return torch.cat(parts, dim=-1)


class UserAdapter(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.side = config.use_side_info
        self.user = HashedEmbedding(
            config.user_vocab, config.id_dim, config.id_embedding_std, config.id_dropout, config.id_min_count > 0
        )
        n_side = N_USER_CAT - 1
        if self.side:
            self.profile = nn.ModuleList(
                HashedEmbedding(config.user_side_vocab, config.side_dim, config.side_embedding_std) for _ in range(n_side)
            )
        width = config.id_dim + (n_side * config.side_dim if self.side else 0)
        self.mlp = adapter_mlp(width, config.d_model)

    def forward(self, user_cat: torch.Tensor) -> torch.Tensor:
        # user_cat (B, N_USER_CAT) -> (B, d)
        parts = [self.user(user_cat[:, 0])]
        if self.side:
            parts += [emb(user_cat[:, i + 1]) for i, emb in enumerate(self.profile)]
        return self.mlp(torch.cat(parts, dim=-1))


class QueryAdapter(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.side = config.use_side_info
        self.query = HashedEmbedding(config.query_vocab, config.id_dim, config.id_embedding_std)
        if self.side:
            self.pieces = HashedEmbedding(config.piece_vocab, config.id_dim, config.id_embedding_std)
        width = config.id_dim + (config.id_dim + N_QUERY_NUM if self.side else 0)
        self.mlp = adapter_mlp(width, config.d_model)

    def forward(
        self, query_cat: torch.Tensor, pieces: torch.Tensor, num: torch.Tensor
    ) -> torch.Tensor:
        # query_cat (B, 1), pieces (B, P) with -1 padding, num (B, N_QUERY_NUM) -> (B, d)
        parts = [self.query(query_cat[:, 0])]
        if self.side:
            present = (pieces >= 0).unsqueeze(-1)  # (B, P, 1)
            summed = (self.pieces(pieces) * present).sum(dim=1)  # (B, id_dim)
            parts += [summed / present.sum(dim=1).clamp(min=1), num.to(parts[0].dtype)]
        return self.mlp(torch.cat(parts, dim=-1))
