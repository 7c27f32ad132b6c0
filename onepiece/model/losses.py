"""Training losses of the spec (the training loop lives elsewhere).

* Ranking, per task at its supervising step: BCE over the group's candidates plus a
  set-wise contrastive term, -log softmax(s / tau) at every positive over the group.
* Retrieval, per task at its step: BCE on <r_k, z_v> over the candidate pool plus a
  CLIP-style bidirectional in-batch contrastive loss (user->item, item->user) on each
  request's first positive item. Given the candidates' item ids (``fit`` passes them), two
  requests whose first positive is the same item are not each other's negatives. The caller may pass each candidate's ``log_q``, the log of
  how often it is drawn as an in-batch positive: the user->item logits then subtract it
  (the sampling-bias correction of Yi et al., RecSys 2019). Without it the in-batch
  negatives are drawn by popularity, so the term learns to push popular items down
  (on MovieLens-100k full ranking this held both retrieval models at the popularity
  baseline; see ``evaluation.ml100k``).
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
    exposed = valid & (labels[TASKS[0]] > 0)  # TASKS[0]: impression
    out: dict[str, torch.Tensor] = {}
    for task in TASKS:
        s = logits[task][..., steps[task]]  # (B, C)
        population = exposed if config.later_tasks_on_exposed and task != TASKS[0] else valid
        out[task] = bce(s, labels[task], population) + setwise_contrastive(
            s, labels[task], population, config.contrastive_temperature
        )
    out["total"] = torch.stack([out[t] for t in TASKS]).sum()
    return out


def clip_loss(
    users: torch.Tensor,
    items: torch.Tensor,
    temperature: float,
    item_ids: torch.Tensor | None = None,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bidirectional in-batch contrastive loss; users, items (P, d), row i matches row i.

    ``item_ids`` (P,): rows holding the same item are not negatives of each other.
    ``log_q`` (P,): log sampling probability of each row's item, subtracted from column
    j (the user->item softmax; in the item->user softmax it is a constant per row)."""
    logits = users.float() @ items.float().T / temperature  # (P, P)
    target = torch.arange(len(users), device=users.device)
    if item_ids is not None:
        same = (item_ids[:, None] == item_ids[None, :]) & (target[:, None] != target[None, :])
        logits = logits.masked_fill(same, -1e9)  # finite: a row may be all duplicates
    if log_q is not None:
        logits = logits - log_q.float()[None, :]
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def retrieval_loss(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    labels: dict[str, torch.Tensor],
    valid: torch.Tensor,
    config: ModelConfig,
    item_ids: torch.Tensor | None = None,
    log_q: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """user_vectors r (B, S, d), item_vectors z (B, C, d), labels task -> (B, C);
    optional ``item_ids`` and ``log_q`` (B, C) per candidate slot (see ``clip_loss``)."""
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

            def at_first(t: torch.Tensor | None) -> torch.Tensor | None:
                return None if t is None else t[has].gather(1, first[:, None])[:, 0]

            loss = loss + clip_loss(
                r[has], z[:, 0], config.retrieval_temperature, at_first(item_ids), at_first(log_q)
            )
        out[task] = loss
    out["total"] = torch.stack([out[t] for t in TASKS]).sum()
    return out


def z_dim(t: torch.Tensor) -> int:
    return int(t.shape[-1])
