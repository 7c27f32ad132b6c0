"""CIS and training labels."""

from builders import at, candidates, events

from onepiece.assembly.labels import candidate_labels, has_click
from onepiece.assembly.requests import (
    candidate_requests,
    duplicate_candidates,
    inconsistent_requests,
    select_window,
)


def test_candidate_requests_group_rows_sorted_and_take_as_of():
    c = candidates([("b", 1, 9, at(2), [30, 10, 20]), ("a", 2, 9, at(1), [5])])
    refresh = candidate_requests(c, at(0))
    assert refresh["request_id"].to_pylist() == ["a", "b"]
    assert refresh["cand_item_id"].to_pylist() == [[5], [10, 20, 30]]
    assert set(refresh["as_of"].to_pylist()) == {at(0)}
    training = candidate_requests(c, None)
    assert training["as_of"].to_pylist() == [at(1), at(2)]


def test_select_window_is_half_open():
    c = candidates([("a", 1, 9, at(0), [1]), ("b", 1, 9, at(1), [1]), ("c", 1, 9, at(-0.1), [1])])
    assert select_window(c, at(0), at(1))["request_id"].to_pylist() == ["a"]


def test_labels_are_parallel_to_candidates_per_task():
    c = candidate_requests(candidates([("a", 1, 9, at(0), [3, 1, 2]), ("b", 1, 9, at(0), [1])]), None)
    ev = events(
        [
            (1, 9, 1, "impression", at(0.1), "a"),
            (1, 9, 1, "click", at(0.2), "a"),
            (1, 9, 3, "impression", at(0.1), "a"),
            (1, 9, 3, "order", at(0.3), "a"),
            (1, 9, 1, "click", at(0.2), "other"),  # another request's click
        ]
    )
    labels = candidate_labels(c, ev)
    assert labels["label_impression"].to_pylist() == [[1, 0, 1], [0]]
    assert labels["label_click"].to_pylist() == [[1, 0, 0], [0]]
    assert labels["label_order"].to_pylist() == [[0, 0, 1], [0]]
    assert labels["label_add_to_cart"].to_pylist() == [[0, 0, 0], [0]]
    assert has_click(labels).to_pylist() == [True, False]


def test_duplicates_and_inconsistent_requests_are_found():
    c = candidates([("a", 1, 9, at(0), [1, 1, 2]), ("b", 1, 9, at(0), [1]), ("b", 2, 9, at(0), [4])])
    assert duplicate_candidates(c).to_pylist() == [{"request_id": "a", "item_id": 1, "n": 2}]
    assert inconsistent_requests(c) == ["b"]
