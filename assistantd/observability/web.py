"""The HTTP side of observability: per-request metrics and spans, ``GET /metrics``, scrape-time gauges.

``/metrics`` on the API's address takes the same keys as the API (any key in open mode). With
``metrics_port`` set, the same figures are also served without auth on ``metrics_host:metrics_port``,
an address meant for a private network (a Prometheus next to the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistantd.api.errors import envelope
from assistantd.observability import collector, metrics, tracing
from assistantd.service.registry import Services
from assistantd.settings import Settings

log = logging.getLogger("assistantd")

REFRESH_SECONDS = 5.0  # how often the separate metrics listener's gauges are re-read

# Path segments that are part of a route; any other segment is an id (or a typo) and becomes {id}, so the
# route label stays a small set whatever paths clients send.
_ROUTE_WORDS = frozenset(
    {
        *("v1", "assistants", "threads", "messages", "runs", "steps", "files", "content", "vector_stores"),
        *("file_batches", "search", "cancel", "submit_tool_outputs", "models", "chat", "completions"),
        *("embeddings", "health", "metrics", "ready"),
    }
)
_MAX_SEGMENTS = 8


def route_of(path: str) -> str:
    segments = path.split("/")[1 : _MAX_SEGMENTS + 1]
    return "/" + "/".join(s if s in _ROUTE_WORDS or not s else "{id}" for s in segments)


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status; counts open event streams."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        route = route_of(scope["path"])
        started = time.perf_counter()
        status = 500
        streaming = False
        setup = collector.hold()  # until the response starts: collections wait for a burst's setup

        async def observed_send(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                setup.release()
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"content-type" and value.startswith(b"text/event-stream"):
                        streaming = True
                        metrics.ACTIVE_STREAMS.inc()
            await send(message)

        try:
            if not tracing.enabled():  # the span's context manager is a generator and a dict a request
                await self.app(scope, receive, observed_send)
                return
            with tracing.span(f"HTTP {method} {route}", {"http.request.method": method, "http.route": route}) as span:
                await self.app(scope, receive, observed_send)
                if span is not None:
                    span.set_attribute("http.response.status_code", status)
        finally:
            setup.release()
            if streaming:
                metrics.ACTIVE_STREAMS.dec()
            metrics.labeled(metrics.HTTP_REQUESTS, method, route, str(status)).inc()
            metrics.labeled(metrics.HTTP_LATENCY, method, route).observe(time.perf_counter() - started)


async def refresh(services: Services) -> None:
    """Read the gauges that describe shared state (database-wide) or live objects."""

    counts = await services.runs.active_counts()
    for status, n in counts.items():
        metrics.RUNS.labels(status).set(n)
    metrics.QUEUE_DEPTH.set(counts["queued"])
    metrics.INGEST_BACKLOG.set(await services.vector_stores.backlog())
    metrics.SANDBOX_SESSIONS.set(services.code_interpreter.session_count)
    metrics.SANDBOX_POOL.set(services.code_interpreter.pool_ready)
    metrics.GC_FROZEN.set(gc.get_freeze_count())  # falls back as the runs of a burst end
    for figure, value in services.db.pool_stats().items():
        metrics.DB_POOL.labels(figure).set(value)


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


async def metrics_endpoint(request: Request) -> Response:
    services: Services = request.app.state.services
    project, open_mode = await services.keys.authenticate(_bearer(request))
    if project is None and not open_mode:
        return envelope(
            401,
            "/metrics takes an API key of this server (Authorization: Bearer KEY).",
            "invalid_request_error",
            code="invalid_api_key",
        )
    await refresh(services)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics_endpoint, methods=["GET"])]


@contextlib.asynccontextmanager
async def metrics_listener(settings: Settings, services: Services) -> AsyncIterator[None]:
    """With ``metrics_port`` set: /metrics without auth on its own address, gauges re-read every few seconds."""
    if not settings.metrics_port:
        yield
        return
    from prometheus_client import start_http_server

    server, thread = start_http_server(settings.metrics_port, settings.metrics_host, registry=metrics.REGISTRY)

    async def keep_fresh() -> None:
        while True:
            try:
                await refresh(services)
            except Exception:
                log.exception("reading the metrics gauges failed; will retry")
            await asyncio.sleep(REFRESH_SECONDS)

    task = asyncio.create_task(keep_fresh(), name="metrics-gauges")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
