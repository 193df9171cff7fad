"""Turn pydantic validation errors into OpenAI's 400s.

Request models are strict pydantic models (no coercion, unknown fields forbidden); this module is the
one place that knows how OpenAI words each failure, e.g. ``Invalid type for 'name': expected a string,
but got an integer instead.`` with ``param='name'`` and ``code='invalid_type'``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from assistantd.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)

CUSTOM = "openai"  # error type of PydanticCustomError raised by our own validators


def custom_error(code: str, template: str) -> PydanticCustomError:
    """An error raised from a validator; ``{param}`` in the template becomes the parameter's path."""
    return PydanticCustomError(CUSTOM, "{template}", {"code": code, "template": template})


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a value of another type"


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def param_path(loc: tuple[int | str, ...], data: Any, kind: str = "") -> str:
    """Render a pydantic location as OpenAI does (``tools[0].function.name``).

    Pydantic puts union branch tags (a discriminator value, or a branch name) into the location.
    They are told apart from field names by walking the input: a string that is not a key of the
    object at that point is a tag, unless it is the last element of a ``missing`` error.
    """
    parts: list[str] = []
    current = data
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
            current = current[item] if isinstance(current, list) and item < len(current) else None
            continue
        if isinstance(current, dict) and item in current:
            parts.append(f".{item}" if parts else item)
            current = current[item]
        elif isinstance(current, dict) and kind == "missing" and i == len(loc) - 1:
            parts.append(f".{item}" if parts else item)
        # else: a union tag, which is not part of the user's path
    return "".join(parts)


def _limit(ctx: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in ctx:
            return ctx[name]
    return "?"


def translate(err: ErrorDetails, data: Any) -> InvalidRequest:
    kind = err["type"]
    param = param_path(tuple(err["loc"]), data, kind) or None
    value = err.get("input")
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    p = param or "body"
    if kind == CUSTOM:
        return InvalidRequest(ctx["template"].replace("{param}", p), param=param, code=ctx["code"])
    if kind == "missing":
        return InvalidRequest(
            f"Missing required parameter: '{p}'.", param=param, code="missing_required_parameter"
        )
    if kind == "extra_forbidden":
        return InvalidRequest(f"Unknown parameter: '{p}'.", param=param, code="unknown_parameter")
    if kind in _EXPECTED:
        return InvalidRequest(
            f"Invalid type for '{p}': expected {_EXPECTED[kind]}, but got {describe(value)} instead.",
            param=param,
            code="invalid_type",
        )
    if kind == "string_too_long":
        n = _limit(ctx, "max_length")
        return InvalidRequest(
            f"Invalid '{p}': string too long. Expected a string with maximum length {n}, "
            f"but got a string with length {len(value) if isinstance(value, str) else '?'} instead.",
            param=param,
            code="string_above_max_length",
        )
    if kind == "string_too_short":
        n = _limit(ctx, "min_length")
        return InvalidRequest(
            f"Invalid '{p}': string too short. Expected a string with minimum length {n}, "
            f"but got a string with length {len(value) if isinstance(value, str) else '?'} instead.",
            param=param,
            code="string_below_min_length",
        )
    if kind == "too_long":
        n = _limit(ctx, "max_length")
        actual = _limit(ctx, "actual_length")
        return InvalidRequest(
            f"Invalid '{p}': array too long. Expected an array with maximum length {n}, "
            f"but got an array with length {actual} instead.",
            param=param,
            code="array_above_max_length",
        )
    if kind == "too_short":
        n = _limit(ctx, "min_length")
        return InvalidRequest(
            f"Invalid '{p}': empty array. Expected an array with minimum length {n}, "
            "but got an empty array instead.",
            param=param,
            code="empty_array",
        )
    if kind in {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}:
        below = kind.startswith("greater")
        bound = _limit(ctx, "ge", "gt", "le", "lt")
        number = "decimal" if isinstance(bound, float) or isinstance(value, float) else "integer"
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[
            kind
        ]
        return InvalidRequest(
            f"Invalid '{p}': {number} {'below minimum' if below else 'above maximum'} value. "
            f"Expected a value {op} {bound}, but got {value} instead.",
            param=param,
            code=f"{number}_{'below_min' if below else 'above_max'}_value",
        )
    if kind in {"literal_error", "enum", "union_tag_invalid"}:
        expected = ctx.get("expected_tags") or ctx.get("expected") or ""
        if kind == "union_tag_invalid":
            value = ctx.get("tag", value)
            param = f"{param}.type" if param else "type"
        return InvalidRequest(
            f"Invalid value: {_quote(value)}. Supported values are: {expected}.",
            param=param,
            code="invalid_value",
        )
    if kind == "union_tag_not_found":
        param = f"{param}.type" if param else "type"
        return InvalidRequest(
            f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )
    if kind == "string_pattern_mismatch":
        return InvalidRequest(
            f"Invalid '{p}': string does not match pattern. Expected a string that matches the pattern "
            f"'{ctx.get('pattern')}'.",
            param=param,
            code="invalid_value",
        )
    return InvalidRequest(f"Invalid '{p}': {err['msg']}.", param=param, code="invalid_value")


def _quote(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def parse(model: type[M], data: Any) -> M:
    """Validate a decoded JSON body against a request model, raising the first error OpenAI-style."""
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"Invalid type for 'body': expected an object, but got {describe(data)} instead.",
            code="invalid_type",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise translate(exc.errors(include_url=False)[0], data) from None
