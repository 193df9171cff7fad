"""Request parsing shared by every router: the project, JSON bodies, list parameters, responses."""

from __future__ import annotations

from typing import Any, Literal, TypeVar, cast

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from assistantd.errors import InvalidRequest
from assistantd.protocol.validation import parse
from assistantd.service.common import Page, PageQuery
from assistantd.service.registry import Services

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"


def project(request: Request) -> str:
    """The project of the request's API key, set by the auth middleware."""
    return cast(str, request.scope["state"]["project"])


async def body(request: Request, model: type[M], *, optional: bool = False) -> M:
    raw = await request.body()
    if not raw.strip():
        if optional:
            return model()
        raise InvalidRequest(
            "The request needs a JSON body. Send 'Content-Type: application/json' with an object.",
            code="invalid_json",
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc}. The API expects a JSON object.",
            code="invalid_json",
        ) from None
    limit = _max_json_depth(request)
    if _deeper_than(data, limit):
        # Checked before validation: pydantic and orjson (which stops at 255 levels when the object is
        # stored) would otherwise fail deep inside, as a 500.
        raise InvalidRequest(
            f"The JSON body is nested too deeply: the limit is {limit} levels of arrays and objects "
            "(max_json_depth).",
            code="json_too_deep",
        )
    return parse(model, data)


def _max_json_depth(request: Request) -> int:
    return int(request.app.state.settings.max_json_depth)


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(
            f"Invalid type for '{name}': expected an integer, but got a string instead.",
            param=name,
            code="invalid_type",
        ) from None
    if value < low:
        raise InvalidRequest(
            f"Invalid '{name}': integer below minimum value. "
            f"Expected a value >= {low}, but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if value > high:
        raise InvalidRequest(
            f"Invalid '{name}': integer above maximum value. "
            f"Expected a value <= {high}, but got {value} instead.",
            param=name,
            code="integer_above_max_value",
        )
    return value


def page_query(request: Request, *, default_limit: int = 20, max_limit: int = 100) -> PageQuery:
    q = request.query_params
    order = q.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise InvalidRequest(
            f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
            param="order",
            code="invalid_value",
        )
    return PageQuery(
        limit=_int_param(request, "limit", default_limit, 1, max_limit),
        order=cast(Literal["asc", "desc"], order),
        after=q.get("after") or None,
        before=q.get("before") or None,
    )


def ok(obj: dict[str, Any]) -> Response:
    return Response(orjson.dumps(obj), media_type=JSON)


def ok_raw(raw: str | bytes) -> Response:
    """An object already serialized (as stored): sent without decoding it."""
    return Response(raw, media_type=JSON)


def ok_page(page: Page) -> Response:
    return Response(page.to_json(), media_type=JSON)


def services(request: Request) -> Services:
    return cast(Services, request.app.state.services)
