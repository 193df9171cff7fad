"""Health checks, no auth, for load balancers, orchestrators and scripts.

``GET /health`` is liveness: cheap, it says the process serves HTTP and the database answers.
``GET /health/ready`` is readiness: every dependency a request may need (the database, the file
store), each checked, and a 503 that names the ones down, so a load balancer stops sending traffic
to a replica that would fail it and an operator sees why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from assistantd import __version__
from assistantd.api.common import ok, services
from assistantd.api.errors import envelope

log = logging.getLogger("assistantd.health")


async def health(request: Request) -> Response:
    try:
        await services(request).db.read(lambda conn: conn.fetchval("SELECT 1"))
    except Exception:
        return envelope(503, "The database is not answering.", "server_error")
    return ok({"status": "ok", "version": __version__})


async def _check(name: str, probe: Callable[[], Awaitable[object]], seconds: float) -> dict[str, str]:
    # A dependency that does not answer in time counts as down: a hung database must not hang the probe.
    try:
        async with asyncio.timeout(seconds):
            await probe()
    except Exception as exc:
        reason = "did not answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
        log.warning("readiness: %s is down (%s)", name, reason, exc_info=not isinstance(exc, TimeoutError))
        return {"status": "down", "error": reason}
    return {"status": "ok"}


async def ready(request: Request) -> Response:
    svc = services(request)
    timeout = float(request.app.state.settings.ready_timeout_seconds)
    names = ("database", "file_storage")
    results = await asyncio.gather(
        _check("database", lambda: svc.db.read(lambda conn: conn.fetchval("SELECT 1")), timeout),
        _check("file_storage", svc.files.check_storage, timeout),
    )
    checks = dict(zip(names, results, strict=True))
    down = [name for name, result in checks.items() if result["status"] != "ok"]
    body: dict[str, object] = {"status": "ok" if not down else "unavailable", "version": __version__, "checks": checks}
    if down:
        body["error"] = {
            "message": f"Not ready: {', '.join(down)} {'is' if len(down) == 1 else 'are'} down.",
            "type": "server_error",
            "param": None,
            "code": "dependency_unavailable",
        }
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


routes = [Route("/health", health, methods=["GET"]), Route("/health/ready", ready, methods=["GET"])]
