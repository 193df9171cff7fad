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

Every pass's duration goes to ``assistantd_gc_pause_seconds`` by generation, so an operator sees the
pauses every stream on the server shares.

Only ``serve`` calls ``tune``: in-process users (tests, ``create_app`` embedded elsewhere) keep their
interpreter's settings.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from assistantd.observability import metrics

YOUNG_THRESHOLD = 10_000  # net allocations between young collections (CPython's default: 700)

_started: list[float] = []  # the pass in progress (the collector does not nest)
# Resolved once: the callback runs inside a collection, and a label lookup takes a lock and may allocate.
_PAUSES = [metrics.GC_PAUSE.labels(str(generation)) for generation in range(3)]


def _observe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        _PAUSES[min(info["generation"], 2)].observe(time.perf_counter() - _started.pop())


def tune() -> None:
    """Freeze what the started server holds, raise the young threshold, and measure every pass from now.
    Idempotent."""
    gc.collect()  # startup's own garbage goes first, so it is not frozen with the rest
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)
    metrics.GC_FROZEN.set(gc.get_freeze_count())
