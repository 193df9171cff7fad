"""The one translation from exceptions to OpenAI's error envelope.

``{"error": {"message", "type", "param", "code"}}`` with the status the SDK maps to the right exception
class. Anything we did not raise on purpose becomes a bare 500 that says nothing about internals.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Scope

from assistantd.errors import APIError

log = logging.getLogger("assistantd.api")


def envelope(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def from_api_error(exc: APIError) -> Response:
    headers = None
    if exc.status in (409, 500, 503):
        # The SDK retries these by default; say when a retry cannot help.
        headers = {"x-should-retry": "false"} if exc.status != 503 else None
    return envelope(exc.status, exc.message, exc.type, exc.param, exc.code, headers)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return from_api_error(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors: unknown routes (404) and wrong methods (405)."""
    assert isinstance(exc, HTTPException)
    method, path = request.method, request.url.path
    if exc.status_code == 404:
        return envelope(404, f"Invalid URL ({method} {path})", "invalid_request_error")
    if exc.status_code == 405:
        allowed = ", ".join(_allowed_methods(request)) or (exc.headers or {}).get("Allow", "")
        return envelope(
            405,
            f"Method {method} is not allowed for {path}. Allowed: {allowed}.",
            "invalid_request_error",
            headers={"Allow": allowed} if allowed else None,
        )
    return envelope(exc.status_code, str(exc.detail), "invalid_request_error")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's own 405 names only the methods of the
    first route whose path matched, but we declare one Route per (path, method)."""
    methods: set[str] = set()

    def walk(routes: Sequence[BaseRoute], scope: Scope) -> None:
        for route in routes:
            match, child = route.matches(scope)
            if match is Match.NONE:
                continue
            if isinstance(route, Mount):
                walk(route.routes, {**scope, **child})
            elif isinstance(route, Route) and route.methods:
                methods.update(route.methods)

    root = request.scope.get("app_root_path", "")
    walk(request.app.router.routes, {"type": "http", "path": request.url.path, "root_path": root, "method": ""})
    return sorted(methods)


async def client_disconnected(request: Request, exc: Exception) -> Response:
    """The client went away (or the connection handler cut a stalled body) while we read the request:
    nobody is left to answer, and it is not a server error."""
    log.info("client disconnected while sending %s %s", request.method, request.url.path)
    return envelope(400, "The client disconnected before the request was complete.", "invalid_request_error")


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return internal_error_response()


def internal_error_response() -> Response:
    return envelope(
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        headers={"x-should-retry": "false"},
    )
