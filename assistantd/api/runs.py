"""Routes for runs, create-thread-and-run, submit_tool_outputs and run steps."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from assistantd.api.common import JSON, body, ok_page, ok_raw, page_query, project, services
from assistantd.api.sse import sse_response
from assistantd.protocol.runs import (
    CreateRun,
    CreateThreadAndRun,
    ModifyRun,
    SubmitToolOutputs,
    parse_include,
    without_search_content,
)
from assistantd.service.common import Page

# How long the SDK's poll helpers wait between reads of an active run.
POLL_AFTER_MS = "100"


def _run(run: dict[str, Any]) -> Response:
    return Response(orjson.dumps(run), media_type=JSON, headers={"openai-poll-after-ms": POLL_AFTER_MS})


def _include(request: Request) -> list[str]:
    return parse_include(request.query_params.getlist("include[]") + request.query_params.getlist("include"))


async def create(request: Request) -> Response:
    req = await body(request, CreateRun)
    tid = request.path_params["thread_id"]
    include = _include(request)
    run, sub = await services(request).runs.create(project(request), tid, req, include=include, stream=bool(req.stream))
    return sse_response(sub, include=include) if sub is not None else _run(run)


async def create_thread_and_run(request: Request) -> Response:
    req = await body(request, CreateThreadAndRun)
    thread, run, sub = await services(request).runs.create_thread_and_run(
        project(request), req, stream=bool(req.stream)
    )
    if sub is not None:
        return sse_response(sub, prefix=[("thread.created", thread)], include=[])
    return _run(run)


async def list_(request: Request) -> Response:
    tid = request.path_params["thread_id"]
    return ok_page(await services(request).runs.list_page(project(request), tid, page_query(request)))


async def retrieve(request: Request) -> Response:
    p = request.path_params
    return _run(await services(request).runs.retrieve(project(request), p["thread_id"], p["run_id"]))


async def modify(request: Request) -> Response:
    req = await body(request, ModifyRun, optional=True)
    p = request.path_params
    return _run(await services(request).runs.modify(project(request), p["thread_id"], p["run_id"], req))


async def cancel(request: Request) -> Response:
    p = request.path_params
    return _run(await services(request).runs.cancel(project(request), p["thread_id"], p["run_id"]))


async def submit_tool_outputs(request: Request) -> Response:
    req = await body(request, SubmitToolOutputs)
    p = request.path_params
    run, sub, include = await services(request).runs.submit_tool_outputs(
        project(request), p["thread_id"], p["run_id"], req
    )
    return sse_response(sub, include=include) if sub is not None else _run(run)


async def list_steps(request: Request) -> Response:
    p = request.path_params
    include = _include(request)
    page = await services(request).runs.list_steps(project(request), p["thread_id"], p["run_id"], page_query(request))
    items = [str(without_search_content(item, include)) for item in page.items]
    return ok_page(Page(items, page.first_id, page.last_id, page.has_more))


async def retrieve_step(request: Request) -> Response:
    p = request.path_params
    include = _include(request)
    raw = await services(request).runs.retrieve_step(project(request), p["thread_id"], p["run_id"], p["step_id"])
    return ok_raw(without_search_content(raw, include))


routes = [
    Route("/threads/runs", create_thread_and_run, methods=["POST"]),
    Route("/threads/{thread_id}/runs", create, methods=["POST"]),
    Route("/threads/{thread_id}/runs", list_, methods=["GET"]),
    Route("/threads/{thread_id}/runs/{run_id}", retrieve, methods=["GET"]),
    Route("/threads/{thread_id}/runs/{run_id}", modify, methods=["POST"]),
    Route("/threads/{thread_id}/runs/{run_id}/cancel", cancel, methods=["POST"]),
    Route("/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", submit_tool_outputs, methods=["POST"]),
    Route("/threads/{thread_id}/runs/{run_id}/steps", list_steps, methods=["GET"]),
    Route("/threads/{thread_id}/runs/{run_id}/steps/{step_id}", retrieve_step, methods=["GET"]),
]
