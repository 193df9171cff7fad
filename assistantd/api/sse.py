"""Server-sent events, framed in one place: ``event: name`` / ``data: json`` / blank line, ``done`` last.

A quiet stream (a long model call) gets comment lines so proxies keep it open; the SDK ignores them.
If something breaks after the response has started, the status code can no longer change: the
stream says so with an ``error`` event in the shape every SDK version raises on, then ``done``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable

import orjson
from starlette.responses import StreamingResponse

from assistantd.engine.bus import Event, Subscription

log = logging.getLogger("assistantd.api")

KEEPALIVE_SECONDS = 15.0
_DONE = b"event: done\ndata: [DONE]\n\n"


def frame(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


async def _frames(prefix: Iterable[Event], sub: Subscription) -> AsyncIterator[bytes]:
    try:
        for name, data in prefix:
            yield frame(name, data if isinstance(data, bytes) else orjson.dumps(data))
        while True:
            try:
                name, data = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if not name:
                break
            yield frame(name, data)
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
        # A client that went away just stops following; the run carries on and can be polled.
        sub.close()
    yield _DONE


def sse_response(sub: Subscription, prefix: Iterable[Event] = ()) -> StreamingResponse:
    return StreamingResponse(
        _frames(list(prefix), sub),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
