"""Python's cyclic garbage collector in the serving process: tuned once the server has started, its pauses
measured.

A server following many runs holds a few hundred thousand live objects (each stream's run, messages,
tasks, parser and protocol state). CPython's default thresholds (700, 10, 10) suit a short script: under a
burst of 1,000 streamed runs they set off ~500 young collections and 4-5 full ones, and each full one walks
every live object with the event loop stopped, 120-210 ms at a time: 0.65-0.94 s of a ~3 s burst, none of
which found any garbage (bench/README.md, "The collector"). So, once started:

- ``gc.freeze()`` moves what exists then (modules, settings, routes, the database's and the engine's
  state) out of the generations the collector walks; those objects live as long as the process anyway.
- The young generation is collected every 10,000 net allocations instead of 700: ~15x fewer young
  passes, each walking more (a few ms, tens under a burst), and the full passes that follow every
  hundredth of them come far less often. Garbage in cycles is still collected, only a little later.

- While requests are being handled and runs set up (from a request's arrival to its response's start,
  from a run's start to its first model call going out), collections wait. A burst's setup allocates
  objects that all live as long as their runs (the runs, their streams, their requests): a pass would
  walk them only to keep them, with the loop stopped, delaying every run still being set up; and the
  passes after the burst would walk them again, as they age through the generations, until the runs
  end and reference counting frees them. So when the spell of setup work ends (nothing left being set
  up) and it made more than a young generation's worth, what it made is frozen too (``gc.freeze`` is
  a list splice, not a walk). Measured on bursts of 1,000 runs: a full pass after they all ended found
  no garbage in cycles among what had been frozen; the frozen count falls back as the runs end.
- Garbage in cycles that does get frozen waits for a thaw: when a spell ends with more frozen than
  ``thaw_at`` (twice what stayed frozen after the last thaw, and at least ``THAW_GROWTH`` more), the
  collector unfreezes, walks everything once, and freezes what is still alive. ``DEFER_LIMIT`` bounds a
  spell: past that many net allocations, or ``MAX_SPELL_SECONDS``, a busy server collects as usual
  again until it is next idle. Both are checked at every hold and release and by a timer on the loop
  (``TICK_SECONDS``), so a spell held open by one slow request ends on time whatever else allocates.
  So what waits for the collector is bounded however busy the server, as CPython's own full passes
  (every 25 % of growth) bound it.

Every pass's duration goes to ``assistantd_gc_pause_seconds`` by generation, so an operator sees the
pauses every stream on the server shares.

Only ``serve`` calls ``tune``: in-process users (tests, ``create_app`` embedded elsewhere) keep their
interpreter's settings.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from assistantd.observability import metrics

YOUNG_THRESHOLD = 10_000  # net allocations between young collections (CPython's default: 700)
# Net allocations a spell may put off collecting: a burst of 1,000 runs makes 110,000-240,000 (measured).
DEFER_LIMIT = 400_000
# Objects frozen beyond what stayed frozen after the last thaw before the next one: a burst of 1,000 runs
# holds ~250,000 while it streams, so bursts that size never wait for a thaw.
THAW_GROWTH = 500_000
COUNT_EVERY_SECONDS = 1.0  # what is frozen is counted (for the thaw) at most this often
MAX_SPELL_SECONDS = 2.0  # a burst's setup here lasts 0.3-1 s; one slow request must not hold it for minutes
TICK_SECONDS = 0.1  # how often the loop's timer checks the bounds of a spell in progress

_started: list[float] = []  # the pass in progress (the collector does not nest)
# Resolved once: the callback runs inside a collection, and a label lookup takes a lock and may allocate.
_PAUSES = [metrics.GC_PAUSE.labels(str(generation)) for generation in range(3)]
_ENDED_IDLE = metrics.GC_DEFERRALS.labels("idle")
_ENDED_AT_LIMIT = metrics.GC_DEFERRALS.labels("limit")
_THAWS = metrics.GC_THAWS


def _observe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        _PAUSES[min(info["generation"], 2)].observe(time.perf_counter() - _started.pop())


class Hold:
    """One request or run being set up; ``release`` (idempotent) when it is."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Deferral | None) -> None:
        self._owner = owner

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.release()


class Deferral:
    """Counts what is being set up; collections wait while it is above zero (see the module's text)."""

    __slots__ = (
        *("count_every", "counted_at", "deferring", "enabled", "holders", "limit", "max_seconds", "since"),
        *("thaw_at", "thaw_growth"),
    )

    def __init__(
        self,
        *,
        limit: int = DEFER_LIMIT,
        max_seconds: float = MAX_SPELL_SECONDS,
        thaw_growth: int = THAW_GROWTH,
        count_every: float = COUNT_EVERY_SECONDS,
    ) -> None:
        self.enabled = False
        self.holders = 0
        self.deferring = False  # the collector is off because of us (never turned on if someone else had)
        self.limit = limit
        self.max_seconds = max_seconds
        self.since = 0.0  # when the spell in progress began (time.monotonic)
        self.thaw_growth = thaw_growth
        self.thaw_at = 0
        self.count_every = count_every
        self.counted_at = float("-inf")  # when what is frozen was last counted (time.monotonic)

    def start(self) -> None:
        """Defer from now on (``tune``, once what startup built is frozen)."""
        self.enabled = True
        self._thawed(gc.get_freeze_count())

    def hold(self) -> Hold:
        if not self.enabled:
            return Hold(None)  # before ``tune`` (tests, an embedded app): the interpreter's collector untouched
        self.holders += 1
        if self.deferring:
            if gc.get_count()[0] > self.limit:
                self._end_spell()
        elif self.holders == 1 and gc.isenabled():
            gc.disable()
            self.deferring = True
            self.since = time.monotonic()
        return Hold(self)

    def release(self) -> None:
        self.holders -= 1
        if self.deferring and (self.holders == 0 or gc.get_count()[0] > self.limit):
            self._end_spell()

    def tick(self) -> None:
        """The bounds of a spell in progress, checked whatever else happens (the loop's timer)."""
        if self.deferring and (gc.get_count()[0] > self.limit or time.monotonic() - self.since > self.max_seconds):
            self._end_spell()

    def _end_spell(self) -> None:
        # A spell that hit the limit does not defer again until nothing is being set up.
        self.deferring = False
        (_ENDED_IDLE if self.holders == 0 else _ENDED_AT_LIMIT).inc()
        if gc.get_count()[0] > gc.get_threshold()[0]:  # a pass would have run during the spell
            gc.freeze()
            # Counting what is frozen walks all of it (~2 ms for 250,000 objects), and a burst ends many
            # spells (whenever nothing is being set up for a moment): at most one count a second.
            now = time.monotonic()
            if now - self.counted_at >= self.count_every:
                self.counted_at = now
                if gc.get_freeze_count() > self.thaw_at:
                    gc.unfreeze()
                    gc.collect()
                    gc.freeze()
                    self._thawed(gc.get_freeze_count())
                    _THAWS.inc()
        # A small spell's objects stay young: the next allocation past the threshold collects them as usual.
        gc.enable()

    def _thawed(self, frozen: int) -> None:
        self.thaw_at = frozen + max(frozen, self.thaw_growth)


_deferral = Deferral()


def hold() -> Hold:
    """Mark a request or a run as being set up: collections wait until it and all others are released."""
    return _deferral.hold()


def _tick(loop: asyncio.AbstractEventLoop) -> None:
    _deferral.tick()
    loop.call_later(TICK_SECONDS, _tick, loop)


def tune() -> None:
    """Freeze what the started server holds, raise the young threshold, measure every pass from now, and
    defer collections during setup work (a timer on the running loop checks a spell's bounds). Idempotent."""
    gc.collect()  # startup's own garbage goes first, so it is not frozen with the rest
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)
    metrics.GC_FROZEN.set(gc.get_freeze_count())
    if not _deferral.enabled:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop to check a spell's bounds: do not defer at all
        _deferral.start()
        loop.call_later(TICK_SECONDS, _tick, loop)
