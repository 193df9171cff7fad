"""The one streamed response of the API (run events, pass-through streams, file downloads).

Starlette's ``StreamingResponse`` sends the same bytes, but on a server that does not raise when the client
is gone (uvicorn declares ASGI spec 2.3) it runs every response inside an anyio task group, with a cancel
scope and a second task listening for the disconnect: about 45 us a response on this project's 2-core
machine, a tenth of a whole pass-through stream's CPU and a twentieth of a run's. Here the body is sent
from the request's own task and one plain asyncio task waits for the disconnect; when the client goes,
that task cancels the sending, so the body iterator stops where it waits (an upstream read, a run's event
queue) and its cleanup runs, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class _Watch:
    """Whether the response is still sending, and whether the client left while it was."""

    __slots__ = ("gone", "sending")

    def __init__(self) -> None:
        self.sending = True
        self.gone = False


async def _until_gone(receive: Receive, sender: asyncio.Task[object], watch: _Watch) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # the request's body was read by the handler already; nothing else is expected
    # uvicorn also answers "disconnect" once the response is complete: only a response still being sent
    # is interrupted (``sending`` is cleared before the sender's next await, so this cannot land late).
    if watch.sending:
        watch.gone = True
        sender.cancel()


def _raises_when_gone(scope: Scope) -> bool:
    """ASGI spec 2.4 and later: ``send`` raises ``OSError`` once the client has disconnected."""
    version = scope.get("asgi", {}).get("spec_version", "2.0")
    return version not in _SPEC_BEFORE_2_4 and tuple(int(p) for p in version.split(".")) >= (2, 4)


_SPEC_BEFORE_2_4 = frozenset({"2.0", "2.1", "2.2", "2.3"})


# A server may offer a way to write the current response's body past ``send`` (scope["extensions"]): a
# callable taking one chunk of bytes, True if written, False if it cannot be now (the response has not
# started or has ended, the client left, the socket's buffer is full): the caller then uses ``send``.
# ``http_edge.py`` offers it. Skipping the ASGI layers only pays off for a body written from outside the
# response's own task (``sse.py``, where it saves the task a wake-up, a loop turn, per write).
BODY_WRITER = "assistantd.body_writer"
BodyWriter = Callable[[bytes], bool]


def _bytes(chunk: str | bytes | memoryview, charset: str) -> bytes | memoryview:
    return chunk.encode(charset) if isinstance(chunk, str) else chunk


class StreamedResponse(StreamingResponse):
    """``StreamingResponse``'s constructor and headers, sent without a task group (see the module's text).

    ``head_with_first_chunk``: the status line and headers wait for the body's first chunk and go out
    right before it, for a body whose first chunk is at most a moment away (a run's first events). The
    client then wakes once for both instead of twice: at 1,000 streamed runs created at once that was a
    thousand writes fewer for the server and a thousand wake-ups fewer for whoever reads them.
    """

    def __init__(
        self,
        *args: Any,
        head_with_first_chunk: bool = False,
        take_writer: Callable[[BodyWriter], None] | None = None,
        **kwargs: Any,
    ) -> None:
        """``take_writer``: called with the server's ``BODY_WRITER`` before the body starts, if it offers one."""
        super().__init__(*args, **kwargs)
        self.head_with_first_chunk = head_with_first_chunk
        self.take_writer = take_writer

    async def stream_response(self, send: Send) -> None:
        if not self.head_with_first_chunk:
            await super().stream_response(send)
            return
        chunks = self.body_iterator.__aiter__()
        first = await anext(chunks, None)
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if first is not None:
            await send({"type": "http.response.body", "body": _bytes(first, self.charset), "more_body": True})
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": _bytes(chunk, self.charset), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.take_writer is not None:
            writer = (scope.get("extensions") or {}).get(BODY_WRITER)
            if writer is not None:
                self.take_writer(writer)
        sender = asyncio.current_task()
        if sender is None or scope["type"] != "http" or _raises_when_gone(scope):
            # Starlette needs no task group there: a send to a client that has gone raises.
            await super().__call__(scope, receive, send)
            return
        watch = _Watch()
        watcher = asyncio.get_running_loop().create_task(_until_gone(receive, sender, watch))
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            # Ours (the client left): the response just ends. Anyone else's (shutdown) goes on up.
            if not watch.gone or sender.uncancel() > 0:
                raise
        finally:
            watch.sending = False
            watcher.cancel()
            # A body left at a ``yield`` (the client left while a chunk was being sent) runs its cleanup
            # now rather than whenever the collector finds it; a finished one ignores this.
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
        if self.background is not None:
            await self.background()
