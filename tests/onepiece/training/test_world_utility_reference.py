"""The world's hidden utility as a reference scorer, checked against the world's own traffic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from onepiece.errors import UserError
from onepiece.evaluation import metrics
from onepiece.evaluation.ranking import flat_candidates
from onepiece.world.oracle import utility_scores


def test_the_upstream_ranker_shows_the_candidates_the_utility_ranks_high(tiny_world: Path, tiny_split) -> None:
    """The upstream ranker shows the top of utility + N(0, 1) noise: a right mapping of ids
    makes the utility rank the shown candidates far above the others; scores that do not
    belong to their candidates (shuffled) do not."""
    train_rows, test_rows = tiny_split
    for rows in (train_rows, test_rows):
        flat = flat_candidates(rows)
        utility = utility_scores(tiny_world, rows)
        assert utility.shape == flat.item_id.shape
        shown = flat.labels["impression"]
        assert metrics.gauc(shown, utility, flat.request_row) > 0.9
        # and clicks follow it among the shown candidates
        exposed = shown > 0
        assert metrics.auc(flat.labels["click"][exposed], utility[exposed]) > 0.6
    shuffled = utility_scores(tiny_world, test_rows)
    rng = np.random.default_rng(0)
    assert metrics.gauc(flat_candidates(test_rows).labels["impression"], rng.permutation(shuffled),
                        flat_candidates(test_rows).request_row) < 0.7


def test_rows_of_another_world_are_named(tiny_world: Path, tiny_split, tmp_path: Path) -> None:
    _, test_rows = tiny_split
    stranger = test_rows.set_column(test_rows.schema.get_field_index("user_id"), "user_id",
                                    pa.array([10**12] * test_rows.num_rows, pa.int64()))
    with pytest.raises(UserError, match=r"user 1000000000000 is not in this world"):
        utility_scores(tiny_world, stranger)
    empty = tmp_path / "data"
    empty.mkdir()
    with pytest.raises(UserError, match=r"world.json not found"):
        utility_scores(empty, test_rows)
