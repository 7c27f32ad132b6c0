"""The validator names each malformation: table, file, column and first bad row."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from onepiece.contract import (
    CANDIDATES_SCHEMA,
    EVENTS_SCHEMA,
    ITEMS_SCHEMA,
    ContractError,
    conform,
    validate_manifest,
)

DAY = dt.date(2026, 11, 3)
T0 = dt.datetime(2026, 11, 3, 10, tzinfo=dt.UTC)


def items(**overrides: object) -> pa.Table:
    rows = [
        dict(item_id=i, shop_id=1, category_id=2, price=9.5, ctr_7d=0.1, cvr_7d=0.02,
             sales_30d=3, event_timestamp=T0)
        for i in range(4)
    ]
    for key, value in overrides.items():
        rows[2][key] = value
    return pa.Table.from_pylist(rows)


def events(event_type: str = "click", ts: dt.datetime = T0) -> pa.Table:
    rows = [
        dict(request_id="r1", user_id=1, query_id=2, item_id=3, event_type="impression",
             position=1, event_timestamp=T0),
        dict(request_id="r1", user_id=1, query_id=2, item_id=3, event_type=event_type,
             position=None, event_timestamp=ts),
    ]
    return pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)


def candidates(duplicate: bool = False) -> pa.Table:
    rows = [
        dict(request_id="r1", user_id=1, query_id=2, request_timestamp=T0, item_id=i,
             recall_source="ann")
        for i in (5, 6, 7)
    ]
    if duplicate:
        rows.append(dict(rows[1]))
    return pa.Table.from_pylist(rows, schema=CANDIDATES_SCHEMA)


def test_a_valid_table_conforms_to_the_exact_schema() -> None:
    raw = items().cast(ITEMS_SCHEMA.remove(7).append(pa.field("event_timestamp", pa.timestamp("ns"))))
    out = conform(raw.append_column("extra", pa.array([1, 2, 3, 4])), "items", "f.parquet")
    assert out.schema.equals(ITEMS_SCHEMA)
    assert out.num_rows == 4


def test_missing_column_is_named() -> None:
    with pytest.raises(ContractError) as err:
        conform(items().drop_columns(["price"]), "items", "items/part-0.parquet")
    assert err.value.column == "price"
    assert "items/part-0.parquet" in str(err.value) and "missing" in str(err.value)


def test_wrong_type_is_named() -> None:
    table = items().set_column(3, "price", pa.array(["9.5"] * 4))
    with pytest.raises(ContractError, match=r"table 'items'.*column 'price'.*wrong type string"):
        conform(table, "items", "f")


def test_null_id_names_the_row() -> None:
    with pytest.raises(ContractError) as err:
        conform(items(item_id=None), "items", "f")
    assert (err.value.column, err.value.row) == ("item_id", 2)
    assert "null" in err.value.problem


def test_negative_price_names_the_row_and_value() -> None:
    with pytest.raises(ContractError, match=r"column 'price', row 2: negative price \(-1.0\)"):
        conform(items(price=-1.0), "items", "f")


def test_duplicate_candidate_rows_are_caught() -> None:
    conform(candidates(), "candidates", "c", DAY)
    with pytest.raises(ContractError) as err:
        conform(candidates(duplicate=True), "candidates", "c", DAY)
    assert err.value.row == 3
    assert "duplicate candidate row" in err.value.problem and "'item_id': 6" in err.value.problem


def test_unknown_event_type_is_caught() -> None:
    conform(events(), "events", "e", DAY)
    with pytest.raises(ContractError, match=r"column 'event_type', row 1: unknown event_type.*'wishlist'"):
        conform(events("wishlist"), "events", "e", DAY)


def test_event_after_its_partition_day_is_caught() -> None:
    late = dt.datetime(2026, 11, 4, 0, 0, tzinfo=dt.UTC)
    with pytest.raises(ContractError, match=r"event_timestamp', row 1: timestamp outside its partition dt=2026-11-03"):
        conform(events(ts=late), "events", "events/dt=2026-11-03/p.parquet", DAY)


def test_naive_timestamps_are_read_as_utc() -> None:
    naive = events().set_column(
        6, "event_timestamp", pa.array([T0.replace(tzinfo=None)] * 2, pa.timestamp("us"))
    )
    out = conform(naive, "events", "e", DAY)
    assert out["event_timestamp"][0].as_py() == T0


def test_manifest_shape_is_checked() -> None:
    good = dict(
        table="scores", partition="dt=2026-11-03/hour=10", run_id="r", created_at="2026-11-03T11:00:00Z",
        wall_time_s=1.5, rows={"scores": 10}, inputs=[{"path": "p", "fingerprint": "f"}],
        dropped={}, defaulted={"unknown_item": 2},
        model={"name": "onepiece_ranker", "version": 1, "feature_service": "onepiece_ranker_v1"},
        settings="{}",
    )
    validate_manifest(good)
    with pytest.raises(ContractError, match="'rows'.*missing"):
        validate_manifest({k: v for k, v in good.items() if k != "rows"})
    with pytest.raises(ContractError, match="'wall_time_s'"):
        validate_manifest({**good, "wall_time_s": "slow"})


def test_every_declared_rule_names_a_column_of_its_table_with_a_fitting_type() -> None:
    from onepiece.contract import TABLES

    for spec in TABLES.values():
        for rule in spec.ranges:
            field = spec.schema.field(rule.column)  # KeyError: a rule on no column
            numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
            assert rule.allowed is None or pa.types.is_string(field.type), (spec.name, rule)
            assert (rule.low is None and rule.high is None) or numeric, (spec.name, rule)
        for column in (spec.unique.columns if spec.unique else ()):
            assert not spec.schema.field(column).nullable, (spec.name, column)
        if spec.partition_time:
            assert spec.partitioned_by_day
            assert pa.types.is_timestamp(spec.schema.field(spec.partition_time).type)
        assert set(spec.rule_columns()) <= set(spec.schema.names)


def test_a_rate_outside_0_1_and_an_infinite_score_are_caught() -> None:
    with pytest.raises(ContractError, match=r"column 'ctr_7d', row 2: ctr_7d outside \[0, 1\] \(1.25\)"):
        conform(items(ctr_7d=1.25), "items", "f")
    with pytest.raises(ContractError, match=r"column 'price', row 2: infinite price \(inf\)"):
        conform(items(price=float("inf")), "items", "f")
    with pytest.raises(ContractError, match=r"column 'price', row 2: NaN price"):
        conform(items(price=float("nan")), "items", "f")


def test_a_repeated_snapshot_names_the_later_row() -> None:
    table = pa.concat_tables([items(), items().slice(1, 1)])
    with pytest.raises(ContractError) as err:
        conform(table, "items", "f")
    assert (err.value.column, err.value.row) == ("item_id,event_timestamp", 4)
    assert "duplicate item snapshot" in err.value.problem and "appears 2 times" in err.value.problem
    conform(table, "items", "f", unique=False)  # left to a caller that checks several files
