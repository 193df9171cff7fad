"""Every request validation rule, answered with OpenAI's 400 envelope naming the parameter.

One app per backend serves the whole module (``shared_api``): rejected requests write nothing, and the
few objects the cases refer to are made once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Api

FN = {"type": "function", "function": {"name": "f"}}
LONG = 256_000


@dataclass(frozen=True)
class Objects:
    assistant: str
    thread: str
    message: str
    file: str


@pytest.fixture(scope="module")
def objs(shared_api: Api) -> Objects:
    c = shared_api.client
    file_id = c.post("/v1/files", files={"file": ("a.png", b"png")}, data={"purpose": "vision"}).json()["id"]
    thread = c.post("/v1/threads", json={"messages": [{"role": "user", "content": "hi"}]}).json()["id"]
    return Objects(
        assistant=c.post("/v1/assistants", json={"model": "m"}).json()["id"],
        thread=thread,
        message=c.get(f"/v1/threads/{thread}/messages").json()["data"][0]["id"],
        file=file_id,
    )


def send(api: Api, objs: Objects, method: str, path: str, body: Any) -> Any:
    path = path.format(a=objs.assistant, t=objs.thread, m=objs.message, f=objs.file)
    if isinstance(body, bytes):
        return api.client.request(method, path, content=body, headers={"content-type": "application/json"})
    return api.client.request(method, path, json=body)


def counts(api: Api) -> tuple[int, ...]:
    return tuple(api.count(t) for t in ("assistants", "threads", "messages", "files"))


ASST = ("POST", "/v1/assistants")
ASST_MOD = ("POST", "/v1/assistants/{a}")
THREAD = ("POST", "/v1/threads")
THREAD_MOD = ("POST", "/v1/threads/{t}")
MSG = ("POST", "/v1/threads/{t}/messages")
MSG_MOD = ("POST", "/v1/threads/{t}/messages/{m}")


def asst(**kw: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", **kw}


def msg(**kw: Any) -> dict[str, Any]:
    return {"role": "user", "content": "hi", **kw}


def meta(n: int) -> dict[str, str]:
    return {f"k{i}": "v" for i in range(n)}


# (id, (method, path), body, param, code, text the message must contain)
CASES: list[tuple[str, tuple[str, str], Any, str | None, str, str]] = [
    # --- body syntax and shape ---
    ("malformed-json", ASST, b'{"model": "m",', None, "invalid_json", "could not parse the JSON body"),
    ("not-json", ASST, b"model=m", None, "invalid_json", "could not parse"),
    ("empty-body", ASST, b"", None, "invalid_json", "needs a JSON body"),
    ("array-body", ASST, [1, 2], None, "invalid_type", "expected an object, but got an array"),
    ("string-body", THREAD, "hi", None, "invalid_type", "expected an object, but got a string"),
    ("null-body", ASST, b"null", None, "invalid_type", "expected an object, but got null"),
    ("nan-literal", ASST, b'{"model": "m", "temperature": NaN}', None, "invalid_json", "could not parse"),
    ("number-overflow", ASST, b'{"model": "m", "temperature": 1e400}', None, "invalid_json", "could not parse"),
    ("invalid-utf8", ASST, b'{"model": "\xff"}', None, "invalid_json", "could not parse"),
    ("lone-surrogate", ASST, b'{"model": "\\ud800"}', None, "invalid_json", "could not parse"),
    ("malformed-json-msg", MSG, b"{", None, "invalid_json", "could not parse"),
    # --- required and unknown parameters ---
    ("missing-model", ASST, {}, "model", "missing_required_parameter", "Missing required parameter: 'model'."),
    ("empty-model", ASST, asst(model=""), "model", "string_below_min_length", "string too short"),
    ("unknown-param", ASST, asst(foo=1), "foo", "unknown_parameter", "Unknown parameter: 'foo'."),
    (
        "unknown-nested",
        ASST,
        asst(tools=[{"type": "code_interpreter", "x": 1}]),
        "tools[0].x",
        "unknown_parameter",
        "'tools[0].x'",
    ),
    ("unknown-in-resources", ASST, asst(tool_resources={"web": {}}), "tool_resources.web", "unknown_parameter", "web"),
    ("unknown-thread-param", THREAD, {"assistant_id": "asst_x"}, "assistant_id", "unknown_parameter", "assistant_id"),
    ("modify-thread-messages", THREAD_MOD, {"messages": []}, "messages", "unknown_parameter", "messages"),
    ("modify-message-content", MSG_MOD, {"content": "x"}, "content", "unknown_parameter", "content"),
    ("missing-role", MSG, {"content": "x"}, "role", "missing_required_parameter", "'role'"),
    ("missing-content", MSG, {"role": "user"}, "content", "missing_required_parameter", "'content'"),
    (
        "missing-content-in-thread",
        THREAD,
        {"messages": [{"role": "user"}]},
        "messages[0].content",
        "missing_required_parameter",
        "'messages[0].content'",
    ),
    # --- wrong types ---
    (
        "name-int",
        ASST,
        asst(name=5),
        "name",
        "invalid_type",
        "Invalid type for 'name': expected a string, but got an integer instead.",
    ),
    ("model-int", ASST, asst(model=4), "model", "invalid_type", "expected a string"),
    (
        "temperature-string",
        ASST,
        asst(temperature="1"),
        "temperature",
        "invalid_type",
        "expected a number, but got a string",
    ),
    ("temperature-bool", ASST, asst(temperature=True), "temperature", "invalid_type", "got a boolean"),
    ("tools-string", ASST, asst(tools="code_interpreter"), "tools", "invalid_type", "expected an array"),
    ("tool-not-object", ASST, asst(tools=["code_interpreter"]), "tools[0]", "invalid_type", "expected an object"),
    (
        "function-parameters-string",
        ASST,
        asst(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
        "tools[0].function.parameters",
        "invalid_type",
        "expected an object, but got a string",
    ),
    ("metadata-list", ASST, asst(metadata=["a"]), "metadata", "invalid_type", "expected an object, but got an array"),
    (
        "metadata-value-int",
        ASST,
        asst(metadata={"a": 1}),
        "metadata.a",
        "invalid_type",
        "expected a string, but got an integer",
    ),
    ("messages-object", THREAD, {"messages": {"role": "user"}}, "messages", "invalid_type", "expected an array"),
    ("content-int", MSG, msg(content=5), "content", "invalid_type", "got an integer"),
    (
        "text-part-int",
        MSG,
        msg(content=[{"type": "text", "text": 1}]),
        "content[0].text",
        "invalid_type",
        "expected a string",
    ),
    (
        "attachments-object",
        MSG,
        msg(attachments={"file_id": "file-x"}),
        "attachments",
        "invalid_type",
        "expected an array",
    ),
    (
        "file-ids-string",
        ASST,
        asst(tool_resources={"code_interpreter": {"file_ids": "file-x"}}),
        "tool_resources.code_interpreter.file_ids",
        "invalid_type",
        "expected an array",
    ),
    ("modify-metadata-string", MSG_MOD, {"metadata": "x"}, "metadata", "invalid_type", "expected an object"),
    # --- metadata limits (assistants, threads, messages; create and modify) ---
    (
        "metadata-17-pairs",
        ASST,
        asst(metadata=meta(17)),
        "metadata",
        "object_above_max_properties",
        "at most 16 properties, but got an object with 17",
    ),
    (
        "metadata-key-65",
        ASST,
        asst(metadata={"k" * 65: "v"}),
        "metadata",
        "string_above_max_length",
        "maximum length 64, but got a key with length 65",
    ),
    (
        "metadata-value-513",
        ASST,
        asst(metadata={"k": "v" * 513}),
        "metadata",
        "string_above_max_length",
        "maximum length 512, but got a string with length 513",
    ),
    ("modify-asst-metadata-17", ASST_MOD, {"metadata": meta(17)}, "metadata", "object_above_max_properties", "17"),
    ("thread-metadata-17", THREAD, {"metadata": meta(17)}, "metadata", "object_above_max_properties", "17"),
    ("thread-mod-metadata-key", THREAD_MOD, {"metadata": {"k" * 65: "v"}}, "metadata", "string_above_max_length", "65"),
    ("message-metadata-value", MSG, msg(metadata={"k": "v" * 513}), "metadata", "string_above_max_length", "513"),
    ("message-mod-metadata-17", MSG_MOD, {"metadata": meta(17)}, "metadata", "object_above_max_properties", "17"),
    (
        "thread-message-metadata",
        THREAD,
        {"messages": [msg(metadata=meta(17))]},
        "messages[0].metadata",
        "object_above_max_properties",
        "'messages[0].metadata'",
    ),
    # --- string lengths ---
    (
        "name-257",
        ASST,
        asst(name="n" * 257),
        "name",
        "string_above_max_length",
        "Invalid 'name': string too long. Expected a string with maximum length 256, "
        "but got a string with length 257 instead.",
    ),
    (
        "description-513",
        ASST,
        asst(description="d" * 513),
        "description",
        "string_above_max_length",
        "maximum length 512, but got a string with length 513",
    ),
    (
        "instructions-256001",
        ASST,
        asst(instructions="i" * (LONG + 1)),
        "instructions",
        "string_above_max_length",
        "maximum length 256000",
    ),
    ("modify-name-257", ASST_MOD, {"name": "n" * 257}, "name", "string_above_max_length", "256"),
    # --- array lengths ---
    (
        "tools-129",
        ASST,
        asst(tools=[FN] * 129),
        "tools",
        "array_above_max_length",
        "maximum length 128, but got an array with length 129",
    ),
    (
        "ci-file-ids-21",
        ASST,
        asst(tool_resources={"code_interpreter": {"file_ids": ["file-x"] * 21}}),
        "tool_resources.code_interpreter.file_ids",
        "array_above_max_length",
        "maximum length 20",
    ),
    (
        "vs-ids-2",
        ASST,
        asst(tool_resources={"file_search": {"vector_store_ids": ["vs_a", "vs_b"]}}),
        "tool_resources.file_search.vector_store_ids",
        "array_above_max_length",
        "maximum length 1",
    ),
    (
        "thread-ci-file-ids-21",
        THREAD,
        {"tool_resources": {"code_interpreter": {"file_ids": ["file-x"] * 21}}},
        "tool_resources.code_interpreter.file_ids",
        "array_above_max_length",
        "20",
    ),
    (
        "thread-vs-ids-2",
        THREAD_MOD,
        {"tool_resources": {"file_search": {"vector_store_ids": ["vs_a", "vs_b"]}}},
        "tool_resources.file_search.vector_store_ids",
        "array_above_max_length",
        "1",
    ),
    ("content-empty", MSG, msg(content=[]), "content", "empty_array", "empty array"),
    # --- number ranges ---
    (
        "temperature-above",
        ASST,
        asst(temperature=2.01),
        "temperature",
        "decimal_above_max_value",
        "Expected a value <= 2, but got 2.01 instead.",
    ),
    (
        "temperature-below",
        ASST,
        asst(temperature=-0.1),
        "temperature",
        "decimal_below_min_value",
        "Expected a value >= 0, but got -0.1 instead.",
    ),
    (
        "temperature-int-above",
        ASST_MOD,
        {"temperature": 3},
        "temperature",
        "decimal_above_max_value",
        "but got 3 instead",
    ),
    ("top-p-above", ASST, asst(top_p=1.5), "top_p", "decimal_above_max_value", "Expected a value <= 1"),
    ("top-p-below", ASST, asst(top_p=-1), "top_p", "decimal_below_min_value", "Expected a value >= 0"),
    (
        "max-num-results",
        ASST,
        asst(tools=[{"type": "file_search", "file_search": {"max_num_results": 51}}]),
        "tools[0].file_search.max_num_results",
        "integer_above_max_value",
        "<= 50",
    ),
    (
        "score-threshold",
        ASST,
        asst(tools=[{"type": "file_search", "file_search": {"ranking_options": {"score_threshold": 1.5}}}]),
        "tools[0].file_search.ranking_options.score_threshold",
        "decimal_above_max_value",
        "<= 1",
    ),
    # --- enumerations and tool types ---
    (
        "unknown-tool-type",
        ASST,
        asst(tools=[{"type": "browser"}]),
        "tools[0].type",
        "invalid_value",
        "Invalid value: 'browser'. Supported values are: 'code_interpreter', 'file_search', 'function'.",
    ),
    (
        "second-tool-unknown",
        ASST,
        asst(tools=[FN, {"type": "web_search"}]),
        "tools[1].type",
        "invalid_value",
        "'web_search'",
    ),
    (
        "tool-without-type",
        ASST,
        asst(tools=[{"function": {"name": "f"}}]),
        "tools[0].type",
        "missing_required_parameter",
        "'tools[0].type'",
    ),
    (
        "function-without-function",
        ASST,
        asst(tools=[{"type": "function"}]),
        "tools[0].function",
        "missing_required_parameter",
        "'tools[0].function'",
    ),
    (
        "function-bad-name",
        ASST,
        asst(tools=[{"type": "function", "function": {"name": "has space"}}]),
        "tools[0].function.name",
        "invalid_value",
        "does not match pattern",
    ),
    ("response-format-string", ASST, asst(response_format="json"), "response_format", "invalid_value", "'json'"),
    (
        "response-format-type",
        ASST,
        asst(response_format={"type": "xml"}),
        "response_format.type",
        "invalid_value",
        "'xml'",
    ),
    (
        "json-schema-missing",
        ASST,
        asst(response_format={"type": "json_schema"}),
        "response_format.json_schema",
        "missing_required_parameter",
        "json_schema",
    ),
    (
        "ranker",
        ASST,
        asst(tools=[{"type": "file_search", "file_search": {"ranking_options": {"ranker": "best"}}}]),
        "tools[0].file_search.ranking_options.ranker",
        "invalid_value",
        "'best'",
    ),
    ("role-system", MSG, msg(role="system"), "role", "invalid_value", "Invalid value: 'system'."),
    ("thread-role-system", THREAD, {"messages": [msg(role="system")]}, "messages[0].role", "invalid_value", "'system'"),
    (
        "content-part-type",
        MSG,
        msg(content=[{"type": "audio", "audio": {}}]),
        "content[0].type",
        "invalid_value",
        "'audio'",
    ),
    (
        "image-detail",
        MSG,
        msg(content=[{"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "max"}}]),
        "content[0].image_url.detail",
        "invalid_value",
        "'max'",
    ),
    (
        "image-url-scheme",
        MSG,
        msg(content=[{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]),
        "content[0].image_url.url",
        "invalid_value",
        "pattern",
    ),
    (
        "attachment-tool-function",
        MSG,
        msg(attachments=[{"file_id": "file-x", "tools": [FN]}]),
        "attachments[0].tools[0].type",
        "invalid_value",
        "'function'",
    ),
    (
        "attachment-no-file",
        MSG,
        msg(attachments=[{"tools": []}]),
        "attachments[0].file_id",
        "missing_required_parameter",
        "file_id",
    ),
    # --- ids of the wrong kind, and references to objects that do not exist ---
    (
        "ci-file-wrong-kind",
        ASST,
        asst(tool_resources={"code_interpreter": {"file_ids": ["asst_123"]}}),
        "tool_resources.code_interpreter.file_ids[0]",
        "invalid_value",
        "Expected an ID that begins with 'file-'.",
    ),
    (
        "ci-file-missing",
        ASST,
        asst(tool_resources={"code_interpreter": {"file_ids": ["{f}", "file-nope"]}}),
        "tool_resources.code_interpreter.file_ids[1]",
        "invalid_value",
        "No file found with id 'file-nope'.",
    ),
    (
        "vs-wrong-kind",
        ASST,
        asst(tool_resources={"file_search": {"vector_store_ids": ["file-x"]}}),
        "tool_resources.file_search.vector_store_ids[0]",
        "invalid_value",
        "Expected an ID that begins with 'vs_'.",
    ),
    (
        "vs-missing",
        ASST,
        asst(tool_resources={"file_search": {"vector_store_ids": ["vs_nope"]}}),
        "tool_resources.file_search.vector_store_ids[0]",
        "invalid_value",
        "No vector store found with id 'vs_nope'.",
    ),
    (
        "modify-asst-file-missing",
        ASST_MOD,
        {"tool_resources": {"code_interpreter": {"file_ids": ["file-nope"]}}},
        "tool_resources.code_interpreter.file_ids[0]",
        "invalid_value",
        "file-nope",
    ),
    (
        "thread-file-missing",
        THREAD,
        {"tool_resources": {"code_interpreter": {"file_ids": ["file-nope"]}}},
        "tool_resources.code_interpreter.file_ids[0]",
        "invalid_value",
        "file-nope",
    ),
    (
        "thread-mod-file-wrong-kind",
        THREAD_MOD,
        {"tool_resources": {"code_interpreter": {"file_ids": ["thread_1"]}}},
        "tool_resources.code_interpreter.file_ids[0]",
        "invalid_value",
        "'file-'",
    ),
    (
        "image-file-wrong-kind",
        MSG,
        msg(content=[{"type": "image_file", "image_file": {"file_id": "msg_1"}}]),
        "content[0].image_file.file_id",
        "invalid_value",
        "'file-'",
    ),
    (
        "image-file-missing",
        MSG,
        msg(content=[{"type": "image_file", "image_file": {"file_id": "file-nope"}}]),
        "content[0].image_file.file_id",
        "invalid_value",
        "No file found",
    ),
    (
        "attachment-missing",
        MSG,
        msg(attachments=[{"file_id": "{f}", "tools": []}, {"file_id": "file-nope", "tools": []}]),
        "attachments[1].file_id",
        "invalid_value",
        "file-nope",
    ),
    (
        "attachment-wrong-kind",
        THREAD,
        {"messages": [msg(attachments=[{"file_id": "asst_1", "tools": []}])]},
        "messages[0].attachments[0].file_id",
        "invalid_value",
        "'file-'",
    ),
]


def _fill(body: Any, objs: Objects) -> Any:
    """Put the module's real file id where a case says ``{f}``."""
    if isinstance(body, dict):
        return {k: _fill(v, objs) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill(v, objs) for v in body]
    return objs.file if body == "{f}" else body


@pytest.mark.parametrize(("route", "body", "param", "code", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_requests_are_400_with_param_and_code(
    shared_api: Api,
    objs: Objects,
    route: tuple[str, str],
    body: Any,
    param: str | None,
    code: str,
    text: str,
    expect_error: Any,
) -> None:
    before = counts(shared_api)
    method, path = route
    r = send(shared_api, objs, method, path, _fill(body, objs))
    err = expect_error(r, 400, param=param, code=code, contains=(text,))
    assert err["type"] == "invalid_request_error"
    assert counts(shared_api) == before


# Values exactly at each limit are accepted.
BOUNDARY_CASES: list[tuple[str, tuple[str, str], Any]] = [
    ("metadata-16-64-512", ASST, asst(metadata={f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)})),
    ("name-256-description-512", ASST, asst(name="n" * 256, description="d" * 512)),
    ("instructions-256000", ASST, asst(instructions="i" * LONG)),
    ("tools-128", ASST, asst(tools=[FN] * 128)),
    ("temperature-0-top-p-1", ASST, asst(temperature=0, top_p=1)),
    ("temperature-2-top-p-0", ASST_MOD, {"temperature": 2, "top_p": 0.0}),
    ("ci-20-files", ASST, asst(tool_resources={"code_interpreter": {"file_ids": ["{f}"] * 20}})),
    ("thread-metadata-16", THREAD, {"metadata": meta(16)}),
    ("message-metadata-16", MSG, msg(metadata=meta(16))),
    ("message-mod-metadata-16", MSG_MOD, {"metadata": meta(16)}),
    ("max-num-results-50", ASST, asst(tools=[{"type": "file_search", "file_search": {"max_num_results": 50}}])),
    ("retrieval-v1", ASST, asst(tools=[{"type": "retrieval"}])),
]


@pytest.mark.parametrize(("route", "body"), [c[1:] for c in BOUNDARY_CASES], ids=[c[0] for c in BOUNDARY_CASES])
def test_values_at_the_limits_are_accepted(shared_api: Api, objs: Objects, route: tuple[str, str], body: Any) -> None:
    method, path = route
    r = send(shared_api, objs, method, path, _fill(body, objs))
    assert r.status_code == 200, r.text
    sent = _fill(body, objs)
    got = r.json()
    for key, value in sent.items():
        if key in ("metadata", "name", "description", "instructions", "temperature", "top_p"):
            assert got[key] == value, key
    if "tools" in sent:
        assert len(got["tools"]) == len(sent["tools"])
        assert all(t["type"] in ("function", "file_search") for t in got["tools"])
