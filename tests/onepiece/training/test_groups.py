"""Splitting requests into random candidate groups."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from onepiece.contract import TRAINING_SCHEMA
from onepiece.training.groups import sample_candidates, split_groups

T = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)


def rows(n_cands: list[int], exposed: int = 3) -> pa.Table:
    out = []
    for r, n in enumerate(n_cands):
        ids = [100 * r + j for j in range(n)]
        out.append(
            dict(
                request_id=f"r{r}", user_id=r, query_id=7, as_of=T,
                cand_item_id=ids, cand_price=[float(i) for i in ids],
                label_impression=[int(j < exposed) for j in range(n)],
                label_click=[int(j == 0) for j in range(n)],
            )
        )
    return pa.Table.from_pylist(out, schema=TRAINING_SCHEMA)


def test_groups_keep_candidates_and_their_parallel_columns_together() -> None:
    table = rows([10, 3, 0, 25])
    groups = split_groups(table, 4, np.random.default_rng(0))
    sizes = [len(x) for x in groups.table["cand_item_id"].to_pylist()]
    assert sizes == [4, 4, 2, 3, 4, 4, 4, 4, 4, 4, 1]
    assert groups.source_row.tolist() == [0, 0, 0, 1] + [3] * 7
    got = groups.table.to_pylist()
    for g in got:
        # Parallel columns stay aligned; request columns are repeated.
        assert g["cand_price"] == [float(i) for i in g["cand_item_id"]]
        assert g["label_click"] == [int(i % 100 == 0) for i in g["cand_item_id"]]
        assert g["request_id"] == f"r{g['cand_item_id'][0] // 100}"
    for r, n in enumerate([10, 3, 0, 25]):
        ids = [i for g in got if g["request_id"] == f"r{r}" for i in g["cand_item_id"]]
        assert sorted(ids) == [100 * r + j for j in range(n)]
    assert groups.table.schema == TRAINING_SCHEMA


def test_groups_are_shuffled_and_seeded() -> None:
    table = rows([30])
    a = split_groups(table, 5, np.random.default_rng(1)).table
    b = split_groups(table, 5, np.random.default_rng(1)).table
    c = split_groups(table, 5, np.random.default_rng(2)).table
    assert a.equals(b)
    assert not a.equals(c)
    assert a["cand_item_id"].to_pylist()[0] != list(range(5))


def test_sampling_keeps_every_exposed_candidate_and_caps_the_rest() -> None:
    table = rows([20, 4, 12], exposed=3)
    keep = sample_candidates(table, np.random.default_rng(0), max_unexposed=2)
    groups = split_groups(table, 12, np.random.default_rng(0), keep).table
    for g, n in zip(groups.to_pylist(), [20, 4, 12]):
        assert sum(g["label_impression"]) == 3
        assert len(g["cand_item_id"]) == 3 + min(2, n - 3)
    assert sample_candidates(table, np.random.default_rng(0), None).all()
