"""The retrieval route: byte-identical reruns, point-in-time correctness, clear errors."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from retrieval_helpers import contexts_as_of, window_start

from onepiece import storage
from onepiece.contract import RETRIEVAL_SCHEMA, RETRIEVAL_SOURCE, ContractError
from onepiece.errors import UserError
from onepiece.retrieval.index import build_item_index
from onepiece.retrieval.route import PART_FILE, RouteConfig, run_route


@pytest.fixture(scope="module")
def index_dir(route_world: Path, retrieval_checkpoint: Path) -> Path:
    """The index beside the checkpoint (its default place), items as of T."""
    out = retrieval_checkpoint / "item_index"
    if not out.exists():
        build_item_index(retrieval_checkpoint, storage.read_table(str(route_world), "items"),
                         window_start(route_world), out)
    return out


def test_route_writes_top_n_per_request_and_reruns_byte_identical(
    held_out_contexts: Path, index_dir: Path, tmp_path: Path
) -> None:
    config = RouteConfig(top_n=50)
    first = run_route(held_out_contexts, index_dir, tmp_path / "a", config)
    second = run_route(held_out_contexts, index_dir, tmp_path / "b", config)
    assert (tmp_path / "a" / PART_FILE).read_bytes() == (tmp_path / "b" / PART_FILE).read_bytes()
    assert first["run_id"] == second["run_id"]
    rows = storage.read_partition(tmp_path / "a", "retrieval")
    assert pq.read_schema(tmp_path / "a" / PART_FILE).equals(RETRIEVAL_SCHEMA, check_metadata=False)
    contexts = storage.read_partition(held_out_contexts, "contexts")
    assert first["rows"] == {"requests": contexts.num_rows, "retrieval": 50 * contexts.num_rows}
    assert first["table"] == "retrieval" and first["partition"] == f"dt={window_start_of(contexts)}/hour=00"
    assert first["model"]["version"] == 1
    assert set(pc.unique(rows["recall_source"]).to_pylist()) == {RETRIEVAL_SOURCE}
    assert sorted(pc.unique(rows["request_id"]).to_pylist()) == sorted(contexts["request_id"].to_pylist())
    ranks = rows["rank"].to_numpy().reshape(-1, 50)
    assert (ranks == np.arange(1, 51)).all()
    assert (np.diff(rows["score"].to_numpy().reshape(-1, 50), axis=1) <= 1e-5).all()
    json.loads((tmp_path / "a" / "_manifest.json").read_text())


def window_start_of(contexts: pa.Table) -> str:
    return contexts["as_of"][0].as_py().date().isoformat()


def test_nothing_at_or_after_t_reaches_a_user_vector(
    route_world: Path, index_dir: Path, held_out_contexts: Path, tmp_path: Path
) -> None:
    """Clicks, carts and orders at or after T for the window's own users, on items the
    route would otherwise not pick, and a new item snapshot at T: the output is the same."""
    t = window_start(route_world)
    events = storage.read_table(str(route_world), "events")
    contexts = storage.read_partition(held_out_contexts, "contexts")
    users = contexts["user_id"].to_numpy()[:20]
    late = pa.table({
        "request_id": [f"late-{i}" for i in range(3 * len(users))],
        "user_id": np.repeat(users, 3),
        "query_id": np.repeat(contexts["query_id"].to_numpy()[:20], 3),
        "item_id": np.tile([11, 12, 13], len(users)).astype(np.int64),
        "event_type": ["click", "add_to_cart", "order"] * len(users),
        "position": pa.nulls(3 * len(users), pa.int32()),
        "event_timestamp": [t + dt.timedelta(minutes=i % 3) for i in range(3 * len(users))],  # at T and after
    }, schema=events.schema)
    later = contexts_as_of(route_world, pa.concat_tables([events, late]))
    storage.write_parquet(later, tmp_path / "later" / "part-00000.parquet")
    run_route(held_out_contexts, index_dir, tmp_path / "a", RouteConfig(top_n=30))
    run_route(tmp_path / "later", index_dir, tmp_path / "b", RouteConfig(top_n=30))
    assert (tmp_path / "a" / PART_FILE).read_bytes() == (tmp_path / "b" / PART_FILE).read_bytes()
    # The control: the same events a few minutes before T do reach the user vectors.
    early = late.set_column(late.schema.get_field_index("event_timestamp"), "event_timestamp",
                            pc.subtract(late["event_timestamp"], pa.scalar(dt.timedelta(minutes=5))))
    earlier = contexts_as_of(route_world, pa.concat_tables([events, early.cast(events.schema)]))
    storage.write_parquet(earlier, tmp_path / "earlier" / "part-00000.parquet")
    run_route(tmp_path / "earlier", index_dir, tmp_path / "c", RouteConfig(top_n=30))
    assert (tmp_path / "a" / PART_FILE).read_bytes() != (tmp_path / "c" / PART_FILE).read_bytes()


def test_an_index_newer_than_t_is_refused(
    route_world: Path, retrieval_checkpoint: Path, held_out_contexts: Path, tmp_path: Path
) -> None:
    t = window_start(route_world)
    model_dir = tmp_path / "7"
    shutil.copytree(retrieval_checkpoint, model_dir, ignore=shutil.ignore_patterns("item_index"))
    build_item_index(model_dir, storage.read_table(str(route_world), "items"), t + dt.timedelta(hours=1),
                     model_dir / "item_index")
    with pytest.raises(UserError, match="after the contexts' T"):
        run_route(held_out_contexts, model_dir / "item_index", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_inputs_give_clear_errors(
    route_world: Path, index_dir: Path, held_out_contexts: Path, tmp_path: Path
) -> None:
    from onepiece.model import OnePiece, save_checkpoint, variant_config
    from retrieval_helpers import TINY_RETRIEVAL

    with pytest.raises(UserError, match="is not a directory"):
        run_route(tmp_path / "nowhere", index_dir, tmp_path / "out")
    with pytest.raises(UserError, match="has no index.faiss"):
        run_route(held_out_contexts, tmp_path, tmp_path / "out")
    with pytest.raises(UserError, match="at least 1"):
        RouteConfig(top_n=0)
    other = save_checkpoint(OnePiece(variant_config("onepiece_retrieval", **(TINY_RETRIEVAL | {"d_model": 16}))),
                            tmp_path / "other")
    with pytest.raises(UserError, match="is not the model the index"):
        run_route(held_out_contexts, index_dir, tmp_path / "out", checkpoint=other)
    contexts = storage.read_partition(held_out_contexts, "contexts")
    # Two windows mixed in one partition.
    shifted = contexts.set_column(contexts.schema.get_field_index("as_of"), "as_of",
                                  pc.add(contexts["as_of"], pa.scalar(dt.timedelta(hours=1)))).cast(contexts.schema)
    storage.write_parquet(pa.concat_tables([contexts, shifted]), tmp_path / "mixed" / "part-00000.parquet")
    with pytest.raises(ContractError, match="several times"):
        run_route(tmp_path / "mixed", index_dir, tmp_path / "out")
    # A partition that is not contexts rows.
    storage.write_parquet(contexts.drop_columns(["ih_item_id"]), tmp_path / "broken" / "part-00000.parquet")
    with pytest.raises(ContractError, match="ih_item_id"):
        run_route(tmp_path / "broken", index_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_contract_refuses_bad_retrieval_rows(held_out_contexts: Path, index_dir: Path, tmp_path: Path) -> None:
    from onepiece.contract import conform

    run_route(held_out_contexts, index_dir, tmp_path / "a", RouteConfig(top_n=5))
    rows = storage.read_partition(tmp_path / "a", "retrieval")
    at = rows.schema.get_field_index
    bad_rank = rows.set_column(at("rank"), "rank", pc.subtract(rows["rank"], 1))
    with pytest.raises(ContractError, match="rank"):
        conform(bad_rank, "retrieval", "bad_rank")
    other = rows.set_column(at("recall_source"), "recall_source", pa.array(["upstream"] * rows.num_rows))
    with pytest.raises(ContractError, match="recall_source"):
        conform(other, "retrieval", "other_source")
    with pytest.raises(ContractError, match="retrieved item"):
        conform(pa.concat_tables([rows, rows.slice(0, 1)]), "retrieval", "duplicate")


def test_route_outcomes_share_of_clicks_and_orders(route_world: Path, held_out_contexts: Path, index_dir: Path,
                                                   tmp_path: Path) -> None:
    from onepiece.retrieval.outcomes import route_outcomes

    run_route(held_out_contexts, index_dir, tmp_path / "a", RouteConfig(top_n=100))
    figures = route_outcomes(str(route_world), tmp_path / "a", dt.timedelta(days=1), dt.timedelta(0))
    assert figures["click"]["events"] > 0 and figures["order"]["events"] > 0
    # The world clicks only what the upstream showed; the route's share is a real fraction.
    assert figures["click"]["upstream"] == 1.0 and figures["order"]["upstream"] == 1.0
    assert 0.0 < figures["click"]["route"] < 1.0
    # The same share by hand.
    t = window_start(route_world)
    events = storage.read_table(str(route_world), "events", [t.date()])
    rows = storage.read_partition(tmp_path / "a", "retrieval")
    clicks = {(r, i) for r, i, e in zip(events["request_id"].to_pylist(), events["item_id"].to_pylist(),
                                        events["event_type"].to_pylist())
              if e == "click" and r in set(rows["request_id"].to_pylist())}
    held = set(zip(rows["request_id"].to_pylist(), rows["item_id"].to_pylist()))
    assert figures["click"]["route"] == pytest.approx(len(clicks & held) / len(clicks))
    with pytest.raises(UserError, match="does not reach"):
        route_outcomes(str(route_world), tmp_path / "a", dt.timedelta(days=1), dt.timedelta(days=3))
