"""GET /health: no auth, for load balancers and scripts. Says whether the database answers. GET /: a pointer to /v1."""

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


async def index(request: Request) -> Response:
    """``GET /``: where the API is (the web console replaces this page when it is installed)."""
    return ok(
        {
            "name": "assistantd",
            "version": __version__,
            "api": str(request.url_for("health")).removesuffix("/health") + "/v1",
            "health": "/health",
            "metrics": "/metrics",
            "message": "An OpenAI Assistants API v2 server: point an OpenAI SDK's base_url at the api URL.",
        }
    )


routes = [Route("/health", health, methods=["GET"], name="health"), Route("/", index, methods=["GET"])]
