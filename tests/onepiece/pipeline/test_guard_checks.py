"""The publish guard's checks on small hand-made runs (the real runs: tests/dags/test_publish_guard.py)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from onepiece.contract.schemas import ITEM_FEATURES, QUERY_FEATURES, TASKS, USER_FEATURES
from onepiece.errors import UserError
from onepiece.pipeline import refresh
from onepiece.pipeline.guard import GuardConfig, Previous, defaulted_shares, evaluate, sample_gap, verdict

REQUESTS, PER_REQUEST = 60, 5


def _contexts(unknown_items: bool = False) -> pa.Table:
    rng = np.random.default_rng(0)
    columns = {"request_id": [f"r{i:03d}" for i in range(REQUESTS)],
               "cand_item_id": [list(range(i * PER_REQUEST, (i + 1) * PER_REQUEST)) for i in range(REQUESTS)]}
    for f in ITEM_FEATURES:
        value = f.default if unknown_items else (3 if f.categorical else 1.5)
        columns[f"cand_{f.name}"] = pa.array([[value] * PER_REQUEST] * REQUESTS, pa.list_(f.type))
    for f in USER_FEATURES:
        columns[f"user_{f.name}"] = pa.array(rng.integers(0, 3, REQUESTS), f.type)
    for f in QUERY_FEATURES:
        columns[f"query_{f.name}"] = pa.array(["q"] * REQUESTS if f.type == pa.string() else [0.5] * REQUESTS, f.type)
    return pa.table(columns)


def _scores(score: np.ndarray | None = None) -> pa.Table:
    n = REQUESTS * PER_REQUEST
    score = np.random.default_rng(1).uniform(0.1, 0.9, n) if score is None else score
    columns = {"request_id": np.repeat([f"r{i:03d}" for i in range(REQUESTS)], PER_REQUEST),
               "item_id": np.arange(n), "score": score.astype(np.float32)}
    columns |= {f"p_{t}": score.astype(np.float32) for t in TASKS}
    return pa.table(columns)


def _figures(scores: pa.Table, ks: float | None = 0.05) -> dict:
    return {"coverage": {"scored": scores.num_rows, "candidates_in_window": scores.num_rows,
                         "scored_share": 1.0, "requests": REQUESTS},
            "drift": {"score_ks": ks} if ks is not None else None}


def _states(checks) -> dict[str, str]:
    return {c.name: c.to_json()["state"] for c in checks}


DAY_BEFORE = Previous("dt=2026-11-02/hour=06", REQUESTS, 1, True)


def test_a_healthy_run_passes_every_check():
    scores = _scores()
    checks = evaluate(GuardConfig(), scores, _contexts(), _figures(scores), 1, DAY_BEFORE, 1e-7)
    assert set(_states(checks).values()) == {"pass"}, _states(checks)
    document = verdict(GuardConfig(), checks)
    assert (document["passed"], document["forced"], document["failed"]) == (True, False, [])
    assert json.loads(json.dumps(document)) == document  # the manifest records it as JSON


@pytest.mark.parametrize(
    ("damage", "failed"),
    [
        ("constant", {"distinct_scores", "score_std"}),
        ("nan", {"finite"}),
        ("unknown_items", {"defaulted_items"}),
        ("most_missing", {"volume"}),
        ("drift", {"drift_ks"}),
        ("served_differs", {"sample_agreement"}),
        ("few_scored", {"coverage"}),
    ],
)
def test_each_damage_fails_its_check_and_only_it(damage, failed):
    n = REQUESTS * PER_REQUEST
    score = {"constant": np.full(n, 0.3), "nan": np.r_[np.nan, np.linspace(0.1, 0.9, n - 1)]}.get(damage)
    scores = _scores(score)
    figures = _figures(scores, ks=0.7 if damage == "drift" else 0.05)
    if damage == "few_scored":
        figures["coverage"] |= {"candidates_in_window": 2 * n, "scored_share": 0.5}
    previous = Previous(DAY_BEFORE.partition, 5 * REQUESTS if damage == "most_missing" else REQUESTS, 1, True)
    checks = evaluate(GuardConfig(), scores, _contexts(damage == "unknown_items"), figures, 1, previous,
                      0.01 if damage == "served_differs" else 0.0)
    assert {name for name, state in _states(checks).items() if state == "fail"} == failed
    document = verdict(GuardConfig(), checks)
    assert not document["passed"] and not document["forced"] and set(document["failed"]) == failed
    assert verdict(GuardConfig(force=True), checks)["forced"]


def test_volume_and_drift_are_judged_only_against_the_same_hours_a_day_earlier_and_one_model():
    scores = _scores()
    figures = _figures(scores, ks=0.9)
    cases = {
        None: "no published partition of the same hours",
        Previous("dt=2026-11-03/hour=00", 10 * REQUESTS, 1, False): "no published partition of the same hours",
        Previous(DAY_BEFORE.partition, REQUESTS, 2, True): "model v1 replaced v2",
        Previous(DAY_BEFORE.partition, 10, 1, True): "too few requests",
    }
    for previous, reason in cases.items():
        checks = {c.name: c for c in evaluate(GuardConfig(), scores, _contexts(), figures, 1, previous, None)}
        assert checks["drift_ks"].skipped and reason in checks["drift_ks"].detail
        assert checks["sample_agreement"].skipped
    # The last case still judges the volume: 60 requests against 10.
    assert checks["volume"].value == 6.0 and checks["volume"].passed


def test_defaulted_shares_count_tokens_whose_features_are_all_defaults():
    contexts = pa.concat_tables([_contexts(), _contexts(unknown_items=True)])
    assert defaulted_shares(contexts) == {"items": 0.5, "users": 0.0, "queries": 0.0}


def test_sample_gap_joins_served_rows_by_request_and_item():
    scores = _scores()
    sample = _contexts().slice(3, 2)
    reference = {f"p_{t}": scores.slice(15, 10)[f"p_{t}"].to_numpy() + 1e-3 for t in TASKS}
    assert sample_gap(scores, sample, reference) == pytest.approx(1e-3, abs=1e-6)
    assert sample_gap(scores.slice(0, 16), sample, reference) == float("inf")  # a candidate was not served


def test_thresholds_come_from_params_and_are_range_checked():
    config = GuardConfig.from_params({"guard_max_ks": 0.2, "guard_sample_requests": 4, "force_publish": True,
                                      "guard_min_coverage": None})
    assert (config.max_ks, config.sample_requests, config.force, config.min_coverage) == (0.2, 4, True, 0.99)
    with pytest.raises(UserError, match="min_coverage"):
        GuardConfig(min_coverage=1.5)


def test_the_comparison_partition_is_the_same_hours_a_day_earlier_when_published(tmp_path):
    for partition in ("dt=2026-11-02/hour=06", "dt=2026-11-03/hour=00"):
        (tmp_path / "scores" / partition).mkdir(parents=True)
        (tmp_path / "scores" / partition / refresh.MANIFEST_NAME).write_text("{}")
    assert refresh.previous_partition(str(tmp_path), "dt=2026-11-03/hour=06") == "dt=2026-11-02/hour=06"
    assert refresh.previous_partition(str(tmp_path), "dt=2026-11-03/hour=01") == "dt=2026-11-03/hour=00"
    assert refresh.previous_partition(str(tmp_path), "dt=2026-11-02/hour=06") is None


def _route_rows(lists: list[list[int]]) -> pa.Table:
    request = [f"r{i}" for i, items in enumerate(lists) for _ in items]
    item = [x for items in lists for x in items]
    rank = [r + 1 for items in lists for r in range(len(items))]
    return pa.table({"request_id": request, "item_id": pa.array(item, pa.int64()),
                     "rank": pa.array(rank, pa.int32()), "score": pa.array(np.linspace(1, 0, len(item)), pa.float32())})


def test_the_route_guard_refuses_missing_requests_short_lists_and_one_list_for_all():
    from onepiece.pipeline.guard import RouteGuardConfig, evaluate_route

    def failed(rows, requests, top_n=3):
        return {c.name for c in evaluate_route(RouteGuardConfig(), rows, requests, top_n) if not c.passed}

    healthy = _route_rows([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert failed(healthy, 3) == set()
    assert failed(healthy, 4) == {"coverage"}
    assert failed(_route_rows([[1, 2], [4, 5], [7, 8, 9]]), 3) == {"short_of_top_n"}
    assert failed(_route_rows([[1, 2, 3]] * 3), 3) == {"distinct_lists"}
    assert RouteGuardConfig.from_params({"guard_max_short_share": 0.9, "force_publish": True}) == RouteGuardConfig(
        max_short_share=0.9, force=True)
