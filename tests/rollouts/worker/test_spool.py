"""The on-disk spool keeps every finished result until the server has it, across crashes and restarts."""

from __future__ import annotations

import pytest

from rollouts.worker.spool import Spool, SpoolBusyError, SpoolRecord


def record(i: int, meta=None) -> SpoolRecord:
    return SpoolRecord(key=f"k{i}", payload={"n": i}, meta=meta)


def test_records_wait_in_order_until_acknowledged_and_failed_sends_go_back_to_the_front(tmp_path):
    with Spool(tmp_path) as spool:
        for i in range(5):
            spool.put(record(i))
        first = spool.take(limit=2)
        assert [r.key for r in first] == ["k0", "k1"] and spool.pending == 3 and spool.in_flight == 2
        spool.requeue(first)
        assert [r.key for r in spool.take(limit=3)] == ["k0", "k1", "k2"]
        spool.ack(["k0", "k1", "k2"])
        assert spool.unsent == 2


def test_a_killed_worker_loses_nothing_and_a_restart_finds_what_was_not_sent(tmp_path):
    spool = Spool(tmp_path, segment_records=3).open()
    for i in range(7):
        spool.put(record(i, meta=[i, 0]))
    spool.take(limit=4)
    spool.ack(["k0", "k1", "k2", "k3"])
    # No close(): as after kill -9 (the lock dies with the process; here we drop it by hand).
    spool._lock_file.close()
    reopened = Spool(tmp_path, segment_records=3).open()
    assert reopened.recovered == 3
    assert [r.key for r in reopened.take(limit=10)] == ["k4", "k5", "k6"]
    assert sorted(tuple(m) for m in reopened.metas()) == [(i, 0) for i in range(7)]
    reopened.close()


def test_fully_acknowledged_segments_are_retired_and_their_metas_kept(tmp_path):
    with Spool(tmp_path, segment_records=2) as spool:
        for i in range(4):
            spool.put(record(i, meta=[i, 0]))
        spool.ack([r.key for r in spool.take(limit=4)])
        assert len(list(tmp_path.glob("seg-*.jsonl"))) == 1  # only the open one
    with Spool(tmp_path) as spool:
        assert spool.unsent == 0 and len(list(spool.metas())) == 4


def test_a_torn_last_line_is_skipped(tmp_path):
    with Spool(tmp_path) as spool:
        spool.put(record(1))
    segment = next(tmp_path.glob("seg-*.jsonl"))
    with segment.open("a") as out:
        out.write('{"key": "k2", "payl')  # the process died mid-write
    with Spool(tmp_path) as spool:
        assert [r.key for r in spool.take(limit=5)] == ["k1"]


def test_one_spool_folder_serves_one_process(tmp_path):
    with Spool(tmp_path), pytest.raises(SpoolBusyError, match="another worker"):
        Spool(tmp_path).open()
