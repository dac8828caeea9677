"""The spool's sender delivers every record to the server in batches, backing off while the server is away, keeping
refused records aside."""

from __future__ import annotations

import asyncio

from rollouts.worker.spool import Spool, SpoolRecord
from rollouts.worker.spool_sender import Refused, Sent, ServerUnavailableError, SpoolSender


def record(i: int, meta=None) -> SpoolRecord:
    return SpoolRecord(key=f"k{i}", payload={"n": i}, meta=meta)


def test_the_sender_backs_off_while_the_server_is_unavailable_then_delivers_everything(tmp_path):
    calls = {"n": 0}
    delivered: list[str] = []

    async def send(records):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise ServerUnavailableError("connection refused")
        delivered.extend(r.key for r in records)
        return [Sent(i) for i, _ in enumerate(records)]

    async def scenario(spool):
        sender = SpoolSender(spool, send, batch_size=3, backoff_initial_s=0.01, backoff_max_s=0.02)
        sender.start()
        for i in range(7):
            spool.put(record(i))
            sender.notify()
        assert await sender.drain(5)
        return sender

    with Spool(tmp_path) as spool:
        sender = asyncio.run(scenario(spool))
    assert sorted(delivered) == sorted(f"k{i}" for i in range(7)) and len(delivered) == 7
    assert sender.sent == 7 and calls["n"] >= 3


def test_refused_records_are_kept_aside_and_not_sent_again(tmp_path):
    async def send(records):
        return [Refused({"detail": "bad"}) if r.key == "k1" else Sent(1) for r in records]

    async def scenario(spool):
        sender = SpoolSender(spool, send)
        sender.start()
        for i in range(3):
            spool.put(record(i))
        sender.notify()
        assert await sender.drain(5)

    with Spool(tmp_path) as spool:
        asyncio.run(scenario(spool))
        assert spool.rejected == 1
    assert '"k1"' in (tmp_path / "rejected.jsonl").read_text()


def test_a_sender_that_cannot_drain_in_time_keeps_the_records(tmp_path):
    async def send(records):
        raise ServerUnavailableError("down")

    async def scenario(spool):
        sender = SpoolSender(spool, send, backoff_initial_s=0.01, backoff_max_s=0.01)
        sender.start()
        spool.put(record(1))
        sender.notify()
        return await sender.drain(0.3)

    with Spool(tmp_path) as spool:
        assert asyncio.run(scenario(spool)) is False
        assert spool.unsent == 1
    with Spool(tmp_path) as spool:
        assert spool.recovered == 1
