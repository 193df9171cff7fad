"""Routes for the pass-through endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from assistantd.api.common import project, services
from assistantd.api.streaming import StreamedResponse


async def _forward(request: Request, path: str) -> Response:
    forwarded = await services(request).passthrough.forward(project(request), path, await request.body())
    if forwarded.stream is not None:
        return StreamedResponse(
            forwarded.stream,
            media_type=forwarded.media_type,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return Response(forwarded.body, status_code=forwarded.status, media_type=forwarded.media_type)


async def chat_completions(request: Request) -> Response:
    return await _forward(request, "/chat/completions")


async def completions(request: Request) -> Response:
    return await _forward(request, "/completions")


async def embeddings(request: Request) -> Response:
    return await _forward(request, "/embeddings")


routes = [
    Route("/chat/completions", chat_completions, methods=["POST"]),
    Route("/completions", completions, methods=["POST"]),
    Route("/embeddings", embeddings, methods=["POST"]),
]
