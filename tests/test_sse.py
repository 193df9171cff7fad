"""SSE framing of a run's events: every event in order, ``done`` last, keep-alives while quiet."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from assistantd.api import sse
from assistantd.engine.bus import Event, EventBus


async def _read_all(bus: EventBus, run_id: str, feed: list[tuple[str, bytes]]) -> bytes:
    sub = bus.subscribe(run_id)

    async def publish() -> None:
        for name, data in feed:
            await asyncio.sleep(0)  # a turn of the loop between events (no pause): the reader interleaves
            bus.publish(run_id, name, data)
        bus.end(run_id)

    producer = asyncio.create_task(publish())
    body = b"".join([chunk async for chunk in sse._frames([("thread.created", {"id": "t"})], sub)])
    await producer
    return body


def test_events_arrive_in_order_with_done_last() -> None:
    feed = [("thread.message.delta", b'{"i":%d}' % i) for i in range(50)]
    feed.insert(0, ("thread.run.created", b'{"id":"run_1"}'))
    body = asyncio.run(_read_all(EventBus(), "run_1", feed))
    expected = b'event: thread.created\ndata: {"id":"t"}\n\n'
    expected += b"".join(sse.frame(name, data) for name, data in feed)
    assert body == expected + b"event: done\ndata: [DONE]\n\n"


async def _quiet_stream(keepalive: float) -> bytes:
    """A run that says nothing until the stream has sent two keep-alives, then completes.

    Paced by what the stream writes, not by sleeping: the run's next event is published only once the
    reader has seen the comments, so the test holds however slow the machine is.
    """
    bus = EventBus()
    sub = bus.subscribe("run_2")
    bus.publish("run_2", "thread.run.created", b"{}")
    body = b""
    async for chunk in sse._frames([("thread.created", {"id": "t"})], sub, keepalive):
        body += chunk
        if body.count(b": keep-alive\n\n") == 2:
            bus.publish("run_2", "thread.run.completed", b"{}")
            bus.end("run_2")
    return body


def test_a_quiet_stream_gets_keep_alive_comments() -> None:
    body = asyncio.run(_quiet_stream(keepalive=0.01))
    assert body.count(b": keep-alive\n\n") == 2
    without = body.replace(b": keep-alive\n\n", b"")
    assert without == (
        b'event: thread.created\ndata: {"id":"t"}\n\n'
        + sse.frame("thread.run.created", b"{}")
        + sse.frame("thread.run.completed", b"{}")
        + b"event: done\ndata: [DONE]\n\n"
    )


class _ManualLoop:
    """The two loop methods the keep-alive timer uses, with time moved by the test."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        self.timers.append((when, callback))
        return cast(asyncio.TimerHandle, _NoHandle())

    def advance_to(self, when: float) -> None:
        """Moves the clock to ``when``, firing each timer due by then (in order, as a loop would)."""
        while self.timers and min(t for t, _ in self.timers) <= when:
            due = min(self.timers, key=lambda t: t[0])
            self.timers.remove(due)
            self.now = due[0]
            due[1]()
        self.now = when


class _NoHandle:
    def cancel(self) -> None:
        pass


def _markers(queue: asyncio.Queue[Event]) -> int:
    n = 0
    while not queue.empty():
        assert queue.get_nowait() is sse._KEEPALIVE
        n += 1
    return n


def test_the_keep_alive_timer_counts_quiet_time_from_the_last_write() -> None:
    loop = _ManualLoop()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    quiet = sse._Quiet(cast(asyncio.AbstractEventLoop, loop), queue, interval=15.0)

    # Events written every 10 s: the stream is never 15 s quiet, so no keep-alive however long it runs.
    for _ in range(10):
        loop.advance_to(loop.now + 10.0)
        quiet.wrote()  # what _frames does at each write
    assert _markers(queue) == 0

    # Then silence: one keep-alive 15 s after the last write, and one every 15 s after that.
    loop.advance_to(quiet.last + 14.9)
    assert _markers(queue) == 0
    loop.advance_to(quiet.last + 15.0)
    assert _markers(queue) == 1
    loop.advance_to(loop.now + 45.0)
    assert _markers(queue) == 3


def test_a_stream_that_has_written_nothing_gets_a_keep_alive_at_its_first_deadline() -> None:
    """A held head (``head_with_first_chunk``) waits for the first chunk: if the run says nothing for
    ``first`` seconds, a keep-alive is that chunk, and the usual interval applies from then on."""
    loop = _ManualLoop()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    sse._Quiet(cast(asyncio.AbstractEventLoop, loop), queue, interval=15.0, first=1.0)
    loop.advance_to(loop.now + 0.9)
    assert _markers(queue) == 0
    loop.advance_to(loop.now + 0.1)
    assert _markers(queue) == 1
    loop.advance_to(loop.now + 14.9)
    assert _markers(queue) == 0
    loop.advance_to(loop.now + 0.1)
    assert _markers(queue) == 1


def test_a_stream_that_wrote_before_its_first_deadline_gets_no_early_keep_alive() -> None:
    loop = _ManualLoop()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    quiet = sse._Quiet(cast(asyncio.AbstractEventLoop, loop), queue, interval=15.0, first=1.0)
    loop.advance_to(loop.now + 0.5)
    quiet.wrote()  # the run's first events went out (with the head)
    loop.advance_to(loop.now + 14.0)  # past the first deadline, 14.5 s after the write
    assert _markers(queue) == 0
    loop.advance_to(quiet.last + 15.0)
    assert _markers(queue) == 1
