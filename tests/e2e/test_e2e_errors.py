"""Error flows: each failure reaches the SDK as the right exception class with the OpenAI error body."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from .remote import E2E_MARKS, KEY_A, KEY_B, MAX_BODY_BYTES, MAX_UPLOAD_BYTES, RemoteServer, make_client

pytestmark = E2E_MARKS


def error_body(exc: openai.APIStatusError) -> dict[str, Any]:
    """The SDK exposes the envelope's inner object as ``.body``; it always has all four keys."""
    assert isinstance(exc.body, dict)
    assert set(exc.body) == {"message", "type", "param", "code"}
    assert isinstance(exc.body["message"], str) and exc.body["message"]
    assert (exc.code, exc.param, exc.type) == (exc.body["code"], exc.body["param"], exc.body["type"])
    return exc.body


BadCall = Callable[[openai.OpenAI, str], object]

BAD_REQUESTS: list[tuple[str, BadCall, str | None, str, str]] = [
    # (id, call(client, thread_id), param, code, words the message must contain)
    (
        "temperature-above-max",
        lambda c, t: c.beta.assistants.create(model="gpt-4o", temperature=3),
        "temperature",
        "decimal_above_max_value",
        "temperature",
    ),
    (
        "top_p-below-min",
        lambda c, t: c.beta.assistants.create(model="gpt-4o", top_p=-0.5),
        "top_p",
        "decimal_below_min_value",
        "top_p",
    ),
    (
        "too-many-metadata-keys",
        lambda c, t: c.beta.assistants.create(model="gpt-4o", metadata={f"k{i}": "v" for i in range(17)}),
        "metadata",
        "object_above_max_properties",
        "16",
    ),
    (
        "metadata-value-too-long",
        lambda c, t: c.beta.threads.create(metadata={"k": "v" * 513}),
        "metadata",
        "string_above_max_length",
        "'metadata.k'",
    ),
    (
        "unknown-parameter",
        lambda c, t: c.beta.assistants.create(model="gpt-4o", extra_body={"colour": "blue"}),
        "colour",
        "unknown_parameter",
        "colour",
    ),
    (
        "name-wrong-type",
        lambda c, t: c.beta.assistants.create(model="gpt-4o", name=42),  # type: ignore[arg-type]
        "name",
        "invalid_type",
        "name",
    ),
    (
        "unknown-tool-type",
        lambda c, t: c.beta.assistants.create(model="gpt-4o", tools=[{"type": "browser"}]),  # type: ignore[list-item]
        "tools[0].type",
        "invalid_value",
        "browser",
    ),
    (
        "function-name-pattern",
        lambda c, t: c.beta.assistants.create(
            model="gpt-4o", tools=[{"type": "function", "function": {"name": "has spaces"}}]
        ),
        "tools[0].function.name",
        "invalid_value",
        "tools[0].function.name",
    ),
    (
        "missing-code-interpreter-file",
        lambda c, t: c.beta.assistants.create(
            model="gpt-4o", tool_resources={"code_interpreter": {"file_ids": ["file-abcdefghijklmnopqrstuvwx"]}}
        ),
        "tool_resources.code_interpreter.file_ids[0]",
        "invalid_value",
        "file-abcdefghijklmnopqrstuvwx",
    ),
    (
        "message-role",
        lambda c, t: c.beta.threads.messages.create(t, role="system", content="hi"),  # type: ignore[arg-type]
        "role",
        "invalid_value",
        "system",
    ),
    (
        "message-empty-content-parts",
        lambda c, t: c.beta.threads.messages.create(t, role="user", content=[]),
        "content",
        "empty_array",
        "content",
    ),
    (
        "message-missing-attachment-file",
        lambda c, t: c.beta.threads.messages.create(
            t,
            role="user",
            content="see file",
            attachments=[{"file_id": "file-abcdefghijklmnopqrstuvwx", "tools": [{"type": "file_search"}]}],
        ),
        "attachments[0].file_id",
        "invalid_value",
        "file-abcdefghijklmnopqrstuvwx",
    ),
    (
        "thread-initial-message-missing-image-file",
        lambda c, t: c.beta.threads.create(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_file", "image_file": {"file_id": "file-abcdefghijklmnopqrstuvwx"}}],
                }
            ]
        ),
        "messages[0].content[0].image_file.file_id",
        "invalid_value",
        "file-abcdefghijklmnopqrstuvwx",
    ),
    (
        "list-limit-above-max",
        lambda c, t: c.beta.threads.messages.list(t, limit=101),
        "limit",
        "integer_above_max_value",
        "100",
    ),
    (
        "list-limit-below-min",
        lambda c, t: c.beta.assistants.list(limit=0),
        "limit",
        "integer_below_min_value",
        "1",
    ),
    (
        "list-order",
        lambda c, t: c.beta.threads.messages.list(t, order="sideways"),  # type: ignore[arg-type]
        "order",
        "invalid_value",
        "sideways",
    ),
    (
        "list-unknown-cursor",
        lambda c, t: c.beta.threads.messages.list(t, after="msg_abcdefghijklmnopqrstuvwx"),
        "after",
        "invalid_value",
        "msg_abcdefghijklmnopqrstuvwx",
    ),
    (
        "file-purpose",
        lambda c, t: c.files.create(file=("a.txt", b"a"), purpose="nonsense"),  # type: ignore[arg-type]
        "purpose",
        "invalid_value",
        "nonsense",
    ),
]


@pytest.mark.parametrize(
    ("call", "param", "code", "words"), [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_request_maps_to_bad_request_error(
    client: openai.OpenAI, call: BadCall, param: str | None, code: str, words: str
) -> None:
    thread = client.beta.threads.create()

    with pytest.raises(openai.BadRequestError) as caught:
        call(client, thread.id)

    assert caught.value.status_code == 400
    body = error_body(caught.value)
    assert body["type"] == "invalid_request_error"
    assert body["param"] == param
    assert body["code"] == code
    assert words in body["message"]


def test_nothing_is_written_when_a_request_is_rejected(fresh_client: openai.OpenAI) -> None:
    client = fresh_client
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.create(
            messages=[
                {"role": "user", "content": "fine"},
                {
                    "role": "user",
                    "content": "broken",
                    "attachments": [{"file_id": "file-abcdefghijklmnopqrstuvwx", "tools": []}],
                },
            ]
        )
    with pytest.raises(openai.BadRequestError):
        client.beta.assistants.create(model="gpt-4o", temperature=9)

    assert client.beta.assistants.list().data == []


NOT_FOUND: list[tuple[str, Callable[[openai.OpenAI, str, str], object]]] = [
    ("assistant-retrieve", lambda c, t, m: c.beta.assistants.retrieve("asst_abcdefghijklmnopqrstuvwx")),
    ("assistant-update", lambda c, t, m: c.beta.assistants.update("asst_abcdefghijklmnopqrstuvwx", name="x")),
    ("assistant-delete", lambda c, t, m: c.beta.assistants.delete("asst_abcdefghijklmnopqrstuvwx")),
    ("thread-retrieve", lambda c, t, m: c.beta.threads.retrieve("thread_abcdefghijklmnopqrstuvwx")),
    ("thread-update", lambda c, t, m: c.beta.threads.update("thread_abcdefghijklmnopqrstuvwx", metadata={})),
    ("thread-delete", lambda c, t, m: c.beta.threads.delete("thread_abcdefghijklmnopqrstuvwx")),
    (
        "message-create-in-missing-thread",
        lambda c, t, m: c.beta.threads.messages.create("thread_abcdefghijklmnopqrstuvwx", role="user", content="x"),
    ),
    ("message-list-missing-thread", lambda c, t, m: c.beta.threads.messages.list("thread_abcdefghijklmnopqrstuvwx")),
    ("message-retrieve", lambda c, t, m: c.beta.threads.messages.retrieve("msg_abcdefghijklmnopqrstuvwx", thread_id=t)),
    (
        "message-retrieve-missing-thread",
        lambda c, t, m: c.beta.threads.messages.retrieve(m, thread_id="thread_abcdefghijklmnopqrstuvwx"),
    ),
    ("file-retrieve", lambda c, t, m: c.files.retrieve("file-abcdefghijklmnopqrstuvwx")),
    ("file-content", lambda c, t, m: c.files.content("file-abcdefghijklmnopqrstuvwx")),
    ("file-delete", lambda c, t, m: c.files.delete("file-abcdefghijklmnopqrstuvwx")),
]


@pytest.mark.parametrize("call", [n[1] for n in NOT_FOUND], ids=[n[0] for n in NOT_FOUND])
def test_missing_objects_raise_not_found_error(
    client: openai.OpenAI, call: Callable[[openai.OpenAI, str, str], object]
) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    message = client.beta.threads.messages.list(thread.id).data[0]

    with pytest.raises(openai.NotFoundError) as caught:
        call(client, thread.id, message.id)

    assert caught.value.status_code == 404
    body = error_body(caught.value)
    assert body["type"] == "invalid_request_error"
    assert "abcdefghijklmnopqrstuvwx" in body["message"]


def test_unknown_route_is_a_404_envelope(raw: httpx.Client) -> None:
    response = raw.get("/nothing/here", headers={"Authorization": f"Bearer {KEY_A}"})

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "/v1/nothing/here" in error["message"]


def test_malformed_json_body_is_a_400_envelope(raw: httpx.Client) -> None:
    response = raw.post(
        "/assistants",
        content=b'{"model": "gpt-4o",',
        headers={"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"


def test_missing_required_model_is_a_400_naming_it(raw: httpx.Client) -> None:
    response = raw.post("/assistants", json={"name": "no model"}, headers={"Authorization": f"Bearer {KEY_A}"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("model", "missing_required_parameter")


# --- authentication ------------------------------------------------------------------------------


def test_wrong_key_raises_authentication_error(server: RemoteServer) -> None:
    wrong = "sk-e2e-wrong-key-0000000000000000"
    with make_client(server, wrong) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.beta.assistants.list()
        with pytest.raises(openai.AuthenticationError):
            client.files.list()
        with pytest.raises(openai.AuthenticationError):
            client.beta.threads.create()

    assert caught.value.status_code == 401
    body = error_body(caught.value)
    assert body["code"] == "invalid_api_key"
    assert wrong not in body["message"]  # the key is masked, not echoed
    assert wrong[-4:] in body["message"]


def test_missing_key_is_a_401_envelope(raw: httpx.Client, server: RemoteServer) -> None:
    response = raw.get("/assistants")

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "API key" in error["message"]
    assert httpx.get(f"{server.url}/health").status_code == 200  # health needs no key


def test_open_server_accepts_any_key_into_one_project(open_server: RemoteServer) -> None:
    with make_client(open_server, "any-key-at-all") as first, make_client(open_server, "another") as second:
        assistant = first.beta.assistants.create(model="gpt-4o")
        assert second.beta.assistants.retrieve(assistant.id) == assistant


def test_a_key_made_with_the_cli_works_at_once_in_its_own_project(
    fresh_client: openai.OpenAI, client: openai.OpenAI
) -> None:
    mine = fresh_client.beta.assistants.create(model="gpt-4o")

    assert [a.id for a in fresh_client.beta.assistants.list()] == [mine.id]
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve(mine.id)


# --- tenancy -------------------------------------------------------------------------------------


def test_project_b_cannot_see_or_touch_project_a_objects(server: RemoteServer) -> None:
    with make_client(server, KEY_A) as a, make_client(server, KEY_B) as b:
        assistant = a.beta.assistants.create(model="gpt-4o", name="alpha's")
        thread = a.beta.threads.create(messages=[{"role": "user", "content": "secret"}], metadata={"o": "a"})
        message = a.beta.threads.messages.list(thread.id).data[0]
        file = a.files.create(file=("secret.txt", b"alpha only"), purpose="assistants")

        attempts: list[Callable[[], object]] = [
            lambda: b.beta.assistants.retrieve(assistant.id),
            lambda: b.beta.assistants.update(assistant.id, name="stolen"),
            lambda: b.beta.assistants.delete(assistant.id),
            lambda: b.beta.threads.retrieve(thread.id),
            lambda: b.beta.threads.update(thread.id, metadata={"o": "b"}),
            lambda: b.beta.threads.delete(thread.id),
            lambda: b.beta.threads.messages.list(thread.id),
            lambda: b.beta.threads.messages.create(thread.id, role="user", content="injected"),
            lambda: b.beta.threads.messages.retrieve(message.id, thread_id=thread.id),
            lambda: b.beta.threads.messages.update(message.id, thread_id=thread.id, metadata={"x": "y"}),
            lambda: b.beta.threads.messages.delete(message.id, thread_id=thread.id),
            lambda: b.files.retrieve(file.id),
            lambda: b.files.content(file.id),
            lambda: b.files.delete(file.id),
        ]
        for attempt in attempts:
            with pytest.raises(openai.NotFoundError):
                attempt()

        # Another project's file cannot be referenced either.
        own_thread = b.beta.threads.create()
        with pytest.raises(openai.BadRequestError) as caught:
            b.beta.threads.messages.create(
                own_thread.id,
                role="user",
                content="x",
                attachments=[{"file_id": file.id, "tools": [{"type": "code_interpreter"}]}],
            )
        assert error_body(caught.value)["param"] == "attachments[0].file_id"

        assert assistant.id not in {x.id for x in b.beta.assistants.list(limit=100)}
        assert file.id not in {f.id for f in b.files.list()}

        # And project A's objects are untouched.
        assert a.beta.assistants.retrieve(assistant.id) == assistant
        assert a.beta.threads.retrieve(thread.id) == thread
        assert [m.id for m in a.beta.threads.messages.list(thread.id)] == [message.id]
        assert a.beta.threads.messages.retrieve(message.id, thread_id=thread.id).metadata == {}
        assert a.files.content(file.id).read() == b"alpha only"


# --- limits --------------------------------------------------------------------------------------


def test_a_json_body_over_the_limit_is_a_413_and_writes_nothing(fresh_client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        fresh_client.beta.assistants.create(model="gpt-4o", instructions="x" * MAX_BODY_BYTES)

    assert caught.value.status_code == 413
    assert error_body(caught.value)["code"] == "request_too_large"
    assert str(MAX_BODY_BYTES) in error_body(caught.value)["message"]
    assert fresh_client.beta.assistants.list().data == []


def test_an_upload_over_the_limit_is_a_413_and_keeps_nothing(fresh_client: openai.OpenAI) -> None:
    at_limit = fresh_client.files.create(file=("max.bin", bytes(MAX_UPLOAD_BYTES)), purpose="assistants")
    assert at_limit.bytes == MAX_UPLOAD_BYTES

    with pytest.raises(openai.APIStatusError) as caught:
        fresh_client.files.create(file=("over.bin", bytes(MAX_UPLOAD_BYTES + 1)), purpose="assistants")

    assert caught.value.status_code == 413
    body = error_body(caught.value)
    assert (body["param"], body["code"]) == ("file", "request_too_large")
    assert [f.id for f in fresh_client.files.list()] == [at_limit.id]


# --- keys made and revoked with the CLI ------------------------------------------------------------


def test_a_revoked_key_stops_working(server: RemoteServer) -> None:
    created = server.create_key(f"proj-{uuid.uuid4().hex[:10]}")
    with make_client(server, created.key) as client:
        assistant = client.beta.assistants.create(model="gpt-4o")

        listing = server.keys_cli("list")
        assert f"{created.id}\t{created.project}\tactive" in listing
        server.keys_cli("revoke", created.id)
        assert f"{created.id}\t{created.project}\trevoked" in server.keys_cli("list")

        # The server trusts a key lookup for a few seconds, so poll, with a deadline.
        deadline = time.monotonic() + 30
        while True:
            try:
                client.beta.assistants.retrieve(assistant.id)
            except openai.AuthenticationError as exc:
                assert error_body(exc)["code"] == "invalid_api_key"
                break
            assert time.monotonic() < deadline, "the revoked key still works after 30s"
            time.sleep(0.1)
