"""Routes for /v1/threads and /v1/threads/{thread_id}/messages."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from assistantd.api.common import body, ok, ok_page, ok_raw, page_query, project, services
from assistantd.protocol.threads import CreateMessage, CreateThread, ModifyMessage, ModifyThread


async def create_thread(request: Request) -> Response:
    req = await body(request, CreateThread, optional=True)
    return ok(await services(request).threads.create(project(request), req))


async def retrieve_thread(request: Request) -> Response:
    tid = request.path_params["thread_id"]
    return ok_raw(await services(request).threads.retrieve_raw(project(request), tid))


async def modify_thread(request: Request) -> Response:
    req = await body(request, ModifyThread, optional=True)
    tid = request.path_params["thread_id"]
    return ok(await services(request).threads.modify(project(request), tid, req))


async def delete_thread(request: Request) -> Response:
    tid = request.path_params["thread_id"]
    return ok(await services(request).threads.delete(project(request), tid))


async def create_message(request: Request) -> Response:
    req = await body(request, CreateMessage)
    tid = request.path_params["thread_id"]
    return ok(await services(request).messages.create(project(request), tid, req))


async def list_messages(request: Request) -> Response:
    tid = request.path_params["thread_id"]
    run_id = request.query_params.get("run_id") or None
    page = await services(request).messages.list_page(project(request), tid, page_query(request), run_id)
    return ok_page(page)


async def retrieve_message(request: Request) -> Response:
    p = request.path_params
    return ok_raw(
        await services(request).messages.retrieve_raw(project(request), p["thread_id"], p["message_id"])
    )


async def modify_message(request: Request) -> Response:
    req = await body(request, ModifyMessage, optional=True)
    p = request.path_params
    return ok(await services(request).messages.modify(project(request), p["thread_id"], p["message_id"], req))


async def delete_message(request: Request) -> Response:
    p = request.path_params
    return ok(await services(request).messages.delete(project(request), p["thread_id"], p["message_id"]))


routes = [
    Route("/threads", create_thread, methods=["POST"]),
    Route("/threads/{thread_id}", retrieve_thread, methods=["GET"]),
    Route("/threads/{thread_id}", modify_thread, methods=["POST"]),
    Route("/threads/{thread_id}", delete_thread, methods=["DELETE"]),
    Route("/threads/{thread_id}/messages", create_message, methods=["POST"]),
    Route("/threads/{thread_id}/messages", list_messages, methods=["GET"]),
    Route("/threads/{thread_id}/messages/{message_id}", retrieve_message, methods=["GET"]),
    Route("/threads/{thread_id}/messages/{message_id}", modify_message, methods=["POST"]),
    Route("/threads/{thread_id}/messages/{message_id}", delete_message, methods=["DELETE"]),
]
