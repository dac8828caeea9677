"""Files are written whole or not at all: a failure keeps the old file and leaves no temporary behind."""

from __future__ import annotations

import json
import stat

import pytest

from prmsite.core.files import OUTPUT_FILE_MODE, atomic_path, json_write_atomic, write_atomic


def test_a_written_file_replaces_the_old_one_whole_with_an_ordinary_mode(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    write_atomic(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert stat.S_IMODE(target.stat().st_mode) == OUTPUT_FILE_MODE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_failure_while_writing_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as staged:
        staged.write_text("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_missing_folders_are_made_unless_refused(tmp_path):
    json_write_atomic(tmp_path / "a" / "b" / "summary.json", {"b": 1, "a": [2]})
    assert json.loads((tmp_path / "a" / "b" / "summary.json").read_text()) == {"a": [2], "b": 1}
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "x.bin", b"x", make_parents=False)
    assert not (tmp_path / "missing").exists()
