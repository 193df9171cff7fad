"""Routes for /v1/threads and /v1/threads/{thread_id}/messages."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from assistantd.api.common import body, ok, ok_page, ok_raw, page_query, project, services
from assistantd.errors import InvalidRequest
from assistantd.protocol.threads import CreateMessage, CreateThread, ModifyMessage, ModifyThread

# The same bounds as metadata itself: a filter can name at most every key a thread can have.
MAX_METADATA_FILTERS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


async def create_thread(request: Request) -> Response:
    req = await body(request, CreateThread, optional=True)
    return ok(await services(request).threads.create(project(request), req))


async def list_threads(request: Request) -> Response:
    """``GET /v1/threads``: assistantd's extension, not OpenAI's (the web console browses threads with it).

    The usual list parameters, plus ``assistant_id`` (threads with a run of that assistant) and
    ``metadata[KEY]=VALUE`` (exact match; several must all hold).
    """
    metadata: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if not name.startswith("metadata["):
            continue
        key = name[len("metadata[") : -1] if name.endswith("]") else ""
        if not key or len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise InvalidRequest(
                f"Invalid filter '{name[:80]}': write metadata[KEY]=VALUE with a key of 1 to {MAX_METADATA_KEY} "
                f"characters and a value of at most {MAX_METADATA_VALUE}.",
                param=name[:80],
                code="invalid_value",
            )
        metadata[key] = value
        if len(metadata) > MAX_METADATA_FILTERS:
            raise InvalidRequest(
                f"Too many metadata filters: at most {MAX_METADATA_FILTERS}.", param="metadata", code="invalid_value"
            )
    assistant_id = request.query_params.get("assistant_id") or None
    page = await services(request).threads.list_page(
        project(request), page_query(request), assistant_id=assistant_id, metadata=metadata
    )
    return ok_page(page)


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
    Route("/threads", list_threads, methods=["GET"]),
    Route("/threads/{thread_id}", retrieve_thread, methods=["GET"]),
    Route("/threads/{thread_id}", modify_thread, methods=["POST"]),
    Route("/threads/{thread_id}", delete_thread, methods=["DELETE"]),
    Route("/threads/{thread_id}/messages", create_message, methods=["POST"]),
    Route("/threads/{thread_id}/messages", list_messages, methods=["GET"]),
    Route("/threads/{thread_id}/messages/{message_id}", retrieve_message, methods=["GET"]),
    Route("/threads/{thread_id}/messages/{message_id}", modify_message, methods=["POST"]),
    Route("/threads/{thread_id}/messages/{message_id}", delete_message, methods=["DELETE"]),
]
