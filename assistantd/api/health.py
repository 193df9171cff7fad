"""GET /health: no auth, for load balancers and scripts. Says whether the database answers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from assistantd import __version__
from assistantd.api.common import ok, services
from assistantd.api.errors import envelope


async def health(request: Request) -> Response:
    try:
        await services(request).db.read(lambda conn: conn.fetchval("SELECT 1"))
    except Exception:
        return envelope(503, "The database is not answering.", "server_error")
    return ok({"status": "ok", "version": __version__})


routes = [Route("/health", health, methods=["GET"])]
