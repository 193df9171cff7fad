"""Over-deep JSON bodies: a 400 that names the limit, before validation or storage can fail on them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import MakeApi


def nested_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def deep_tools(levels: int) -> dict[str, Any]:
    return {
        "model": "m",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": nested_schema(levels)}}],
    }


def deep_response_format(levels: int) -> dict[str, Any]:
    return {
        "model": "m",
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": nested_schema(levels)}},
    }


@pytest.mark.parametrize("build", [deep_tools, deep_response_format], ids=["tools", "response_format"])
def test_schemas_nested_past_the_limit_are_400_naming_it(make_api: MakeApi, expect_error: Any, build: Any) -> None:
    api = make_api()
    # 251+ levels used to reach the database's JSON encoder and come back as a 500 and a reset.
    for levels in (130, 300):
        r = api.client.post("/v1/assistants", json=build(levels))
        expect_error(r, 400, code="json_too_deep", param=None, contains=("64 levels", "max_json_depth"))
    assert api.count("assistants") == 0
    shallow = api.client.post("/v1/assistants", json=build(10))
    assert shallow.status_code == 200, shallow.text


def test_the_depth_limit_is_a_setting(make_api: MakeApi, expect_error: Any) -> None:
    api = make_api(max_json_depth=8)
    ok = api.client.post("/v1/threads", json={"messages": [{"role": "user", "content": "x"}]})
    assert ok.status_code == 200, ok.text
    r = api.client.post("/v1/assistants", json=deep_tools(4))
    expect_error(r, 400, code="json_too_deep", contains=("8 levels",))
    assert api.client.post("/v1/assistants", json=deep_tools(1)).status_code == 200


def test_bodies_deeper_than_the_json_parser_allows_are_400_too(make_api: MakeApi, expect_error: Any) -> None:
    api = make_api()
    raw = b'{"model": "m", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = api.client.post("/v1/assistants", content=raw, headers={"content-type": "application/json"})
    expect_error(r, 400)
    assert api.count("assistants") == 0
