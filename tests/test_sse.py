"""SSE framing of a run's events: every event in order, ``done`` last, keep-alives while quiet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
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


class _Writer:
    """The server's body writer (``streaming.BODY_WRITER``) as a list of writes; ``accept`` False says the
    socket cannot take more now (a client reading slowly)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.accept = True

    def __call__(self, chunk: bytes) -> bool:
        if self.accept:
            self.writes.append(chunk)
        return self.accept


async def _parked(frames: AsyncIterator[bytes]) -> asyncio.Future[bytes]:
    """The response's next read of the stream, left waiting on the run's queue (as its task would be)."""
    pending = asyncio.ensure_future(anext(frames))
    for _ in range(3):  # a few turns of the loop: the generator runs up to its wait on the queue
        await asyncio.sleep(0)
    assert not pending.done()
    return pending


def test_with_a_body_writer_a_first_text_goes_out_in_the_turn_it_is_published() -> None:
    async def go() -> None:
        bus = EventBus()
        sub = bus.subscribe("run_3")
        writer, direct = _Writer(), sse.Direct()
        direct.take(writer)
        frames = sse._frames([], sub, direct=direct)
        bus.publish("run_3", "thread.run.created", b'{"n":1}')
        # The first events go through the response's task (its head goes out with them).
        assert await anext(frames) == sse.frame("thread.run.created", b'{"n":1}')
        pending = await _parked(frames)
        assert sub.sink is not None and writer.writes == []

        # A message's opening with its first text, published while the task waits: written at once, in
        # the publisher's call, without the task.
        bus.publish("run_3", "thread.message.created", b'{"n":2}', more=True)
        bus.publish("run_3", "thread.message.in_progress", b'{"n":3}', more=True)
        assert writer.writes == []  # held: more is coming in this turn
        bus.publish("run_3", "thread.message.delta", b'{"n":4}', now=True)
        assert writer.writes == [  # one write for what was said together
            sse.frame("thread.message.created", b'{"n":2}')
            + sse.frame("thread.message.in_progress", b'{"n":3}')
            + sse.frame("thread.message.delta", b'{"n":4}')
        ]
        assert not pending.done()

        # The rest of the text goes through the task, which writes what piled up in one go.
        bus.publish("run_3", "thread.message.delta", b'{"n":5}')
        bus.publish("run_3", "thread.message.delta", b'{"n":6}')
        assert len(writer.writes) == 1
        assert await pending == sse.frame("thread.message.delta", b'{"n":5}') + sse.frame(
            "thread.message.delta", b'{"n":6}'
        )

        # A socket that cannot take more: the next opening waits in the queue, and the task sends it after
        # what was queued before it, in order.
        pending = await _parked(frames)
        writer.accept = False
        bus.publish("run_3", "thread.message.created", b'{"n":7}', now=True)
        writer.accept = True
        bus.publish("run_3", "thread.message.delta", b'{"n":8}', now=True)  # behind n=7: not past the queue
        assert len(writer.writes) == 1
        assert await pending == sse.frame("thread.message.created", b'{"n":7}') + sse.frame(
            "thread.message.delta", b'{"n":8}'
        )

        # Caught up, the writer is used again; the stream's end goes through the task, then done.
        pending = await _parked(frames)
        bus.publish("run_3", "thread.message.delta", b'{"n":9}', now=True)
        assert writer.writes[-1] == sse.frame("thread.message.delta", b'{"n":9}')
        bus.end("run_3")
        assert await pending == b"event: done\ndata: [DONE]\n\n"
        assert sub.sink is None
        assert [chunk async for chunk in frames] == []

    asyncio.run(go())


def test_without_a_body_writer_everything_goes_through_the_task() -> None:
    async def go() -> None:
        bus = EventBus()
        sub = bus.subscribe("run_4")
        frames = sse._frames([], sub, direct=sse.Direct())  # the server offered none
        bus.publish("run_4", "thread.run.created", b"{}")
        assert await anext(frames) == sse.frame("thread.run.created", b"{}")
        pending = await _parked(frames)
        assert sub.sink is None
        bus.publish("run_4", "thread.message.created", b"{}", more=True)
        bus.publish("run_4", "thread.message.delta", b"{}", now=True)
        assert await pending == sse.frame("thread.message.created", b"{}") + sse.frame("thread.message.delta", b"{}")
        bus.end("run_4")
        assert b"".join([chunk async for chunk in frames]) == b"event: done\ndata: [DONE]\n\n"

    asyncio.run(go())


def test_held_events_go_out_with_the_streams_end_when_nothing_follows() -> None:
    async def go() -> None:
        bus = EventBus()
        sub = bus.subscribe("run_5")
        bus.publish("run_5", "thread.message.completed", b"{}", more=True)
        assert sub.queue.empty()
        bus.end("run_5")
        assert [await sub.queue.get(), await sub.queue.get()] == [("thread.message.completed", b"{}"), ("", None)]
        bus.publish("run_6", "thread.message.completed", b"{}", more=True)  # nobody follows run_6
        bus.end("run_6")
        assert bus._held == {}

    asyncio.run(go())
