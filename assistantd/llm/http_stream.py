"""A small HTTP/1.1 client for the one call on the hot path: a streamed chat completion.

Reading a token stream through httpx goes through httpcore, h11 and anyio for every chunk (a cancel
scope and a timeout per socket read, an h11 event per chunk): at 1,000 concurrent streamed runs that
was ~40 % of the server's CPU samples. Here an ``asyncio.Protocol`` feeds the bytes to httptools' C
parser (uvicorn's, which decodes chunked bodies), and the reader gets everything that arrived since
its last read in one piece: one wake-up per batch of events, not per socket read.

It does what that one call needs and nothing more: POST with a body, keep-alive connections pooled
per client (at most ``max_connections``, idle ones kept up to that many), TLS through the caller's
``ssl.SSLContext``, a connect timeout. No redirects (httpx follows none by default either), no
compression (none is asked for), no proxies: ``usable_for`` says when httpx must be used instead.
Read timeouts and deadlines stay with the caller, which cancels the task (``openai_compat.ReadWatch``).
Failures are httpx's own exception classes, so callers handle both clients alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import cast
from urllib.parse import urlsplit

import httptools
import httpx

_HIGH_WATER = 1 << 20  # bytes received and not yet read at which the socket stops being read
# A reader stops at the stream's ``[DONE]``, usually a moment before the body's last chunk arrives:
# the connection waits this long for the end of its body to be pooled again, else it is closed.
_LINGER = 5.0


def usable_for(base_url: str) -> bool:
    """Whether this client can reach ``base_url`` as httpx would: plain http(s), no proxy from the
    environment (httpx honours ``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY``), no query or credentials."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.username:
        return False
    proxies = urllib.request.getproxies()
    if proxies.get(parts.scheme) or proxies.get("all"):
        return bool(urllib.request.proxy_bypass(parts.hostname))
    return True


class Response:
    """The part of ``httpx.Response`` the adapter reads: status, headers, the body in pieces or whole."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status_code = conn.status
        self.headers: dict[str, str] = conn.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.body:
                data = conn.body[0] if len(conn.body) == 1 else b"".join(conn.body)
                conn.body.clear()
                conn.buffered = 0
                conn.resume()
                yield data
            elif conn.complete:
                return
            elif conn.error is not None:
                raise conn.error
            else:
                await conn.wait()

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])


class _Connection(asyncio.Protocol):
    """One keep-alive connection, carrying one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.on_complete: Callable[[], None] | None = None  # set while the body's end is awaited after use
        self._start()

    def _start(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.have_headers = False
        self.keep_alive = False
        self.complete = False
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.received = False  # any byte of this exchange's response yet
        self.resume()  # a body read to its end while paused must not leave the next one unread

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport's

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))
        if self.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.have_headers and not self.complete and exc is None and self._until_close():
            self.complete = True  # a body delimited by the end of the connection has ended
        elif not self.complete:
            if exc is None:
                what = (
                    "peer closed connection without sending complete message body"
                    if self.have_headers
                    else ("Server disconnected without sending a response.")
                )
                self._fail(httpx.RemoteProtocolError(what))
            else:
                self._fail(httpx.ReadError(str(exc) or type(exc).__name__))
        self._wake()
        if self.on_complete is not None:  # lingering after use (StreamClient._linger): its slot is free now
            self.on_complete()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # asked now: llhttp forgets it once the body ends
        self.have_headers = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()
        if self.on_complete is not None:
            self.on_complete()

    # the reader's side
    def _until_close(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "")

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        if self.on_complete is not None:
            self.on_complete()


class StreamClient:
    """POSTs to one base URL over pooled keep-alive connections; ``stream`` mirrors ``httpx.AsyncClient.stream``."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        *,
        tls: ssl.SSLContext,
        connect_timeout: float,
        max_connections: int,
    ) -> None:
        parts = urlsplit(base_url)
        assert parts.hostname is not None
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = tls if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        host = f"[{self._host}]" if ":" in self._host else self._host
        default = (parts.scheme == "https" and self._port == 443) or (parts.scheme == "http" and self._port == 80)
        fixed = {"Host": host if default else f"{host}:{self._port}", "Accept": "*/*", "Connection": "keep-alive"}
        fixed.update(headers)
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(max_connections) if max_connections > 0 else None
        self._idle: deque[_Connection] = deque()
        self._lingering: set[_Connection] = set()  # used, waiting for the end of their body (_linger)

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, *, content: bytes, headers: dict[str, str]
    ) -> AsyncIterator[Response]:
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._fixed}" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        request = f"{head}Content-Length: {len(content)}\r\n\r\n".encode("latin-1") + content
        if self._slots is not None:
            await self._slots.acquire()
        conn: _Connection | None = None
        finished = False
        try:
            conn, reused = await self._connection()
            while True:
                assert conn.transport is not None
                conn.transport.write(request)
                while not conn.have_headers and conn.error is None:
                    await conn.wait()
                if conn.error is None:
                    break
                if not (reused and not conn.received):
                    raise conn.error
                # An idle connection the upstream closed as we reused it (the keep-alive race): it
                # answered nothing, so the request was not taken; send it once more on a new one.
                conn.close()
                conn, reused = await self._connection(fresh=True)
            yield Response(conn)
            finished = True
        finally:
            if conn is None:
                self._free_slot()
            elif conn.reusable():
                self._pool(conn)
            elif finished and not conn.closed and conn.error is None:
                self._linger(conn)
            else:
                conn.close()
                self._free_slot()

    def _free_slot(self) -> None:
        if self._slots is not None:
            self._slots.release()

    def _pool(self, conn: _Connection) -> None:
        conn._start()
        self._idle.append(conn)
        self._free_slot()

    def _linger(self, conn: _Connection) -> None:
        """Pool ``conn`` once the rest of its body has come (and been dropped), or close it after ``_LINGER``."""
        timer = asyncio.get_running_loop().call_later(_LINGER, conn.close)
        self._lingering.add(conn)

        def ended() -> None:
            conn.on_complete = None
            timer.cancel()
            self._lingering.discard(conn)
            if conn.reusable():
                self._pool(conn)
            else:
                conn.close()
                self._free_slot()

        conn.on_complete = ended

    async def _connection(self, *, fresh: bool = False) -> tuple[_Connection, bool]:
        """A connection for one exchange, and whether it was reused from the pool."""
        while self._idle and not fresh:
            conn = self._idle.pop()  # the most recently used: the least likely to have been closed
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls is not None else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection within {self._connect_timeout:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return conn, False

    async def aclose(self) -> None:
        for conn in list(self._lingering):
            conn.close()
        while self._idle:
            self._idle.pop().close()
        await asyncio.sleep(0)  # the transports close on the next turn of the loop
