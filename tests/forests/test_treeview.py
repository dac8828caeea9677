"""A tree page lays the tree out depth-first as nested <details>, collapsing deep subtrees and capping its size."""

from __future__ import annotations

import pytest

from forests.treeview import tree_layout

# (id, parent_id, depth, text, is_leaf, prediction)
ROWS = [
    (1, None, 0, "prompt", False, None),
    (2, 1, 1, "a", False, None),
    (3, 2, 2, "a-a", True, 1),
    (4, 2, 2, "a-b", True, 0),
    (5, 1, 1, "b", True, None),
]


def layout(**kwargs):
    return tree_layout(ROWS, ground_truth=1, render=lambda text: f"<p>{text}</p>", **kwargs)


def test_entries_are_depth_first_and_close_their_details():
    result = layout()
    assert [e.id for e in result.entries] == [1, 2, 3, 4, 5]
    assert [e.closes for e in result.entries] == [0, 0, 1, 2, 2]
    assert sum(e.closes for e in result.entries) == len(result.entries)  # every <details> is closed


def test_entries_carry_values_predictions_and_correctness():
    entries = {e.id: e for e in layout().entries}
    assert entries[1].value.value == pytest.approx(1 / 3)
    assert entries[2].value.value == 0.5
    assert entries[3].correct is True
    assert entries[4].correct is False
    assert entries[5].correct is False  # no parsable prediction
    assert entries[2].correct is None  # not a leaf
    assert entries[3].html == "<p>a-a</p>"


def test_deep_subtrees_start_collapsed():
    entries = {e.id: e for e in layout(open_depth=2).entries}
    assert entries[1].open and entries[2].open
    assert not entries[3].open


def test_a_big_tree_is_capped_and_says_what_it_left_out():
    result = layout(max_nodes=3)
    assert [e.id for e in result.entries] == [1, 2, 3]
    entries = {e.id: e for e in result.entries}
    assert entries[2].hidden_nodes == 1  # node 4
    assert entries[1].hidden_nodes == 1  # node 5
    assert sum(e.closes for e in result.entries) == 3


def test_a_subtree_can_be_the_focus():
    result = layout(focus_id=2)
    assert [e.id for e in result.entries] == [2, 3, 4]
    assert result.path == [1, 2]
    assert result.values[1].count == 3  # values still come from the whole tree


def test_an_unknown_focus_is_a_key_error():
    with pytest.raises(KeyError):
        layout(focus_id=99)


def test_values_count_the_rollouts_given_with_the_tree():
    # Two identical rollouts end at node 3 (correct), one at node 4 (wrong); node 5 has none and counts once.
    result = layout(rollouts=[(10, 3, 1), (11, 3, 1), (12, 4, 0)])
    entries = {e.id: e for e in result.entries}
    assert (entries[2].value.count, entries[2].value.correct) == (3, 2)
    assert (entries[1].value.count, entries[1].value.correct) == (4, 2)
    assert entries[2].value.low is not None and entries[2].value.low < 2 / 3 < entries[2].value.high
