"""The paper's ablation table on the synthetic world: every row trained and evaluated on
the same day split (train on days up to t, evaluate on day t + 1).

Rows and the paper's click AUC beside them (section 6 of the model spec). Our variants
differ from their neighbour in one ModelConfig field; where the paper's row is not the
exact same change, the ``note`` says what ours is.

One row is not a model variant: ``gbdt``, LightGBM on hand features of the same context
rows (``gbdt``, ``hand_features``), the non-neural floor of section 7; its job trains
in the same workers (``train_and_evaluate``).

Early stopping never looks at the test day: it uses a seeded random 10% of the training
requests (held out from fitting). Every row gets the same data, seed and budget. Rows
train two at a time, one process each (``AblationConfig.workers``), with the same
numbers as one by one.

How sure is an ordering? Rows often differ by a few thousandths of AUC on a few hundred
test requests. ``AblationConfig.seeds`` trains every row with several seeds on the same
split (the table is their mean) and every claim "A beats B" gets the paired bootstrap
interval of AUC(A) - AUC(B) over test requests and training seeds (``significance``): it
holds or fails only when the interval excludes 0, and is reported "within noise" otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.evaluation.metrics_file import RANKING_TASKS
from onepiece.evaluation.anchor_signal import (
    AnchorSignal,
    anchor_membership,
    anchor_signal,
    anchors_alone_auc,
    history_features,
)
from onepiece.evaluation.captured import CapturedParts, captured_parts
from onepiece.evaluation.gbdt import HISTORY_FEATURES, GBDTConfig  # lightgbm is imported only to train
from onepiece.evaluation.offsets import SCALES, OffsetProfile, offset_profile
from onepiece.evaluation.significance import Difference, bootstrap_aucs, paired_difference
from onepiece.training.config import TrainConfig  # stdlib only: cheap at import


@dataclass(frozen=True)
class Row:
    variant: str
    group: str
    paper_click_auc: float | None
    note: str = ""
    #: False for a row that is not a ModelConfig variant (its config is its own, e.g. GBDTConfig).
    neural: bool = True
    #: False: run only when named (``--variants``), not in the default table.
    default: bool = True


ROWS: tuple[Row, ...] = (
    Row("gbdt", "main", None, "LightGBM on hand features of the same contexts (ours: section 7's floor)", neural=False),
    Row("gbdt_no_history", "main", None, "the gbdt row without its IH and PA features (ours: what the history adds)",
        neural=False),
    Row("dlrm", "main", 0.856, "DLRM dot-product interactions + DIN target attention over the IH"),
    Row("hstu", "main", 0.833, "HSTU pointwise attention, relative position and time bias"),
    Row("hstu_pa", "main", 0.855, "HSTU pointwise attention, relative position and time bias"),
    Row("rearec", "main", 0.843),
    Row("rearec_pa", "main", 0.862),
    Row("onepiece", "main", 0.911, "ours: PA of 3 x 10 items (the paper's onePiece reads PA(90))"),
    Row("onepiece_ids_only", "context", 0.802, "paper: IH ids only; ours keeps PA and SD, drops side info"),
    Row("onepiece_no_pa", "context", 0.846, "paper: + side information (no PA); ours keeps SD"),
    Row("onepiece_pa10", "context", 0.879, "PA of 3 x 3 items"),
    Row("onepiece_pa90", "context", 0.908, "PA of 3 x 30 items (paper: PA(90) without SD)"),
    Row("onepiece_no_sd", "context", 0.908, "paper: PA(90) without SD; ours: PA(30) without SD"),
    Row("onepiece_causal", "mask", 0.839),
    Row("onepiece_invisible", "mask", 0.860, "bidirectional, candidates mutually invisible (the product default)"),
    Row("onepiece_shared", "mask", None, "ours: context blind to the candidates, encoded once per request"),
    Row("onepiece_k0", "mask", 0.881, "visible candidates, no reasoning step"),
    Row("onepiece_k1", "mask", 0.890),
    Row("onepiece_k2", "mask", 0.893),
    Row("onepiece_last_step", "mask", 0.906, "K = 3, all tasks supervised at the last step"),
    # the baselines as they were before issue 17 made them faithful, for comparison with
    # earlier results (not in the default table)
    Row("dlrm_mlp", "earlier", None, "earlier DLRM-style row: MLP over concatenated softmax target-attention pools",
        default=False),
    Row("hstu_softmax", "earlier", None, "earlier HSTU-style row: softmax attention with HSTU's mask", default=False),
)
VARIANT_NAMES: tuple[str, ...] = tuple(r.variant for r in ROWS)
#: The rows of the default table.
DEFAULT_VARIANTS: tuple[str, ...] = tuple(r.variant for r in ROWS if r.default)
NON_NEURAL: frozenset[str] = frozenset(r.variant for r in ROWS if not r.neural)


def gbdt_row_config(variant: str, base: GBDTConfig | None = None) -> GBDTConfig:
    """The LightGBM settings of a non-neural row: ``base`` (default ``GBDTConfig()``),
    without the history features for ``gbdt_no_history``."""
    config = base or GBDTConfig()
    if variant == "gbdt_no_history":
        return replace(config, drop_features=tuple(sorted(set(config.drop_features) | set(HISTORY_FEATURES))))
    return config


@dataclass(frozen=True)
class AblationConfig:
    """The shared budget of every row (ours: every default row on the default world took
    24.5 min at 6 epochs, patience 2, and 45 min at 12 epochs, patience 3, with other work
    beside it, split included; docs/results.md, session 14)."""

    #: The split's sampling and the first training seed.
    seed: int = 0
    #: Training seeds per row (seed, seed + 1, ...), all on the same split and test
    #: candidates; ablation.json holds their mean, the orderings their paired intervals.
    seeds: int = 1
    #: Request resamples of the orderings' paired bootstrap (``significance``).
    resamples: int = 1000
    #: 12 epochs, patience 3 (was 6 and 2; before that 3 and 1): at 6 epochs onePiece was
    #: often best at the last one, so the cap ended it, not early stopping. With 12 and 3
    #: it gained +0.005 click AUC at PA(30) (3 seeds, docs/results.md, issue 17 session
    #: 14); DLRM at PA(90) stopped by its fifth epoch either way.
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    lr_schedule: str = "constant"  # or "cosine" (TrainConfig)
    warmup_steps: int = 0
    patience: int = 3
    max_train_requests: int | None = 1500
    max_test_requests: int | None = 600
    valid_fraction: float = 0.1
    max_unexposed: int | None = 20
    threads: int = 1  # torch threads per row
    #: Rows trained at once, one process each (2 = both cores of a 2-core machine).
    workers: int = 2


def _sample(rows: pa.Table, n: int | None, rng: np.random.Generator) -> pa.Table:
    if n is None or rows.num_rows <= n:
        return rows
    keep = np.sort(rng.choice(rows.num_rows, n, replace=False))
    return rows.take(pa.array(keep))


def split_rows(
    train_rows: pa.Table, test_rows: pa.Table, cfg: AblationConfig
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(fit, valid, test): seeded subsamples; valid is held out of the training days.

    The test sample has a generator of its own, so every training budget of a learning
    curve is scored on the same test requests (it used to be drawn after the training
    sample, from the same generator: each budget got its own test requests)."""
    rng = np.random.default_rng(cfg.seed)
    train_rows = _sample(train_rows, cfg.max_train_requests, rng)
    test_rows = _sample(test_rows, cfg.max_test_requests, np.random.default_rng((cfg.seed, 1)))
    is_valid = rng.random(train_rows.num_rows) < cfg.valid_fraction
    return (
        train_rows.filter(pa.array(~is_valid)),
        train_rows.filter(pa.array(is_valid)),
        test_rows,
    )


def vocab_sizes(*tables: pa.Table) -> dict[str, int]:
    """Hash-table sizes that give every id of the data its own bucket (same for all rows)."""

    def top(columns: list[str]) -> int:
        values = [0]
        for t in tables:
            for c in columns:
                col = t[c]
                flat = pc.list_flatten(col) if pa.types.is_list(col.type) else col
                m = pc.max(flat).as_py()
                values.append(int(m) if m is not None else 0)
        return max(values) + 2

    return {
        "item_vocab": top(["ih_item_id", "pa_item_id", "cand_item_id"]),
        "shop_vocab": top(["ih_shop_id", "pa_shop_id", "cand_shop_id"]),
        "category_vocab": top(["ih_category_id", "pa_category_id", "cand_category_id"]),
        "user_vocab": top(["user_id"]),
        "query_vocab": top(["query_id"]),
    }


def ablation_row(variant: str, doc: dict[str, Any]) -> dict[str, Any]:
    """One row of ablation.json from a metrics document."""
    row: dict[str, Any] = {"variant": variant}
    for task in RANKING_TASKS:
        for metric in ("auc", "gauc"):
            row[f"{task}_{metric}"] = doc["ranking"][task][metric]
    return row


def mean_row(variant: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The seeds' rows of one variant averaged, metric by metric (None where any is None)."""
    out: dict[str, Any] = {"variant": variant}
    for key in rows[0]:
        if key != "variant":
            values = [r[key] for r in rows]
            out[key] = None if any(v is None for v in values) else float(np.mean(values))
    return out


def train_and_evaluate(
    variant: str,
    config: Any,
    train_config: TrainConfig,
    fit: pa.Table,
    valid: pa.Table,
    test: pa.Table,
    report: Callable[[Any], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """One row's job in a worker: train on ``fit`` (early stopping on ``valid``), evaluate
    on ``test``. A ModelConfig trains the network; a GBDTConfig the gbdt row (LightGBM
    with the row's seed and threads; its history holds each task's best iteration and
    the click model's feature gains). Returns (row, history, click scores of the test's
    exposed candidates)."""
    if isinstance(config, GBDTConfig):
        from onepiece.evaluation.gbdt import evaluate_gbdt, fit_gbdt

        model = fit_gbdt(config, train_config, fit, valid)
        doc, scores = evaluate_gbdt(model, test)
        history = model.history
    else:
        from onepiece.evaluation.evaluate import evaluate_ranking
        from onepiece.training.loop import train

        result = train(config, train_config, fit, valid)
        doc, scores = evaluate_ranking(result.model, test, seed=train_config.seed)
        history = result.history
    return ablation_row(variant, doc), history, scores["click"][_exposed(test)]


def _exposed(test: pa.Table) -> np.ndarray:
    from onepiece.evaluation.ranking import flat_candidates

    return flat_candidates(test).labels["impression"] > 0


@dataclass
class AblationResult:
    """Rows averaged over the training seeds (ablation.json), each seed's rows and
    histories, and the paper's orderings checked with their noise."""

    rows: list[dict[str, Any]]
    seed_rows: dict[int, list[dict[str, Any]]]
    histories: dict[str, dict[int, Any]]  # variant -> seed -> history
    claims: list[Claim]
    #: The same claims on click GAUC: within each user's impressions, which is what a
    #: pre-rank stage ranking one request's candidates at a time acts on.
    gauc_claims: list[Claim]
    #: The exposed test candidates (request, user, item, click label) and every
    #: "variant@seed" click score: the orderings can be recomputed from this alone.
    test_scores: pa.Table
    #: Per variant: its click AUC split into request level and order within requests.
    offsets: dict[str, OffsetProfile]
    #: With a world reference: per variant, what its click logit reproduces of each term
    #: of the world's utility (``captured``), and each term's spread over the candidates.
    captured: dict[str, CapturedParts] = field(default_factory=dict)
    utility_spread: dict[str, float] = field(default_factory=dict)
    #: Per variant: the click AUC that the test requests' PA membership flags still add
    #: to its logit (``anchor_signal``); and the flags' own AUC.
    anchor_signal: dict[str, AnchorSignal] = field(default_factory=dict)
    anchors_alone_auc: float | None = None
    #: The same for hand features of the user's history (``history_features``): the IH
    #: signal each row left unused, and those features' own AUC.
    history_signal: dict[str, AnchorSignal] = field(default_factory=dict)
    history_alone_auc: float | None = None


def training_seeds(cfg: AblationConfig) -> tuple[int, ...]:
    return tuple(range(cfg.seed, cfg.seed + cfg.seeds))


def row_train_config(cfg: AblationConfig, seed: int) -> TrainConfig:
    """The ``TrainConfig`` every row trains with under training seed ``seed``."""
    return TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, lr_schedule=cfg.lr_schedule,
        warmup_steps=cfg.warmup_steps, seed=seed, patience=cfg.patience, max_unexposed=cfg.max_unexposed,
        threads=cfg.threads,
    )


def run_ablation(
    train_rows: pa.Table,
    test_rows: pa.Table,
    cfg: AblationConfig,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    on_row: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    model_overrides: dict[str, Any] | None = None,
    reference: Callable[[pa.Table], dict[str, np.ndarray]] | None = None,
    gbdt_config: GBDTConfig | None = None,
) -> AblationResult:
    """Train and evaluate every variant with every training seed on one split.

    The split (``cfg.seed``) is the same for every seed, so the seeds differ in the
    training's randomness only and are scored on the same test candidates, which the
    orderings' bootstrap resamples by request (``significance``). ``cfg.workers`` rows
    train at once, one process each, with the same numbers as one by one
    (``training.parallel``); ``on_row(row, history)`` is called here as rows finish.
    ``reference(test)``, when given, returns the terms of the world's utility for the test
    candidates (``onepiece.world.oracle.utility_parts``): their sum is a reference row
    "world_utility" (click only), and every variant is regressed on them (``captured``).
    The gbdt row trains with ``gbdt_config`` (default ``GBDTConfig()``); ``model_overrides``
    are ModelConfig fields and do not reach it.
    """
    from onepiece.evaluation.ranking import flat_candidates, popularity_scores, ranking_metrics, statistic_scores
    from onepiece.model import variant_config
    from onepiece.training.parallel import run_jobs

    fit, valid, test = split_rows(train_rows, test_rows, cfg)
    overrides = vocab_sizes(fit, valid, test) | (model_overrides or {})
    seeds = training_seeds(cfg)
    jobs = {}
    for seed in seeds:
        train_config = row_train_config(cfg, seed)
        for v in variants:
            config = gbdt_row_config(v, gbdt_config) if v in NON_NEURAL else variant_config(v, **overrides)
            jobs[f"{v}@{seed}"] = (v, config, train_config, fit, valid, test)
    done = run_jobs(
        train_and_evaluate, jobs, cfg.workers,
        on_done=(lambda name, result: on_row(result[0], result[1])) if on_row is not None else None,
    )
    # The popularity baseline (item positives on the training days) as a reference row.
    flat = flat_candidates(test)
    exposed = flat.labels["impression"] > 0
    popularity = popularity_scores(fit, flat)
    popularity_row = ablation_row("popularity", {"ranking": ranking_metrics(flat, popularity)})
    ctr = statistic_scores(test)  # the item's 7-day CTR alone: the naive ranker
    references = [popularity_row, ablation_row("ctr_7d", {"ranking": ranking_metrics(flat, ctr)})]
    extra_scores: dict[str, np.ndarray] = {}
    parts: dict[str, np.ndarray] = {}  # the utility's terms over the exposed candidates
    if reference is not None:
        all_parts = reference(test)
        utility = sum(all_parts.values())
        parts = {name: values[exposed] for name, values in all_parts.items()}
        metric = ranking_metrics(flat, {t: utility for t in RANKING_TASKS})["click"]
        references.append({"variant": "world_utility", **{f"{t}_{m}": None for t in RANKING_TASKS for m in ("auc", "gauc")}}
                          | {"click_auc": metric["auc"], "click_gauc": metric["gauc"]})
        extra_scores["world_utility"] = utility[exposed]
    seed_rows = {s: references + [done[f"{v}@{s}"][0] for v in variants] for s in seeds}
    rows = references + [mean_row(v, [done[f"{v}@{s}"][0] for s in seeds]) for v in variants]
    click = {f"{v}@{s}": done[f"{v}@{s}"][2] for v in variants for s in seeds}
    click |= {f"popularity@{s}": popularity["click"][exposed] for s in seeds}
    click |= {f"ctr_7d@{s}": ctr["click"][exposed] for s in seeds}
    labels, requests = flat.labels["click"][exposed], flat.request_row[exposed]
    claims = check_claims(rows, labels, requests, click, seeds, cfg.resamples, cfg.seed)
    gauc_claims = check_claims(
        rows, labels, requests, click, seeds, cfg.resamples, cfg.seed, users=flat.user_id[exposed]
    )
    histories = {v: {s: done[f"{v}@{s}"][1] for s in seeds} for v in variants}
    test_scores = pa.table(
        {"request": flat.request_row[exposed], "user_id": flat.user_id[exposed],
         "item_id": flat.item_id[exposed], "click": flat.labels["click"][exposed]}
        | {name: click[name] for name in sorted(click)} | extra_scores
    )
    offsets = {v: offset_profile(labels, [click[f"{v}@{s}"] for s in seeds], requests) for v in variants}
    captured = {v: captured_parts(parts, [click[f"{v}@{s}"] for s in seeds]) for v in variants} if parts else {}
    spread = {name: float(values.std()) for name, values in parts.items()}
    flags = anchor_membership(test)[exposed]
    anchors = {v: anchor_signal(labels, [click[f"{v}@{s}"] for s in seeds], requests, flags) for v in variants}
    ih = history_features(test)[exposed]
    history = {v: anchor_signal(labels, [click[f"{v}@{s}"] for s in seeds], requests, ih) for v in variants}
    return AblationResult(rows, seed_rows, histories, claims, gauc_claims, test_scores, offsets, captured, spread,
                          anchors, anchors_alone_auc(labels, requests, flags),
                          history, anchors_alone_auc(labels, requests, ih))


def markdown_offsets(offsets: dict[str, OffsetProfile]) -> str:
    """The request-level section of ablation.md (``onepiece.evaluation.offsets``)."""
    lines = [
        "\n## Request level against order within requests (click)\n",
        "Global AUC also compares candidates of different requests, so it judges each row's per-request "
        "score level as well as its order within a request (all pre-rank uses). *within* is the AUC with "
        "each request's mean logit removed; *AUC at s* multiplies the request level by s (1 = the row as it "
        "is). A calibrated model peaks at s = 1; a peak below 1 means its request level is too "
        "strong against its order within requests. Mean over the training seeds.\n",
        "| variant | within | " + " | ".join(f"AUC at {s:g}" for s in SCALES) + " | best s |",
        "| --- | --- | " + " | ".join("---" for _ in SCALES) + " | --- |",
    ]
    for v, p in offsets.items():
        lines.append(f"| {v} | {p.within_auc:.3f} | " + " | ".join(f"{p.auc_by_scale[s]:.3f}" for s in SCALES)
                     + f" | {p.best_scale:g} |")
    return "\n".join(lines) + "\n"


#: Rows that are not models: what they score with.
REFERENCE_NOTES = {
    "popularity": "item positives on the training days",
    "ctr_7d": "the candidate's 7-day CTR alone (a feature every row reads): the naive ranker",
    "world_utility": "the world's hidden base utility (no set effects, no position): how far the rows are from what the data allows",
}


def markdown_table(rows: list[dict[str, Any]], sizes: dict[str, int] | None = None) -> str:
    """Our measured click AUC/GAUC etc. beside the paper's click AUC, by group."""
    by_name = {r.variant: r for r in ROWS}

    def fmt(x: float | None) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

    lines = [
        "| group | variant | click AUC | click GAUC | A-AUC | A-GAUC | order AUC | order GAUC | paper click AUC | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        spec = by_name.get(r["variant"])
        lines.append(
            f"| {spec.group if spec else 'reference'} | {r['variant']} | {fmt(r['click_auc'])} | "
            f"{fmt(r['click_gauc'])} | {fmt(r['add_to_cart_auc'])} | {fmt(r['add_to_cart_gauc'])} | "
            f"{fmt(r['order_auc'])} | {fmt(r['order_gauc'])} | "
            f"{fmt(spec.paper_click_auc) if spec else '-'} | {spec.note if spec else REFERENCE_NOTES.get(r['variant'], '')} |"
        )
    return "\n".join(lines) + "\n"


#: The paper's claims, as (claim, A, B): "A's click AUC is above B's".
CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("PA helps HSTU (hstu_pa > hstu)", "hstu_pa", "hstu"),
    ("PA helps ReaRec (rearec_pa > rearec)", "rearec_pa", "rearec"),
    ("onePiece beats ReaRec+PA", "onepiece", "rearec_pa"),
    ("onePiece beats DLRM", "onepiece", "dlrm"),
    ("DLRM beats plain HSTU", "dlrm", "hstu"),
    ("side information helps (onepiece > ids only)", "onepiece", "onepiece_ids_only"),
    ("PA helps onePiece (onepiece > no PA)", "onepiece", "onepiece_no_pa"),
    ("longer PA helps (onepiece's PA(30) > pa10)", "onepiece", "onepiece_pa10"),
    ("PA(90) beats PA(30) (pa90 > onepiece)", "onepiece_pa90", "onepiece"),
    ("SD helps (onepiece > no SD)", "onepiece", "onepiece_no_sd"),
    ("bidirectional beats causal (invisible > causal)", "onepiece_invisible", "onepiece_causal"),
    ("visible candidates help (k0 > invisible)", "onepiece_k0", "onepiece_invisible"),
    ("1 reasoning step helps (k1 > k0)", "onepiece_k1", "onepiece_k0"),
    ("3 steps beat 2 (onepiece > k2)", "onepiece", "onepiece_k2"),
    ("progressive beats last-step (onepiece > last_step)", "onepiece", "onepiece_last_step"),
    ("onePiece beats popularity", "onepiece", "popularity"),
    ("onePiece beats the item's 7-day CTR alone (onepiece > ctr_7d)", "onepiece", "ctr_7d"),
    ("DLRM beats the item's 7-day CTR alone (dlrm > ctr_7d)", "dlrm", "ctr_7d"),
    ("sharing the context costs nothing (onepiece_shared vs onepiece: within noise)", "onepiece_shared", "onepiece"),
    ("onePiece beats the LightGBM floor (onepiece > gbdt)", "onepiece", "gbdt"),
    ("DLRM beats the LightGBM floor (dlrm > gbdt)", "dlrm", "gbdt"),
    ("onePiece beats LightGBM without history features (onepiece > gbdt_no_history)", "onepiece", "gbdt_no_history"),
    ("the history helps LightGBM (gbdt > gbdt_no_history)", "gbdt", "gbdt_no_history"),
)


@dataclass(frozen=True)
class Claim:
    text: str
    a: str
    b: str
    holds: bool  # on the seed-averaged click AUC
    difference: Difference | None  # None without test scores (rows only)

    @property
    def verdict(self) -> str:
        return self.difference.verdict if self.difference else ("holds" if self.holds else "fails")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"claim": self.text, "a": self.a, "b": self.b, "holds": self.holds,
                               "verdict": self.verdict}
        if self.difference is not None:
            d = self.difference
            out |= {"delta": d.delta, "ci95": [d.low, d.high], "seed_std": d.seed_std, "per_seed": list(d.per_seed)}
        return out


def check_claims(
    rows: list[dict[str, Any]],
    labels: np.ndarray | None = None,
    requests: np.ndarray | None = None,
    click_scores: dict[str, np.ndarray] | None = None,
    seeds: tuple[int, ...] = (0,),
    resamples: int = 1000,
    seed: int = 0,
    users: np.ndarray | None = None,
) -> list[Claim]:
    """The paper's claims on our click AUC (``rows``), each with its paired bootstrap
    interval when the test scores are given (``click_scores`` by "variant@seed", over
    the exposed test candidates ``labels`` of ``requests``). With ``users`` (the
    candidates' users), the same claims on click GAUC. Claims about rows that were not
    run are left out."""
    auc = {r["variant"]: r["click_gauc" if users is not None else "click_auc"] for r in rows}
    measured = [(t, a, b) for t, a, b in CLAIMS if auc.get(a) is not None and auc.get(b) is not None]
    full = draws = None
    if click_scores is not None and labels is not None and requests is not None:
        wanted = {f"{v}@{s}" for _, a, b in measured for v in (a, b) for s in seeds}
        full, draws = bootstrap_aucs(
            labels, {k: click_scores[k] for k in sorted(wanted)}, requests, resamples, seed, users
        )
    claims = []
    for text, a, b in measured:
        difference = None
        if full is not None and draws is not None:
            difference = paired_difference(full, draws, [f"{a}@{s}" for s in seeds], [f"{b}@{s}" for s in seeds])
        claims.append(Claim(text, a, b, auc[a] > auc[b], difference))
    return claims


GAUC_NOTE = (
    "The same orderings on click GAUC (per-user AUC, impression-weighted): only candidates "
    "shown to the same user are compared, so a row's request-level score offsets, which "
    "global AUC also rewards or punishes, do not count. Pre-rank orders one request's "
    "candidates at a time, so this is the comparison that decides what it ranks.\n"
)


def markdown_claims(claims: list[Claim], seeds: int, metric: str = "AUC", note: str = "") -> str:
    """An orderings section of ablation.md: each claim's difference, interval and verdict."""
    spread = " and the standard deviation of the per-seed differences" if seeds > 1 else ""
    lines = [
        f"\n## The paper's orderings, on our click {metric}\n",
        *([note] if note else []),
        f"d = click {metric}(A) - {metric}(B)" + (f", averaged over {seeds} training seeds" if seeds > 1 else "")
        + "; the 95% interval is a paired bootstrap over test requests (both rows rescored on the "
        "same resampled requests"
        + (", each resample also drawing the training seeds with replacement, so training noise is in it"
           if seeds > 1 else "; one training seed, so training noise is not in it")
        + ")" + spread + ". A claim *holds* or *fails* only when its interval "
        "excludes 0; otherwise the measurement cannot tell the two rows apart (*within noise*).\n",
        "| claim | d | 95% interval | " + ("seed std | " if seeds > 1 else "") + "verdict |",
        "| --- | --- | --- | " + ("--- | " if seeds > 1 else "") + "--- |",
    ]
    for c in claims:
        d = c.difference
        if d is None:
            lines.append(f"| {c.text} | - | - | " + ("- | " if seeds > 1 else "") + f"{c.verdict} |")
            continue
        lines.append(
            f"| {c.text} | {d.delta:+.4f} | {d.low:+.4f} .. {d.high:+.4f} | "
            + (f"{d.seed_std:.4f} | " if seeds > 1 else "")
            + f"{'**' + c.verdict + '**' if c.verdict != 'within noise' else c.verdict} |"
        )
    return "\n".join(lines) + "\n"
