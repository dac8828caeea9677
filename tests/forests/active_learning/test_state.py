"""The rounds' state file (pure: no server)."""

from __future__ import annotations

import json

import pytest

from forests.active_learning.state import ROUND_COMPLETED, ROUND_FAILED, RoundsState, StateError


def test_the_state_file_keeps_the_rounds_and_finds_the_unfinished_and_the_previous_one(tmp_path):
    state = RoundsState.load(tmp_path / "state", "my/forest")
    assert state.path == tmp_path / "state" / "my_forest.json" and state.rounds == []
    first = state.new_round(prm_version="v1", labelling_scheme_version="s", base_model="b", settings={})
    first["status"] = ROUND_COMPLETED
    second = state.new_round(prm_version="v2", labelling_scheme_version="s", base_model="b", settings={})
    second["status"] = ROUND_FAILED
    state.save()
    again = RoundsState.load(tmp_path / "state", "my/forest")
    assert [r["round"] for r in again.rounds] == [1, 2]
    assert again.unfinished()["prm_version"] == "v2"
    assert again.previous_completed(again.rounds[1])["prm_version"] == "v1"
    assert again.previous_completed(again.rounds[0]) is None


def test_a_state_file_of_another_forest_or_unreadable_is_refused(tmp_path):
    (tmp_path / "f.json").write_text(json.dumps({"forest_name": "other", "rounds": []}))
    with pytest.raises(StateError, match="holds the rounds of forest 'other', not 'f'"):
        RoundsState.load(tmp_path, "f")
    (tmp_path / "g.json").write_text("{not json")
    with pytest.raises(StateError, match=r"g\.json cannot be read"):
        RoundsState.load(tmp_path, "g")
