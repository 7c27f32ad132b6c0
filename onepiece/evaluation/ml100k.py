"""A real-data check: onePiece in retrieval mode vs a SASRec-style model on MovieLens-100k.

Both models are built in our framework from the same tokenizer and data path: every
sample is a context row (TRAINING_SCHEMA) that the model's own ``tensorize`` reads.

- onePiece (retrieval): IH = the user's previous movies with their genre combination as
  the item's category (side information), SD = a user token from age bucket, gender and
  occupation (the contract's age_bucket / gender / region_id slots) plus an empty query
  token; bidirectional attention, K = 2 block reasoning steps, r_k = mean(LN(B_k)).
- SASRec-style: causal attention over item ids only, no SD, no reasoning; the last
  position's hidden state is the user vector.

Training: for every user, prefixes of the training part of the sequence predict the next
movie (at most ``samples_per_user`` random prefixes per epoch); the loss is the model
package's retrieval loss (BCE over the target and ``negatives`` random movies, plus the
bidirectional in-batch contrastive term). The in-batch negatives are the other samples'
targets, drawn by popularity, so their logits are corrected by log q, q = the movie's
share of the training interactions (``sampling_correction``); uncorrected, the term
taught both models to rank popular movies down and held them at the popularity baseline
on the validation split (issue 6). Early stopping on validation NDCG@10 within at most
``epochs`` epochs. Each model trains with ``seeds`` training seeds (seed, seed + 1, ...) on
the same split; every (model, seed) is one job, ``workers`` of them at once, one process
each, with the same numbers as one by one.

Evaluation: leave-one-out (``ml100k_data``), full ranking over all movies, the user's
previous movies masked out (as RecBole does), ties pessimistic; HR@10, NDCG@10, MRR@10,
the mean over seeds and per seed. Whether onePiece's NDCG@10 beats SASRec's is a paired
bootstrap over the evaluated users (each has one test target, so NDCG@10 is the mean of
per-user gains), each resample also drawing the seeds with replacement
(``significance.bootstrap_means`` and ``paired_difference``, as the ablation's orderings).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from onepiece.contract import EVENT_TYPE_CODE, ITEM_FEATURES, TASKS, TRAINING_SCHEMA
from onepiece.evaluation import metrics
from onepiece.evaluation.ml100k_data import ML100k, LeaveOneOut
from onepiece.evaluation.significance import Difference, bootstrap_means, paired_difference
from onepiece.training.batches import Batch

CUTOFF = 10
AS_OF = dt.datetime(1998, 5, 1, tzinfo=dt.UTC)  # after the last ml-100k rating


@dataclass(frozen=True)
class ML100kConfig:
    """Training budget and sizes for the MovieLens check (all ours)."""

    seed: int = 0  # the first training seed (the split has no randomness)
    #: Training seeds per model (seed, seed + 1, ...), all scored on the same test users.
    seeds: int = 1
    #: User resamples of the paired bootstrap behind the NDCG@10 comparison's interval.
    resamples: int = 1000
    #: With at most 6 epochs the best validation epoch was the 5th or 6th in every
    #: configuration of issue 6, so the cap, not early stopping, could end training.
    epochs: int = 12
    batch_size: int = 256
    lr: float = 5e-3
    #: In-batch contrastive temperature (ours): 1.0 learned faster than the world's
    #: retrieval default 0.1 on the validation split, with unnormalised user/item vectors.
    temperature: float = 1.0
    weight_decay: float = 0.01
    ih_max_len: int = 50
    samples_per_user: int = 30
    negatives: int = 16
    d_model: int = 64
    patience: int = 2
    #: Subtract log q(item) from the in-batch user->item logits (``losses.clip_loss``),
    #: q = the item's share of the training interactions (+1 smoothing). The in-batch
    #: negatives are the batch's targets, drawn by popularity: uncorrected, the term
    #: pushes popular movies down and both models stayed at the popularity baseline on
    #: the validation split (issue 6; README "Evaluation runs").
    sampling_correction: bool = True
    threads: int = 1  # torch threads per model
    #: (model, seed) jobs trained at once, one process each (2 = two jobs on a 2-core machine).
    workers: int = 2
    max_users: int | None = None  # evaluate on the first N users only (tests)


def model_configs(data: ML100k, cfg: ML100kConfig) -> dict[str, Any]:
    """The two ModelConfigs, sized to the dataset (no hash collisions on ids)."""
    from onepiece.model import variant_config

    sizes = dict(
        d_model=cfg.d_model,
        ih_max_len=cfg.ih_max_len,
        item_vocab=data.n_items + 2,
        user_vocab=data.n_users + 2,
        category_vocab=int(data.item_genre.max()) + 2,
        shop_vocab=2,
        query_vocab=2,
        piece_vocab=2,
        user_side_vocab=64,
        use_pa=False,  # MovieLens has no queries, so no query anchors
        retrieval_temperature=cfg.temperature,
        # item ids are nearly all MovieLens says of an item (genre is the only side
        # feature): retrieval there is learning them, so no id dropout
        id_dropout=0.0,
    )
    onepiece = dataclasses.replace(variant_config("onepiece_retrieval", **sizes), name="onepiece_ml100k")
    sasrec = dataclasses.replace(
        onepiece,
        name="sasrec_ml100k",
        causal=True,
        reasoning="last_token",
        num_steps=0,
        use_sd=False,
        use_side_info=False,
    )
    return {"onepiece": onepiece, "sasrec": sasrec}


# ---------------------------------------------------------------------------
# Samples as context rows
# ---------------------------------------------------------------------------


def _item_segment(prefix: str, ids: np.ndarray, offsets: np.ndarray, data: ML100k) -> dict:
    """Parallel list columns of one item segment: ids, genre as category, defaults else."""
    off = pa.array(offsets.astype(np.int32))
    columns = {f"{prefix}_item_id": pa.ListArray.from_arrays(off, pa.array(ids, pa.int64()))}
    for f in ITEM_FEATURES:
        if f.name == "category_id":
            values = pa.array(data.item_genre[ids], pa.int64())
        else:
            values = pa.array(np.full(len(ids), f.default), f.type)
        columns[f"{prefix}_{f.name}"] = pa.ListArray.from_arrays(off, values)
    return columns


def sample_rows(
    data: ML100k,
    users: np.ndarray,
    history: list[np.ndarray],
    candidates: list[np.ndarray],
    ih_max_len: int,
) -> pa.Table:
    """One TRAINING_SCHEMA row per sample: user, IH = last ``ih_max_len`` of ``history``,
    candidates with label 1 on the first one (the target) and 0 on the rest."""
    n = len(users)
    hist = [h[-ih_max_len:] for h in history]
    h_len = np.array([len(h) for h in hist])
    h_off = np.concatenate([[0], np.cumsum(h_len)])
    h_ids = np.concatenate(hist) if n else np.zeros(0, np.int64)
    c_len = np.array([len(c) for c in candidates])
    c_off = np.concatenate([[0], np.cumsum(c_len)])
    c_ids = np.concatenate(candidates) if n else np.zeros(0, np.int64)
    is_target = np.zeros(len(c_ids), dtype=np.int8)
    is_target[c_off[:-1][c_len > 0]] = 1
    # A random negative that happens to be the target is a positive too.
    first = np.repeat(c_ids[c_off[:-1]] if n else np.zeros(0, np.int64), c_len)
    is_target |= (c_ids == first).astype(np.int8)

    columns: dict[str, Any] = {
        "request_id": pa.array([f"u{u}-{i}" for i, u in enumerate(users)], pa.string()),
        "user_id": pa.array(users, pa.int64()),
        "query_id": pa.array(np.zeros(n, np.int64)),
        "as_of": pa.array([AS_OF] * n, TRAINING_SCHEMA.field("as_of").type),
        "user_age_bucket": pa.array(data.user_age[users].astype(np.int32)),
        "user_gender": pa.array(data.user_gender[users].astype(np.int32)),
        "user_region_id": pa.array(data.user_occupation[users], pa.int64()),
        "query_query_text": pa.array([""] * n, pa.string()),
        "query_popularity_7d": pa.array(np.zeros(n, np.float32)),
        "ih_event_type": pa.ListArray.from_arrays(
            pa.array(h_off.astype(np.int32)),
            pa.array(np.full(len(h_ids), EVENT_TYPE_CODE["click"], np.int8)),
        ),
        "pa_group": pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.int8())),
    }
    columns |= _item_segment("ih", h_ids, h_off, data)
    columns |= _item_segment("pa", np.zeros(0, np.int64), np.zeros(n + 1, np.int64), data)
    columns |= _item_segment("cand", c_ids, c_off, data)
    labels = pa.ListArray.from_arrays(pa.array(c_off.astype(np.int32)), pa.array(is_target))
    columns |= {f"label_{task}": labels for task in TASKS}
    arrays = [
        columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in TRAINING_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=TRAINING_SCHEMA)


def training_samples(
    split: LeaveOneOut, data: ML100k, cfg: ML100kConfig, rng: np.random.Generator
) -> pa.Table:
    """One epoch of (prefix -> next movie) samples from every user's training part."""
    users, history, cands = [], [], []
    for user, seq in zip(split.users, split.train):
        positions = np.arange(1, len(seq))
        if len(positions) > cfg.samples_per_user:
            positions = np.sort(rng.choice(positions, cfg.samples_per_user, replace=False))
        for j in positions:
            users.append(user)
            history.append(seq[:j])
            negatives = rng.integers(1, data.n_items + 1, cfg.negatives)
            cands.append(np.concatenate([[seq[j]], negatives]))
    order = rng.permutation(len(users))
    return sample_rows(
        data,
        np.array(users, dtype=np.int64)[order],
        [history[i] for i in order],
        [cands[i] for i in order],
        cfg.ih_max_len,
    )


# ---------------------------------------------------------------------------
# Full ranking
# ---------------------------------------------------------------------------


def item_catalogue(data: ML100k) -> pa.Table:
    """Every movie with the contract's item feature columns (genre as category_id)."""
    ids = np.arange(1, data.n_items + 1, dtype=np.int64)
    columns = {"item_id": pa.array(ids)}
    for f in ITEM_FEATURES:
        if f.name == "category_id":
            columns[f.name] = pa.array(data.item_genre[ids], pa.int64())
        else:
            columns[f.name] = pa.array(np.full(len(ids), f.default), f.type)
    return pa.table(columns)


def full_ranking_ranks(
    model, data: ML100k, users: np.ndarray, history: list[np.ndarray], targets: np.ndarray
) -> np.ndarray:
    """0-based rank of each target among all movies, history masked, ties pessimistic."""
    from onepiece.model.retrieval import user_vectors
    from onepiece.model import export_item_vectors

    ids, z = export_item_vectors(model, item_catalogue(data))  # ids 1..n, [n, d]
    rows = sample_rows(data, users, history, [np.array([t]) for t in targets], model.config.ih_max_len)
    r = user_vectors(model, rows)  # [U, d]
    scores = r.astype(np.float64) @ z.T.astype(np.float64)  # [U, n]
    h_rows = np.repeat(np.arange(len(users)), [len(h) for h in history])
    h_cols = (np.concatenate(history) if len(history) else np.zeros(0, np.int64)) - 1
    target_cols = targets - 1
    keep = h_cols != target_cols[h_rows]  # never mask the target itself
    scores[h_rows[keep], h_cols[keep]] = -np.inf
    return metrics.target_rank(scores, target_cols)


def ranking_scores(ranks: np.ndarray) -> dict[str, float]:
    return {
        f"hr@{CUTOFF}": metrics.hr_at_k(ranks, CUTOFF),
        f"ndcg@{CUTOFF}": metrics.ndcg_at_k(ranks, CUTOFF),
        f"mrr@{CUTOFF}": metrics.mrr_at_k(ranks, CUTOFF),
    }


def _eval_users(split: LeaveOneOut, cfg: ML100kConfig) -> np.ndarray:
    n = len(split.users) if cfg.max_users is None else min(cfg.max_users, len(split.users))
    return np.arange(n)


def validation_ranks(model, data: ML100k, split: LeaveOneOut, cfg: ML100kConfig) -> np.ndarray:
    idx = _eval_users(split, cfg)
    return full_ranking_ranks(
        model, data, split.users[idx], [split.train[i] for i in idx], split.valid_target[idx]
    )


def holdout_ranks(model, data: ML100k, split: LeaveOneOut, cfg: ML100kConfig) -> np.ndarray:
    idx = _eval_users(split, cfg)
    history = [np.append(split.train[i], split.valid_target[i]) for i in idx]
    return full_ranking_ranks(model, data, split.users[idx], history, split.test_target[idx])


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def item_log_q(data: ML100k, split: LeaveOneOut) -> np.ndarray:
    """log q per item id (index 0 unused): the item's share of the training parts' items,
    each count + 1 so that no item has q = 0."""
    counts = np.ones(data.n_items + 1)
    for seq in split.train:
        np.add.at(counts, seq, 1)
    return np.log(counts / counts.sum())


def epoch_batches(
    model_config, data: ML100k, split: LeaveOneOut, cfg: ML100kConfig, epoch: int
) -> Iterator[Batch]:
    """The training batches of one epoch; the same (seed, epoch) gives the same batches."""
    import torch

    from onepiece.model import tensorize
    from onepiece.model.inputs import candidate_values

    samples = training_samples(split, data, cfg, np.random.default_rng([cfg.seed, epoch]))
    tcfg = dataclasses.replace(model_config, group_size=0)  # the pool is one sequence
    log_q = torch.from_numpy(item_log_q(data, split).astype(np.float32)) if cfg.sampling_correction else None
    # Batches stay random slices (no length bucketing): the in-batch contrastive term
    # takes its negatives from the batch, so grouping similar prefix lengths would
    # change the objective, not only the padding.
    for start in range(0, samples.num_rows, cfg.batch_size):
        sub = samples.slice(start, cfg.batch_size)
        inputs = tensorize(sub, tcfg)
        labels = {t: candidate_values(sub, f"label_{t}", inputs) for t in TASKS}
        # Padding slots (id -1) read index 0; only real slots' log q is ever used.
        q = None if log_q is None else log_q[inputs.cand_item_cat[..., 0].clamp(min=0)]
        yield Batch(inputs, labels, q)


def train_retrieval(
    model_config,
    data: ML100k,
    split: LeaveOneOut,
    cfg: ML100kConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
):
    """Train one model; returns (best model, history with loss per step and val NDCG)."""
    from onepiece.training.fit import FitSettings, Score, fit

    def evaluate(model) -> Score:
        ndcg = ranking_scores(validation_ranks(model, data, split, cfg))[f"ndcg@{CUTOFF}"]
        return Score(f"val_ndcg@{CUTOFF}", ndcg)

    settings = FitSettings(
        epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, patience=cfg.patience,
        seed=cfg.seed, threads=cfg.threads,
    )
    result = fit(
        model_config,
        settings,
        lambda epoch: epoch_batches(model_config, data, split, cfg, epoch),
        evaluate,
        on_epoch=on_epoch,
    )
    return result.model, result.history


def train_and_test(
    model_config,
    data: ML100k,
    split: LeaveOneOut,
    cfg: ML100kConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train one model with seed ``cfg.seed`` and rank the test targets: (the evaluated
    users' test ranks, history)."""
    model, history = train_retrieval(model_config, data, split, cfg, on_epoch)
    return holdout_ranks(model, data, split, cfg), history


# ---------------------------------------------------------------------------
# Both models, every seed
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ML100kResult:
    """Every (model, seed)'s test ranks and training history."""

    seeds: tuple[int, ...]
    users: np.ndarray  # [U] the evaluated users' ids, in the ranks' order
    ranks: dict[str, dict[int, np.ndarray]]  # model -> seed -> [U] 0-based test ranks
    histories: dict[str, dict[int, dict[str, Any]]]  # model -> seed -> fit history


def training_seeds(cfg: ML100kConfig) -> tuple[int, ...]:
    return tuple(range(cfg.seed, cfg.seed + cfg.seeds))


def job_name(model: str, seed: int) -> str:
    return f"{model}@{seed}"


def run(
    data: ML100k,
    split: LeaveOneOut,
    cfg: ML100kConfig,
    on_epoch: Callable[[str, dict[str, Any]], None] | None = None,
) -> ML100kResult:
    """Train and test both models with every training seed on the same split.

    Every (model, seed) is one job of ``training.parallel.run_jobs``: ``cfg.workers`` jobs
    train at once, one process each, with the same numbers as one by one;
    ``on_epoch("model@seed", record)`` is called here as epochs finish.
    """
    from onepiece.training.parallel import run_jobs

    if cfg.seeds < 1:
        raise ValueError(f"ML100kConfig.seeds must be at least 1, got {cfg.seeds}")
    seeds = training_seeds(cfg)
    configs = model_configs(data, cfg)
    jobs = {
        job_name(name, seed): (mc, data, split, dataclasses.replace(cfg, seed=seed))
        for seed in seeds
        for name, mc in configs.items()
    }
    done = run_jobs(train_and_test, jobs, cfg.workers, on_event=on_epoch)
    return ML100kResult(
        seeds=seeds,
        users=split.users[_eval_users(split, cfg)],
        ranks={n: {s: done[job_name(n, s)][0] for s in seeds} for n in configs},
        histories={n: {s: done[job_name(n, s)][1] for s in seeds} for n in configs},
    )


def model_scores(result: ML100kResult) -> dict[str, dict[str, Any]]:
    """HR/NDCG/MRR@10 per model: the mean over seeds, and every seed's under "per_seed"."""
    out: dict[str, dict[str, Any]] = {}
    for name, by_seed in result.ranks.items():
        per_seed = {s: ranking_scores(ranks) for s, ranks in by_seed.items()}
        means = {m: float(np.mean([scores[m] for scores in per_seed.values()])) for m in next(iter(per_seed.values()))}
        out[name] = means | {"per_seed": {str(s): scores for s, scores in per_seed.items()}}
    return out


def ndcg_difference(result: ML100kResult, a: str, b: str, resamples: int = 1000, seed: int = 0) -> Difference:
    """NDCG@10(a) - NDCG@10(b) averaged over seeds, with its paired bootstrap interval
    over the evaluated users, each resample also drawing the seeds with replacement."""
    gains = {
        job_name(name, s): metrics.ndcg_gains(result.ranks[name][s], CUTOFF)
        for name in (a, b) for s in result.seeds
    }
    full, draws = bootstrap_means(gains, resamples, seed)
    return paired_difference(
        full, draws, [job_name(a, s) for s in result.seeds], [job_name(b, s) for s in result.seeds], seed=seed
    )


def comparison(result: ML100kResult, cfg: ML100kConfig) -> dict[str, Any]:
    """The metrics.json "comparison": onePiece's NDCG@10 against the SASRec-style model's."""
    d = ndcg_difference(result, "onepiece", "sasrec", cfg.resamples, cfg.seed)
    return {
        "claim": f"onePiece's NDCG@{CUTOFF} is above the SASRec-style model's",
        "metric": f"ndcg@{CUTOFF}", "a": "onepiece", "b": "sasrec",
        "delta": d.delta, "ci95": [d.low, d.high], "verdict": d.verdict,
        "seed_std": d.seed_std, "per_seed": {str(s): x for s, x in zip(result.seeds, d.per_seed, strict=True)},
        "users": int(len(result.users)), "resamples": cfg.resamples,
    }


def ranks_table(result: ML100kResult) -> pa.Table:
    """Every (model, seed)'s test rank of every evaluated user: user, model, seed, rank."""
    parts = [(name, s, ranks) for name, by_seed in result.ranks.items() for s, ranks in by_seed.items()]
    n = len(result.users)
    return pa.table({
        "user": pa.array(np.tile(result.users, len(parts)), pa.int64()),
        "model": pa.array([name for name, _, _ in parts for _ in range(n)], pa.string()),
        "seed": pa.array(np.repeat([s for _, s, _ in parts], n), pa.int64()),
        "rank": pa.array(np.concatenate([r for _, _, r in parts]) if parts else [], pa.int64()),
    })
