"""Routes for /v1/models: the model names this server can route to an upstream."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from assistantd.api.common import ok, services
from assistantd.errors import NotFound


async def list_(request: Request) -> Response:
    return ok({"object": "list", "data": await services(request).router.list_models()})


async def retrieve(request: Request) -> Response:
    name = request.path_params["model"]
    router = services(request).router
    if not router.routable(name):
        raise NotFound(
            f"The model '{name}' does not exist or is not routed to any upstream.",
            param="model",
            code="model_not_found",
        )
    route = router.resolve(name)
    return ok({"id": name, "object": "model", "created": 0, "owned_by": route.upstream})


routes = [
    Route("/models", list_, methods=["GET"]),
    Route("/models/{model:path}", retrieve, methods=["GET"]),
]
