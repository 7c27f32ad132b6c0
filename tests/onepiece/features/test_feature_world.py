"""The feature repository on a generated world: its snapshot tables validate, and the
live day's candidates get point-in-time side features (checked against a plain join)."""

from __future__ import annotations

import datetime as dt
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from feast_fixtures import copy_repo

from onepiece.features import ENTITY_KINDS, EntityRequest, FeatureRepoConfig, side_features
from onepiece.features.registry import apply
from onepiece.storage import list_days, read_table

TTL = {  # features/feature_views.py
    "items": dt.timedelta(days=2),
    "users": dt.timedelta(days=365),
    "queries": dt.timedelta(days=2),
}


def plain_join(
    snapshots: pa.Table, id_column: str, ids: list[int], as_of: dt.datetime, ttl: dt.timedelta
) -> dict[int, dict]:
    """Latest snapshot per id strictly before as_of and within ttl, by plain filtering."""
    last_visible = as_of - dt.timedelta(microseconds=1)
    stamps = snapshots["event_timestamp"]
    visible = snapshots.filter(pc.and_(pc.less_equal(stamps, last_visible),
                                       pc.greater_equal(stamps, last_visible - ttl)))
    rows: dict[int, dict] = {}
    for row in visible.sort_by("event_timestamp").to_pylist():  # later rows overwrite
        rows[row[id_column]] = row
    return {i: rows[i] for i in ids if i in rows}


def test_live_day_candidates_get_point_in_time_features(tiny_world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    repo = FeatureRepoConfig(repo_dir=copy_repo(tmp_path / "features"), data_root=str(data))
    apply(repo)  # validates every world snapshot file against the contract and the views

    live = list_days(str(data), "candidates")[-1]
    as_of = dt.datetime.combine(live, dt.time(), tzinfo=dt.UTC)
    cands = read_table(str(data), "candidates", days=[live])
    got = side_features(repo, EntityRequest.at(
        as_of, item_ids=cands["item_id"], user_ids=cands["user_id"], query_ids=cands["query_id"]))

    for name, kind in ENTITY_KINDS.items():
        table = getattr(got, name)
        ids = pc.unique(cands[kind.id_column]).to_pylist()
        assert sorted(table[kind.id_column].to_pylist()) == sorted(ids)
        expected = plain_join(read_table(str(data), name), kind.id_column, ids, as_of, TTL[name])
        assert got.unknown[name] == len(ids) - len(expected)
        for row in table.to_pylist():
            want = expected.get(row[kind.id_column])
            for spec in kind.features:
                value = spec.default
                if want is not None and want[spec.name] is not None:
                    value = want[spec.name]
                expected_value = pytest.approx(value) if isinstance(value, float) else value
                assert row[spec.name] == expected_value, (name, row, spec.name)
