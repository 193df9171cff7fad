"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request): auth, body limits, access log."""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistantd.api.errors import envelope
from assistantd.errors import PayloadTooLarge
from assistantd.service.keys import KeyService

access_log = logging.getLogger("assistantd.access")

_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def mask(key: str) -> str:
    """Enough of a key for its owner to recognise it, never enough to use it."""
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * min(len(key) - 7, 20)}{key[-4:]}"


class EdgeMiddleware:
    """Authenticates ``/v1`` requests, caps request bodies, and logs one line per request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeyService,
        max_body: int,
        max_upload: int,
        log_requests: bool,
        loopback_hosts_only: bool = True,
    ) -> None:
        self.app = app
        self.keys = keys
        self.loopback_hosts_only = loopback_hosts_only
        self.max_body = max_body
        self.max_upload = max_upload
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.log_requests:
            # The wrapper below only serves the access log; it would cost a call on every SSE event.
            await self._handle(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": 0}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_wrapper)
        finally:
            state = scope.get("state") or {}
            access_log.info(
                "request method=%s path=%s status=%s ms=%.1f project=%s",
                scope["method"],
                scope["path"],
                status_holder["status"],
                (time.perf_counter() - started) * 1000,
                state.get("project", "-"),
            )

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if not path.startswith("/v1/") and path != "/v1":
            await self.app(scope, receive, send)
            return
        project = await self._authenticate(scope)
        if isinstance(project, _Open):
            # No key protects this server, so what a web page can make a browser send must be refused.
            project = _browser_forgery(scope, self.loopback_hosts_only) or "default"
        if isinstance(project, tuple):
            status, message, code = project
            await envelope(status, message, "invalid_request_error", code=code)(scope, receive, send)
            return
        scope.setdefault("state", {})["project"] = project

        limit = self.max_upload + 1024 * 1024 if path == "/v1/files" else self.max_body
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(limit)(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(_too_large_message(limit))
            return message

        await self.app(scope, limited_receive, send)

    async def _authenticate(self, scope: Scope) -> str | _Open | tuple[int, str, str | None]:
        header = _header(scope, b"authorization")
        key = ""
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "bearer":
                key = value.strip()
        project, open_mode = await self.keys.authenticate(key)
        if project is not None:
            return project
        if open_mode:
            return _OPEN
        if not key:
            return (401, _MISSING_KEY, None)
        return (401, f"Incorrect API key provided: {mask(key)}.", "invalid_api_key")


class _Open:
    """What authentication yields when no key protects the server: project ``default``, with checks."""


_OPEN = _Open()


def _browser_forgery(scope: Scope, loopback_hosts_only: bool) -> tuple[int, str, str] | None:
    """What a hostile web page could make a visitor's browser send to an open server, refused.

    DNS rebinding (a foreign ``Host``), cross-site requests (a foreign ``Origin``), and the bodies a
    browser sends cross-site without asking first (``text/plain``, form encodings, no type at all).
    """
    host = (_header(scope, b"host") or "").strip().lower()
    if loopback_hosts_only and not _loopback_name(host):
        return (
            403,
            f"This server has no API keys, so it only answers requests addressed to a loopback name "
            f"(localhost, 127.0.0.1, [::1]); the Host header was {host[:100]!r}. Create an API key "
            "(`assistantd keys create`) to serve other names.",
            "forbidden_host",
        )
    origin = _header(scope, b"origin")
    if origin is not None and _origin_authority(origin) != host:
        return (
            403,
            f"Cross-origin requests are refused while this server has no API keys (Origin {origin[:100]!r} "
            f"is not this server). Create an API key (`assistantd keys create`) for browser clients of other "
            "origins.",
            "cross_origin_refused",
        )
    if scope["method"] in ("POST", "PUT", "PATCH") and _has_body(scope):
        content_type = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        wanted = "multipart/form-data" if scope["path"] == "/v1/files" else "application/json"
        # The types a page can send cross-site without the browser asking first (CORS "simple" requests);
        # any other type needs a preflight that this server never grants.
        if content_type != wanted and content_type in _SIMPLE_CONTENT_TYPES:
            return (
                415,
                f"Send this request's body with 'Content-Type: {wanted}' (it had "
                f"{content_type or 'none'!r}): an open server refuses other types, which any web page could send.",
                "unsupported_media_type",
            )
    return None


_SIMPLE_CONTENT_TYPES = frozenset({"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})


@functools.lru_cache(maxsize=256)  # a server is addressed by a few names; any others only refill it
def _loopback_name(host: str) -> bool:
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _origin_authority(origin: str) -> str:
    """``scheme://host[:port]`` -> ``host[:port]`` as a Host header would carry it (default ports left out)."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep:
        return ""  # "null" and other opaque origins match nothing
    for suffix in ((":80",) if scheme == "http" else (":443",) if scheme == "https" else ()):
        rest = rest.removesuffix(suffix)
    return rest


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return _header(scope, b"transfer-encoding") is not None


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


def _content_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _too_large_message(limit: int) -> str:
    return f"The request body is too large: the limit is {limit} bytes."


def _too_large(limit: int) -> Any:
    return envelope(413, _too_large_message(limit), "invalid_request_error", code="request_too_large")
