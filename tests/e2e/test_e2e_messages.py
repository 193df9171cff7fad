"""Messages through the official SDK: content parts, attachments, metadata, and paging past 100."""

from __future__ import annotations

import re
import time

import openai
import pytest

from .remote import E2E_MARKS, KEY_A, RemoteServer, make_client, pages_with_data

pytestmark = E2E_MARKS

MESSAGE_ID = re.compile(r"^msg_[0-9A-Za-z]{24}$")


def test_create_as_in_seed_001(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(metadata={"user": "abc123"})

    message = client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content="Tell me what a penguin is in 100 words or less.",
        metadata={"key": "value"},
    )

    assert MESSAGE_ID.match(message.id)
    assert message.object == "thread.message"
    assert message.thread_id == thread.id
    assert abs(message.created_at - time.time()) < 60
    assert message.role == "user"
    assert message.content[0].type == "text"
    assert message.content[0].text.value == "Tell me what a penguin is in 100 words or less."
    assert message.content[0].text.annotations == []
    assert len(message.content) == 1
    assert message.metadata == {"key": "value"}
    assert (message.assistant_id, message.run_id) == (None, None)
    assert message.attachments == []
    assert (message.incomplete_details, message.incomplete_at) == (None, None)
    assert client.beta.threads.messages.retrieve(message.id, thread_id=thread.id) == message


def test_content_parts_text_image_file_and_image_url(client: openai.OpenAI) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    image = client.files.create(file=("cat.png", png, "image/png"), purpose="vision")
    thread = client.beta.threads.create()

    message = client.beta.threads.messages.create(
        thread.id,
        role="user",
        content=[
            {"type": "text", "text": "What is in these pictures?"},
            {"type": "image_file", "image_file": {"file_id": image.id, "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/dog.jpg", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/bird.jpg"}},
        ],
    )

    assert [c.type for c in message.content] == ["text", "image_file", "image_url", "image_url"]
    text, image_file, image_url, default_detail = message.content
    assert text.type == "text" and text.text.value == "What is in these pictures?"
    assert image_file.type == "image_file"
    assert (image_file.image_file.file_id, image_file.image_file.detail) == (image.id, "high")
    assert image_url.type == "image_url"
    assert (image_url.image_url.url, image_url.image_url.detail) == ("https://example.com/dog.jpg", "low")
    assert default_detail.type == "image_url"
    assert default_detail.image_url.detail == "auto"
    assert client.beta.threads.messages.retrieve(message.id, thread_id=thread.id) == message


def test_assistant_role_and_attachments(client: openai.OpenAI) -> None:
    report = client.files.create(file=("report.pdf", b"%PDF-1.4\n%fake\n"), purpose="assistants")
    table = client.files.create(file=("table.csv", b"x,y\n1,2\n"), purpose="assistants")
    thread = client.beta.threads.create()

    message = client.beta.threads.messages.create(
        thread.id,
        role="assistant",
        content="I looked at both files.",
        attachments=[
            {"file_id": report.id, "tools": [{"type": "file_search"}]},
            {"file_id": table.id, "tools": [{"type": "code_interpreter"}, {"type": "file_search"}]},
        ],
    )

    assert message.role == "assistant"
    assert message.attachments is not None
    assert [a.file_id for a in message.attachments] == [report.id, table.id]
    assert [[t.type for t in a.tools or []] for a in message.attachments] == [
        ["file_search"],
        ["code_interpreter", "file_search"],
    ]
    assert client.beta.threads.messages.retrieve(message.id, thread_id=thread.id) == message


def test_update_metadata_and_delete(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    keep = client.beta.threads.messages.create(thread.id, role="user", content="keep me")
    drop = client.beta.threads.messages.create(thread.id, role="user", content="drop me", metadata={"a": "1"})

    updated = client.beta.threads.messages.update(drop.id, thread_id=thread.id, metadata={"a": "2", "b": "3"})
    assert updated.metadata == {"a": "2", "b": "3"}
    assert updated.content == drop.content
    assert client.beta.threads.messages.retrieve(drop.id, thread_id=thread.id).metadata == {"a": "2", "b": "3"}

    deleted = client.beta.threads.messages.delete(drop.id, thread_id=thread.id)

    assert (deleted.id, deleted.object, deleted.deleted) == (drop.id, "thread.message.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(drop.id, thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.delete(drop.id, thread_id=thread.id)
    assert [m.id for m in client.beta.threads.messages.list(thread.id)] == [keep.id]


def test_a_message_is_only_found_in_its_own_thread(client: openai.OpenAI) -> None:
    home = client.beta.threads.create()
    other = client.beta.threads.create()
    message = client.beta.threads.messages.create(home.id, role="user", content="hi")

    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(message.id, thread_id=other.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.update(message.id, thread_id=other.id, metadata={"x": "y"})
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.delete(message.id, thread_id=other.id)
    assert client.beta.threads.messages.list(other.id).data == []
    assert client.beta.threads.messages.retrieve(message.id, thread_id=home.id).metadata == {}


def test_list_filtered_by_a_run_that_made_no_messages_is_empty(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])

    page = client.beta.threads.messages.list(thread.id, run_id="run_abcdefghijklmnopqrstuvwx")

    assert page.data == []
    assert page.has_more is False


@pytest.fixture(scope="module")
def long_thread(server: RemoteServer) -> tuple[str, list[str]]:
    """A thread of 105 messages, oldest first, shared by the paging tests of one backend."""
    with make_client(server, KEY_A) as client:
        thread = client.beta.threads.create()
        ids = [
            client.beta.threads.messages.create(thread.id, role="user", content=f"message {i}").id for i in range(105)
        ]
    return thread.id, ids


def test_auto_pagination_iterates_every_page_in_both_orders(
    client: openai.OpenAI, long_thread: tuple[str, list[str]]
) -> None:
    thread_id, ids = long_thread

    assert [m.id for m in client.beta.threads.messages.list(thread_id)] == ids[::-1]
    assert [m.id for m in client.beta.threads.messages.list(thread_id, order="asc")] == ids
    assert [m.id for m in client.beta.threads.messages.list(thread_id, order="desc", limit=100)] == ids[::-1]
    values = [m.content[0].text.value for m in client.beta.threads.messages.list(thread_id, order="asc")]
    assert values == [f"message {i}" for i in range(105)]


def test_pages_and_cursors(client: openai.OpenAI, long_thread: tuple[str, list[str]]) -> None:
    thread_id, ids = long_thread

    pages = pages_with_data(client.beta.threads.messages.list(thread_id, order="asc", limit=100))
    assert [len(p.data) for p in pages] == [100, 5]
    assert [p.has_more for p in pages] == [True, False]
    assert [(p.first_id, p.last_id) for p in pages] == [(ids[0], ids[99]), (ids[100], ids[104])]

    page = client.beta.threads.messages.list(thread_id, limit=3, after=ids[50])
    assert [m.id for m in page.data] == [ids[49], ids[48], ids[47]]
    page = client.beta.threads.messages.list(thread_id, order="asc", limit=3, after=ids[50])
    assert [m.id for m in page.data] == ids[51:54]
    page = client.beta.threads.messages.list(thread_id, order="asc", limit=3, before=ids[50])
    assert [m.id for m in page.data] == ids[47:50]
    page = client.beta.threads.messages.list(thread_id, order="desc", limit=3, before=ids[50])
    assert [m.id for m in page.data] == [ids[53], ids[52], ids[51]]
    newest = client.beta.threads.messages.list(thread_id, limit=1)
    assert [m.id for m in newest.data] == [ids[-1]]
    assert newest.has_more is True
