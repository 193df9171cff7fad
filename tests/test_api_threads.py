"""/v1/threads and /v1/threads/{id}/messages (each test on SQLite and on PostgreSQL)."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from starlette.testclient import TestClient

from assistantd.protocol.threads import CreateMessage
from assistantd.service import messages as message_rows

if TYPE_CHECKING:
    from conftest import Api

THREAD_RE = re.compile(r"^thread_[A-Za-z0-9]{24}$")
MSG_RE = re.compile(r"^msg_[A-Za-z0-9]{24}$")


def upload(client: TestClient, name: str = "a.png", purpose: str = "vision") -> str:
    r = client.post("/v1/files", files={"file": (name, b"\x89PNG\r\n")}, data={"purpose": purpose})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def new_thread(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/threads", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def add_message(client: TestClient, thread_id: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"/v1/threads/{thread_id}/messages", json={"role": "user", "content": "hi", **body})
    assert r.status_code == 200, r.text
    return r.json()


def list_messages(client: TestClient, thread_id: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/threads/{thread_id}/messages", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def text_block(value: str) -> dict[str, Any]:
    return {"type": "text", "text": {"value": value, "annotations": []}}


# --- threads -----------------------------------------------------------------------------------


def test_create_empty_thread_without_a_body(client: TestClient, conforms: Any) -> None:
    before = int(time.time())
    r = client.post("/v1/threads")
    assert r.status_code == 200, r.text
    thread = r.json()
    assert THREAD_RE.match(thread["id"])
    assert before <= thread["created_at"] <= int(time.time())
    assert thread == {
        "id": thread["id"],
        "object": "thread",
        "created_at": thread["created_at"],
        "tool_resources": {},
        "metadata": {},
    }
    conforms(thread, "ThreadObject")
    assert list_messages(client, thread["id"])["data"] == []


def test_create_thread_with_messages_resources_and_metadata(client: TestClient, conforms: Any) -> None:
    image = upload(client)
    doc = upload(client, "doc.txt", "assistants")
    thread = new_thread(
        client,
        messages=[
            {"role": "user", "content": "first", "metadata": {"n": "1"}},
            {"role": "assistant", "content": [{"type": "text", "text": "second"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_file", "image_file": {"file_id": image}},
                ],
                "attachments": [{"file_id": doc, "tools": [{"type": "file_search"}]}],
            },
        ],
        tool_resources={"code_interpreter": {"file_ids": [doc]}},
        metadata={"user": "u1"},
    )
    conforms(thread, "ThreadObject")
    # The file attached for file_search went into a vector store of the thread's own.
    (store_id,) = thread["tool_resources"]["file_search"]["vector_store_ids"]
    assert store_id.startswith("vs_")
    assert thread["tool_resources"] == {
        "code_interpreter": {"file_ids": [doc]},
        "file_search": {"vector_store_ids": [store_id]},
    }
    assert thread["metadata"] == {"user": "u1"}
    assert client.get(f"/v1/threads/{thread['id']}").json() == thread

    page = list_messages(client, thread["id"], order="asc")
    conforms(page, "ListMessagesResponse")
    msgs = page["data"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0]["content"] == [text_block("first")]
    assert msgs[0]["metadata"] == {"n": "1"}
    assert msgs[1]["content"] == [text_block("second")]
    assert msgs[2]["content"] == [
        text_block("look"),
        {"type": "image_file", "image_file": {"file_id": image, "detail": "auto"}},
    ]
    assert msgs[2]["attachments"] == [{"file_id": doc, "tools": [{"type": "file_search"}]}]
    for m in msgs:
        assert m["thread_id"] == thread["id"]
        assert m["created_at"] == thread["created_at"]
        assert m["assistant_id"] is None and m["run_id"] is None
        assert m["status"] == "completed"
        conforms(m, "MessageObject")
    # Newest first by default: the last message given is the first listed.
    assert [m["id"] for m in list_messages(client, thread["id"])["data"]] == [m["id"] for m in msgs[::-1]]


def test_thread_create_is_atomic_when_a_later_message_is_invalid(api: Api, expect_error: Any) -> None:
    client = api.client
    good_file = upload(client)
    r = client.post(
        "/v1/threads",
        json={
            "messages": [
                {"role": "user", "content": "ok"},
                {
                    "role": "user",
                    "content": "bad",
                    "attachments": [{"file_id": "file-missing0000000000000000", "tools": [{"type": "file_search"}]}],
                },
            ],
            "tool_resources": {"code_interpreter": {"file_ids": [good_file]}},
        },
    )
    expect_error(
        r,
        400,
        code="invalid_value",
        param="messages[1].attachments[0].file_id",
        message="No file found with id 'file-missing0000000000000000'.",
    )
    assert api.count("threads") == 0
    assert api.count("messages") == 0


def test_thread_create_rejects_a_missing_image_file_in_a_message(api: Api, expect_error: Any) -> None:
    r = api.client.post(
        "/v1/threads",
        json={
            "messages": [
                {"role": "user", "content": "ok"},
                {
                    "role": "user",
                    "content": [{"type": "image_file", "image_file": {"file_id": "file-gone"}}],
                },
            ]
        },
    )
    expect_error(r, 400, code="invalid_value", param="messages[1].content[0].image_file.file_id")
    assert api.count("threads") == 0 and api.count("messages") == 0


def test_retrieve_unknown_thread_is_404(client: TestClient, expect_error: Any) -> None:
    expect_error(client.get("/v1/threads/thread_nope"), 404, message="No thread found with id 'thread_nope'.")


def test_modify_thread(client: TestClient, conforms: Any) -> None:
    f1, f2 = upload(client), upload(client)
    thread = new_thread(client, metadata={"a": "1"}, tool_resources={"code_interpreter": {"file_ids": [f1]}})

    r = client.post(f"/v1/threads/{thread['id']}", json={"metadata": {"b": "2"}})
    assert r.status_code == 200, r.text
    modified = r.json()
    conforms(modified, "ThreadObject")
    assert modified == {**thread, "metadata": {"b": "2"}}

    modified = client.post(
        f"/v1/threads/{thread['id']}", json={"tool_resources": {"code_interpreter": {"file_ids": [f2]}}}
    ).json()
    assert modified["tool_resources"] == {"code_interpreter": {"file_ids": [f2]}}
    assert modified["metadata"] == {"b": "2"}

    cleared = client.post(f"/v1/threads/{thread['id']}", json={"metadata": None}).json()
    assert cleared["metadata"] == {}
    assert client.get(f"/v1/threads/{thread['id']}").json() == cleared


def test_modify_unknown_thread_is_404(client: TestClient, expect_error: Any) -> None:
    expect_error(client.post("/v1/threads/thread_nope", json={"metadata": {}}), 404, contains=("thread_nope",))


def test_delete_thread_deletes_its_messages(api: Api, conforms: Any, expect_error: Any) -> None:
    client = api.client
    doomed = new_thread(client, messages=[{"role": "user", "content": "a"}])
    add_message(client, doomed["id"])
    other = new_thread(client, messages=[{"role": "user", "content": "stay"}])
    assert api.count("messages", thread_id=doomed["id"]) == 2

    r = client.delete(f"/v1/threads/{doomed['id']}")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": doomed["id"], "object": "thread.deleted", "deleted": True}
    conforms(r.json(), "DeleteThreadResponse")

    assert api.count("messages", thread_id=doomed["id"]) == 0
    assert api.count("messages", thread_id=other["id"]) == 1
    expect_error(client.get(f"/v1/threads/{doomed['id']}"), 404)
    expect_error(client.get(f"/v1/threads/{doomed['id']}/messages"), 404)
    expect_error(client.post(f"/v1/threads/{doomed['id']}/messages", json={"role": "user", "content": "x"}), 404)
    expect_error(client.delete(f"/v1/threads/{doomed['id']}"), 404)
    assert [m["content"][0]["text"]["value"] for m in list_messages(client, other["id"])["data"]] == ["stay"]


# --- messages ----------------------------------------------------------------------------------


def test_create_message_with_string_content(client: TestClient, conforms: Any) -> None:
    thread = new_thread(client)
    before = int(time.time())
    msg = add_message(client, thread["id"], content="Hello there", metadata={"k": "v"})
    assert MSG_RE.match(msg["id"])
    assert before <= msg["created_at"] <= int(time.time())
    assert msg == {
        "id": msg["id"],
        "object": "thread.message",
        "created_at": msg["created_at"],
        "assistant_id": None,
        "thread_id": thread["id"],
        "run_id": None,
        "status": "completed",
        "incomplete_details": None,
        "completed_at": None,
        "incomplete_at": None,
        "role": "user",
        "content": [text_block("Hello there")],
        "attachments": [],
        "metadata": {"k": "v"},
    }
    conforms(msg, "MessageObject")


def test_create_message_with_every_content_part_and_attachments(client: TestClient, conforms: Any) -> None:
    thread = new_thread(client)
    image = upload(client)
    doc = upload(client, "data.csv", "assistants")
    msg = add_message(
        client,
        thread["id"],
        content=[
            {"type": "text", "text": "Compare these"},
            {"type": "image_file", "image_file": {"file_id": image, "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
        ],
        attachments=[
            {"file_id": doc, "tools": [{"type": "code_interpreter"}, {"type": "file_search"}]},
            {"file_id": image, "tools": []},
        ],
    )
    conforms(msg, "MessageObject")
    assert msg["content"] == [
        text_block("Compare these"),
        {"type": "image_file", "image_file": {"file_id": image, "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "auto"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
    ]
    assert msg["attachments"] == [
        {"file_id": doc, "tools": [{"type": "code_interpreter"}, {"type": "file_search"}]},
        {"file_id": image, "tools": []},
    ]
    assert client.get(f"/v1/threads/{thread['id']}/messages/{msg['id']}").json() == msg


def test_assistant_role_messages_are_accepted(client: TestClient) -> None:
    thread = new_thread(client)
    assert add_message(client, thread["id"], role="assistant")["role"] == "assistant"


def test_create_message_on_unknown_thread_is_404(client: TestClient, expect_error: Any) -> None:
    expect_error(
        client.post("/v1/threads/thread_nope/messages", json={"role": "user", "content": "x"}),
        404,
        message="No thread found with id 'thread_nope'.",
    )


def test_create_message_referencing_missing_files_creates_nothing(api: Api, expect_error: Any) -> None:
    client = api.client
    thread = new_thread(client)
    expect_error(
        client.post(
            f"/v1/threads/{thread['id']}/messages",
            json={"role": "user", "content": "x", "attachments": [{"file_id": "file-nope", "tools": []}]},
        ),
        400,
        code="invalid_value",
        param="attachments[0].file_id",
        message="No file found with id 'file-nope'.",
    )
    expect_error(
        client.post(
            f"/v1/threads/{thread['id']}/messages",
            json={"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": "asst_x"}}]},
        ),
        400,
        code="invalid_value",
        param="content[0].image_file.file_id",
        contains=("'file-'",),
    )
    assert api.count("messages") == 0


def test_retrieve_message_checks_the_thread(client: TestClient, expect_error: Any) -> None:
    t1, t2 = new_thread(client), new_thread(client)
    msg = add_message(client, t1["id"])
    assert client.get(f"/v1/threads/{t1['id']}/messages/{msg['id']}").json() == msg
    expect_error(
        client.get(f"/v1/threads/{t2['id']}/messages/{msg['id']}"),
        404,
        message=f"No message found with id '{msg['id']}'.",
    )
    expect_error(client.get(f"/v1/threads/thread_nope/messages/{msg['id']}"), 404, contains=("thread_nope",))
    expect_error(client.get(f"/v1/threads/{t1['id']}/messages/msg_nope"), 404, contains=("msg_nope",))


def test_modify_message_metadata(client: TestClient, conforms: Any, expect_error: Any) -> None:
    thread = new_thread(client)
    msg = add_message(client, thread["id"], metadata={"a": "1"})
    r = client.post(f"/v1/threads/{thread['id']}/messages/{msg['id']}", json={"metadata": {"b": "2"}})
    assert r.status_code == 200, r.text
    conforms(r.json(), "MessageObject")
    assert r.json() == {**msg, "metadata": {"b": "2"}}
    assert client.get(f"/v1/threads/{thread['id']}/messages/{msg['id']}").json()["metadata"] == {"b": "2"}
    # Only metadata can change.
    expect_error(
        client.post(f"/v1/threads/{thread['id']}/messages/{msg['id']}", json={"content": "new"}),
        400,
        code="unknown_parameter",
        param="content",
    )
    expect_error(
        client.post(f"/v1/threads/{thread['id']}/messages/msg_nope", json={"metadata": {}}),
        404,
        contains=("msg_nope",),
    )


def test_delete_message(api: Api, conforms: Any, expect_error: Any) -> None:
    client = api.client
    thread = new_thread(client)
    keep = add_message(client, thread["id"], content="keep")
    gone = add_message(client, thread["id"], content="gone")
    other = new_thread(client)
    expect_error(client.delete(f"/v1/threads/{other['id']}/messages/{gone['id']}"), 404)

    r = client.delete(f"/v1/threads/{thread['id']}/messages/{gone['id']}")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": gone["id"], "object": "thread.message.deleted", "deleted": True}
    conforms(r.json(), "DeleteMessageResponse")
    expect_error(client.get(f"/v1/threads/{thread['id']}/messages/{gone['id']}"), 404)
    expect_error(client.delete(f"/v1/threads/{thread['id']}/messages/{gone['id']}"), 404)
    assert [m["id"] for m in list_messages(client, thread["id"])["data"]] == [keep["id"]]
    assert api.count("messages") == 1


def test_list_messages_filters_by_run_id(api: Api) -> None:
    client = api.client
    thread = new_thread(client)
    plain = add_message(client, thread["id"], content="user typed this")
    # Runs are not in the API yet; put run-made messages in through the service's own row writer.
    made = []
    for run_id, text in [("run_one", "a"), ("run_two", "b"), ("run_one", "c")]:
        msg = message_rows.build(
            CreateMessage(role="assistant", content=text),
            thread["id"],
            int(time.time()),
            assistant_id="asst_x",
            run_id=run_id,
        )
        api.app.state.services.db.write_sync(lambda conn, m=msg: message_rows.insert(conn, "default", m))
        made.append(msg)

    one = list_messages(client, thread["id"], run_id="run_one", order="asc")
    assert [m["id"] for m in one["data"]] == [made[0]["id"], made[2]["id"]]
    assert all(m["run_id"] == "run_one" and m["assistant_id"] == "asst_x" for m in one["data"])
    assert [m["id"] for m in list_messages(client, thread["id"], run_id="run_two")["data"]] == [made[1]["id"]]
    assert list_messages(client, thread["id"], run_id="run_none")["data"] == []
    everything = list_messages(client, thread["id"], order="asc")["data"]
    assert [m["id"] for m in everything] == [plain["id"], *(m["id"] for m in made)]
    # Paging inside a run filter: a cursor from the filtered list works, has_more is exact.
    first = list_messages(client, thread["id"], run_id="run_one", order="asc", limit=1)
    assert first["has_more"] is True
    rest = list_messages(client, thread["id"], run_id="run_one", order="asc", limit=1, after=first["last_id"])
    assert [m["id"] for m in rest["data"]] == [made[2]["id"]] and rest["has_more"] is False


def test_messages_of_other_threads_are_not_listed(client: TestClient) -> None:
    t1, t2 = new_thread(client), new_thread(client)
    m1 = add_message(client, t1["id"])
    m2 = add_message(client, t2["id"])
    assert [m["id"] for m in list_messages(client, t1["id"])["data"]] == [m1["id"]]
    assert [m["id"] for m in list_messages(client, t2["id"])["data"]] == [m2["id"]]
