"""Context-match statistics: how each candidate matches its context's IH and PA items.

``ModelConfig.context_match_features`` (ours; the "hard search" statistics of SIM, Pi et
al. 2020, and the target-behaviour cross features of production CTR rankers). For every
candidate, counted over the tokens of its own context, from the input tensors alone (so
training, ``score()`` and the Triton model compute them the same way; no input tensor
exists for them, only the event ages ``ih_age_days`` the time statistics read):

* per key (item, shop, category): log1p of the number of IH events with the same id,
  their share of the IH, the same count weighted by recency (``exp(-back / tau)``, back
  = events before the most recent), and log1p of the matching add-to-carts and orders;
* per PA group (exposed, clicked, ordered): whether the candidate's item is among the
  group's anchors;
* the candidate's (transformed) price minus the mean over the IH events', 0 without an
  IH (the user's price level: the gbdt row's ``price_over_ih_mean``, on the log scale),
  and log1p of the IH length;
* with ``ModelConfig.match_time_features`` (after all of the above, ``TIME_FEATURES``),
  per key the time of the matching events, from the ``ih_age_days`` tensor: their count
  weighted by age (``exp(-days / TAU_DAYS)``, the gbdt row's ``fresh``) and log1p of the
  days since the most recent of them (its ``last_age_days``), capped at
  ``NO_MATCH_AGE_DAYS``. Without a match the gbdt row has NaN there; here the age is the
  cap, log1p(30): "no match" sits at the old end of the same scale (a nearer match
  scores more, monotonically), and the count 0 beside it marks it apart.

An unknown id (negative, the contract's default) matches nothing. Attention can learn
the same match from the shared id tables (the learnability check shows it does, on
synthetic rules), but at the ablation's budget it does not extract it: the gbdt row reads
exactly these counts (``evaluation.hand_features``) and is ahead by what they carry.
"""

from __future__ import annotations

import torch

from onepiece.contract.schemas import EVENT_TYPE_CODE, PA_GROUPS
from onepiece.model.config import ModelConfig

MATCH_KEYS: tuple[str, ...] = ("item", "shop", "category")  # columns of the item_cat tensors
MATCH_STATS: tuple[str, ...] = ("log_count", "share", "recent", "log_intent")
MATCH_FEATURES: tuple[str, ...] = (
    tuple(f"ih_{k}_{s}" for k in MATCH_KEYS for s in MATCH_STATS)
    + tuple(f"pa_{g}" for g in PA_GROUPS)
    + ("price_vs_ih", "ih_log_length")
)
#: The time statistics per key (``match_time_features``), after ``MATCH_FEATURES``.
TIME_STATS: tuple[str, ...] = ("fresh", "log_last_age")
TIME_FEATURES: tuple[str, ...] = tuple(f"ih_{k}_{s}" for k in MATCH_KEYS for s in TIME_STATS)
#: Without the time statistics; ``n_match(config)`` / ``match_features(config)`` are the
#: width and names a model reads.
N_MATCH = len(MATCH_FEATURES)
#: Recency by position: an IH event ``back`` events before the most recent weighs
#: exp(-back / RECENCY_EVENTS); the gbdt row's ``HandFeatureConfig.tau_events`` defaults to it.
RECENCY_EVENTS = 10.0
#: Recency by time: an IH event ``d`` days before as_of weighs exp(-d / TAU_DAYS) (ours:
#: the world's tastes drift over days); ``HandFeatureConfig.tau_days`` defaults to it.
TAU_DAYS = 3.0
#: The age of "no matching event" and the cap of a match's age, in days: the assembly's
#: IH window (``AssemblyConfig.ih_window``, 30 days), older than any event it keeps.
NO_MATCH_AGE_DAYS = 30.0
_INTENT = (EVENT_TYPE_CODE["add_to_cart"], EVENT_TYPE_CODE["order"])


def match_features(config: ModelConfig) -> tuple[str, ...]:
    """The names of the statistics ``config`` reads, in column order (empty without
    ``context_match_features``)."""
    if not config.context_match_features:
        return ()
    return MATCH_FEATURES + (TIME_FEATURES if config.match_time_features else ())


def n_match(config: ModelConfig) -> int:
    """The width of the statistics ``config`` reads (0 without ``context_match_features``)."""
    return len(match_features(config))


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
    ih_age_days: torch.Tensor | None = None,
) -> torch.Tensor:
    """cand_cat (B, C, 3), cand_num (B, C, >= 1) against its row's IH (B, L, 3),
    (B, L, >= 1), (B, L), (B, 1) and PA (B, P, 3), (B, P), (B, P), (B, 1) -> (B, C,
    N_MATCH) float32 (``MATCH_FEATURES`` order). Column 0 of the numerics is the price.
    With ``ih_age_days`` (B, L) the ``TIME_FEATURES`` follow: (B, C, N_MATCH + 6)."""
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
    if ih_age_days is not None:
        out += _time_matches(cand_cat, ih_cat, ih_age_days.float(), valid)
    return torch.stack(out, dim=-1)


def _time_matches(
    cand_cat: torch.Tensor, ih_cat: torch.Tensor, age: torch.Tensor, valid: torch.Tensor
) -> list[torch.Tensor]:
    """Per key: the age-weighted count and log1p of the youngest matching age (capped),
    each (B, C); ``age`` and ``valid`` (B, L)."""
    fresh = valid * torch.exp(-age / TAU_DAYS)  # (B, L)
    capped = age.clamp(max=NO_MATCH_AGE_DAYS)
    out = []
    for k in range(len(MATCH_KEYS)):
        cand = cand_cat[..., k]  # (B, C)
        same = (cand[:, :, None] == ih_cat[:, None, :, k]) & (cand[:, :, None] >= 0) & (valid[:, None] > 0)
        ages = torch.where(same, capped[:, None], torch.full_like(capped[:, None], NO_MATCH_AGE_DAYS))  # (B, C, L)
        youngest = ages.min(dim=-1).values if ages.shape[-1] else torch.full_like(cand, NO_MATCH_AGE_DAYS, dtype=age.dtype)
        out += [torch.einsum("bcl,bl->bc", same.float(), fresh), torch.log1p(youngest)]
    return out
