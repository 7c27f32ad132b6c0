"""Auditing a scores partition against the events that followed it, on the tiny world.

The partition is written here with known predictions (a perfect click head, a constant
order head), so the figures have known values; the rest of the audit is the real code
over the world's real event log.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from onepiece import storage
from onepiece.contract import SCORES_SCHEMA
from onepiece.contract.schemas import TASKS
from onepiece.errors import UserError
from onepiece.evaluation.outcomes import OutcomesConfig, audit_partition, reliability
from onepiece.serving.fusion import rank_within_requests

START = dt.datetime(2026, 11, 3, 6, tzinfo=dt.UTC)  # a logged day of the tiny world, busy hours
END = START + dt.timedelta(hours=12)
PARTITION = "dt=2026-11-03/hour=06"


def _clicked(data: str) -> set[tuple[str, int]]:
    events = storage.read_table(data, "events", [START.date()])
    clicks = events.filter(pc.equal(events["event_type"], "click"))
    return set(zip(clicks["request_id"].to_pylist(), clicks["item_id"].to_pylist(), strict=True))


def _publish_scores(data: str, partition: str, start: dt.datetime, end: dt.datetime) -> pa.Table:
    """A scores partition of the window's candidates: p_click 0.9 on clicked candidates and
    0.1 elsewhere, p_order constant; score = p_click."""
    cands = storage.read_table(data, "candidates", [start.date()])
    ts = cands["request_timestamp"]
    cands = cands.filter(pc.and_(pc.greater_equal(ts, pa.scalar(start, ts.type)),
                                 pc.less(ts, pa.scalar(end, ts.type)))).combine_chunks()
    clicked = _clicked(data)
    hit = np.array([(r, i) in clicked for r, i in zip(cands["request_id"].to_pylist(), cands["item_id"].to_pylist(),
                                                       strict=True)])
    p_click = np.where(hit, 0.9, 0.1).astype(np.float32)
    n = cands.num_rows
    columns = {name: cands[name] for name in ("request_id", "user_id", "query_id", "item_id")}
    columns |= {f"p_{t}": pa.array(np.full(n, 0.5, np.float32)) for t in TASKS} | {"p_click": pa.array(p_click)}
    columns |= {
        "score": pa.array(p_click),
        "rank": pa.array(rank_within_requests(cands["request_id"].chunk(0), p_click, cands["item_id"].to_numpy())),
        "model_name": pa.array(["onepiece_ranker"] * n),
        "model_version": pa.array(np.ones(n, np.int32)),
        "feature_service": pa.array(["onepiece_ranking"] * n),
        "scored_at": pa.array([start] * n, SCORES_SCHEMA.field("scored_at").type),
        "recall_source": cands["recall_source"].cast(pa.string()),
    }
    table = pa.table(columns).select(SCORES_SCHEMA.names).cast(SCORES_SCHEMA)
    with storage.staged_dir(f"{data}/scores/{partition}") as staging:
        storage.write_parquet(table, staging / "part-00000.parquet")
        settings = json.dumps({"start": start.isoformat(), "end": end.isoformat()})
        (staging / "_manifest.json").write_text(json.dumps({"settings": settings}))
    return table


@pytest.fixture
def data(tiny_world, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_world, root)
    return str(root)


def test_the_audit_measures_ranking_calibration_and_the_top_k_cut(data):
    scores = _publish_scores(data, PARTITION, START, END)
    figures = audit_partition(data, PARTITION, OutcomesConfig(attribution=dt.timedelta(hours=6), top_k=20))

    click = figures["tasks"]["click"]
    assert figures["rows"] == scores.num_rows and click["positives"] > 0
    assert click["auc"] == 1.0 and click["gauc"] == 1.0  # the click head knows every click
    rate = click["realised_rate"]
    assert click["mean_predicted"] == pytest.approx(0.1 + 0.8 * rate, abs=1e-6)
    # The figures are rounded to 6 decimals: the rate's rounding alone moves the ratio by 5e-7 / rate.
    assert click["predicted_over_realised"] == pytest.approx(click["mean_predicted"] / rate, rel=2e-6 / rate)
    assert figures["tasks"]["order"]["auc"] == 0.5  # a constant head ranks nothing
    assert sum(b["rows"] for b in click["reliability"]) == scores.num_rows
    assert figures["score"]["click_kept_in_top_k"] == 1.0
    assert 0 < figures["score"]["random_top_k_share"] < 1
    # No retrieval route ran for this window: reported absent, not an error.
    assert figures["retrieval"] == {"partition": f"retrieval/{PARTITION}", "published": False}

    # Impressions are logged at request time: the upstream's top k of every scored request.
    shown = json.loads(Path(data, "world.json").read_text())["config"]["impressions_per_request"]
    assert figures["tasks"]["impression"]["positives"] == shown * figures["requests"]

    out = f"{data}/outcomes/{PARTITION}"
    on_disk = json.loads(open(f"{out}/outcomes.json").read())
    assert on_disk["tasks"]["click"]["auc"] == 1.0 and on_disk["window"]["start"] == START.isoformat()
    assert open(f"{out}/reliability.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    audit_partition(data, PARTITION, OutcomesConfig(attribution=dt.timedelta(hours=6), top_k=20))
    assert json.loads(open(f"{out}/outcomes.json").read()) == on_disk  # a rerun writes the same


def test_only_events_of_scored_candidates_before_the_horizon_count(data):
    scores = _publish_scores(data, PARTITION, START, END)
    events = storage.read_table(data, "events", [START.date()])
    scored = set(zip(scores["request_id"].to_pylist(), scores["item_id"].to_pylist(), strict=True))
    for hours in (0, 6):
        horizon = END + dt.timedelta(hours=hours)
        figures = audit_partition(data, PARTITION, OutcomesConfig(attribution=dt.timedelta(hours=hours)))
        for task in TASKS:
            rows = events.filter(pc.and_(pc.equal(events["event_type"], task),
                                         pc.less(events["event_timestamp"], pa.scalar(horizon, events["event_timestamp"].type))))
            pairs = set(zip(rows["request_id"].to_pylist(), rows["item_id"].to_pylist(), strict=True)) & scored
            assert figures["tasks"][task]["positives"] == len(pairs), (hours, task)


def test_a_horizon_past_the_logged_days_and_a_missing_partition_are_named(data):
    live = dt.datetime(2026, 11, 4, 20, tzinfo=dt.UTC)  # the tiny world's live day, its last logged one
    _publish_scores(data, "dt=2026-11-04/hour=20", live, live + dt.timedelta(hours=1))
    with pytest.raises(UserError, match=r"need the partitions dt=2026-11-05, which are not logged yet"):
        audit_partition(data, "dt=2026-11-04/hour=20", OutcomesConfig(attribution=dt.timedelta(hours=6)))
    assert not Path(data, "outcomes").exists()  # nothing half-written
    with pytest.raises(UserError, match=r"dt=2026-11-03/hour=07 is not a published scores partition"):
        audit_partition(data, "dt=2026-11-03/hour=07")


def test_reliability_bins_cover_every_row_and_average_correctly():
    predicted = np.linspace(0.0, 1.0, 1000)
    realised = (predicted > 0.5).astype(float)
    curve = reliability(predicted, realised, bins=10)
    assert sum(b["rows"] for b in curve) == 1000 and len(curve) == 10
    assert curve[0]["realised"] == 0.0 and curve[-1]["realised"] == 1.0
    assert [b["predicted"] for b in curve] == sorted(b["predicted"] for b in curve)
