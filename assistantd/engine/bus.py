"""Per-run fan-out of stream events to the SSE responses that follow the run in this process.

A subscriber registers before the run starts, so it cannot miss the first event. A subscriber that
goes away (client disconnected) just stops reading; the run never waits for anyone.

Events reach a subscriber through its queue, which its response's task reads when it next runs: on a
busy loop that is a turn later (tens of milliseconds), and whatever was published meanwhile goes out in
one write. What must not wait (``now=True``: a message's first text) goes through the subscriber's
``sink`` instead, while its task waits with nothing queued: the response writes it to its socket in the
publisher's turn. Events published with ``more=True`` are held and delivered with the next one, so what
a run says at one moment (its message's ``created`` and ``in_progress`` with its first text, the events
of its end) is delivered, and written, together.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

Event = tuple[str, Any]  # (event name, JSON-able data)
_END = ("", None)
# Takes events in order, True if it delivered them; False leaves them to the queue. Never raises.
Sink = Callable[[list[Event]], bool]


class EventQueue:
    """The part of ``asyncio.Queue`` a subscriber uses (unbounded, one reader), at a fraction of its cost
    per event: a deque, and one future while the reader waits. ``asyncio.Queue`` keeps task accounting,
    a "finished" event and getter/putter lists in Python, paid for every event of every stream."""

    def __init__(self) -> None:
        self._items: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Event) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def idle(self) -> bool:
        """The reader waits, with everything before handed over: an event delivered past the queue now is
        in order."""
        return self._waiter is not None and not self._items

    def get_nowait(self) -> Event:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> Event:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class Subscription:
    def __init__(self, bus: EventBus, run_id: str) -> None:
        self._bus = bus
        self.run_id = run_id
        self.queue = EventQueue()
        self.sink: Sink | None = None  # set by the reader while it can take events past its queue

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        try:
            while True:
                event = await self.queue.get()
                if event is _END:
                    return
                yield event
        finally:
            self.close()

    def close(self) -> None:
        self._bus._unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._subs: dict[str, list[Subscription]] = {}
        self._held: dict[str, list[Event]] = {}

    def subscribe(self, run_id: str) -> Subscription:
        sub = Subscription(self, run_id)
        self._subs.setdefault(run_id, []).append(sub)
        return sub

    def publish(self, run_id: str, name: str, data: Any, *, more: bool = False, now: bool = False) -> None:
        """``more``: the publisher has more to say in this same turn; hold this until its next event.
        ``now``: written in this turn where the subscriber can (its ``sink``), with what was held."""
        held = self._held.get(run_id)
        if more:
            if held is None:
                self._held[run_id] = [(name, data)]
            else:
                held.append((name, data))
            return
        if held is None:
            self._deliver(run_id, [(name, data)], now)
        else:
            del self._held[run_id]
            held.append((name, data))
            self._deliver(run_id, held, now)

    def _deliver(self, run_id: str, events: list[Event], now: bool = False) -> None:
        for sub in self._subs.get(run_id, ()):
            sink = sub.sink
            if not now or sink is None or not sink(events):
                put = sub.queue.put_nowait
                for event in events:
                    put(event)

    def end(self, run_id: str) -> None:
        """The stream of this run's current execution is over (terminal state or requires_action)."""
        held = self._held.pop(run_id, None)
        if held:
            self._deliver(run_id, held)
        for sub in self._subs.pop(run_id, ()):
            sub.queue.put_nowait(_END)

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.run_id)
        if subs and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[sub.run_id]
