"""Running the HTTP server: tuning the process once it has started, stopping without hanging on open streams.

Once uvicorn has started (the app's lifespan done, the port bound), the garbage collector is tuned for a
process that holds many live runs (``observability/collector.py``).

uvicorn, told to stop (SIGTERM, SIGINT), stops accepting connections and then waits for every response
in flight to finish before it runs the app's lifespan shutdown; an SSE stream of a run that goes on (or
never ends) would keep the process alive. So the app has to end its streams itself as soon as the
signal arrives: ``GracefulServer`` tells the app through ``Draining`` the moment it is signalled, and the
app (``app.py``) gives the runs executing here ``shutdown_grace_seconds`` to finish, then hands the rest
over, which ends their streams (``done``). uvicorn's own graceful timeout is set a little past that as a
backstop for any other response still open (a download, a pass-through stream): those are cut.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType
from typing import Any

import uvicorn

from assistantd.observability import collector

log = logging.getLogger("assistantd")

BACKSTOP_SECONDS = 10.0  # past the grace period, for the hand-over itself and responses not run streams


class Draining:
    """Set once, from a signal handler, when the server starts going down; the app waits on it."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self.fired = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called from the app's lifespan, in the loop that serves it."""
        self._loop = loop
        self._event = asyncio.Event()
        if self.fired:
            self._event.set()

    def fire(self) -> None:
        """Safe from a signal handler or another thread."""
        if self.fired:
            return
        self.fired = True
        if self._loop is not None and self._event is not None:
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        assert self._event is not None, "bind() first"
        await self._event.wait()


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, draining: Draining) -> None:
        super().__init__(config)
        self.draining = draining

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            collector.tune()  # what startup built is what the collector need never walk again

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.draining.fire()
        super().handle_exit(sig, frame)


def run(app: Any, *, grace_seconds: float, **options: Any) -> None:
    """``uvicorn.run(app, **options)``, with streams ended by the app on a signal (``app.state.draining``)."""
    config = uvicorn.Config(app, timeout_graceful_shutdown=int(grace_seconds + BACKSTOP_SECONDS + 0.999), **options)
    GracefulServer(config, app.state.draining).run()
