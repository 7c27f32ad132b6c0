"""The publish guard: the checks a staged scores partition must pass before it is served.

The refresh's report measures a run; the guard acts on it. Between ``report`` and
``publish`` it checks, on the staged partition:

- ``coverage``: candidates scored out of the window's candidates;
- ``volume``: requests scored against the same hours a day earlier (a window whose
  candidates arrived only in part), when that partition is published;
- ``defaulted_items`` / ``defaulted_users`` / ``defaulted_queries``: the share of
  candidates (items) or requests (users, queries) whose side features are all the
  contract's defaults, i.e. unknown to the feature store (a feature-source outage);
- ``finite``: NaN or infinite scores and probabilities;
- ``distinct_scores`` and ``score_std``: a degenerate model (a constant output);
- ``drift_ks``: the Kolmogorov-Smirnov distance of the fused score from the same hours
  a day earlier (the report's drift figures), when that partition is published, both
  were scored by the same model version (a rollout changes the distribution on purpose)
  and both hold enough requests. The report's PSI is not used: with the few candidates
  of a small window its empty deciles make it jump (3.9 between two healthy tiny-world
  runs whose KS distance was 0.25);
- ``sample_agreement``: a sample of requests scored in this process with the served
  version's weights agrees with the served probabilities.

A check without what it needs (no previous partition) is recorded as skipped. The
verdict (thresholds, figures, pass/fail, forced) goes into the manifest's ``guard``
field. A refusal raises :class:`GuardRefused` naming every failed check with its figure
and threshold, and copies the report with the verdict (``_guard.json``) to
``<data>/_refused/prerank_refresh/<partition>/`` for the operator; nothing is
published. ``force`` publishes anyway and records that it was forced.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.contract.schemas import ITEM_FEATURES, QUERY_FEATURES, TASKS, USER_FEATURES
from onepiece.errors import UserError

GUARD_FILE = "_guard.json"
_PROBABILITIES = tuple(f"p_{task}" for task in TASKS)


class GuardRefused(UserError):
    """The staged partition failed the publish guard; nothing was published."""


@dataclass(frozen=True)
class GuardConfig:
    """Thresholds of the publish guard. The defaults pass a healthy run of an untrained
    model on the tiny world and refuse the damage the tests inject (docs/operations.md)."""

    min_coverage: float = 0.99  # scored / window candidates
    min_volume_ratio: float = 0.25  # requests / the last published partition's requests
    max_defaulted_share: float = 0.5  # per entity kind
    min_distinct_scores: int = 10  # capped at the number of scored candidates
    min_score_std: float = 1e-6
    max_ks: float = 0.5  # KS distance of the fused score from the last published run's
    #: Fewer requests than this in either run: no drift verdict (candidates of one request
    #: share its context, so a few requests make a noisy distribution: two healthy 6-hour
    #: tiny-world windows of 5 and 8 requests were 0.53 apart).
    min_drift_requests: int = 50
    sample_requests: int = 16  # requests re-scored in process (0: skip the check)
    max_sample_gap: float = 1e-4  # largest |served - in-process| probability
    force: bool = False  # publish even when checks fail (recorded)

    def __post_init__(self) -> None:
        shares = ("min_coverage", "min_volume_ratio", "max_defaulted_share")
        bad = [name for name in shares if not 0.0 <= getattr(self, name) <= 1.0]
        bad += [name for name in ("min_score_std", "max_ks", "max_sample_gap") if getattr(self, name) < 0]
        bad += [name for name in ("min_distinct_scores", "sample_requests", "min_drift_requests") if getattr(self, name) < 0]
        if bad:
            raise UserError(f"publish guard: out-of-range thresholds {bad} in {self}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GuardConfig:
        return config_from_params(cls, params)


def config_from_params(cls: type, params: Mapping[str, Any]) -> Any:
    """A guard config from Params named ``guard_<field>`` (and ``force_publish``); a
    Param that is absent or None keeps the default."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        key = "force_publish" if field.name == "force" else f"guard_{field.name}"
        if params.get(key) is not None:
            values[field.name] = {"bool": bool, "int": int, "float": float}[str(field.type)](params[key])
    return cls(**values)


THRESHOLD_HELP: dict[str, str] = {
    "min_coverage": "least share of the window's candidates scored",
    "min_volume_ratio": "least ratio of requests to the last published partition's",
    "max_defaulted_share": "largest share of candidates/requests whose item/user/query features all defaulted",
    "min_distinct_scores": "fewest distinct fused scores",
    "min_score_std": "least standard deviation of the fused score",
    "max_ks": "largest KS distance of the fused score from the last published partition's (same model version)",
    "min_drift_requests": "fewest requests in both runs for a drift verdict",
    "sample_requests": "requests re-scored in process to compare with served scores (0: skip)",
    "max_sample_gap": "largest |served - in-process| probability on the sample",
}


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None  # None: skipped
    threshold: float
    at_least: bool  # the value must be >= threshold (else <=)
    detail: str = ""

    @property
    def skipped(self) -> bool:
        return self.value is None

    @property
    def passed(self) -> bool:
        if self.value is None:
            return True
        return bool(self.value >= self.threshold if self.at_least else self.value <= self.threshold)

    def describe(self) -> str:
        op = ">=" if self.at_least else "<="
        return f"{self.name} = {self.value:.6g} (must be {op} {self.threshold:g}){': ' + self.detail if self.detail else ''}"

    def to_json(self) -> dict[str, Any]:
        state = "skipped" if self.skipped else ("pass" if self.passed else "fail")
        return {"name": self.name, "value": self.value, "threshold": self.threshold,
                "rule": ">=" if self.at_least else "<=", "state": state, "detail": self.detail}


def _all_default(table: pa.Table, columns: list[str], defaults: list[object]) -> pa.ChunkedArray:
    """True where every column holds its default (null counts as default)."""
    masks = [
        pc.fill_null(pc.equal(table[c], pa.scalar(d, table[c].type)), True)
        for c, d in zip(columns, defaults, strict=True)
    ]
    out = masks[0]
    for mask in masks[1:]:
        out = pc.and_(out, mask)
    return out


def _share(mask: pa.ChunkedArray | pa.Array) -> float | None:
    return None if len(mask) == 0 else round(float(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0) / len(mask), 6)


def defaulted_shares(contexts: pa.Table) -> dict[str, float | None]:
    """Per entity kind, the share of its tokens with every side feature at the default:
    candidates for items, requests for users and queries."""
    cand = pa.table({f.name: pc.list_flatten(contexts[f"cand_{f.name}"]) for f in ITEM_FEATURES})
    return {
        "items": _share(_all_default(cand, [f.name for f in ITEM_FEATURES], [f.default for f in ITEM_FEATURES])),
        "users": _share(_all_default(
            contexts, [f"user_{f.name}" for f in USER_FEATURES], [f.default for f in USER_FEATURES])),
        "queries": _share(_all_default(
            contexts, [f"query_{f.name}" for f in QUERY_FEATURES], [f.default for f in QUERY_FEATURES])),
    }


def sample_requests(contexts: pa.Table, n: int) -> pa.Table:
    """``n`` context rows evenly spread over the request ids in sorted order (the same
    sample on every rerun)."""
    if n <= 0 or contexts.num_rows == 0:
        return contexts.slice(0, 0)
    ordered = contexts.take(pc.sort_indices(contexts["request_id"]))
    picks = np.unique(np.linspace(0, ordered.num_rows - 1, min(n, ordered.num_rows)).round().astype(np.int64))
    return ordered.take(pa.array(picks))


def sample_gap(served: pa.Table, sample: pa.Table, in_process: dict[str, np.ndarray]) -> float:
    """The largest |served - in-process| probability over the sample's candidates."""
    lengths = pc.list_value_length(sample["cand_item_id"]).to_numpy(zero_copy_only=False)
    keys = pa.table({
        "request_id": pa.array(np.repeat(sample["request_id"].to_numpy(zero_copy_only=False), lengths)),
        "item_id": pc.list_flatten(sample["cand_item_id"]),
    } | {f"ref_{name}": pa.array(in_process[name]) for name in _PROBABILITIES})
    joined = keys.join(served.select(["request_id", "item_id", *_PROBABILITIES]), ["request_id", "item_id"],
                       join_type="inner")
    if joined.num_rows != keys.num_rows:
        return float("inf")  # a sampled candidate has no served score
    gaps = [
        np.abs(joined[name].to_numpy().astype(np.float64) - joined[f"ref_{name}"].to_numpy().astype(np.float64))
        for name in _PROBABILITIES
    ]
    return float(max((g.max(initial=0.0) for g in gaps), default=0.0))


@dataclass(frozen=True)
class Previous:
    """The last published partition, as far as the guard compares with it."""

    partition: str
    requests: int
    model_version: int
    day_before: bool  # the same hours a day earlier (else volume and drift are not judged)


def evaluate(
    config: GuardConfig,
    scores: pa.Table,
    contexts: pa.Table,
    figures: dict[str, Any],
    model_version: int,
    previous: Previous | None,
    sampled_gap: float | None,
) -> list[Check]:
    """Every check of the guard on a staged run (``figures``: the report's)."""
    coverage = figures["coverage"]
    drift = figures.get("drift") or {}
    score = scores["score"].to_numpy().astype(np.float64)
    values = np.concatenate([score] + [scores[n].to_numpy().astype(np.float64) for n in _PROBABILITIES])
    shares = defaulted_shares(contexts)
    requests = int(coverage["requests"])
    if previous is None or not previous.day_before:
        # Traffic has a daily cycle: a night window against a day window says nothing.
        volume = ks = None
        volume_detail = ks_detail = "no published partition of the same hours a day earlier"
    else:
        volume = round(requests / previous.requests, 6) if previous.requests else None
        volume_detail = f"{requests} requests; {previous.partition} had {previous.requests}"
        ks, ks_detail = drift.get("score_ks"), f"fused score against {previous.partition}"
        if previous.model_version != model_version:
            ks, ks_detail = None, f"model v{model_version} replaced v{previous.model_version} of {previous.partition}"
        elif min(requests, previous.requests) < config.min_drift_requests:
            ks, ks_detail = None, (f"too few requests for a verdict ({requests} and {previous.requests}; "
                                   f"at least {config.min_drift_requests})")
    checks = [
        Check("coverage", coverage["scored_share"], config.min_coverage, True,
              f"{coverage['scored']} of {coverage['candidates_in_window']} candidates scored"),
        Check("volume", volume, config.min_volume_ratio, True, volume_detail),
    ]
    checks += [
        Check(f"defaulted_{kind}", share, config.max_defaulted_share, False,
              f"share of {'candidates' if kind == 'items' else 'requests'} whose {kind[:-1]} "
              "features are all the contract's defaults (unknown to the feature store)")
        for kind, share in shares.items()
    ]
    finite = score[np.isfinite(score)]  # NaN and inf are the ``finite`` check's, not these
    distinct = int(len(np.unique(finite)))
    checks += [
        Check("finite", float(np.count_nonzero(~np.isfinite(values))), 0, False,
              "NaN or infinite scores and probabilities"),
        Check("distinct_scores", float(distinct), float(min(config.min_distinct_scores, len(score))), True,
              "distinct fused scores"),
        Check("score_std", round(float(np.std(finite)), 9) if len(finite) else None, config.min_score_std, True,
              "standard deviation of the fused score"),
        Check("drift_ks", ks, config.max_ks, False, ks_detail),
        Check("sample_agreement", sampled_gap, config.max_sample_gap, False,
              f"largest |served - in-process| probability over {config.sample_requests} sampled requests"
              if sampled_gap is not None else "not sampled (the served weights are not in the model repository)"),
    ]
    return checks


def verdict(config: Any, checks: list[Check]) -> dict[str, Any]:
    """The guard's record of a run (``config``: a guard config dataclass with ``force``)."""
    failed = [c for c in checks if not c.passed]
    return {
        "passed": not failed,
        "forced": bool(failed) and config.force,
        "failed": [c.name for c in failed],
        "thresholds": dataclasses.asdict(config),
        "checks": [c.to_json() for c in checks],
    }


def refusal_message(partition: str, checks: list[Check], report_dir: Path, table: str = "scores") -> str:
    failed = [c for c in checks if not c.passed]
    lines = "\n".join(f"  - {c.describe()}" for c in failed)
    return (
        f"publish guard refused {table} partition {partition} ({len(failed)} check(s) failed):\n{lines}\n"
        f"Nothing was published; the serving pointer was not moved. Report: {report_dir}. "
        "Rerun with the Param force_publish=true to publish anyway (recorded in the manifest)."
    )


def write_verdict(document: dict[str, Any], directory: Path) -> None:
    (directory / GUARD_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


ROUTE_THRESHOLD_HELP: dict[str, str] = {
    "min_coverage": "least share of the window's requests given items",
    "max_short_share": "largest share of requests given fewer than top_n items",
    "min_distinct_lists": "fewest distinct top-10 lists across requests",
}


@dataclass(frozen=True)
class RouteGuardConfig:
    """Thresholds of the retrieval route's publish guard (``retrieval_refresh``)."""

    min_coverage: float = 0.99  # requests with retrieved items / requests of the window
    max_short_share: float = 0.5  # requests given fewer than top_n items (a small catalogue)
    min_distinct_lists: int = 2  # distinct top-10 lists (capped at the requests): one list for all is degenerate
    force: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RouteGuardConfig:
        return config_from_params(cls, params)


def evaluate_route(config: RouteGuardConfig, rows: pa.Table, requests: int, top_n: int) -> list[Check]:
    """The route guard's checks on a staged retrieval partition of ``requests`` requests."""
    counts = pc.value_counts(rows["request_id"]).field("counts").to_numpy(zero_copy_only=False)
    served = len(counts)
    top10 = rows.filter(pc.less_equal(rows["rank"], 10)).sort_by([("request_id", "ascending"), ("rank", "ascending")])
    # Unthreaded grouping keeps each request's items in rank order.
    grouped = top10.group_by("request_id", use_threads=False).aggregate([("item_id", "list")])
    distinct = len({tuple(v) for v in grouped["item_id_list"].to_pylist()})
    score = rows["score"].to_numpy(zero_copy_only=False).astype(np.float64)
    return [
        Check("coverage", round(served / requests, 6) if requests else None, config.min_coverage, True,
              f"{served} of {requests} requests got items"),
        Check("short_of_top_n", round(float(np.mean(counts < top_n)), 6) if served else None,
              config.max_short_share, False, f"share of requests given fewer than {top_n} items"),
        Check("finite", float(np.count_nonzero(~np.isfinite(score))), 0, False, "NaN or infinite retrieval scores"),
        Check("distinct_lists", float(distinct), float(min(config.min_distinct_lists, served)), True,
              "distinct top-10 item lists across requests"),
    ]
