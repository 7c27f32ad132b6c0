"""Is row A ahead of row B? Paired intervals between the rows of finished ablation runs.

``onepiece ablation`` keeps every row's click scores of the exposed test candidates in
``test_scores.parquet`` (one column ``row@seed`` per training seed). Two rows scored on
the same candidates compare paired, whether they come from one run or from two runs on
the same split (the same ``--trainset``, different ``--set`` or ``--lr``): the bootstrap
of ``significance`` resamples test requests and seeds, and rescores both rows on each
resample. Runs on several splits (other worlds, other test days) pool: the difference is
the mean of the splits' differences, and its interval pools their resamples, so "A is
within noise of B" can be asked of more than one world at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from onepiece.errors import UserError
from onepiece.evaluation.significance import (
    Difference,
    ResampledDifference,
    bootstrap_aucs,
    pooled_difference,
    seed_resampled_difference,
)

SCORES_FILE = "test_scores.parquet"
#: What makes two runs' test candidates the same: the rows, in order.
KEY_COLUMNS = ("request", "user_id", "item_id", "click")
METRICS = ("auc", "gauc")


@dataclass(frozen=True)
class RowScores:
    """One row's click scores in one run: the test candidates and a score array per seed."""

    path: Path
    row: str
    keys: pa.Table
    by_seed: dict[str, np.ndarray]


def read_row(run: Path, row: str) -> RowScores:
    """The row's scores in run directory ``run`` (an ``onepiece ablation --out``)."""
    path = Path(run) / SCORES_FILE
    if not path.exists():
        raise UserError(f"{path}: not found; a run directory written by `onepiece ablation` holds it")
    table = pq.read_table(path)
    missing = [c for c in KEY_COLUMNS if c not in table.column_names]
    if missing:
        raise UserError(f"{path}: no column(s) {missing}; is it an ablation's {SCORES_FILE}?")
    prefix = f"{row}@"
    by_seed = {c[len(prefix):]: table[c].to_numpy() for c in table.column_names if c.startswith(prefix)}
    if not by_seed:
        rows = sorted({c.split("@")[0] for c in table.column_names if "@" in c})
        raise UserError(f"{path}: no row {row!r}; it holds {rows}")
    return RowScores(path, row, table.select(list(KEY_COLUMNS)), by_seed)


@dataclass(frozen=True)
class SplitResult:
    """A against B on one split: each metric's seed means and the paired difference."""

    a: RowScores
    b: RowScores
    means: dict[str, tuple[float, float]]  # metric -> (A, B), mean over seeds
    draws: dict[str, ResampledDifference]  # metric -> the bootstrap's differences

    def difference(self, metric: str) -> Difference:
        return pooled_difference([self.draws[metric]])

    def to_json(self) -> dict[str, Any]:
        return {
            "a": str(self.a.path), "b": str(self.b.path), "seeds": len(self.a.by_seed),
            **{m: {"a": self.means[m][0], "b": self.means[m][1], **_difference_json(self.difference(m))}
               for m in METRICS},
        }


def compare_split(a: RowScores, b: RowScores, resamples: int = 1000, seed: int = 0) -> SplitResult:
    """A - B on the test candidates both rows scored (the same candidates, the same order,
    as many seeds each; seeds pair in sorted order, as ``onepiece ablation`` pairs them)."""
    if not a.keys.equals(b.keys):
        raise UserError(
            f"{a.path} and {b.path} hold different test candidates; compare runs on one split "
            "(the same --trainset and --max-test-requests)"
        )
    if len(a.by_seed) != len(b.by_seed):
        raise UserError(
            f"{a.row} has {len(a.by_seed)} seed(s) in {a.path}, {b.row} {len(b.by_seed)} in {b.path}; "
            "the paired bootstrap needs as many of each"
        )
    seeds_a, seeds_b = sorted(a.by_seed, key=_seed_order), sorted(b.by_seed, key=_seed_order)
    scores = {f"a@{s}": a.by_seed[s] for s in seeds_a} | {f"b@{s}": b.by_seed[s] for s in seeds_b}
    names_a, names_b = [f"a@{s}" for s in seeds_a], [f"b@{s}" for s in seeds_b]
    labels, requests = a.keys["click"].to_numpy(), a.keys["request"].to_numpy()
    means, draws = {}, {}
    for metric in METRICS:
        users = a.keys["user_id"].to_numpy() if metric == "gauc" else None
        full, boot = bootstrap_aucs(labels, scores, requests, resamples, seed, users)
        means[metric] = (float(np.mean([full[n] for n in names_a])), float(np.mean([full[n] for n in names_b])))
        draws[metric] = seed_resampled_difference(full, boot, names_a, names_b, seed)
    return SplitResult(a, b, means, draws)


@dataclass(frozen=True)
class Comparison:
    """Row A against row B on one or more splits, and pooled over them."""

    a_row: str
    b_row: str
    splits: list[SplitResult]

    def pooled(self, metric: str) -> Difference:
        return pooled_difference([s.draws[metric] for s in self.splits])

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a_row, "b": self.b_row,
            "splits": [s.to_json() for s in self.splits],
            "pooled": {m: _difference_json(self.pooled(m)) for m in METRICS},
        }


def compare_runs(
    a_row: str, b_row: str, a_runs: list[Path], b_runs: list[Path], resamples: int = 1000, seed: int = 0
) -> Comparison:
    """Row ``a_row`` of each ``a_runs[i]`` against ``b_row`` of ``b_runs[i]`` (the i-th
    runs share a split), and their pooled difference."""
    if not a_runs or len(a_runs) != len(b_runs):
        raise UserError(f"need one B run per A run, got {len(a_runs)} A and {len(b_runs)} B run(s)")
    splits = [
        compare_split(read_row(ra, a_row), read_row(rb, b_row), resamples, seed)
        for ra, rb in zip(a_runs, b_runs, strict=True)
    ]
    return Comparison(a_row, b_row, splits)


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), seed) if seed.isdigit() else (1 << 30, seed)


def _difference_json(d: Difference) -> dict[str, Any]:
    return {"difference": d.delta, "low": d.low, "high": d.high, "seed_std": d.seed_std, "verdict": d.verdict}
