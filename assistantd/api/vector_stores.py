"""Routes for /v1/vector_stores: stores, their files, file batches, and search."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from assistantd.api.common import JSON, body, ok, ok_page, page_query, project, services
from assistantd.errors import InvalidRequest
from assistantd.protocol.vector_stores import (
    CreateFileBatch,
    CreateVectorStore,
    CreateVectorStoreFile,
    ModifyVectorStore,
    SearchVectorStore,
    UpdateVectorStoreFile,
)
from assistantd.service.vector_stores import FILE_STATUSES

# The SDK's poll helpers (create_and_poll, upload_and_poll) wait this long between polls instead of 1 s.
POLL_AFTER_MS = "200"


def _polled(obj: dict[str, Any], in_progress: bool) -> Response:
    headers = {"openai-poll-after-ms": POLL_AFTER_MS} if in_progress else None
    return Response(orjson.dumps(obj), media_type=JSON, headers=headers)


def _status_filter(request: Request) -> str | None:
    value = request.query_params.get("filter") or None
    if value is not None and value not in FILE_STATUSES:
        raise InvalidRequest(
            f"Invalid value: '{value}'. Supported values are: {', '.join(repr(s) for s in FILE_STATUSES)}.",
            param="filter",
            code="invalid_value",
        )
    return value


# --- stores --------------------------------------------------------------------------------------


async def create(request: Request) -> Response:
    req = await body(request, CreateVectorStore, optional=True)
    obj = await services(request).vector_stores.create(project(request), req)
    return _polled(obj, obj["status"] == "in_progress")


async def list_(request: Request) -> Response:
    return ok_page(await services(request).vector_stores.list_page(project(request), page_query(request)))


async def retrieve(request: Request) -> Response:
    obj = await services(request).vector_stores.retrieve(project(request), request.path_params["vector_store_id"])
    return _polled(obj, obj["status"] == "in_progress")


async def modify(request: Request) -> Response:
    req = await body(request, ModifyVectorStore, optional=True)
    vs = request.path_params["vector_store_id"]
    return ok(await services(request).vector_stores.modify(project(request), vs, req))


async def delete(request: Request) -> Response:
    vs = request.path_params["vector_store_id"]
    return ok(await services(request).vector_stores.delete(project(request), vs))


async def search(request: Request) -> Response:
    req = await body(request, SearchVectorStore)
    vs = request.path_params["vector_store_id"]
    return ok(await services(request).vector_stores.search_page(project(request), vs, req))


# --- files ---------------------------------------------------------------------------------------


async def create_file(request: Request) -> Response:
    req = await body(request, CreateVectorStoreFile)
    vs = request.path_params["vector_store_id"]
    obj = await services(request).vector_stores.create_file(project(request), vs, req)
    return _polled(obj, obj["status"] == "in_progress")


async def list_files(request: Request) -> Response:
    vs = request.path_params["vector_store_id"]
    status = _status_filter(request)
    return ok_page(await services(request).vector_stores.list_files(project(request), vs, page_query(request), status))


async def retrieve_file(request: Request) -> Response:
    p = request.path_params
    obj = await services(request).vector_stores.retrieve_file(project(request), p["vector_store_id"], p["file_id"])
    return _polled(obj, obj["status"] == "in_progress")


async def update_file(request: Request) -> Response:
    req = await body(request, UpdateVectorStoreFile)
    p = request.path_params
    return ok(
        await services(request).vector_stores.update_file(project(request), p["vector_store_id"], p["file_id"], req)
    )


async def delete_file(request: Request) -> Response:
    p = request.path_params
    return ok(await services(request).vector_stores.delete_file(project(request), p["vector_store_id"], p["file_id"]))


async def file_content(request: Request) -> Response:
    p = request.path_params
    return ok(await services(request).vector_stores.file_content(project(request), p["vector_store_id"], p["file_id"]))


# --- file batches --------------------------------------------------------------------------------


def _batch_response(obj: dict[str, Any]) -> Response:
    return _polled(obj, obj["file_counts"]["in_progress"] > 0)


async def create_batch(request: Request) -> Response:
    req = await body(request, CreateFileBatch)
    vs = request.path_params["vector_store_id"]
    return _batch_response(await services(request).vector_stores.create_batch(project(request), vs, req))


async def retrieve_batch(request: Request) -> Response:
    p = request.path_params
    obj = await services(request).vector_stores.retrieve_batch(project(request), p["vector_store_id"], p["batch_id"])
    return _batch_response(obj)


async def cancel_batch(request: Request) -> Response:
    p = request.path_params
    obj = await services(request).vector_stores.cancel_batch(project(request), p["vector_store_id"], p["batch_id"])
    return _batch_response(obj)


async def list_batch_files(request: Request) -> Response:
    p = request.path_params
    status = _status_filter(request)
    page = await services(request).vector_stores.list_batch_files(
        project(request), p["vector_store_id"], p["batch_id"], page_query(request), status
    )
    return ok_page(page)


_STORE = "/vector_stores/{vector_store_id}"
routes = [
    Route("/vector_stores", create, methods=["POST"]),
    Route("/vector_stores", list_, methods=["GET"]),
    Route(_STORE, retrieve, methods=["GET"]),
    Route(_STORE, modify, methods=["POST"]),
    Route(_STORE, delete, methods=["DELETE"]),
    Route(f"{_STORE}/search", search, methods=["POST"]),
    Route(f"{_STORE}/files", create_file, methods=["POST"]),
    Route(f"{_STORE}/files", list_files, methods=["GET"]),
    Route(f"{_STORE}/files/{{file_id}}", retrieve_file, methods=["GET"]),
    Route(f"{_STORE}/files/{{file_id}}", update_file, methods=["POST"]),
    Route(f"{_STORE}/files/{{file_id}}", delete_file, methods=["DELETE"]),
    Route(f"{_STORE}/files/{{file_id}}/content", file_content, methods=["GET"]),
    Route(f"{_STORE}/file_batches", create_batch, methods=["POST"]),
    Route(f"{_STORE}/file_batches/{{batch_id}}", retrieve_batch, methods=["GET"]),
    Route(f"{_STORE}/file_batches/{{batch_id}}/cancel", cancel_batch, methods=["POST"]),
    Route(f"{_STORE}/file_batches/{{batch_id}}/files", list_batch_files, methods=["GET"]),
]
