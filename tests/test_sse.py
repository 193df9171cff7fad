"""SSE framing of a run's events: every event in order, ``done`` last, keep-alives while quiet."""

from __future__ import annotations

import asyncio

import pytest

from assistantd.api import sse
from assistantd.engine.bus import EventBus


async def _read_all(bus: EventBus, run_id: str, feed: list[tuple[float, str, bytes]]) -> bytes:
    sub = bus.subscribe(run_id)

    async def publish() -> None:
        for pause, name, data in feed:
            await asyncio.sleep(pause)
            bus.publish(run_id, name, data)
        bus.end(run_id)

    producer = asyncio.create_task(publish())
    body = b"".join([chunk async for chunk in sse._frames([("thread.created", {"id": "t"})], sub)])
    await producer
    return body


def test_events_arrive_in_order_with_done_last() -> None:
    feed = [(0.0, "thread.message.delta", b'{"i":%d}' % i) for i in range(50)]
    feed.insert(0, (0.0, "thread.run.created", b'{"id":"run_1"}'))
    body = asyncio.run(_read_all(EventBus(), "run_1", feed))
    expected = b'event: thread.created\ndata: {"id":"t"}\n\n'
    expected += b"".join(sse.frame(name, data) for _, name, data in feed)
    assert body == expected + b"event: done\ndata: [DONE]\n\n"


def test_a_quiet_stream_gets_keep_alive_comments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.05)
    feed = [(0.0, "thread.run.created", b"{}"), (0.3, "thread.run.completed", b"{}")]
    body = asyncio.run(_read_all(EventBus(), "run_2", feed))
    assert body.count(b": keep-alive\n\n") >= 2
    without = body.replace(b": keep-alive\n\n", b"")
    assert without == (
        b'event: thread.created\ndata: {"id":"t"}\n\n'
        + sse.frame("thread.run.created", b"{}")
        + sse.frame("thread.run.completed", b"{}")
        + b"event: done\ndata: [DONE]\n\n"
    )


def test_a_busy_stream_gets_no_keep_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.1)
    feed = [(0.02, "thread.message.delta", b"{}") for _ in range(20)]  # never 0.1 s quiet
    body = asyncio.run(_read_all(EventBus(), "run_3", feed))
    assert b"keep-alive" not in body
