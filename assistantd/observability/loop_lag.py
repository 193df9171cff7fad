"""How late the event loop runs what is due: the measure of a saturated server that every stream feels.

Every stream, request and timer of the server shares one event loop. When the callbacks ready at once
take longer than their deadlines allow (a burst of a thousand run creations, a long collector pass, code
that blocks), everything waits, and CPU figures alone do not say for how long. A timer asks to run every
``INTERVAL``; how much later than asked it does run goes to ``assistantd_event_loop_lag_seconds``. In
the 1,000-stream burst of ``bench/run_bench.py`` the lag was 13 ms at the median and up to ~250 ms
(bench/README.md): the wait each step of every stream pays there.

A callback re-armed from itself, not a task: ~20 wakes a second cost a few microseconds each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from assistantd.observability import metrics

INTERVAL = 0.05  # seconds between two measurements


class LoopLagWatch:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float = INTERVAL,
        observe: Callable[[float], None] = metrics.LOOP_LAG.observe,
    ) -> None:
        self._loop = loop
        self._interval = interval
        self._observe = observe
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> LoopLagWatch:
        if self._handle is None:
            self._arm()
        return self

    def _arm(self) -> None:
        self._due = self._loop.time() + self._interval
        self._handle = self._loop.call_at(self._due, self._fire)

    def _fire(self) -> None:
        # uvloop's timers have a millisecond's resolution: an idle loop shows up to ~1 ms.
        self._observe(max(0.0, self._loop.time() - self._due))
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
