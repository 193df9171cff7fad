"""Routes for /v1/assistants."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from assistantd.api.common import body, ok, ok_page, ok_raw, page_query, project, services
from assistantd.protocol.assistants import CreateAssistant, ModifyAssistant


async def create(request: Request) -> Response:
    req = await body(request, CreateAssistant)
    return ok(await services(request).assistants.create(project(request), req))


async def list_(request: Request) -> Response:
    return ok_page(await services(request).assistants.list_page(project(request), page_query(request)))


async def retrieve(request: Request) -> Response:
    aid = request.path_params["assistant_id"]
    return ok_raw(await services(request).assistants.retrieve_raw(project(request), aid))


async def modify(request: Request) -> Response:
    req = await body(request, ModifyAssistant, optional=True)
    aid = request.path_params["assistant_id"]
    return ok(await services(request).assistants.modify(project(request), aid, req))


async def delete(request: Request) -> Response:
    aid = request.path_params["assistant_id"]
    return ok(await services(request).assistants.delete(project(request), aid))


routes = [
    Route("/assistants", create, methods=["POST"]),
    Route("/assistants", list_, methods=["GET"]),
    Route("/assistants/{assistant_id}", retrieve, methods=["GET"]),
    Route("/assistants/{assistant_id}", modify, methods=["POST"]),
    Route("/assistants/{assistant_id}", delete, methods=["DELETE"]),
]
