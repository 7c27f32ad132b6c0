"""The gbdt ablation row: LightGBM on hand features of the same context rows.

Before generative rankers, pre-rank stages ran gradient-boosted trees on hand features
(section 7 of the model spec): this row is that floor. It reads the same fit / valid /
test split of context rows as the model rows, through ``hand_features`` (IH matches by
item, shop and category with recency, PA membership, item statistics, price ratios),
and trains one binary LightGBM model per task head:

- impression on every exposed candidate plus at most ``TrainConfig.max_unexposed``
  unexposed ones per request (the model rows' sampling, ``training.groups``);
- click, add_to_cart and order on the exposed candidates only: that is where they are
  observed, and where the ablation measures them (``ranking``).

Each model stops early on its task's AUC over the ``valid`` requests (same candidates
as above); with one class only there, it keeps all ``n_estimators`` trees, and a task
whose fit labels hold one class only scores its base rate. Seeded by the training seed,
``num_threads`` = ``TrainConfig.threads``, deterministic: the row gives the same numbers
in any worker. ``evaluate_gbdt`` returns the metrics document of ``evaluate_ranking``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from onepiece.contract import TASKS
from onepiece.evaluation.hand_features import FEATURE_NAMES, HandFeatureConfig, hand_features
from onepiece.evaluation.metrics_file import metrics_document
from onepiece.evaluation.ranking import flat_candidates, ranking_metrics


#: The hand features that read the user's history or the query's anchors: the IH
#: matches and recency, the price against the IH, and PA membership. The
#: ``gbdt_no_history`` row leaves them out, to show what the candidate, query and price
#: features alone allow and what the history adds to a strong ranker.
HISTORY_FEATURES: tuple[str, ...] = tuple(
    n for n in FEATURE_NAMES if n.startswith(("ih_", "pa_")) or n.endswith(("_ih_mean", "_ih_median"))
)


@dataclass(frozen=True)
class GBDTConfig:
    """LightGBM settings (ours: common defaults for a few hundred thousand rows)."""

    n_estimators: int = 500  # boosting rounds at most; early stopping picks the best
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    #: Row and feature subsampling per tree: what the training seed changes.
    bagging_fraction: float = 0.8
    feature_fraction: float = 0.8
    early_stopping_rounds: int = 50
    features: HandFeatureConfig = field(default_factory=HandFeatureConfig)
    #: Hand features left out by name (to measure what one input adds).
    drop_features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("n_estimators", "num_leaves", "min_data_in_leaf", "early_stopping_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"GBDTConfig.{name} must be at least 1")
        if not 0 < self.bagging_fraction <= 1 or not 0 < self.feature_fraction <= 1:
            raise ValueError("GBDTConfig: bagging_fraction and feature_fraction must be in (0, 1]")
        unknown = set(self.drop_features) - set(FEATURE_NAMES)
        if unknown:
            raise ValueError(f"GBDTConfig.drop_features: unknown features {sorted(unknown)}")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(n for n in FEATURE_NAMES if n not in self.drop_features)

    def params(self, seed: int, threads: int) -> dict[str, Any]:
        return {
            "objective": "binary", "metric": "auc", "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves, "min_data_in_leaf": self.min_data_in_leaf,
            "bagging_fraction": self.bagging_fraction, "bagging_freq": 1 if self.bagging_fraction < 1 else 0,
            "feature_fraction": self.feature_fraction, "seed": seed, "num_threads": threads,
            "deterministic": True, "force_row_wise": True, "verbosity": -1,
        }


@dataclass
class GBDT:
    """One booster per task (None: a task scored at its constant ``base_rate``)."""

    config: GBDTConfig
    boosters: dict[str, Any]
    base_rate: dict[str, float]
    history: dict[str, Any]

    def features(self, rows: pa.Table) -> np.ndarray:
        x, names = hand_features(rows, self.config.features)
        return x[:, [names.index(n) for n in self.config.feature_names]]

    def score(self, rows: pa.Table) -> dict[str, np.ndarray]:
        """Probabilities per task for every flat candidate of ``rows``: task -> [N] float32."""
        x = self.features(rows)
        out = {}
        for task in TASKS:
            booster = self.boosters[task]
            if booster is None:
                out[task] = np.full(len(x), self.base_rate[task], dtype=np.float32)
            else:
                out[task] = booster.predict(x, num_iteration=booster.best_iteration or None).astype(np.float32)
        return out

    def importance(self, task: str = "click") -> dict[str, float]:
        """Total gain of each feature's splits in ``task``'s model, largest first."""
        booster = self.boosters[task]
        if booster is None:
            return {n: 0.0 for n in self.config.feature_names}
        gain = booster.feature_importance("gain", iteration=booster.best_iteration or None)
        pairs = sorted(zip(self.config.feature_names, gain.tolist()), key=lambda p: -p[1])
        return {n: float(g) for n, g in pairs}


def _examples(
    labels: dict[str, np.ndarray], x: np.ndarray, task: str, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of ``task``'s population: all (kept) candidates for impression,
    the exposed ones for the later tasks."""
    mask = (labels["impression"] > 0) if task != "impression" else np.ones(len(x), dtype=bool)
    if keep is not None:
        mask &= keep
    return x[mask], labels[task][mask].astype(np.float64)


def fit_gbdt(config: GBDTConfig, train_config: Any, fit: pa.Table, valid: pa.Table) -> GBDT:
    """Train the four task models on ``fit``, stopping early on ``valid``. Reads ``seed``,
    ``threads`` and ``max_unexposed`` of ``train_config`` (a ``TrainConfig``)."""
    import lightgbm as lgb

    from onepiece.training.groups import sample_candidates

    params = config.params(train_config.seed, train_config.threads)
    names = list(config.feature_names)
    model = GBDT(config, {}, {}, {"eval_metric": "valid AUC per task", "best_iteration": {}, "best_eval": {}})
    x_fit, x_valid = model.features(fit), model.features(valid)
    fit_labels, valid_labels = flat_candidates(fit).labels, flat_candidates(valid).labels
    keep = sample_candidates(fit, np.random.default_rng(train_config.seed), train_config.max_unexposed)
    for task in TASKS:
        x, y = _examples(fit_labels, x_fit, task, keep if task == "impression" else None)
        xv, yv = _examples(valid_labels, x_valid, task)
        model.base_rate[task] = float(y.mean()) if len(y) else 0.0
        model.boosters[task] = None
        if len(np.unique(y)) < 2:
            model.history["best_iteration"][task], model.history["best_eval"][task] = 0, None
            continue
        train_set = lgb.Dataset(x, label=y, feature_name=names, free_raw_data=True)
        if len(np.unique(yv)) == 2:
            valid_set = lgb.Dataset(xv, label=yv, reference=train_set)
            booster = lgb.train(params, train_set, config.n_estimators, valid_sets=[valid_set],
                                callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)])
            best_eval = float(booster.best_score["valid_0"]["auc"])
        else:  # no validation AUC to stop on
            booster = lgb.train(params, train_set, config.n_estimators)
            best_eval = None
        model.boosters[task] = booster
        model.history["best_iteration"][task] = int(booster.best_iteration or booster.current_iteration())
        model.history["best_eval"][task] = best_eval
    model.history["click_importance"] = model.importance("click")
    return model


def evaluate_gbdt(model: GBDT, rows: pa.Table) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ranking metrics document and its scores, as ``evaluate.evaluate_ranking``."""
    scores = model.score(rows)
    return metrics_document(ranking=ranking_metrics(flat_candidates(rows), scores)), scores


def markdown_importance(importance: dict[str, float], top: int = 12) -> str:
    """The ablation.md section: the click model's largest features by share of gain."""
    total = sum(importance.values()) or 1.0
    lines = [
        "\n## What the gbdt row's click model splits on\n",
        "Share of the total gain of the click model's splits, by hand feature "
        "(`onepiece/evaluation/hand_features.py`; all of them in gbdt_importance.json). "
        "Mean over the training seeds.\n",
        "| feature | gain share |",
        "| --- | --- |",
    ]
    for name, gain in list(importance.items())[:top]:
        lines.append(f"| {name} | {gain / total:.3f} |")
    return "\n".join(lines) + "\n"


def mean_importance(by_seed: list[dict[str, float]]) -> dict[str, float]:
    """The seeds' feature gains averaged, largest first."""
    names = list(by_seed[0])
    mean = {n: float(np.mean([g[n] for g in by_seed])) for n in names}
    return dict(sorted(mean.items(), key=lambda p: -p[1]))
