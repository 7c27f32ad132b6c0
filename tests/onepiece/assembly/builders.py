"""Hand-built contract tables for the assembly unit tests."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from onepiece.contract import (
    CANDIDATES_SCHEMA,
    EVENTS_SCHEMA,
    ITEMS_SCHEMA,
    QUERIES_SCHEMA,
    USERS_SCHEMA,
)

T0 = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)


def at(hours: float) -> dt.datetime:
    """T0 shifted by ``hours`` (negative = before T0)."""
    return T0 + dt.timedelta(hours=hours)


def events(rows: list[tuple]) -> pa.Table:
    """rows: (user_id, query_id, item_id, event_type, time[, request_id])."""
    out = []
    for r in rows:
        user, query, item, kind, ts = r[:5]
        out.append(
            {
                "request_id": r[5] if len(r) > 5 else f"r-{user}-{ts.isoformat()}",
                "user_id": user,
                "query_id": query,
                "item_id": item,
                "event_type": kind,
                "position": 1 if kind == "impression" else None,
                "event_timestamp": ts,
            }
        )
    return pa.Table.from_pylist(out, schema=EVENTS_SCHEMA)


def candidates(requests: list[tuple]) -> pa.Table:
    """requests: (request_id, user_id, query_id, time, [item ids])."""
    out = [
        {
            "request_id": rid,
            "user_id": user,
            "query_id": query,
            "request_timestamp": ts,
            "item_id": item,
            "recall_source": "test",
        }
        for rid, user, query, ts, items in requests
        for item in items
    ]
    return pa.Table.from_pylist(out, schema=CANDIDATES_SCHEMA)


def requests_table(rows: list[tuple]) -> pa.Table:
    """rows: (request_id, user_id, query_id, as_of)."""
    return pa.Table.from_pylist(
        [{"request_id": r, "user_id": u, "query_id": q, "as_of": t} for r, u, q, t in rows],
        schema=pa.schema(
            [
                ("request_id", pa.string()),
                ("user_id", pa.int64()),
                ("query_id", pa.int64()),
                ("as_of", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )


def item_snapshots(rows: list[tuple]) -> pa.Table:
    """rows: (item_id, price, time); other features derived from the id."""
    return pa.Table.from_pylist(
        [
            {
                "item_id": i, "shop_id": i % 7, "category_id": i % 5, "price": p,
                "ctr_7d": 0.1, "cvr_7d": 0.01, "sales_30d": 3, "event_timestamp": ts,
            }
            for i, p, ts in rows
        ],
        schema=ITEMS_SCHEMA,
    )


def user_snapshots(rows: list[tuple]) -> pa.Table:
    """rows: (user_id, age_bucket, time)."""
    return pa.Table.from_pylist(
        [{"user_id": u, "age_bucket": a, "gender": 1, "region_id": 3, "event_timestamp": ts}
         for u, a, ts in rows],
        schema=USERS_SCHEMA,
    )


def query_snapshots(rows: list[tuple]) -> pa.Table:
    """rows: (query_id, popularity, time)."""
    return pa.Table.from_pylist(
        [{"query_id": q, "query_text": f"q{q}", "popularity_7d": p, "event_timestamp": ts}
         for q, p, ts in rows],
        schema=QUERIES_SCHEMA,
    )
