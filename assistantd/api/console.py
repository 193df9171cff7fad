"""The web console: static files from ``assistantd/web`` served at ``/`` and ``/console/<name>``.

The console is a client of the public ``/v1`` API like any other (it sends the API key the user typed,
kept in the browser), so nothing here authenticates. Files are read once from the package, kept in
memory, and served with a strict Content-Security-Policy: scripts, styles and requests only from this
origin, images also from ``blob:`` (files the console fetched with the key), nothing inline, no frames.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from assistantd.api.errors import envelope

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'"
)

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidated on every load (the ETag makes that a 304): an upgraded server never runs a stale console.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def assets() -> dict[str, Asset]:
    """Every file of the console by name, read once from the installed package."""
    found: dict[str, Asset] = {}
    folder = resources.files("assistantd") / "web"
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if not entry.is_file() or suffix not in _TYPES:
            continue
        body = entry.read_bytes()
        found[entry.name] = Asset(body, _TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return found


def _send(request: Request, name: str) -> Response:
    asset = assets().get(name)
    if asset is None:
        return envelope(404, f"Invalid URL ({request.method} {request.url.path})", "invalid_request_error")
    headers = {**HEADERS, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


async def index(request: Request) -> Response:
    return _send(request, "index.html")


async def asset(request: Request) -> Response:
    return _send(request, request.path_params["name"])


routes = [
    Route("/", index, methods=["GET"]),
    Route("/console/{name}", asset, methods=["GET"]),
]
