"""The world's own answer: every candidate's hidden base utility, as a reference scorer.

A trained row is only as informative as its distance to what the data allows. The click
probability of a shown candidate is sigmoid(utility + set effects - position bias + b);
the base utility (taste, query-level popularity, intent match, quality, price, colour;
see ``onepiece.world``) is the part a model can in principle learn from a request's
context without knowing the page the upstream ranker will show. Scoring the test
candidates with it gives a ceiling-like reference row: not a bound (set effects and
position are left out, and the clicks are still random), but a model far below it is
limited by its training, not by the data.

The world is rebuilt from ``world.json``'s config (the generator is deterministic), so
this needs the data root a world was generated into; ids are mapped back through the
hidden id tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from onepiece.errors import UserError
from onepiece.world.config import WorldConfig
from onepiece.world.entities import build_world
from onepiece.world.traffic import UTILITY_PARTS, Mechanics, daily_prices, log_relative_price
from onepiece.world.traffic import utility_parts as utility_parts_of_day


def _index(ids: np.ndarray, wanted: np.ndarray, what: str, source: str) -> np.ndarray:
    """Positions of ``wanted`` ids in the world's id table ``ids``."""
    order = np.argsort(ids)
    pos = np.minimum(np.searchsorted(ids, wanted, sorter=order), len(ids) - 1)
    found = ids[order[pos]] == wanted
    if not found.all():
        raise UserError(f"{source}: {what} {int(wanted[~found][0])} is not in this world (rows of another world?)")
    return order[pos]


def utility_scores(data_root: str | Path, rows: pa.Table) -> np.ndarray:
    """The hidden base utility of every candidate of ``rows`` (training-row layout: one
    row per request with ``user_id``, ``query_id``, ``as_of``, ``cand_item_id``), in
    flattened ``cand_item_id`` order (as ``evaluation.ranking.flat_candidates``)."""
    return sum(utility_parts(data_root, rows).values())


def utility_parts(data_root: str | Path, rows: pa.Table) -> dict[str, np.ndarray]:
    """``utility_scores`` as its weighted terms (taste, popularity, intent, quality,
    price, colour; ``traffic.utility_parts``), each in the same flattened order."""
    manifest = Path(data_root) / "world.json"
    if not manifest.exists():
        raise UserError(f"{manifest} not found: the utility reference needs the world a data root was generated from")
    config = WorldConfig.from_json(json.loads(manifest.read_text())["config"])
    world = build_world(config)
    prices = daily_prices(world)
    rows = rows.combine_chunks()
    parent = np.asarray(pc.list_parent_indices(rows["cand_item_id"]), dtype=np.int64)
    source = str(manifest.parent)
    items = _index(world.catalog.item_id, np.asarray(pc.list_flatten(rows["cand_item_id"]), np.int64), "item", source)
    users = _index(world.users.user_id, np.asarray(rows["user_id"], np.int64), "user", source)
    queries = _index(world.queries.query_id, np.asarray(rows["query_id"], np.int64), "query", source)
    days = np.array([(t.date() - config.start_date).days for t in rows["as_of"].to_pylist()])
    if len(days) and (days.min() < 0 or days.max() > config.days):
        raise UserError(f"{source}: rows from {days.min()}..{days.max()} days after the world's start, "
                        f"which has days 0..{config.days}")
    out = {name: np.zeros(len(items), dtype=np.float64) for name in UTILITY_PARTS}
    for day in np.unique(days):
        mask = days[parent] == day
        parts = utility_parts_of_day(
            world, int(day), users[parent[mask]], queries[parent[mask]], items[mask][:, None],
            log_relative_price(world, prices, int(day)), Mechanics(),
        )
        for name, values in parts.items():
            out[name][mask] = values[:, 0]
    return out
