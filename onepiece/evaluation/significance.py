"""How sure is "A beats B"? Paired cluster-bootstrap intervals for AUC differences.

Two models scored on the same test candidates differ in AUC by a few thousandths on a
test set of a few hundred requests: less than the test set's own sampling noise. The
bootstrap here resamples whole REQUESTS (a request's candidates share a user and a
context, so they are not independent) with replacement, and recomputes every model's AUC
on the same resample, so a difference is measured paired: the noise both models share
cancels. With several training seeds scored on the same candidates, each resample also
draws the seeds with replacement and takes the mean difference over the drawn seeds: a
two-level (hierarchical) bootstrap, so the interval holds the training noise as well as
the test day's. Few seeds make the training part coarse (with 3 seeds a resample sees at
most 3 distinct values), but without it an ordering that flips between seeds could be
called settled from the test day's noise alone.

A metric that is a mean over clusters (NDCG@10 over leave-one-out users: one test target
per user) goes through ``bootstrap_means`` instead, given each cluster's value; its draws
feed the same ``paired_difference``.

Verdicts on a 95% percentile interval of d = AUC(A) - AUC(B):
``holds`` (the interval is above 0), ``fails`` (below 0), ``within noise`` (it spans 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepiece.evaluation import metrics

HOLDS, FAILS, WITHIN_NOISE = "holds", "fails", "within noise"


@dataclass(frozen=True)
class Difference:
    """AUC(A) - AUC(B), seed-averaged, with its bootstrap interval and the seeds' spread."""

    delta: float
    low: float
    high: float
    seed_std: float  # std of the per-seed differences (0 with one seed)
    per_seed: tuple[float, ...]

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return HOLDS
        if self.high < 0:
            return FAILS
        return WITHIN_NOISE


def bootstrap_aucs(
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    clusters: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    users: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """AUC of every named score array on the full data and on ``resamples`` cluster
    resamples (the same resamples for every array): (full, name -> [resamples]).
    With ``users``, GAUC over those users instead of AUC (a user's rows are compared
    only with each other, so request-level score offsets across users do not count)."""
    labels = np.asarray(labels)
    clusters = np.asarray(clusters)
    users = None if users is None else np.asarray(users)
    order = np.argsort(clusters, kind="stable")
    keys, starts, counts = np.unique(clusters[order], return_index=True, return_counts=True)
    rng = np.random.default_rng(seed)

    def measure(rows: np.ndarray | slice, s: np.ndarray) -> float:
        if users is None:
            return metrics.auc(labels[rows], s[rows])
        return metrics.gauc(labels[rows], s[rows], users[rows])

    full = {name: measure(slice(None), s) for name, s in scores.items()}
    draws = {name: np.empty(resamples) for name in scores}
    for r in range(resamples):
        chosen = rng.integers(0, len(keys), len(keys))
        # The rows of the chosen clusters, repeats included.
        lengths = counts[chosen]
        offsets = np.repeat(starts[chosen] - np.cumsum(lengths) + lengths, lengths)
        rows = order[offsets + np.arange(lengths.sum())]
        for name, s in scores.items():
            draws[name][r] = measure(rows, s)
    return full, draws


def bootstrap_means(
    values: dict[str, np.ndarray],
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The mean of every named array of per-cluster values (one value per cluster, the
    same clusters in the same order in every array) on the full data and on
    ``resamples`` cluster resamples, the same resamples for every array:
    (full, name -> [resamples]), the shape ``paired_difference`` reads."""
    arrays = {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}
    lengths = {name: v.shape for name, v in arrays.items()}
    if len(set(lengths.values())) > 1 or any(len(shape) != 1 for shape in lengths.values()):
        raise ValueError(f"per-cluster values must be 1-d arrays of one length, got shapes {lengths}")
    n = next(iter(lengths.values()))[0] if arrays else 0
    if n == 0:
        raise ValueError("bootstrap_means needs at least one array with at least one cluster")
    rng = np.random.default_rng(seed)
    full = {name: float(v.mean()) for name, v in arrays.items()}
    draws = {name: np.empty(resamples) for name in arrays}
    for r in range(resamples):
        chosen = rng.integers(0, n, n)
        for name, v in arrays.items():
            draws[name][r] = v[chosen].mean()
    return full, draws


def paired_difference(
    full: dict[str, float],
    draws: dict[str, np.ndarray],
    a: list[str],
    b: list[str],
    level: float = 0.95,
    seed: int = 0,
) -> Difference:
    """AUC(a) - AUC(b) averaged over seeds: ``a[i]`` and ``b[i]`` name the two models'
    score arrays of seed i in ``bootstrap_aucs``'s output (or their per-cluster values
    in ``bootstrap_means``'s: then the difference of those means).

    With several seeds the bootstrap is two-level: each resample also draws the training
    seeds with replacement, so the interval holds the training noise as well as the test
    day's (a hierarchical bootstrap). With one seed it holds the test day's noise only.
    """
    return pooled_difference([seed_resampled_difference(full, draws, a, b, seed)], level)


@dataclass(frozen=True)
class ResampledDifference:
    """One split's A - B: each seed's difference on the full data, and the two-level
    bootstrap's seed-averaged difference on every resample ([resamples], NaN where a
    resample had one class only)."""

    per_seed: tuple[float, ...]
    resampled: np.ndarray


def seed_resampled_difference(
    full: dict[str, float], draws: dict[str, np.ndarray], a: list[str], b: list[str], seed: int = 0
) -> ResampledDifference:
    """``paired_difference``'s draws before the interval (same arguments)."""
    per_seed = tuple(full[x] - full[y] for x, y in zip(a, b, strict=True))
    by_seed = np.stack([draws[x] - draws[y] for x, y in zip(a, b, strict=True)])  # [seeds, resamples]
    n_seeds, resamples = by_seed.shape
    picked = np.random.default_rng(seed).integers(0, n_seeds, size=(resamples, n_seeds))
    return ResampledDifference(per_seed, by_seed[picked, np.arange(resamples)[:, None]].mean(axis=1))


def pooled_difference(splits: list[ResampledDifference], level: float = 0.95) -> Difference:
    """The mean over independent splits (test days, worlds) of each split's seed-averaged
    difference. The splits share nothing, so the pooled resample i is the mean of every
    split's resample i; with one split this is ``paired_difference``. ``per_seed`` and
    ``seed_std`` run over every split's seeds."""
    if not splits:
        raise ValueError("pooled_difference needs at least one split")
    lengths = {len(s.resampled) for s in splits}
    if len(lengths) > 1:
        raise ValueError(f"every split needs the same number of resamples, got {sorted(lengths)}")
    resampled = np.mean([s.resampled for s in splits], axis=0)
    resampled = resampled[~np.isnan(resampled)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail]) if resampled.size else (np.nan, np.nan)
    per_seed = tuple(d for s in splits for d in s.per_seed)
    return Difference(
        delta=float(np.mean([np.mean(s.per_seed) for s in splits])),
        low=float(low),
        high=float(high),
        seed_std=float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
        per_seed=per_seed,
    )
