"""Training losses of the spec (the training loop lives elsewhere).

* Ranking, per task at its supervising step: BCE over the group's candidates plus a
  set-wise contrastive term, -log softmax(s / tau) at every positive over the group.
* Retrieval, per task at its step: BCE on <r_k, z_v> over the candidate pool plus a
  CLIP-style bidirectional in-batch contrastive loss (user->item, item->user) on each
  request's first positive item.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onepiece.contract.schemas import TASKS
from onepiece.model.config import ModelConfig


def bce(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the valid slots; logits, labels, valid (B, C)."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def setwise_contrastive(
    logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean over positives of -log softmax(logits / T) within the group; (B, C) inputs."""
    scaled = (logits.float() / temperature).masked_fill(~valid, float("-inf"))
    log_p = torch.log_softmax(scaled, dim=1).masked_fill(~valid, 0.0)  # (B, C)
    positive = (labels > 0) & valid
    return -(log_p * positive).sum() / positive.sum().clamp(min=1)


def ranking_loss(
    logits: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor],
    valid: torch.Tensor,
    config: ModelConfig,
) -> dict[str, torch.Tensor]:
    """Per-task losses (and 'total'); logits task -> (B, C, S), labels task -> (B, C)."""
    steps = config.task_steps()
    out: dict[str, torch.Tensor] = {}
    for task in TASKS:
        s = logits[task][..., steps[task]]  # (B, C)
        out[task] = bce(s, labels[task], valid) + setwise_contrastive(
            s, labels[task], valid, config.contrastive_temperature
        )
    out["total"] = torch.stack([out[t] for t in TASKS]).sum()
    return out


def clip_loss(users: torch.Tensor, items: torch.Tensor, temperature: float) -> torch.Tensor:
    """Bidirectional in-batch contrastive loss; users, items (P, d), row i matches row i."""
    logits = users.float() @ items.float().T / temperature  # (P, P)
    target = torch.arange(len(users), device=users.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def retrieval_loss(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    labels: dict[str, torch.Tensor],
    valid: torch.Tensor,
    config: ModelConfig,
) -> dict[str, torch.Tensor]:
    """user_vectors r (B, S, d), item_vectors z (B, C, d), labels task -> (B, C)."""
    steps = config.task_steps()
    out: dict[str, torch.Tensor] = {}
    for task in TASKS:
        r = user_vectors[:, steps[task]]  # (B, d)
        logits = torch.einsum("bd,bcd->bc", r, item_vectors)
        loss = bce(logits, labels[task], valid)
        positive = (labels[task] > 0) & valid  # (B, C)
        has = positive.any(dim=1)
        if int(has.sum()) > 1:
            first = positive.float().argmax(dim=1)[has]  # first positive slot per request
            z = item_vectors[has].gather(1, first[:, None, None].expand(-1, 1, z_dim(item_vectors)))
            loss = loss + clip_loss(r[has], z[:, 0], config.contrastive_temperature)
        out[task] = loss
    out["total"] = torch.stack([out[t] for t in TASKS]).sum()
    return out


def z_dim(t: torch.Tensor) -> int:
    return int(t.shape[-1])
