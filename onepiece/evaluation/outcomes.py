"""What happened after a refresh: a published scores partition against the events that followed.

A refresh at T writes scores for the requests of [T, T + window) from what was known
before T; the users' impressions, clicks, carts and orders of those requests are logged
later. Once they are, ``audit_partition`` joins them to the partition (by request and
item, events within ``attribution`` after the window's end) and measures, per task head:

- ranking quality: AUC and GAUC (per user, candidate-weighted) of ``p_<task>``;
- calibration: the mean predicted probability against the realised rate, and a
  reliability curve over quantile bins of the prediction (the training sampling of the
  paper, clicked sessions and random candidate groups, inflates the raw head outputs;
  model_publish's ``calibrate`` task maps them back, fitted on data labelled by the same
  rule, ``label_outcomes``: this is where a user sees how close they come);
- for the fused pre-rank score: AUC against click and order, and the share of clicked
  and ordered candidates the pre-rank kept in its top ``top_k`` of each request, beside
  what a random cut of the same size keeps;
- for the retrieval route, when it published the partition of the same window: the
  share of the window's clicked and ordered items it retrieved, beside the upstream
  candidates' share (``retrieval``; ``published: false`` when it did not).

The audit never changes the partition (it is identical to what the scheduled run
wrote); it is published beside it as ``outcomes/dt=.../hour=.../`` (``outcomes.json``,
``reliability.png``), atomically, and a rerun writes the same figures.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from onepiece import storage
from onepiece.assembly.sql import connect
from onepiece.contract.schemas import TASKS
from onepiece.errors import UserError
from onepiece.evaluation.metrics import auc, gauc

OUTCOMES_JSON = "outcomes.json"
RELIABILITY_PNG = "reliability.png"


@dataclass(frozen=True)
class OutcomesConfig:
    attribution: dt.timedelta = dt.timedelta(hours=6)  # events this long after the window count
    top_k: int = 20  # the pre-rank's cut: how many candidates per request go on
    bins: int = 10  # quantile bins of the reliability curve


def _window(partition_dir: Path) -> tuple[dt.datetime, dt.datetime]:
    """The scored window [start, end), from the partition's manifest."""
    manifest_path = partition_dir / "_manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"{partition_dir} is not a published scores partition (no _manifest.json)")
    settings = json.loads(json.loads(manifest_path.read_text())["settings"])
    return dt.datetime.fromisoformat(settings["start"]), dt.datetime.fromisoformat(settings["end"])


def horizon_days(start: dt.datetime, horizon: dt.datetime) -> list[dt.date]:
    """The events partitions (days) that hold every event from ``start`` up to ``horizon``."""
    last = (horizon - dt.timedelta(microseconds=1)).date()
    return [start.date() + dt.timedelta(days=i) for i in range((last - start.date()).days + 1)]


def missing_event_days(data: str, start: dt.datetime, horizon: dt.datetime) -> list[dt.date]:
    """The days of ``horizon_days`` not logged yet: the outcomes are complete when empty."""
    return sorted(set(horizon_days(start, horizon)) - set(storage.list_days(data, "events")))


def _event_days(data: str, start: dt.datetime, horizon: dt.datetime) -> list[dt.date]:
    """The events partitions the horizon needs; every one of them must be there."""
    missing = missing_event_days(data, start, horizon)
    if missing:
        raise UserError(
            f"{data}/events: the outcomes up to {horizon.isoformat()} need the partitions "
            f"{', '.join(storage.day_partition(d) for d in missing)}, which are not logged yet"
        )
    return horizon_days(start, horizon)


def label_outcomes(
    data: str, rows: pa.Table, start: dt.datetime, horizon: dt.datetime, order_by: str = "request_id, item_id"
) -> pa.Table:
    """``rows`` (one per scored candidate, with ``request_id`` and ``item_id``) with one
    realised 0/1 label ``y_<task>`` per task: the candidate had that event between
    ``start`` (the window's start) and ``horizon`` (the window's end plus attribution).
    The audit and the calibration fit (model_publish) both label through this rule."""
    events = storage.read_table(data, "events", _event_days(data, start, horizon),
                                ["request_id", "item_id", "event_type", "event_timestamp"])
    flags = ", ".join(f"coalesce(bool_or(e.event_type = '{t}'), false) as y_{t}" for t in TASKS)
    con = connect(threads=2, rows=rows, events=events)
    return con.sql(
        f"""
        select s.*, {flags}
        from rows s left join events e
          on e.request_id = s.request_id and e.item_id = s.item_id
         and e.event_timestamp >= $start and e.event_timestamp < $horizon
        group by all
        order by {", ".join(f"s.{c.strip()}" for c in order_by.split(","))}
        """,
        params={"start": start, "horizon": horizon},
    ).to_arrow_table()


def labelled_scores(data: str, partition: str, config: OutcomesConfig) -> tuple[pa.Table, dict[str, Any]]:
    """The partition's rows with one realised 0/1 label per task, and the window facts."""
    final = Path(data) / "scores" / partition
    start, end = _window(final)
    horizon = end + config.attribution
    scores = storage.read_partition(final, "scores").select(
        ["request_id", "user_id", "item_id", "score", "rank", *(f"p_{t}" for t in TASKS)])
    labelled = label_outcomes(data, scores, start, horizon, order_by="request_id, rank")
    window = {"start": start.isoformat(), "end": end.isoformat(), "horizon": horizon.isoformat()}
    return labelled, window


def _round(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 6)


def reliability(predicted: np.ndarray, realised: np.ndarray, bins: int) -> list[dict[str, float]]:
    """Mean prediction and realised rate over quantile bins of the prediction."""
    if predicted.size == 0:
        return []
    edges = np.unique(np.quantile(predicted, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, max(len(edges) - 2, 0))
    curve = []
    for b in np.unique(which):
        mask = which == b
        curve.append({"predicted": _round(predicted[mask].mean()), "realised": _round(realised[mask].mean()),
                      "rows": int(mask.sum())})
    return curve


def _kept_share(labels: np.ndarray, rank: np.ndarray, top_k: int) -> float | None:
    positives = labels.sum()
    return None if positives == 0 else _round(labels[rank <= top_k].sum() / positives)


def outcome_figures(rows: pa.Table, config: OutcomesConfig) -> dict[str, Any]:
    """The audit's figures from labelled rows (see the module docstring)."""
    users = rows["user_id"].to_numpy()
    rank = rows["rank"].to_numpy()
    tasks = {}
    for task in TASKS:
        y = rows[f"y_{task}"].to_numpy(zero_copy_only=False).astype(np.int8)
        p = rows[f"p_{task}"].to_numpy().astype(np.float64)
        mean_p, rate = p.mean() if p.size else np.nan, y.mean() if y.size else np.nan
        tasks[task] = {
            "positives": int(y.sum()),
            "auc": _round(auc(y, p)),
            "gauc": _round(gauc(y, p, users)),
            "mean_predicted": _round(mean_p),
            "realised_rate": _round(rate),
            "predicted_over_realised": _round(mean_p / rate) if rate else None,
            "reliability": reliability(p, y, config.bins),
        }
    score = rows["score"].to_numpy().astype(np.float64)
    per_request = rows.group_by("request_id").aggregate([("item_id", "count")])["item_id_count"].to_numpy()
    random_keep = float(np.minimum(per_request, config.top_k).sum() / max(per_request.sum(), 1))
    fused = {"top_k": config.top_k, "random_top_k_share": _round(random_keep)}
    for task in ("click", "order"):
        y = rows[f"y_{task}"].to_numpy(zero_copy_only=False).astype(np.int8)
        fused[f"{task}_auc"] = _round(auc(y, score))
        fused[f"{task}_kept_in_top_k"] = _kept_share(y, rank, config.top_k)
    return {"rows": rows.num_rows, "requests": int(per_request.size), "tasks": tasks, "score": fused}


def _plot(figures: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 3.6))
    for ax, task in zip(axes, TASKS, strict=True):
        curve = figures["tasks"][task]["reliability"]
        pred = [c["predicted"] for c in curve]
        real = [c["realised"] for c in curve]
        hi = max(pred + real + [1e-3])
        ax.plot([0, hi], [0, hi], color="grey", lw=1, ls="--", label="calibrated")
        ax.plot(pred, real, marker="o", label="model")
        auc_value = figures["tasks"][task]["auc"]
        ax.set_title(f"p_{task}  (AUC {'-' if auc_value is None else f'{auc_value:.3f}'})")
        ax.set_xlabel("mean predicted")
        ax.set_ylabel("realised rate")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def audit_partition(data: str, partition: str, config: OutcomesConfig = OutcomesConfig()) -> dict[str, Any]:
    """Measure a published scores partition against what followed; publish the figures
    under ``<data>/outcomes/<partition>/`` atomically and return them."""
    from onepiece.retrieval.outcomes import partition_outcomes

    rows, window = labelled_scores(data, partition, config)
    figures = {"partition": partition, "window": window,
               "attribution_hours": config.attribution.total_seconds() / 3600} | outcome_figures(rows, config)
    span = dt.datetime.fromisoformat(window["end"]) - dt.datetime.fromisoformat(window["start"])
    figures["retrieval"] = partition_outcomes(data, partition, span, config.attribution)
    with storage.staged_dir(Path(data) / "outcomes" / partition) as staging:
        (staging / OUTCOMES_JSON).write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
        _plot(figures, staging / RELIABILITY_PNG, f"scores/{partition}: reliability against realised outcomes")
    return figures
