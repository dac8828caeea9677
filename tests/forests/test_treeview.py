"""A tree page lays the tree out depth-first as blocks of consecutive steps and forks listing their branches,
collapsing deep forks, capping its size, and laying value sources over the steps."""

from __future__ import annotations

import pytest

from forests.treeview import SourceInput, tree_layout
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


def markup(entries) -> str:
    """The nesting the template writes: a block per run of steps, a branch list per fork."""
    out = []
    for e in entries:
        out.append("[" if e.starts_block else "")
        out.append(str(e.id))
        out.append("{" if e.fork else "")
        out.append("]" + "}]" * e.closes if e.ends_block else "")
    return "".join(out)


def test_entries_are_depth_first_and_nest_blocks_in_forks():
    result = layout()
    assert [e.id for e in result.entries] == [1, 2, 3, 4, 5]
    assert [e.closes for e in result.entries] == [0, 0, 0, 1, 1]
    assert markup(result.entries) == "[1{[2{[3][4]}][5]}]"  # every block and branch list is closed


# A chain of 4 single-child steps below the root, then a fork into two leaves: one block, not a staircase.
CHAIN = [
    (1, None, 0, "prompt", False, None, 6),
    *((i, i - 1, i - 1, f"step {i}", False, None, 6) for i in range(2, 6)),
    (6, 5, 5, "end a", True, 1, 5),
    (7, 5, 5, "end b", True, 0, 5),
]


def test_a_run_of_single_child_steps_is_one_block():
    result = layout(rows=CHAIN)
    assert markup(result.entries) == "[12345{[6][7]}]"
    assert [e.starts_block for e in result.entries] == [True, False, False, False, False, True, True]


def test_forks_below_open_depth_forks_start_collapsed_and_chains_do_not_count():
    assert layout(rows=CHAIN, open_depth=1).entries[4].open  # depth 4, but no fork above it
    entries = {e.id: e for e in layout(rows=CHAIN, open_depth=0).entries}
    assert entries[5].fork and not entries[5].open  # collapsed, its own step still an entry
    nested = {e.id: e for e in layout(open_depth=1).entries}
    assert nested[1].open and not nested[2].open  # the fork below the root's fork


def test_entries_carry_values_predictions_and_correctness():
    entries = {e.id: e for e in layout().entries}
    assert entries[1].value.value == pytest.approx(1 / 3)
    assert entries[2].value.value == 0.5
    assert entries[3].correct is True
    assert entries[4].correct is False
    assert entries[5].correct is False  # no parsable prediction
    assert entries[2].correct is None  # not a leaf
    assert entries[3].html == "<p>a-a</p>"


def test_nested_forks_start_collapsed():
    entries = {e.id: e for e in layout(open_depth=2).entries}
    assert entries[1].open and entries[2].open
    entries = {e.id: e for e in layout(open_depth=0).entries}
    assert not entries[1].open and not entries[2].open


def test_a_big_tree_is_capped_and_says_what_it_left_out():
    result = layout(max_nodes=3)
    assert [e.id for e in result.entries] == [1, 2, 3]
    entries = {e.id: e for e in result.entries}
    assert entries[2].hidden_nodes == 1  # node 4
    assert entries[1].hidden_nodes == 1  # node 5
    assert markup(result.entries) == "[1{[2{[3]}]}]"


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


def test_without_sources_no_cells():
    assert all(e.cells == [] for e in layout().entries)


def test_the_exact_source_is_the_exact_values_and_marks_where_each_path_first_falls():
    # Rollouts: node 3 correct twice, node 4 wrong, node 5 wrong: node 2 is 2/3, node 4 0/1, node 5 0/1.
    result = layout(rollouts=[(10, 3, 1), (11, 3, 1), (12, 4, 0), (13, 5, 0)], sources=[SourceInput("exact")])
    cells = {e.id: e.cells[0] for e in result.entries}
    assert cells[2].value.value == pytest.approx(2 / 3) and cells[2].exact
    assert {i for i, c in cells.items() if c.first_below} == {4, 5}  # never the root
    assert "2/3 rollouts correct" in cells[2].hover and "95% interval" in cells[2].hover
    assert cells[5].style == "background: hsl(0 65% 82%)" and cells[3].style == "background: hsl(120 65% 82%)"
    assert result.sources[0].first_below == 2 and result.sources[0].threshold == 0.5


def test_a_labels_source_averages_each_step_and_two_sources_sit_side_by_side():
    # prm labels: rollout at leaf 3 scores steps (0.9, 0.2); at leaf 4 (0.7, 0.8); none reach node 5.
    prm = SourceInput("prm:v1", labels=[(3, [0.9, 0.2]), (4, [0.7, 0.8])], labelled_rollouts=2)
    result = layout(rollouts=[(10, 3, 1), (11, 4, 0)], sources=[SourceInput("exact"), prm], threshold=0.5)
    cells = {e.id: e.cells for e in result.entries}
    assert [c.source for c in cells[2]] == ["exact", "prm:v1"]
    assert cells[2][1].value.value == pytest.approx(0.8) and cells[2][1].value.count == 2
    assert "mean of 2 labels" in cells[2][1].hover
    assert cells[3][1].first_below and not cells[4][1].first_below  # 0.2 falls; 0.8 does not
    assert cells[5][1].value.value is None and not cells[5][1].first_below  # no label: no value, no mark
    assert "no value" in cells[5][1].hover and cells[5][1].bar == 0.0
    assert cells[4][0].first_below  # the exact value of node 4 is 0/1
    assert result.sources[1].labelled_rollouts == 2


def test_a_fall_is_marked_once_per_path_only_at_its_first_step():
    prm = SourceInput("prm:v1", labels=[(6, [0.9, 0.4, 0.1, 0.9, 0.1])])
    cells = {e.id: e.cells[0] for e in layout(rows=CHAIN, sources=[prm]).entries}
    assert [i for i, c in cells.items() if c.first_below] == [3]  # not 4 or 6, lower still, below it


def test_a_label_of_a_rollout_the_tree_does_not_hold_is_skipped():
    prm = SourceInput("prm:v1", labels=[(99, [0.1]), (3, [0.6, 0.6])])
    cells = {e.id: e.cells[0] for e in layout(sources=[prm]).entries}
    assert cells[2].value.count == 1
