"""DLRM-style pointwise baseline: MLPs over user, query and candidate features, with
target attention of each candidate over the IH (and the PA, with ``use_pa``); no
generation, one output step. It shares the tokenizer (``ContextEncoder``) with the
generative models, so the ablation rows differ in the backbone only."""

from __future__ import annotations

import torch
from torch import nn

from onepiece.model.config import ModelConfig
from onepiece.model.inputs import ModelInputs
from onepiece.model.heads import MultiTaskMLP
from onepiece.model.sequence import ContextEncoder


def target_attention(
    target: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor, scale: float
) -> torch.Tensor:
    """target (B, C, d) attends over keys (B, L, d) with validity (B, L) -> (B, C, d).

    A row without valid keys pools to zero (no NaN from an all-masked softmax).
    """
    scores = torch.einsum("bcd,bld->bcl", target, keys) * scale  # (B, C, L)
    scores = scores.masked_fill(~valid[:, None, :], -1e4)
    weights = torch.softmax(scores, dim=-1) * valid[:, None, :]
    return torch.einsum("bcl,bld->bcd", weights, keys)


class DLRMCore(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.config = config
        n_parts = 3 + 1 + int(config.use_pa)  # user, query, candidate, IH pool, PA pool
        self.tasks = MultiTaskMLP(n_parts * d, 2 * d)

    def forward(self, encoder: ContextEncoder, x: ModelInputs) -> dict[str, torch.Tensor]:
        scale = self.config.d_model**-0.5
        cands = encoder.candidates(x.cand_item_cat, x.cand_item_num)  # (B, C, d)
        sd = encoder.situation(x)  # (B, 2, d)
        parts = [sd[:, 0:1].expand_as(cands), sd[:, 1:2].expand_as(cands), cands]
        ih, ih_valid = encoder.history(x)
        parts.append(target_attention(cands, ih, ih_valid, scale))
        if self.config.use_pa:
            pa, pa_valid = encoder.anchors(x)
            parts.append(target_attention(cands, pa, pa_valid, scale))
        features = torch.cat(parts, dim=-1)  # (B, C, n_parts * d)
        return {task: s[..., None] for task, s in self.tasks(features).items()}  # (B, C, 1)
