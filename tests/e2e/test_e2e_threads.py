"""Threads through the official SDK: initial messages, metadata, tool resources, modify, delete."""

from __future__ import annotations

import re
import time

import openai
import pytest

from .remote import E2E_MARKS

pytestmark = E2E_MARKS

THREAD_ID = re.compile(r"^thread_[0-9A-Za-z]{24}$")


def test_create_with_metadata_as_in_seed_001(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(metadata={"user": "abc123"})

    assert THREAD_ID.match(thread.id)
    assert thread.object == "thread"
    assert abs(thread.created_at - time.time()) < 60
    assert thread.metadata == {"user": "abc123"}
    assert thread.tool_resources is not None
    assert thread.tool_resources.code_interpreter is None
    assert thread.tool_resources.file_search is None
    assert client.beta.threads.retrieve(thread.id) == thread
    assert client.beta.threads.messages.list(thread.id).data == []


def test_create_empty_thread(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()

    assert thread.metadata == {}
    assert client.beta.threads.retrieve(thread.id).id == thread.id


def test_initial_messages_keep_their_order_content_and_attachments(client: openai.OpenAI) -> None:
    doc = client.files.create(file=("notes.md", b"# notes\n"), purpose="assistants")

    thread = client.beta.threads.create(
        messages=[
            {"role": "user", "content": "What is 3x + 11 = 14?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Subtract 11 first."}]},
            {
                "role": "user",
                "content": "Use my notes.",
                "attachments": [{"file_id": doc.id, "tools": [{"type": "code_interpreter"}, {"type": "file_search"}]}],
                "metadata": {"source": "upload"},
            },
        ],
        metadata={"topic": "algebra"},
    )

    listed = client.beta.threads.messages.list(thread.id, order="asc").data
    assert [m.role for m in listed] == ["user", "assistant", "user"]
    texts = []
    for m in listed:
        assert m.thread_id == thread.id
        assert m.object == "thread.message"
        assert m.created_at == thread.created_at
        assert (m.assistant_id, m.run_id) == (None, None)
        block = m.content[0]
        assert block.type == "text"
        texts.append(block.text.value)
        assert block.text.annotations == []
    assert texts == ["What is 3x + 11 = 14?", "Subtract 11 first.", "Use my notes."]
    assert listed[0].attachments == []
    assert listed[2].attachments is not None
    assert [a.file_id for a in listed[2].attachments] == [doc.id]
    tools = listed[2].attachments[0].tools
    assert tools is not None
    assert [t.type for t in tools] == ["code_interpreter", "file_search"]
    assert listed[2].metadata == {"source": "upload"}
    assert listed[0].metadata == {}
    assert thread.metadata == {"topic": "algebra"}
    # Newest first by default.
    assert [m.id for m in client.beta.threads.messages.list(thread.id).data] == [m.id for m in listed][::-1]


def test_tool_resources_are_stored_and_updated(client: openai.OpenAI) -> None:
    first = client.files.create(file=("a.py", b"print(1)\n"), purpose="assistants")
    second = client.files.create(file=("b.py", b"print(2)\n"), purpose="assistants")

    thread = client.beta.threads.create(tool_resources={"code_interpreter": {"file_ids": [first.id]}})
    assert thread.tool_resources is not None
    assert thread.tool_resources.code_interpreter is not None
    assert thread.tool_resources.code_interpreter.file_ids == [first.id]

    updated = client.beta.threads.update(
        thread.id, tool_resources={"code_interpreter": {"file_ids": [first.id, second.id]}}
    )
    assert updated.tool_resources is not None
    assert updated.tool_resources.code_interpreter is not None
    assert updated.tool_resources.code_interpreter.file_ids == [first.id, second.id]
    assert client.beta.threads.retrieve(thread.id) == updated


def test_update_metadata(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(metadata={"user": "abc123"})

    updated = client.beta.threads.update(thread.id, metadata={"user": "abc123", "modified": "true"})

    assert updated.id == thread.id
    assert updated.created_at == thread.created_at
    assert updated.metadata == {"user": "abc123", "modified": "true"}
    assert client.beta.threads.retrieve(thread.id).metadata == {"user": "abc123", "modified": "true"}


def test_delete_removes_the_thread_and_its_messages(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
    message = client.beta.threads.messages.list(thread.id).data[0]

    deleted = client.beta.threads.delete(thread.id)

    assert (deleted.id, deleted.object, deleted.deleted) == (thread.id, "thread.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.list(thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(message.id, thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.delete(thread.id)
