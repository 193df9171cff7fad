"""The wire below the SDK: the OpenAI-Beta header is accepted but not required, JSON in and out."""

from __future__ import annotations

import httpx
import openai
import pytest

from .remote import E2E_MARKS, KEY_A

pytestmark = E2E_MARKS

AUTH = {"Authorization": f"Bearer {KEY_A}"}


@pytest.mark.parametrize("beta", [None, "assistants=v2", "assistants=v1"], ids=["no-header", "v2", "v1"])
def test_openai_beta_header_is_optional(raw: httpx.Client, client: openai.OpenAI, beta: str | None) -> None:
    headers = {**AUTH, **({"OpenAI-Beta": beta} if beta else {})}

    created = raw.post("/assistants", json={"model": "gpt-4o", "name": "raw"}, headers=headers)
    assert created.status_code == 200, created.text
    assert created.headers["content-type"].startswith("application/json")
    assistant = created.json()
    assert assistant["object"] == "assistant"
    assert assistant["name"] == "raw"

    thread = raw.post("/threads", headers=headers)  # no body at all: an empty thread
    assert thread.status_code == 200, thread.text
    thread_id = thread.json()["id"]
    message = raw.post(f"/threads/{thread_id}/messages", json={"role": "user", "content": "hi"}, headers=headers)
    assert message.status_code == 200, message.text
    listed = raw.get(f"/threads/{thread_id}/messages", headers=headers)
    assert listed.status_code == 200
    page = listed.json()
    assert page["object"] == "list"
    assert [m["id"] for m in page["data"]] == [message.json()["id"]]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (
        message.json()["id"],
        message.json()["id"],
        False,
    )

    # What was written without the SDK reads back through it.
    assert client.beta.assistants.retrieve(assistant["id"]).name == "raw"
    assert client.beta.threads.messages.list(thread_id).data[0].content[0].text.value == "hi"


def test_every_response_field_is_present_even_when_null(raw: httpx.Client) -> None:
    assistant = raw.post("/assistants", json={"model": "gpt-4o"}, headers=AUTH).json()
    for field in ("name", "description", "instructions", "temperature", "top_p", "tool_resources"):
        assert field in assistant, field
    assert assistant["name"] is None

    thread = raw.post("/threads", json={"messages": [{"role": "user", "content": "x"}]}, headers=AUTH).json()
    message = raw.get(f"/threads/{thread['id']}/messages", headers=AUTH).json()["data"][0]
    for field in ("assistant_id", "run_id", "incomplete_details", "completed_at", "incomplete_at", "attachments"):
        assert field in message, field
    assert message["assistant_id"] is None


def test_file_upload_and_download_without_the_sdk(raw: httpx.Client) -> None:
    uploaded = raw.post(
        "/files",
        files={"file": ("hello.txt", b"hello world", "text/plain")},
        data={"purpose": "assistants"},
        headers=AUTH,
    )
    assert uploaded.status_code == 200, uploaded.text
    file = uploaded.json()

    content = raw.get(f"/files/{file['id']}/content", headers=AUTH)

    assert content.status_code == 200
    assert content.content == b"hello world"
    assert content.headers["content-type"].startswith("text/plain")
    assert "hello.txt" in content.headers["content-disposition"]
