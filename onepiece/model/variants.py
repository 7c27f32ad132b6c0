"""Named variants: each is a ModelConfig that differs from a neighbour in one thing.

onePiece ablations change one field of ``onepiece``; the baselines share the tokenizer
and data path (``+PA`` rows differ from their base row in ``use_pa`` only).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from onepiece.model.config import ModelConfig

#: What every ranking row reads beyond ModelConfig's own defaults (issue 17, 3 seeds each,
#: docs/results.md): its candidates' context-match statistics through an adapter and the
#: wide term (+0.015 click AUC and +0.015..+0.021 GAUC for onePiece and DLRM alike), the
#: candidate-set numerics (about +0.01 with the matches) and id admission at 20 (items
#: exposed, users with requests, fewer times read as unknown: +0.013 at the ablation's
#: 1,500 requests, +0.004 at 6,000). ModelConfig's own defaults stay the earlier form, so a
#: config.json written before keeps its model.
#: And PA(30), 10 anchors per group instead of ModelConfig's 30 (issue 17 session 14, 3
#: seeds: onePiece +0.007 click AUC, -0.002..+0.014, and GAUC +0.009, +0.002..+0.016,
#: against PA(90); the paper found longer PA better, this world does not). DLRM reads it
#: too, through the PA membership flags of the match statistics.
RANKING_INPUTS: Final[dict[str, Any]] = {
    "context_match_features": True,
    "wide_numerics": True,
    "candidate_set_features": True,
    "id_min_count": 20,
}
RANKING_PA: Final[dict[str, Any]] = {"pa_per_group": 10}
#: And the click, add-to-cart and order heads trained on the exposed candidates only, the
#: population the gbdt row trains on and the ablation measures (issue 17 session 16, 3
#: seeds on three worlds: onepiece_invisible's click AUC within requests, where LightGBM
#: led every neural row, rose by +0.008, +0.004 and +0.003, level with LightGBM's on two
#: worlds; pooled click AUC +0.0015, within noise, and DLRM unchanged). The sampled
#: unexposed candidates had been click negatives that the item's CTR does not separate.
RANKING_TRAINING: Final[dict[str, Any]] = {"later_tasks_on_exposed": True}
RANKING_DEFAULTS: Final[dict[str, Any]] = RANKING_INPUTS | RANKING_PA | RANKING_TRAINING
#: The input switches as ModelConfig has them (the learnability check reads these).
EARLIER_INPUTS: Final[dict[str, Any]] = {k: getattr(ModelConfig(), k) for k in RANKING_INPUTS}
#: Every ranking default as ModelConfig has it: the retrieval rows (their candidates are
#: scored by a dot product against an item index, every id of which must be searchable;
#: they keep PA(90)).
EARLIER_DEFAULTS: Final[dict[str, Any]] = {k: getattr(ModelConfig(), k) for k in RANKING_DEFAULTS}
_ONEPIECE = ModelConfig(name="onepiece", **RANKING_DEFAULTS)

_HSTU: Final[dict[str, Any]] = {
    "attention": "hstu", "causal": True, "candidates_visible": False, "num_steps": 0, "hstu_time_buckets": 128,
}
_CHANGES: Final[dict[str, dict[str, Any]]] = {
    # the product model: ranking, bidirectional, visible candidates, K=3 progressive
    "onepiece": {},
    # context ablation
    "onepiece_ids_only": {"use_side_info": False},
    "onepiece_no_pa": {"use_pa": False},
    "onepiece_pa10": {"pa_per_group": 3},  # PA length 10 in all (3 x 3 + markers)
    # the default is PA(30) (RANKING_DEFAULTS); the paper's PA(90):
    "onepiece_pa90": {"pa_per_group": 30},
    "onepiece_no_sd": {"use_sd": False},
    # ranking ablation
    "onepiece_causal": {"causal": True},
    "onepiece_invisible": {"candidates_visible": False},
    # ours (docs section 9): the context never sees the candidates, so it is encoded once
    # per request and shared by all its groups (serving cost); candidates stay visible
    "onepiece_shared": {"context_sees_candidates": False},
    "onepiece_k0": {"num_steps": 0},
    "onepiece_k1": {"num_steps": 1},
    "onepiece_k2": {"num_steps": 2},
    "onepiece_last_step": {"supervision": "last_step"},
    # retrieval mode (K = 2: impression, then click)
    "onepiece_retrieval": {"mode": "retrieval", "num_steps": 2, **EARLIER_DEFAULTS},
    # baselines (docs section 7: the faithful forms)
    # DLRM: bottom MLP, embeddings and DIN target attention over the IH, pairwise dot
    # products into the top MLP
    "dlrm": {"backbone": "dlrm", "num_steps": 0, "use_pa": False, "dlrm_interaction": "dot"},
    "dlrm_pa": {"backbone": "dlrm", "num_steps": 0, "dlrm_interaction": "dot"},  # DIN over PA as well
    # the earlier DLRM-style row, kept so that earlier results stay comparable: an MLP
    # over concatenated user, query, candidate and softmax target-attention pools
    "dlrm_mlp": {"backbone": "dlrm", "num_steps": 0, "use_pa": False, "dlrm_interaction": "concat"},
    # HSTU: pointwise SiLU attention with a relative position and time bias (the
    # reference's 128 log time buckets), causal over the context, candidates as targets
    # that see the history but not each other
    "hstu": {**_HSTU, "use_pa": False},
    "hstu_pa": dict(_HSTU),
    # the earlier HSTU-style row: the same mask on softmax attention (earlier results)
    "hstu_softmax": {"causal": True, "candidates_visible": False, "num_steps": 0, "use_pa": False},
    "rearec": {"causal": True, "reasoning": "last_token", "use_pa": False},
    "rearec_pa": {"causal": True, "reasoning": "last_token"},
}
VARIANTS: Final[tuple[str, ...]] = tuple(_CHANGES)


def variant_config(name: str, **overrides: Any) -> ModelConfig:
    """The named variant's config; ``overrides`` change further fields (e.g. sizes)."""
    if name not in _CHANGES:
        raise ValueError(f"unknown model variant '{name}', expected one of {list(VARIANTS)}")
    return replace(_ONEPIECE, name=name, **(_CHANGES[name] | overrides))
