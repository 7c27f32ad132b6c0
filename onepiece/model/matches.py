"""Context-match statistics: how each candidate matches its context's IH and PA items.

``ModelConfig.context_match_features`` (ours; the "hard search" statistics of SIM, Pi et
al. 2020, and the target-behaviour cross features of production CTR rankers). For every
candidate, counted over the tokens of its own context, from the input tensors alone (so
training, ``score()`` and the Triton model compute them the same way, and the tensor
contract is unchanged):

* per key (item, shop, category): log1p of the number of IH events with the same id,
  their share of the IH, the same count weighted by recency (``exp(-back / tau)``, back
  = events before the most recent), and log1p of the matching add-to-carts and orders;
* per PA group (exposed, clicked, ordered): whether the candidate's item is among the
  group's anchors;
* the candidate's (transformed) price minus the mean over the IH events', 0 without an
  IH (the user's price level: the gbdt row's ``price_over_ih_mean``, on the log scale),
  and log1p of the IH length.

An unknown id (negative, the contract's default) matches nothing. Attention can learn
the same match from the shared id tables (the learnability check shows it does, on
synthetic rules), but at the ablation's budget it does not extract it: the gbdt row reads
exactly these counts (``evaluation.hand_features``) and is ahead by what they carry.
"""

from __future__ import annotations

import torch

from onepiece.contract.schemas import EVENT_TYPE_CODE, PA_GROUPS

MATCH_KEYS: tuple[str, ...] = ("item", "shop", "category")  # columns of the item_cat tensors
MATCH_STATS: tuple[str, ...] = ("log_count", "share", "recent", "log_intent")
MATCH_FEATURES: tuple[str, ...] = (
    tuple(f"ih_{k}_{s}" for k in MATCH_KEYS for s in MATCH_STATS)
    + tuple(f"pa_{g}" for g in PA_GROUPS)
    + ("price_vs_ih", "ih_log_length")
)
N_MATCH = len(MATCH_FEATURES)
#: Recency by position: an IH event ``back`` events before the most recent weighs
#: exp(-back / RECENCY_EVENTS); the gbdt row's ``HandFeatureConfig.tau_events`` defaults to it.
RECENCY_EVENTS = 10.0
_INTENT = (EVENT_TYPE_CODE["add_to_cart"], EVENT_TYPE_CODE["order"])


def context_matches(
    cand_cat: torch.Tensor,
    cand_num: torch.Tensor,
    ih_cat: torch.Tensor,
    ih_num: torch.Tensor,
    ih_event: torch.Tensor,
    ih_len: torch.Tensor,
    pa_cat: torch.Tensor,
    pa_group: torch.Tensor,
    pa_kind: torch.Tensor,
    pa_len: torch.Tensor,
) -> torch.Tensor:
    """cand_cat (B, C, 3), cand_num (B, C, >= 1) against its row's IH (B, L, 3),
    (B, L, >= 1), (B, L), (B, 1) and PA (B, P, 3), (B, P), (B, P), (B, 1) -> (B, C,
    N_MATCH) float32 (``MATCH_FEATURES`` order). Column 0 of the numerics is the price."""
    width = ih_cat.shape[1]
    index = torch.arange(width, device=ih_cat.device)[None]  # (1, L)
    valid = (index < ih_len).float()  # (B, L)
    back = (ih_len - 1 - index).clamp(min=0).float()
    intent = (ih_event == _INTENT[0]) | (ih_event == _INTENT[1])
    weights = torch.stack([valid, valid * torch.exp(-back / RECENCY_EVENTS), valid * intent.float()], dim=-1)
    n_events = ih_len.float().clamp(min=1)[:, :, None]  # (B, 1, 1)
    out = []
    for k in range(len(MATCH_KEYS)):
        cand = cand_cat[..., k]  # (B, C)
        same = (cand[:, :, None] == ih_cat[:, None, :, k]) & (cand[:, :, None] >= 0)  # (B, C, L)
        sums = torch.einsum("bcl,blw->bcw", same.float(), weights)  # (B, C, 3)
        count, recent, intended = sums.unbind(-1)
        out += [torch.log1p(count), count / n_events[..., 0], recent, torch.log1p(intended)]
    anchors = (torch.arange(pa_cat.shape[1], device=pa_cat.device)[None] < pa_len) & (pa_kind == 0)  # (B, P)
    item = cand_cat[..., 0]
    same = (item[:, :, None] == pa_cat[:, None, :, 0]) & (item[:, :, None] >= 0) & anchors[:, None]  # (B, C, P)
    for g in range(len(PA_GROUPS)):
        out.append((same & (pa_group == g)[:, None]).any(dim=-1).float())
    ih_price = (ih_num[..., 0].float() * valid).sum(dim=1, keepdim=True) / n_events[..., 0]  # (B, 1)
    has_ih = (ih_len > 0).float()
    out.append((cand_num[..., 0].float() - ih_price) * has_ih)
    out.append(torch.log1p(ih_len.float()).expand_as(out[0]))
    return torch.stack(out, dim=-1)
