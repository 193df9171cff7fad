"""Server-sent events, framed in one place: ``event: name`` / ``data: json`` / blank line, ``done`` last.

A quiet stream (a long model call) gets comment lines so proxies keep it open; the SDK ignores them.
If something breaks after the response has started, the status code can no longer change: the
stream says so with an ``error`` event in the shape every SDK version raises on, then ``done``.

Once its first events are out, a stream whose server offers a body writer (``streaming.BODY_WRITER``)
takes what the bus must deliver at once (a message's first text, ``publish(now=True)``) while its task
waits with nothing queued (``Subscription.sink``): written in the turn it is published in, not a turn
later when the task wakes (tens of milliseconds on a busy loop). Everything else, and anything the
writer cannot take now (the client reads slowly), goes through the queue and the task, which writes
what piled up in one go; events already queued go first, so the order is the bus's either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable

import orjson

from assistantd.api.streaming import BodyWriter, StreamedResponse
from assistantd.protocol.runs import without_search_content
from assistantd.service.streams import Event, EventQueue, Sink, Subscription

log = logging.getLogger("assistantd.api")

KEEPALIVE_SECONDS = 15.0
# The response's head goes out with its first event (``head_with_first_chunk``), which is a moment away (the
# run's executor announces it on its first step). Should it not be, a stream that has said nothing this
# long sends a keep-alive, so the head is never held longer than this.
HEAD_WAIT_SECONDS = 1.0
_DONE = b"event: done\ndata: [DONE]\n\n"
_KEEPALIVE: Event = ("", b"")  # put in a subscription's queue by the keep-alive timer, never by the bus


_HEADS: dict[str, bytes] = {}  # "event: NAME\ndata: " per event name: a few dozen names, encoded once


def frame(name: str, data: bytes) -> bytes:
    head = _HEADS.get(name)
    if head is None:
        head = _HEADS[name] = b"event: " + name.encode() + b"\ndata: "
    return head + data + b"\n\n"


def _shown(name: str, data: bytes, include: list[str] | None) -> bytes:
    """One event's frame; step events shed the file search content the run's ``include`` does not name."""
    if include is not None and name.startswith("thread.run.step"):
        shown = without_search_content(data, include)
        data = shown if isinstance(shown, bytes) else shown.encode()
    return frame(name, data)


class Direct:
    """The server's body writer, once the response has been given one (``StreamedResponse(take_writer=)``)."""

    __slots__ = ("write",)

    def __init__(self) -> None:
        self.write: BodyWriter | None = None

    def take(self, writer: BodyWriter) -> None:
        self.write = writer


def _sink(write: BodyWriter, queue: EventQueue, quiet: _Quiet, include: list[str] | None) -> Sink:
    def sink(events: list[Event]) -> bool:
        if not queue.idle():
            return False  # the task has events to write first: these go behind them
        try:
            chunk = b"".join([_shown(name, data, include) for name, data in events])
        except Exception:
            return False  # the task's own framing meets the same fault and ends the stream with an error event
        if not write(chunk):
            return False
        quiet.wrote()
        return True

    return sink


async def _frames(
    prefix: Iterable[Event],
    sub: Subscription,
    keepalive: float = KEEPALIVE_SECONDS,
    include: list[str] | None = None,
    direct: Direct | None = None,
) -> AsyncIterator[bytes]:
    queue = sub.queue
    loop = asyncio.get_running_loop()
    quiet = _Quiet(loop, queue, keepalive, first=min(HEAD_WAIT_SECONDS, keepalive))
    try:
        for name, data in prefix:
            quiet.wrote()
            yield frame(name, data if isinstance(data, bytes) else orjson.dumps(data))
        while True:
            # Whatever is already queued goes out in one write: under load a stream's events pile up
            # between two turns of the loop, and each write costs as much as a small event.
            event = queue.get_nowait() if not queue.empty() else await queue.get()
            chunks = []
            ended = False
            while True:
                if event is not _KEEPALIVE:
                    if not event[0]:  # the bus's end marker
                        ended = True
                        break
                    chunks.append(_shown(event[0], event[1], include))
                if queue.empty():
                    break
                event = queue.get_nowait()
            if chunks:
                quiet.wrote()
                yield b"".join(chunks)
                # Written, so the response has started: from now on the bus may write past the queue.
                if sub.sink is None and direct is not None and direct.write is not None:
                    sub.sink = _sink(direct.write, queue, quiet, include)
            elif not ended:
                yield b": keep-alive\n\n"
            if ended:
                break
    except Exception:
        log.exception("stream for run %s broke", sub.run_id)
        error = {
            "error": {
                "message": "The server had an error while streaming this run; poll the run for its status.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        yield frame("error", orjson.dumps(error))
    finally:
        sub.sink = None
        quiet.cancel()
        # A client that went away just stops following; the run carries on and can be polled.
        sub.close()
    yield _DONE


class _Quiet:
    """Puts a keep-alive marker in the queue once the stream has been quiet for ``interval`` seconds, and
    ``first`` seconds after it began if nothing has been written by then (a held head goes out with it).

    One timer per quiet period, re-armed lazily from the time of the last write: a timeout around every
    ``queue.get()`` (``asyncio.wait_for``) costs a task and a timer per event.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, queue: EventQueue, interval: float, first: float | None = None
    ) -> None:
        self.loop = loop
        self.queue = queue
        self.interval = interval
        self.last = loop.time()
        self.unwritten = first is not None  # nothing written yet, and ``first`` says how long that may last
        self.handle = loop.call_at(self.last + (interval if first is None else first), self._fire)

    def wrote(self) -> None:
        self.last = self.loop.time()
        self.unwritten = False

    def _fire(self) -> None:
        now = self.loop.time()
        if self.unwritten or now - self.last >= self.interval:
            self.queue.put_nowait(_KEEPALIVE)
            self.last = now
        self.unwritten = False
        self.handle = self.loop.call_at(self.last + self.interval, self._fire)

    def cancel(self) -> None:
        self.handle.cancel()


def sse_response(
    sub: Subscription,
    prefix: Iterable[Event] = (),
    keepalive: float = KEEPALIVE_SECONDS,
    include: list[str] | None = None,
) -> StreamedResponse:
    """The run's events as SSE; ``include`` is the run's include[] (step events shed what it does not name)."""
    direct = Direct()
    return StreamedResponse(
        _frames(list(prefix), sub, keepalive, include, direct),
        head_with_first_chunk=True,
        take_writer=direct.take,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
