"""Every response validates against the spec's component schemas (and the official SDK's models).

The schemas come from tests/data/openai-assistants-openapi.yaml (a copy of shared/reference/), with
``$ref``s resolved inside the document, checked with JSON Schema 2020-12 (what OpenAPI 3.1 uses). Richly
populated objects are used so that nested shapes (tools, tool resources, content blocks, attachments)
are covered too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import openai.types as sdk_types
import openai.types.beta as sdk_beta
import openai.types.beta.threads as sdk_threads
import pytest
from pydantic import BaseModel

if TYPE_CHECKING:
    from conftest import Api


def strict_sdk(model: type[BaseModel], obj: dict[str, Any]) -> None:
    """What ``_strict_response_validation=True`` does to a response: pydantic validation of the model."""
    parsed = model.model_validate(obj)
    for name, field in model.model_fields.items():
        if field.is_required():
            assert name in obj, name
    assert parsed.model_dump(mode="json", exclude_unset=True).keys() <= obj.keys()


@pytest.fixture
def populated(api: Api) -> dict[str, Any]:
    c = api.client
    image = c.post("/v1/files", files={"file": ("i.png", b"\x89PNG")}, data={"purpose": "vision"}).json()
    doc = c.post("/v1/files", files={"file": ("d.txt", b"doc")}, data={"purpose": "assistants"}).json()
    assistant = c.post(
        "/v1/assistants",
        json={
            "model": "gpt-4o",
            "name": "Full",
            "description": "All fields",
            "instructions": "Do things.",
            "tools": [
                {"type": "code_interpreter"},
                {
                    "type": "file_search",
                    "file_search": {
                        "max_num_results": 5,
                        "ranking_options": {"ranker": "auto", "score_threshold": 0.1},
                    },
                },
                {"type": "function", "function": {"name": "fn", "parameters": {"type": "object"}}},
            ],
            "tool_resources": {"code_interpreter": {"file_ids": [doc["id"]]}},
            "metadata": {"k": "v"},
            "temperature": 0.7,
            "top_p": 0.5,
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
        },
    ).json()
    plain_assistant = c.post("/v1/assistants", json={"model": "gpt-4o"}).json()
    thread = c.post(
        "/v1/threads",
        json={
            "messages": [{"role": "user", "content": "hello"}],
            "tool_resources": {"code_interpreter": {"file_ids": [doc["id"]]}},
            "metadata": {"t": "1"},
        },
    ).json()
    message = c.post(
        f"/v1/threads/{thread['id']}/messages",
        json={
            "role": "user",
            "content": [
                {"type": "text", "text": "see"},
                {"type": "image_file", "image_file": {"file_id": image["id"], "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
            ],
            "attachments": [{"file_id": doc["id"], "tools": [{"type": "file_search"}, {"type": "code_interpreter"}]}],
            "metadata": {"m": "1"},
        },
    ).json()
    return {
        "image": image,
        "doc": doc,
        "assistant": assistant,
        "plain_assistant": plain_assistant,
        "thread": thread,
        "message": message,
    }


def test_assistants(api: Api, populated: dict[str, Any], conforms: Any) -> None:
    c = api.client
    for obj in (populated["assistant"], populated["plain_assistant"]):
        conforms(obj, "AssistantObject")
        strict_sdk(sdk_beta.Assistant, obj)
        fetched = c.get(f"/v1/assistants/{obj['id']}").json()
        conforms(fetched, "AssistantObject")
        modified = c.post(f"/v1/assistants/{obj['id']}", json={"metadata": {"x": "y"}}).json()
        conforms(modified, "AssistantObject")
        strict_sdk(sdk_beta.Assistant, modified)
    page = c.get("/v1/assistants").json()
    conforms(page, "ListAssistantsResponse")
    deleted = c.delete(f"/v1/assistants/{populated['plain_assistant']['id']}").json()
    conforms(deleted, "DeleteAssistantResponse")
    strict_sdk(sdk_beta.AssistantDeleted, deleted)


def test_threads(api: Api, populated: dict[str, Any], conforms: Any) -> None:
    c = api.client
    thread = populated["thread"]
    for obj in (
        thread,
        c.get(f"/v1/threads/{thread['id']}").json(),
        c.post(f"/v1/threads/{thread['id']}", json={"metadata": {}}).json(),
        c.post("/v1/threads").json(),
    ):
        conforms(obj, "ThreadObject")
        strict_sdk(sdk_beta.Thread, obj)
    deleted = c.delete(f"/v1/threads/{thread['id']}").json()
    conforms(deleted, "DeleteThreadResponse")
    strict_sdk(sdk_beta.ThreadDeleted, deleted)


def test_messages(api: Api, populated: dict[str, Any], conforms: Any) -> None:
    c = api.client
    thread_id = populated["thread"]["id"]
    message = populated["message"]
    base = f"/v1/threads/{thread_id}/messages"
    page = c.get(base).json()
    assert len(page["data"]) == 2
    conforms(page, "ListMessagesResponse")
    for obj in (
        *page["data"],
        message,
        c.get(f"{base}/{message['id']}").json(),
        c.post(f"{base}/{message['id']}", json={"metadata": {"n": "2"}}).json(),
    ):
        conforms(obj, "MessageObject")
        strict_sdk(sdk_threads.Message, obj)
    assert [b["type"] for b in message["content"]] == ["text", "image_file", "image_url"]
    deleted = c.delete(f"{base}/{message['id']}").json()
    conforms(deleted, "DeleteMessageResponse")
    strict_sdk(sdk_threads.MessageDeleted, deleted)


def test_files(api: Api, populated: dict[str, Any], conforms: Any) -> None:
    """The spec types the optional ``expires_at``/``status_details`` as non-null; OpenAI sends null for
    both (the SDK models them as Optional), so those two are checked apart from the schema."""
    c = api.client
    page = c.get("/v1/files").json()
    objects = [populated["image"], populated["doc"], c.get(f"/v1/files/{populated['doc']['id']}").json(), *page["data"]]
    for obj in objects:
        strict_sdk(sdk_types.FileObject, obj)
        assert obj["expires_at"] is None and obj["status_details"] is None
        conforms({k: v for k, v in obj.items() if v is not None}, "OpenAIFile")
    conforms({**page, "data": []}, "ListFilesResponse")
    deleted = c.delete(f"/v1/files/{populated['image']['id']}").json()
    conforms(deleted, "DeleteFileResponse")
    strict_sdk(sdk_types.FileDeleted, deleted)


def test_errors(api: Api, conforms: Any) -> None:
    c = api.client
    for r in (
        c.get("/v1/assistants/asst_nope"),
        c.post("/v1/assistants", json={}),
        c.post("/v1/assistants", content=b"{"),
        c.get("/v1/unknown"),
        c.patch("/v1/assistants"),
        c.get("/v1/assistants", params={"limit": 0}),
    ):
        assert r.status_code >= 400
        conforms(r.json(), "ErrorResponse")


def test_the_schema_check_can_fail(conforms: Any) -> None:
    """Guard against a validator that accepts anything (e.g. a ``$ref`` that resolves to ``{}``)."""
    good = {"id": "thread_x", "object": "thread", "created_at": 1, "tool_resources": {}, "metadata": {}}
    conforms(good, "ThreadObject")
    for bad in (
        {k: v for k, v in good.items() if k != "metadata"},
        {**good, "created_at": "yesterday"},
        {**good, "object": "assistant"},
        {**good, "metadata": {"k": 1}},
    ):
        with pytest.raises(AssertionError):
            conforms(bad, "ThreadObject")
