"""A tree page lays the tree out depth-first as nested <details>, collapsing deep subtrees and capping its size."""

from __future__ import annotations

import pytest

from forests.treeview import tree_layout
from prmsite.core.rendering import PageBudget

# (id, parent_id, depth, text, is_leaf, prediction, text_chars)
ROWS = [
    (1, None, 0, "prompt", False, None, 6),
    (2, 1, 1, "a", False, None, 1),
    (3, 2, 2, "a-a", True, 1, 3),
    (4, 2, 2, "a-b", True, 0, 3),
    (5, 1, 1, "b", True, None, 1),
]


def budget(markdown_chars: int = 1000, html_bytes: int | None = None) -> PageBudget:
    return PageBudget(markdown_chars=markdown_chars, html_bytes=html_bytes, render=lambda text: f"<p>{text}</p>")


def layout(rows=ROWS, page_budget=None, **kwargs):
    return tree_layout(rows, ground_truth=1, budget=page_budget or budget(), **kwargs)


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


def test_shallow_nodes_get_the_markdown_budget_first():
    # Depth-first page order is 1, 2, 3, 4, 5; the budget goes by depth: 1 (6 chars), then 2 and 5, then 3 and 4.
    entries = {e.id: e for e in layout(page_budget=budget(markdown_chars=8)).entries}
    assert [entries[i].text.markdown for i in (1, 2, 5, 3, 4)] == [True, True, True, False, False]
    assert entries[3].html == '<pre class="plain-text">a-a</pre>'


def test_each_step_shows_at_most_step_chars_and_knows_its_whole_length():
    rows = [(1, None, 0, "p" * 50, False, None, 50), (2, 1, 1, "s" * 20, True, 1, 200_000)]  # the database cut it
    entries = {e.id: e for e in layout(rows=rows, step_chars=10).entries}
    assert (entries[1].text.shown_chars, entries[1].text.full_chars, entries[1].text.cut) == (10, 50, True)
    assert (entries[2].text.shown_chars, entries[2].text.full_chars) == (10, 200_000)
    assert entries[2].html == "<p>ssssssssss</p>"
