"""One dataclass decides everything about a model: dimensions, segments, mask, reasoning.

A variant (``onepiece.model.variants``) is nothing but a named ``ModelConfig``; two rows
of the ablation table differ in one field. The config is saved as ``config.json`` beside
every checkpoint and loading rebuilds the model from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from onepiece.contract.schemas import TASKS

#: Default progressive schedule (1-based reasoning step per task): weakest signal first.
#: add_to_cart is an extra head at the last step (ours; the paper evaluates it only).
PROGRESSIVE_STEPS: dict[str, int] = {"impression": 1, "click": 2, "add_to_cart": 3, "order": 3}

#: The hashed embedding tables' sizes (``tokens.bucket``).
VOCABS = ("item_vocab", "shop_vocab", "category_vocab", "user_vocab", "user_side_vocab", "query_vocab",
          "piece_vocab")


#: The value a field had in effect before it existed: ``from_json`` fills it in for an
#: older config.json, so its checkpoint rebuilds the same model (e.g. with its own
#: candidate adapter, whose weights it holds).
BEFORE_FIELD: dict[str, Any] = {
    "structural_embedding_std": None,
    "shared_candidate_adapter": False,
    "attention": "softmax",
    "dlrm_interaction": "concat",  # the MLP over concatenated parts, now row ``dlrm_mlp``
    "candidate_set_features": False,
    "id_dropout": 0.0,
    "id_min_count": 0,
    "wide_numerics": False,
    "context_match_features": False,
    "match_time_features": False,
    "hstu_time_buckets": 0,
}


@dataclass
class ModelConfig:
    """Everything that decides a model's structure and its tensorisation."""

    name: str = "onepiece"
    #: The Feast feature service whose features this model was trained on.
    feature_service: str = "onepiece_ranker_v1"

    # --- what kind of model ------------------------------------------------------
    #: "transformer": onePiece / HSTU / ReaRec; "dlrm": pointwise ranker with target
    #: attention over the IH (``dlrm_interaction`` says which form).
    backbone: Literal["transformer", "dlrm"] = "transformer"
    #: The transformer's attention layer. "softmax": pre-LN softmax attention + FFN
    #: (onePiece, ReaRec). "hstu": HSTU's layer (Zhai et al. 2024): U, V, Q, K =
    #: SiLU(f1(LN x)); A = SiLU(Q K^T / sqrt(dh) + rab) / n over the allowed keys; x + f2(LN(A V) * U);
    #: no FFN (``backbone.HSTULayer``). Its relative attention bias (``backbone.RelativeBias``)
    #: is over position buckets and, with ``hstu_time_buckets``, time buckets as well.
    attention: Literal["softmax", "hstu"] = "softmax"
    #: Relative-position buckets per direction of the HSTU attention bias (exact distances
    #: below 8, then logarithmic; ``pointwise_attention.position_buckets``).
    hstu_position_buckets: int = 32
    #: Log buckets of the time between a query's and a key's events in the HSTU attention
    #: bias, floor(ln(max(|dt| s, 1)) / 0.301) clamped to this (``pointwise_attention.
    #: time_buckets``; the reference's ``RelativeBucketedTimeAndPositionBasedBias``); 0 =
    #: none (position only). Token times: an IH event's request time minus its
    #: ``ih_age_days``, every other token the request time (the reference times a query by
    #: the next event, as each of its positions predicts the next item; the candidate rows
    #: the heads read are at the request time either way). The reference's 128 covers gaps
    #: up to e^38.5 s: a minute is bucket 13, a day 37, a year 57, so no gap of ours is clamped.
    hstu_time_buckets: int = 0
    #: The DLRM backbone's feature interaction. "dot": DLRM (Naumov et al. 2019): a bottom
    #: MLP over the dense features, the categorical embeddings and DIN target-attention
    #: pools over the IH (and PA) as vectors of one width, their pairwise dot products
    #: concatenated with the bottom-MLP output into the top MLP. "concat": the earlier
    #: baseline (row ``dlrm_mlp``): user, query, candidate and softmax target-attention
    #: pools concatenated into an MLP.
    dlrm_interaction: Literal["dot", "concat"] = "dot"
    #: "ranking": candidates are tokens of the sequence; "retrieval": the block is the SD
    #: tokens and candidates are scored by <r_k, z_v> with item-adapter vectors.
    mode: Literal["ranking", "retrieval"] = "ranking"
    #: "block": onePiece block-wise reasoning (M = C in ranking, M = #SD in retrieval).
    #: "last_token": ReaRec-style, the last context hidden state fed back as ONE token
    #: per step; candidates are then scored against that per-step user state by an MLP.
    reasoning: Literal["block", "last_token"] = "block"
    num_steps: int = 3  # K; 0 means no reasoning (B_0 only)
    #: (ours, a diagnostic; not the paper's design) The block ranking head also reads the
    #: user and query input tokens beside each candidate's state, as DLRM's head does,
    #: instead of only what the candidate fetched from them by attention.
    head_reads_sd: bool = False

    # --- context engineering -------------------------------------------------------
    use_side_info: bool = True  # item/user/query side features; False = ids only
    use_pa: bool = True
    use_sd: bool = True
    ih_max_len: int = 100  # (ours) most recent N IH events
    pa_per_group: int = 30  # (ours) items per anchor group; PA length = 3 x this
    group_size: int = 12  # C candidates per sequence; 0 = all of a request's candidates
    query_max_pieces: int = 8  # hashed query word pieces kept per query

    # --- attention mask ------------------------------------------------------------
    causal: bool = False  # causal over the context (baselines / ablation)
    candidates_visible: bool = True  # candidates (and their reasoning tokens) see each other
    #: The paper's bidirectional ranking mask lets the context (IH, PA, SD) attend to the
    #: candidates of its group, so every group of a request needs its own pass over the
    #: context. False (ours; docs section 9): the context never sees candidate-derived
    #: positions, its keys and values are the same for every group of a request, and the
    #: model encodes it once per request (``ModelInputs.group_context``).
    context_sees_candidates: bool = True

    # --- supervision -------------------------------------------------------------------
    supervision: Literal["progressive", "last_step"] = "progressive"
    progressive_steps: dict[str, int] = field(default_factory=lambda: dict(PROGRESSIVE_STEPS))
    #: Temperature of the set-wise contrastive term of ranking (ours). The term and the
    #: BCE share one task logit, and softmax(s / T) is minimised at within-group gaps of
    #: T x the log-probability ratio while BCE wants the calibrated gaps. So a T below 1
    #: squeezes the order within a request (0.1 gave within-request logit spreads of
    #: 0.12-0.19 against 1.4-1.8 at 1.0), and the per-request level, which only the BCE
    #: sets, took over global AUC: DLRM's click AUC went from 0.719 at 0.1 to 0.788 at
    #: 1.0 (seed 0, default world, all 3,292 test requests). At 1.0 both terms agree.
    contrastive_temperature: float = 1.0
    #: Train the tasks after impression (click, add to cart, order) on the exposed
    #: candidates only, where they are observed and measured (as the gbdt row does);
    #: False: the sampled unexposed candidates are negatives of every task (the
    #: impression head always trains on them).
    later_tasks_on_exposed: bool = False
    #: Temperature of retrieval's in-batch (CLIP-style) term (ours; unchanged and not
    #: re-measured on the world; ml100k sets 1.0).
    retrieval_temperature: float = 0.1

    # --- sizes (small defaults for CPU) -----------------------------------------------
    d_model: int = 64
    n_layers: int = 2
    #: One 64-wide head (ours; the paper's ablation used 4). On the CPU, 4 heads of width
    #: 16 ran attention at half the rate of one head of 64 (a tiny inner GEMM dimension, a
    #: softmax per head): the forward reached 36% of GEMM peak instead of 41-42%
    #: (``benchmarks/model_forward.py --n-heads 4``). On the tiny world, over 5 seeds, one
    #: head was no worse: click AUC 0.779 vs 0.771, GAUC 0.809 vs 0.795.
    n_heads: int = 1
    ffn_mult: int = 4
    dropout: float = 0.0
    id_dim: int = 32  # embedding width of entity ids
    side_dim: int = 16  # embedding width of categorical side features
    item_vocab: int = 50_000  # hash buckets (+1 OOV bucket) per categorical feature
    shop_vocab: int = 5_000
    category_vocab: int = 1_000
    user_vocab: int = 50_000
    user_side_vocab: int = 512  # age bucket, gender, region
    query_vocab: int = 20_000
    piece_vocab: int = 8_192

    # --- initialisation and token paths (issue 17; ``evaluation.learnability``) -------
    #: Init std of the learned position, segment, event-type, PA kind/group/position, SD
    #: position and reasoning-position tables (ours; None = nn.Embedding's N(0, 1)). At
    #: N(0, 1) these tables (RMS ~1 per token, three of them summed on an IH token) sat
    #: beside item-adapter outputs of RMS ~0.15, of which a category change moved 0.002:
    #: after pre-LN the item content was drowned. On the synthetic "candidate's category
    #: is in the IH" rule, onePiece reached click AUC 0.637 at N(0, 1) against 0.997 at
    #: 0.02 (12 epochs, with the other two fixes); on the tiny world 0.02 was no worse
    #: (4 seeds: onePiece 0.793 vs 0.790, DLRM 0.807 vs 0.773).
    structural_embedding_std: float | None = 0.02
    #: Init std of the hashed entity-id tables: item, user, query and query pieces
    #: (``tokens.HashedEmbedding``; ours). NOT changed by issue 17's measurements: the
    #: learnability rules need ids visible (at 0.02 every variant stayed at AUC ~0.5 on
    #: both rules), but on the tiny world N(0, 1) lost ~0.05 click AUC (4 seeds:
    #: onePiece 0.737 vs 0.790, DLRM 0.749 vs 0.773), as ``tokens.ID_EMBEDDING_STD`` says.
    id_embedding_std: float = 0.02
    #: Init std of the hashed side-feature tables: shop, category, user profile (ours;
    #: same trade-off as ``id_embedding_std``: 1.0 lets the category rule be learnt, tiny
    #: world onePiece 0.772 vs 0.790 with the other fixes, within 1-2 standard errors).
    side_embedding_std: float = 0.02
    #: Training-time dropout of the item and user ids (ours; ``tokens.HashedEmbedding``):
    #: a share of the ids, drawn per id once per training forward, is read as the unknown
    #: id; evaluation reads every id. Off by default: it trades one skill for another.
    #: At the default ablation budget every row peaked after one epoch (the item table
    #: memorises the training requests); dropping ids PER TOKEN at 0.9 lifted onePiece's
    #: click AUC by +0.006 (3 seeds, interval +0.001..+0.012) but cut the learnability
    #: check's "candidate is a PA-clicked anchor" rule from 0.997 to 0.69 (a match needs
    #: both ids); per id (a candidate and its PA copy dropped together) 0.9 / 0.5 / 0.2 gave
    #: 0.71 / 0.83 / 0.99 on that rule and no gain on the world (0.5: -0.0001, 0.2: see
    #: docs/results.md). The ids' memorisation is left to more data, not to this switch.
    id_dropout: float = 0.0
    #: Id admission by frequency (ours; the "feature admission" of production rankers):
    #: an item id exposed fewer than this many times as a candidate in the training rows,
    #: or a user id with fewer training requests, reads as the unknown id, in training and
    #: in serving (the admitted buckets are a buffer of the checkpoint). 0 admits every id.
    #: An id seen a handful of times cannot be learned, only memorised: at the default
    #: ablation budget (about 6 exposures per item) dropping the item and user ids lifted
    #: every neural row (docs/results.md, issue 17), while with more data the ids pay.
    id_min_count: int = 0
    #: A linear term per task over the candidate's numerics (item statistics, and the
    #: candidate-set numerics when read) and the query's, added to the ranking logits
    #: (ours; the wide part of wide & deep). At the default ablation budget a logistic
    #: regression on these five numbers alone matched DLRM and beat onePiece (issue 17).
    wide_numerics: bool = False
    #: Candidates go through the IH/PA item adapter instead of their own (ours; the spec's
    #: table gives CIS a separate adapter: False restores it). Shared, a candidate and the
    #: same item (or category) in the context start as the same vector and attention can
    #: match them from step 0. On the learnability rules onePiece with a separate adapter
    #: reached 0.994 on the category rule at epoch 28 (shared: 0.999 at 14) and only 0.808
    #: on "candidate is a PA-clicked anchor" after 30 epochs (shared: 0.997 at 13); on the
    #: tiny world it made no difference (onePiece 0.789 vs 0.790, DLRM 0.770 vs 0.773).
    shared_candidate_adapter: bool = True
    #: Candidates also read the candidate-set numerics (ours; ``inputs.CAND_SET_FEATURES``:
    #: price against the median of the request's whole recall list, overall and in the same
    #: category; the gbdt row's second feature by gain). A group of C candidates sees only
    #: itself and DLRM none, so only this input gives them the list. Off by default: on the
    #: default world it was within noise for DLRM and onePiece (one seed each, -0.001 and
    #: +0.005 click AUC), and it slowed ReaRec on the learnability check's category rule
    #: to 0.949 (0.966 without), just under the check's 0.95.
    #: The ranking rows turn it on (``variants.RANKING_DEFAULTS``, issue 17 session 13),
    #: as they do ``context_match_features``, ``wide_numerics`` and ``id_min_count=20``.
    candidate_set_features: bool = False
    #: Candidates also read their context-match statistics (ours; ``matches``: per item,
    #: shop and category the count, share, recency-weighted count and purchase intent of
    #: the IH events with the same id, and PA membership per group), computed in the model
    #: from the input tensors, through their own adapter (and the wide term when on).
    context_match_features: bool = False
    #: The context-match statistics also carry the time of the matching IH events (ours;
    #: ``matches.TIME_FEATURES``: per key the count weighted by exp(-age / 3 days) and
    #: log1p of the days since the latest match), from the ``ih_age_days`` tensor: the
    #: gbdt row's ``fresh`` and ``last_age_days``, ~12% of its click gain (issue 17).
    #: Nothing without ``context_match_features``. Off until measured against the rows.
    match_time_features: bool = False

    # --- output calibration ------------------------------------------------------------
    #: Platt scaling per task head, task -> {"scale": a, "bias": b}: ``score()`` returns
    #: sigmoid(a * logit + b) with a > 0 (the order within a head is unchanged). Fitted
    #: by model_publish's ``calibrate`` task on serving-shaped held-out traffic
    #: (onepiece.model.calibration); empty: the raw head outputs.
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.progressive_steps) - set(TASKS)
        if unknown:
            raise ValueError(f"ModelConfig.progressive_steps: unknown tasks {sorted(unknown)}")
        if set(TASKS) - set(self.progressive_steps):
            raise ValueError(f"ModelConfig.progressive_steps must name every task of {TASKS}")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ValueError(f"ModelConfig.id_dropout must be in [0, 1), got {self.id_dropout}")
        if self.wide_numerics and self.mode != "ranking":
            raise ValueError("wide_numerics adds to ranking logits: mode must be 'ranking'")
        if self.id_min_count < 0:
            raise ValueError(f"ModelConfig.id_min_count must be >= 0, got {self.id_min_count}")
        if self.num_steps < 0:
            raise ValueError(f"ModelConfig.num_steps must be >= 0, got {self.num_steps}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.group_size < 0 or self.ih_max_len < 1 or self.pa_per_group < 1:
            raise ValueError("group_size >= 0, ih_max_len >= 1 and pa_per_group >= 1 are required")
        if self.mode == "retrieval" and not self.use_sd and self.reasoning == "block":
            raise ValueError("retrieval mode reasons over the SD block: use_sd must be true")
        small = [n for n in VOCABS if getattr(self, n) < 2]
        if small:  # bucket 0 is the out-of-vocabulary bucket: ids need at least one more
            raise ValueError(f"ModelConfig: {', '.join(small)} must be at least 2")
        if self.head_reads_sd and not (
            self.use_sd and self.backbone == "transformer" and self.mode == "ranking" and self.reasoning == "block"
        ):
            raise ValueError("head_reads_sd needs the block ranking head of a transformer with use_sd")
        if self.hstu_position_buckets < 9:  # 8 exact distances, then at least one log bucket
            raise ValueError(f"hstu_position_buckets must be at least 9, got {self.hstu_position_buckets}")
        if self.hstu_time_buckets < 0:
            raise ValueError(f"hstu_time_buckets must be >= 0, got {self.hstu_time_buckets}")
        if self.hstu_time_buckets and self.attention != "hstu":
            raise ValueError(
                f"hstu_time_buckets={self.hstu_time_buckets} needs attention='hstu', got {self.attention!r}"
            )
        if self.backbone == "dlrm" and self.num_steps:
            raise ValueError("the DLRM backbone has no reasoning: num_steps must be 0")
        for task, params in self.calibration.items():
            if task not in TASKS or set(params) != {"scale", "bias"}:
                raise ValueError(
                    f"ModelConfig.calibration: expected task -> {{scale, bias}} for tasks of {TASKS}, "
                    f"got {task}: {params}"
                )
            if not (math.isfinite(params["scale"]) and params["scale"] > 0 and math.isfinite(params["bias"])):
                raise ValueError(
                    f"ModelConfig.calibration[{task!r}]: scale must be positive and both finite, got {params}"
                )

    @property
    def shares_context(self) -> bool:
        """Whether the context's keys and values are the same for every candidate group of
        a request, so the shared-context layout (``ModelInputs.group_context``) encodes it
        once: candidates are tokens of the sequence (a transformer ranking with block
        reasoning) and the mask keeps the context blind to them (without
        ``context_sees_candidates``, or because candidates are invisible to all but their
        own slot, or because they come after the context in a causal mask)."""
        in_sequence = self.backbone == "transformer" and self.mode == "ranking" and self.reasoning == "block"
        return in_sequence and (not self.context_sees_candidates or not self.candidates_visible or self.causal)

    @property
    def num_outputs(self) -> int:
        """Steps with an output: B_0 and the K reasoning blocks."""
        return self.num_steps + 1

    def task_steps(self) -> dict[str, int]:
        """Which output step (0..K) supervises each task; score() reads the same steps."""
        if self.supervision == "last_step":
            return {task: self.num_steps for task in TASKS}
        return {task: min(self.progressive_steps[task], self.num_steps) for task in TASKS}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(data) - known
        if extra:
            raise ValueError(f"config.json has unknown fields {sorted(extra)}")
        # a config.json written before a field existed means the model built without it
        return cls(**(BEFORE_FIELD | data))
