"""Materialisation into the SQLite online store, and get_online_features after it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from feast_fixtures import DAY, T, base_rows, snapshot_row, write_snapshots

from onepiece.errors import UserError
from onepiece.features import open_store
from onepiece.features.materialize import materialize
from onepiece.features.registry import apply


US = dt.timedelta(microseconds=1)


def latest(rows: list[dict], id_column: str, entity_id: int, end) -> dict:
    """The newest row stamped strictly before end (windows are half-open)."""
    return max((r for r in rows if r[id_column] == entity_id and r["event_timestamp"] < end),
               key=lambda r: r["event_timestamp"])


def online_items(repo, ids: list[int]) -> dict[str, list]:
    store = open_store(repo)
    return store.get_online_features(
        features=["item_features:shop_id", "item_features:price"],
        entity_rows=[{"item_id": i} for i in ids],
    ).to_dict()


def test_materialize_serves_the_latest_values_online_then_continues_incrementally(repo):
    rows = base_rows()
    apply(repo)
    done = {d.view: d for d in materialize(repo, T)}
    assert set(done) == {"item_features", "user_profile", "query_features"}
    # A first run loads what retrieval at T can still serve: ttl back from T - 1 us.
    assert done["item_features"].start == T - US - 2 * DAY

    got = online_items(repo, [1, 2, 3, 99])
    want = [latest(rows["items"], "item_id", i, T)["shop_id"] for i in (1, 2, 3)]
    assert got["shop_id"][:3] == want
    assert got["shop_id"][3] is None  # unknown online: the caller applies the default
    users = open_store(repo).get_online_features(
        features=["user_profile:age_bucket"], entity_rows=[{"user_id": 1}]).to_dict()
    assert users["age_bucket"] == [latest(rows["users"], "user_id", 1, T)["age_bucket"]]

    # New snapshots arrive; the next run starts at the previous end.
    new_row = snapshot_row("items", 2, T + 2 * DAY, 555)
    write_snapshots(Path(repo.resolved_data_root()), "items", [new_row], name="part-1")
    done = {d.view: d for d in materialize(repo, T + 3 * DAY, views=["item_features"])}
    assert done["item_features"].start == T - US  # the previous run's last instant
    got = online_items(repo, [1, 2])
    assert got["shop_id"] == [latest(rows["items"], "item_id", 1, T + 3 * DAY)["shop_id"], 555]


def test_materialize_refuses_going_back_and_unknown_views(repo):
    apply(repo)
    materialize(repo, T, views=["query_features"])
    with pytest.raises(UserError, match="'query_features' is already materialised up to"):
        materialize(repo, T - DAY, views=["query_features"])
    with pytest.raises(UserError, match="no online feature view \\['nope'\\]"):
        materialize(repo, T, views=["nope"])


def test_cli_materialize(repo):
    from typer.testing import CliRunner

    from onepiece.cli import app

    apply(repo)
    common = ["--repo", str(repo.repo_dir), "--data", repo.resolved_data_root()]
    runner = CliRunner()
    bad = runner.invoke(app, ["features", "materialize", "--end", "yesterday", *common])
    assert bad.exit_code == 2 and "invalid --end 'yesterday'" in bad.output
    done = runner.invoke(app, ["features", "materialize", "--end", T.isoformat(),
                               "--view", "user_profile", *common])
    assert done.exit_code == 0, done.output
    assert "user_profile:" in done.output and "item_features" not in done.output
    online = open_store(repo).get_online_features(
        features=["user_profile:gender"], entity_rows=[{"user_id": 1}]).to_dict()
    # The row stamped exactly at --end is not loaded: online agrees with retrieval at T.
    assert online["gender"] == [base_rows()["users"][0]["gender"]]
