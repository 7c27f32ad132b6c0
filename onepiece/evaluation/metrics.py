"""Ranking and retrieval metrics, vectorised with numpy.

Conventions (the ones the paper's tables use, made explicit):

- ``auc``: the probability that a random positive scores above a random negative, ties
  counted as one half (Mann-Whitney U from average ranks). NaN when one class is absent.
- ``gauc``: the AUC of each user's own samples, averaged with each user weighted by the
  number of impressions (samples) evaluated for that user. Users whose samples hold only
  one class have no AUC and are skipped, as is standard (they carry no ranking signal).
- Top-K metrics over a full score matrix ``[Q, N]`` break ties PESSIMISTICALLY: a target
  that ties with a non-target is placed after it, so a constant scorer earns nothing.
  ``recall_at_k`` averages hits / number of targets over queries that have a target;
  ``hr_at_k`` / ``ndcg_at_k`` / ``mrr_at_k`` assume one target per query (leave-one-out)
  and take its 0-based rank r: HR = [r < K], NDCG = 1 / log2(r + 2) if r < K,
  MRR = 1 / (r + 1) if r < K.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike


def _average_ranks_by_group(scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of ``scores`` within each group, ties averaged.

    Returns (order, ranks): ``order`` sorts by (group, score) and ``ranks[j]`` is the rank
    of the sample ``order[j]`` inside its group.
    """
    order = np.lexsort((scores, groups))
    s, g = scores[order], groups[order]
    n = len(s)
    # A run is a maximal block of equal (group, score): its members share an average rank.
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (s[1:] != s[:-1]) | (g[1:] != g[:-1])
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], n)  # exclusive
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = g[1:] != g[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    run_id = np.cumsum(new_run) - 1
    mean_pos = (run_start + run_end - 1) / 2.0  # 0-based global position of the run's middle
    ranks = mean_pos[run_id] - group_start + 1.0
    return order, ranks


def _check(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y, s


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC with ties as 0.5; NaN when there are no positives or no negatives."""
    y, s = _check(labels, scores)
    per_group, _, _ = _group_auc(y, s, np.zeros(len(y), dtype=np.int64))
    return float(per_group[0]) if len(per_group) else float("nan")


def _group_auc(
    y: np.ndarray, s: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group AUC (NaN for one-class groups), sample counts and the group keys."""
    if len(y) == 0:
        empty = np.zeros(0)
        return empty, empty, empty
    keys, inverse = np.unique(groups, return_inverse=True)
    order, ranks = _average_ranks_by_group(s, inverse)
    y_sorted, g_sorted = y[order], inverse[order]
    n_groups = len(keys)
    n = np.bincount(g_sorted, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(g_sorted, weights=y_sorted, minlength=n_groups)
    n_neg = n - n_pos
    pos_rank_sum = np.bincount(g_sorted, weights=ranks * y_sorted, minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = pos_rank_sum - n_pos * (n_pos + 1) / 2.0
        per_group = np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)
    return per_group, n, keys


def gauc(labels: ArrayLike, scores: ArrayLike, users: ArrayLike) -> float:
    """Impression-weighted mean of per-user AUC; one-class users skipped; NaN if none left."""
    y, s = _check(labels, scores)
    u = np.asarray(users).ravel()
    if u.shape != y.shape:
        raise ValueError(f"users and labels differ in length: {u.shape} vs {y.shape}")
    per_user, weight, _ = _group_auc(y, s, u)
    valid = ~np.isnan(per_user)
    if not valid.any():
        return float("nan")
    return float(np.average(per_user[valid], weights=weight[valid]))


def _pessimistic_order(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-row column order by descending score, targets after non-targets on ties."""
    return np.lexsort((targets, -scores), axis=-1)


def _as_matrix(scores: ArrayLike, targets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets).astype(bool)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"scores and targets must be matching [Q, N] matrices: {s.shape}, {t.shape}")
    return s, t


def recall_at_k(scores: ArrayLike, targets: ArrayLike, k: int) -> float:
    """Mean over queries with >= 1 target of (targets in the top k) / (number of targets).

    scores, targets: [Q, N] (targets boolean). NaN when no query has a target.
    """
    s, t = _as_matrix(scores, targets)
    n_targets = t.sum(axis=1)
    has = n_targets > 0
    if not has.any():
        return float("nan")
    s, t, n_targets = s[has], t[has], n_targets[has]
    order = _pessimistic_order(s, t)[:, :k]  # [Q, k]
    hits = np.take_along_axis(t, order, axis=1).sum(axis=1)  # [Q]
    return float(np.mean(hits / n_targets))


def target_rank(scores: ArrayLike, target: ArrayLike) -> np.ndarray:
    """0-based rank of each query's single target column, ties pessimistic.

    scores: [Q, N]; target: [Q] column indices.
    """
    s = np.asarray(scores, dtype=np.float64)
    idx = np.asarray(target, dtype=np.int64)
    if s.ndim != 2 or idx.shape != (s.shape[0],):
        raise ValueError(f"scores must be [Q, N] and target [Q]: {s.shape}, {idx.shape}")
    target_score = s[np.arange(len(idx)), idx][:, None]  # [Q, 1]
    # Every other column scoring >= the target is ranked ahead of it.
    ahead = (s >= target_score).sum(axis=1) - 1
    return ahead


def hr_at_k(ranks: ArrayLike, k: int) -> float:
    """Hit rate: share of queries whose target rank is < k."""
    r = np.asarray(ranks)
    return float(np.mean(r < k))


def ndcg_gains(ranks: ArrayLike, k: int) -> np.ndarray:
    """Each query's NDCG with one target: 1/log2(rank + 2) for ranks < k, else 0."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)


def ndcg_at_k(ranks: ArrayLike, k: int) -> float:
    """NDCG with one target: the mean of ``ndcg_gains``."""
    return float(np.mean(ndcg_gains(ranks, k)))


def mrr_at_k(ranks: ArrayLike, k: int) -> float:
    """Mean reciprocal rank, cut at k."""
    r = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(np.where(r < k, 1.0 / (r + 1.0), 0.0)))
