"""The HTTP/1.1 connection handler: uvicorn's httptools protocol with the limits a public server needs.

uvicorn bounds neither the request head nor the time a client takes to send it: one connection
trickling header bytes held a parser buffer that grew (and was copied) with every byte, and an idle
or half-sent request kept its socket forever. This subclass decides, before the application sees
anything:

- the request line's URL (414), the whole head and the number of header lines (431) are capped;
- the head must arrive within a deadline from its first byte (or from the connection's opening),
  and a body may not go silent for longer than a gap (408);
- one client address holds at most so many connections at once (extra ones get a 429 and close);
- every answer the server shapes itself (malformed framing too) is the OpenAI error envelope, never
  a plain-text 400.

All checks run on the bytes as they arrive (callbacks of the C parser), so an attacker costs a
bounded amount of memory and CPU per connection, and the limits come from settings.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from assistantd.api.streaming import BODY_WRITER

log = logging.getLogger("assistantd.http")

# How long a connection we answered with an error stays half-open so the client can read the answer.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class EdgeLimits:
    max_url_bytes: int
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    max_connections_per_client: int  # 0: no cap


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing; the protocol then answers with ``error``."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def error_response(status: int, message: str, code: str | None, type_: str = "invalid_request_error") -> bytes:
    """A complete HTTP/1.1 response carrying the OpenAI error envelope, closing the connection."""
    body = orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"connection: close\r\n",
        b"\r\n",
    ]
    return b"".join(head) + body


class _BodyWriter:
    """``streaming.BODY_WRITER`` for one request: a chunk of its response's body written to the socket as
    uvicorn's ``send`` would write it, or False when ``send`` must do it (before the head, after the end,
    not chunked, the client gone, the socket's buffer over its high-water mark: ``send`` waits for that).

    Holds the request's cycle weakly: the cycle's scope holds this, and a cycle per request would otherwise
    wait for the garbage collector's full passes."""

    __slots__ = ("cycle",)

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self.cycle = weakref.ref(cycle)

    def __call__(self, chunk: bytes) -> bool:
        cycle = self.cycle()
        if (
            cycle is None
            or not cycle.response_started
            or cycle.response_complete
            or not cycle.chunked_encoding
            or cycle.disconnected
            or cycle.flow.write_paused
            or cycle.transport.is_closing()
        ):
            return False
        if chunk:
            cycle.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        return True


class EdgeHttpProtocol(HttpToolsProtocol):
    """Set ``limits`` on a subclass (see ``protocol_class``); uvicorn makes one instance per connection."""

    limits: ClassVar[EdgeLimits]
    # Live connections per client address, shared by every connection of one server.
    per_client: ClassVar[Counter[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # raw bytes fed while the current request's head is incomplete
        self._in_head = True
        self._url_bytes = 0
        self._header_lines = 0
        self._header_size = 0
        self._reject: _Reject | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen_at = 0.0
        self._client_key: str | None = None
        self._lingering = False

    # --- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self.limits.max_connections_per_client
        if cap > 0 and self.client is not None:
            key = self.client[0]
            if self.per_client[key] >= cap:
                log.warning("connection refused: client=%s already holds %d connections", key, cap)
                self._answer(
                    429,
                    f"Too many connections from your address: the limit is {cap} at once (max_connections_per_client).",
                    "too_many_connections",
                )
                return
            self.per_client[key] += 1
            self._client_key = key
        # A connection that never sends a byte is bounded like one that sends a head too slowly.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._client_key is not None:
            self.per_client[self._client_key] -= 1
            if self.per_client[self._client_key] <= 0:
                del self.per_client[self._client_key]
            self._client_key = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing() or self._lingering:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._arm_head_timer()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            reject, self._reject = self._reject, None
            # The traceback links this protocol (and the request bytes in its frames) to itself: drop it,
            # or every rejected connection waits for a full garbage collection to free its buffers.
            exc.__traceback__ = exc.__context__ = exc.__cause__ = None
            if reject is not None:
                reject.__traceback__ = None
                self._answer(reject.status, reject.message, reject.code)
            else:
                self._answer(400, f"The HTTP request is malformed: {exc}.", "invalid_http_request")
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            # A head still incomplete past the cap: stop before the parser buffers any more of it.
            self._answer(431, self._header_bytes_message(), "request_header_fields_too_large")

    def send_400_response(self, msg: str) -> None:
        self._answer(400, f"The HTTP request is malformed: {msg}", "invalid_http_request")

    # --- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._url_bytes = self._header_lines = self._header_size = 0

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_url_bytes:
            self._fail(
                414,
                f"The request URL is too long: the limit is {self.limits.max_url_bytes} bytes (max_url_bytes).",
                "request_uri_too_long",
            )
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines += 1
        self._header_size += len(name) + len(value) + 4
        if self._header_lines > self.limits.max_headers:
            self._fail(
                431,
                f"The request has too many header fields: the limit is {self.limits.max_headers} (max_headers).",
                "request_header_fields_too_large",
            )
        if self._header_size + self._url_bytes > self.limits.max_header_bytes:
            self._fail(431, self._header_bytes_message(), "request_header_fields_too_large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            extensions = cast(dict[str, Any], self.scope.setdefault("extensions", {}))
            extensions[BODY_WRITER] = _BodyWriter(cycle)
        # Until on_message_complete, the client owes us body bytes.
        self._body_seen_at = time.monotonic()
        self._arm_body_timer(self.limits.body_timeout)

    def on_body(self, body: bytes) -> None:
        self._body_seen_at = time.monotonic()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        self._in_head = True
        super().on_message_complete()

    # --- deadlines ----------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _arm_body_timer(self, delay: float) -> None:
        self._cancel_body_timer()
        self._body_timer = self.loop.call_later(delay, self._body_timed_out)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being written; its own end re-arms the keep-alive timer
        if self._head_bytes == 0:
            self.transport.close()  # an idle connection: nobody is waiting for an answer
            return
        log.warning("request head not received in time: client=%s", self.client[0] if self.client else "-")
        self._answer(
            408,
            f"The request head did not arrive within {self.limits.header_timeout:g} seconds (header_timeout).",
            "request_timeout",
        )

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.cycle is None or not self.cycle.more_body:
            return
        idle = time.monotonic() - self._body_seen_at
        if self.flow.read_paused or idle < self.limits.body_timeout:
            # Reading is paused while the application catches up (not the client's fault), or bytes
            # came meanwhile: look again when the gap could first exceed the limit.
            self._arm_body_timer(max(self.limits.body_timeout - idle, 0.05))
            return
        log.warning("request body stalled: client=%s", self.client[0] if self.client else "-")
        self._answer(
            408,
            f"The request body stalled: no bytes for {self.limits.body_timeout:g} seconds (body_timeout).",
            "request_timeout",
        )

    # --- answers ------------------------------------------------------------------------------

    def _fail(self, status: int, message: str, code: str) -> None:
        self._reject = _Reject(status, message, code)
        raise self._reject

    def _header_bytes_message(self) -> str:
        return (
            f"The request head is too large: the limit is {self.limits.max_header_bytes} bytes for the request "
            "line and headers together (max_header_bytes)."
        )

    def _answer(self, status: int, message: str, code: str) -> None:
        """Answer with the error envelope and close, unless a response is already under way."""
        self._cancel_timers()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The application is handling this connection's request: it must stop reading (it sees a
            # disconnect) and must not write after us.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        if not self.transport.is_closing():
            self.transport.write(error_response(status, message, code))
            self._linger()

    def _linger(self) -> None:
        """Close after the client has had a chance to read the answer.

        Closing a socket with unread request bytes makes the kernel send a reset, which can destroy the
        answer before the client reads it. So: stop sending, drop whatever still arrives, and close when
        the client does or after a short, fixed time (nginx's "lingering close")."""
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self._close_now)

    def _close_now(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def eof_received(self) -> None:
        if self._lingering:
            self._close_now()


def protocol_class(limits: EdgeLimits) -> type[EdgeHttpProtocol]:
    """A protocol class bound to one server's limits (uvicorn takes a class, not an instance)."""
    return type("BoundEdgeHttpProtocol", (EdgeHttpProtocol,), {"limits": limits, "per_client": Counter()})
