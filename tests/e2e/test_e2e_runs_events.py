"""The SSE stream of runs, event by event, read off the wire (no SDK in between).

Orderings follow the official transcripts (shared/reference/README.md §7): a text answer, a function
call that ends in ``requires_action`` and closes the stream, the resumed stream after
``submit_tool_outputs``, and create-and-run. The data of every event is checked against what the
SDK's stream helper needs (§8): full run objects, ``content: []`` on message creation, indices from 0
without gaps, identity fields only in the first delta.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import openai

from .remote import E2E_MARKS, KEY_A, RemoteServer
from .runs_support import DEADLINE, FUNCTION_TOOLS, ScriptedUpstream, make_assistant, new_model, sse, wait_for

pytestmark = E2E_MARKS

RUN_KEYS = {
    "id", "object", "created_at", "thread_id", "assistant_id", "status", "required_action", "last_error",
    "expires_at", "started_at", "cancelled_at", "failed_at", "completed_at", "incomplete_details", "model",
    "instructions", "tools", "metadata", "usage", "temperature", "top_p", "max_prompt_tokens",
    "max_completion_tokens", "truncation_strategy", "tool_choice", "parallel_tool_calls", "response_format",
}  # fmt: skip
STEP_KEYS = {
    "id", "object", "created_at", "assistant_id", "thread_id", "run_id", "type", "status", "step_details",
    "last_error", "expired_at", "cancelled_at", "failed_at", "completed_at", "metadata", "usage",
}  # fmt: skip
MESSAGE_KEYS = {
    "id", "object", "created_at", "thread_id", "status", "incomplete_details", "completed_at", "incomplete_at",
    "role", "content", "assistant_id", "run_id", "attachments", "metadata",
}  # fmt: skip
DELTAS = ("thread.message.delta", "thread.run.step.delta")
# A run that answers in text, event by event (deltas folded by ``names``), as the official transcript has it.
TEXT_ANSWER = [
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
    "thread.message.delta+",
    "thread.message.completed",
    "thread.run.step.completed",
    "thread.run.completed",
    "done",
]


def names(events: list[tuple[str, Any]]) -> list[str]:
    """Event names with each run of deltas folded into one ``<name>+``."""
    out: list[str] = []
    for name, _ in events:
        folded = f"{name}+" if name in DELTAS else name
        if not (out and out[-1] == folded and name in DELTAS):
            out.append(folded)
    return out


def of(events: list[tuple[str, Any]], name: str) -> list[Any]:
    return [data for n, data in events if n == name]


def check_run_events(events: list[tuple[str, Any]], run_id: str) -> None:
    """Every thread.run.* event carries the whole run, as it is at that moment."""
    for name, data in events:
        if name.startswith("thread.run.") and not name.startswith("thread.run.step."):
            assert set(data) == RUN_KEYS, name
            assert data["object"] == "thread.run" and data["id"] == run_id
            status = "queued" if name == "thread.run.created" else name.removeprefix("thread.run.")
            assert data["status"] == status, (name, data["status"])
        elif name.startswith("thread.run.step.") and name != "thread.run.step.delta":
            assert set(data) == STEP_KEYS and data["run_id"] == run_id, name
        elif name.startswith("thread.message.") and name != "thread.message.delta":
            assert set(data) == MESSAGE_KEYS and data["run_id"] == run_id, name


def check_text_deltas(events: list[tuple[str, Any]], message_id: str) -> str:
    """Text deltas: one block at index 0, ``annotations`` only in the first; returns the text."""
    deltas = of(events, "thread.message.delta")
    assert deltas
    text = ""
    for i, delta in enumerate(deltas):
        assert delta["id"] == message_id and delta["object"] == "thread.message.delta"
        (part,) = delta["delta"]["content"]
        assert (part["index"], part["type"]) == (0, "text")
        assert ("annotations" in part["text"]) == (i == 0)
        assert part["text"]["value"]
        text += part["text"]["value"]
    return text


def test_text_answer_event_by_event(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(
        model, {"chunks": ["Hello", " there", ",", " friend"], "usage": {"prompt_tokens": 11, "completion_tokens": 4}}
    )
    assistant = make_assistant(rclient, model, instructions="Be brief.")
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Say hello"}])

    events = sse(runs_server, f"/threads/{thread.id}/runs", {"assistant_id": assistant.id, "stream": True})

    assert names(events) == TEXT_ANSWER
    assert events[-1] == ("done", "[DONE]")
    run_id = events[0][1]["id"]
    check_run_events(events, run_id)
    created = events[0][1]
    assert created["status"] == "queued" and created["thread_id"] == thread.id and created["model"] == model
    assert created["instructions"] == "Be brief." and created["usage"] is None

    step = of(events, "thread.run.step.created")[0]
    message = of(events, "thread.message.created")[0]
    assert step["type"] == "message_creation" and step["status"] == "in_progress"
    assert step["step_details"] == {"type": "message_creation", "message_creation": {"message_id": message["id"]}}
    assert message["content"] == [] and message["status"] == "in_progress" and message["role"] == "assistant"
    assert message["assistant_id"] == assistant.id

    assert check_text_deltas(events, message["id"]) == "Hello there, friend"
    assert [d["delta"]["content"][0]["text"]["value"] for d in of(events, "thread.message.delta")] == [
        "Hello",
        " there",
        ",",
        " friend",
    ]
    done_message = of(events, "thread.message.completed")[0]
    assert done_message["status"] == "completed" and done_message["completed_at"]
    assert done_message["content"] == [{"type": "text", "text": {"value": "Hello there, friend", "annotations": []}}]
    done_step = of(events, "thread.run.step.completed")[0]
    assert done_step["id"] == step["id"] and done_step["status"] == "completed"
    assert done_step["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
    completed = of(events, "thread.run.completed")[0]
    assert completed["completed_at"] and completed["started_at"] and completed["required_action"] is None
    assert completed["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}

    # The stored objects are the ones the stream ended with.
    assert rclient.beta.threads.runs.retrieve(run_id, thread_id=thread.id).model_dump(mode="json") == completed
    stored = rclient.beta.threads.messages.retrieve(message["id"], thread_id=thread.id)
    assert stored.model_dump(mode="json") == done_message


def test_function_call_then_resumed_stream_event_by_event(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    arguments = json.dumps({"date": "2024-11-17", "currency": "VND", "detail": "full"})
    upstream.script(
        model,
        {
            "tool_calls": [{"name": "CheckDailyRevenue", "arguments": arguments}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 9},
        },
        {"chunks": ["Revenue", " was", " fine"], "usage": {"prompt_tokens": 50, "completion_tokens": 3}},
    )
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Revenue on 2024-11-17?"}])

    events = sse(runs_server, f"/threads/{thread.id}/runs", {"assistant_id": assistant.id, "stream": True})

    # The stream ends at requires_action: done follows, and the response closed (sse() read to EOF).
    assert names(events) == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta+",
        "thread.run.requires_action",
        "done",
    ]
    run_id = events[0][1]["id"]
    check_run_events(events, run_id)
    step = of(events, "thread.run.step.created")[0]
    assert step["type"] == "tool_calls" and step["step_details"] == {"type": "tool_calls", "tool_calls": []}

    deltas = of(events, "thread.run.step.delta")
    assert len(deltas) > 1  # the arguments came in fragments
    first, *rest = [d["delta"]["step_details"]["tool_calls"] for d in deltas]
    assert all(d["id"] == step["id"] and d["object"] == "thread.run.step.delta" for d in deltas)
    assert all(d["delta"]["step_details"]["type"] == "tool_calls" for d in deltas)
    (call,) = first
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "CheckDailyRevenue" and call["function"]["output"] is None
    streamed = call["function"]["arguments"]
    for calls in rest:
        (later,) = calls
        assert set(later) == {"index", "type", "function"} and later["index"] == 0
        assert set(later["function"]) == {"arguments"}  # no id, no name again
        streamed += later["function"]["arguments"]
    assert streamed == arguments

    waiting = of(events, "thread.run.requires_action")[0]
    assert waiting["required_action"] == {
        "type": "submit_tool_outputs",
        "submit_tool_outputs": {
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": "CheckDailyRevenue", "arguments": arguments},
                }
            ]
        },
    }
    # The step waits with the run.
    paused = rclient.beta.threads.runs.steps.retrieve(step["id"], thread_id=thread.id, run_id=run_id)
    assert paused.status == "in_progress" and paused.completed_at is None
    assert paused.step_details.tool_calls[0].function.output is None  # type: ignore[union-attr]

    resumed = sse(
        runs_server,
        f"/threads/{thread.id}/runs/{run_id}/submit_tool_outputs",
        {"tool_outputs": [{"tool_call_id": call["id"], "output": "1,200,000 VND"}], "stream": True},
    )
    # The tool step closes first; then the run goes on as a text answer does from `queued`.
    assert names(resumed) == ["thread.run.step.completed", *TEXT_ANSWER[1:]]
    check_run_events(resumed, run_id)
    tool_step = resumed[0][1]
    assert tool_step["id"] == step["id"] and tool_step["status"] == "completed" and tool_step["completed_at"]
    assert tool_step["step_details"]["tool_calls"] == [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": "CheckDailyRevenue", "arguments": arguments, "output": "1,200,000 VND"},
        }
    ]
    assert tool_step["usage"] == {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}
    queued = of(resumed, "thread.run.queued")[0]
    assert queued["required_action"] is None
    message = of(resumed, "thread.message.created")[0]
    assert message["content"] == []
    assert check_text_deltas(resumed, message["id"]) == "Revenue was fine"
    completed = of(resumed, "thread.run.completed")[0]
    assert completed["usage"] == {"prompt_tokens": 80, "completion_tokens": 12, "total_tokens": 92}

    steps = rclient.beta.threads.runs.steps.list(run_id, thread_id=thread.id, order="asc").data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed"), ("message_creation", "completed")]


def test_parallel_calls_stream_in_index_order(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(
        model,
        {
            "tool_calls": [
                {"name": "CheckOutOfStock", "arguments": "{}"},
                {"name": "CheckDailyRevenue", "arguments": '{"date": "2024-11-17"}'},
            ]
        },
    )
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Stock and revenue?"}])
    events = sse(runs_server, f"/threads/{thread.id}/runs", {"assistant_id": assistant.id, "stream": True})

    calls = [c for d in of(events, "thread.run.step.delta") for c in d["delta"]["step_details"]["tool_calls"]]
    indices = [c["index"] for c in calls]
    assert indices == sorted(indices) and sorted(set(indices)) == [0, 1]  # from 0, no gap, never back
    firsts = [c for c in calls if "id" in c]
    assert [c["index"] for c in firsts] == [0, 1]
    assert [c["function"]["name"] for c in firsts] == ["CheckOutOfStock", "CheckDailyRevenue"]
    assert all("name" not in c["function"] for c in calls if "id" not in c)
    waiting = of(events, "thread.run.requires_action")[0]
    required = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert [(c["id"], c["function"]["name"]) for c in required] == [(c["id"], c["function"]["name"]) for c in firsts]
    assert required[1]["function"]["arguments"] == '{"date": "2024-11-17"}'


def test_create_and_run_stream_starts_with_thread_created(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, {"text": "A new thread, a new answer"})
    assistant = make_assistant(rclient, model)
    events = sse(
        runs_server,
        "/threads/runs",
        {
            "assistant_id": assistant.id,
            "stream": True,
            "thread": {"messages": [{"role": "user", "content": "Start"}], "metadata": {"k": "v"}},
        },
    )
    assert names(events) == ["thread.created", *TEXT_ANSWER]
    thread = events[0][1]
    assert thread["object"] == "thread" and thread["metadata"] == {"k": "v"}
    assert set(thread) == {"id", "object", "created_at", "tool_resources", "metadata"}
    run_id = events[1][1]["id"]
    check_run_events(events[1:], run_id)
    assert all(
        d["thread_id"] == thread["id"] for n, d in events[1:] if n.startswith("thread.run.") and "delta" not in n
    )
    message = of(events, "thread.message.created")[0]
    assert check_text_deltas(events, message["id"]) == "A new thread, a new answer"
    # The thread holds the user's message and the answer; only the answer had message events.
    listed = rclient.beta.threads.messages.list(thread["id"], order="asc").data
    assert [(m.role, m.content[0].text.value) for m in listed] == [  # type: ignore[union-attr]
        ("user", "Start"),
        ("assistant", "A new thread, a new answer"),
    ]


def test_text_then_function_call_in_one_turn(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Words before a call are their own message, finished before the tool step starts."""
    model = new_model()
    upstream.script(model, {"text": "Let me check.", "tool_calls": [{"name": "CheckOutOfStock", "arguments": "{}"}]})
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Stock?"}])
    events = sse(runs_server, f"/threads/{thread.id}/runs", {"assistant_id": assistant.id, "stream": True})
    # A text answer up to its step's completion, then the tool step.
    assert names(events) == [
        *TEXT_ANSWER[:10],
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta+",
        "thread.run.requires_action",
        "done",
    ]
    check_run_events(events, events[0][1]["id"])
    message_step, tool_step = of(events, "thread.run.step.created")
    assert (message_step["type"], tool_step["type"]) == ("message_creation", "tool_calls")
    assert of(events, "thread.message.completed")[0]["content"][0]["text"]["value"] == "Let me check."
    rclient.beta.threads.runs.cancel(events[0][1]["id"], thread_id=thread.id)


def test_an_empty_answer_still_makes_a_message(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, {"text": ""})
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "..."}])
    events = sse(runs_server, f"/threads/{thread.id}/runs", {"assistant_id": assistant.id, "stream": True})
    assert names(events)[3:] == [
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.message.created",
        "thread.message.in_progress",
        "thread.message.completed",
        "thread.run.step.completed",
        "thread.run.completed",
        "done",
    ]
    # At least one block: the SDK's helper reads content[0] of every finished message.
    assert of(events, "thread.message.completed")[0]["content"] == [
        {"type": "text", "text": {"value": "", "annotations": []}}
    ]


def test_additional_messages_have_no_events_in_the_stream(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, {"text": "answered"})
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create()
    events = sse(
        runs_server,
        f"/threads/{thread.id}/runs",
        {"assistant_id": assistant.id, "stream": True, "additional_messages": [{"role": "user", "content": "late"}]},
    )
    created = of(events, "thread.message.created")
    assert [m["role"] for m in created] == ["assistant"]
    listed = rclient.beta.threads.messages.list(thread.id, order="asc").data
    assert [m.role for m in listed] == ["user", "assistant"]
    assert upstream.requests(model)[0]["messages"] == [{"role": "user", "content": "late"}]


def _parse_sse(body: bytes) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    for block in body.decode().split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        name = next(line[6:].strip() for line in lines if line.startswith("event:"))
        data = "\n".join(line[5:].lstrip(" ") for line in lines if line.startswith("data:"))
        events.append((name, data if data == "[DONE]" else json.loads(data)))
    return events


def _read_chunked(sock: socket.socket) -> bytes:
    """A chunked HTTP/1.1 response body, read to its last chunk (the head is skipped)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, buf = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower(), head
    body = bytearray()
    while True:
        while b"\r\n" not in buf:
            buf += sock.recv(65536)
        size_line, buf = buf.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(buf) < size + 2:
            more = sock.recv(65536)
            assert more, "the server closed the stream mid-chunk"
            buf += more
        if size == 0:
            return bytes(body)
        body += buf[:size]
        buf = buf[size + 2 :]


def test_a_client_that_stops_reading_still_gets_every_event_in_order(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    # ~2.4 MB of deltas to a client whose receive buffer is tiny and that reads nothing until the run has
    # ended: the server's writes are pushed back (far past the socket buffers) and queue, and every event
    # must then arrive once, in order, with the stream closed properly.
    model = new_model()
    chunks = [f"<{i:04d}>" + "x" * 1000 for i in range(2000)]
    upstream.script(model, {"chunks": chunks})
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Say a lot"}])
    body = json.dumps({"assistant_id": assistant.id, "stream": True}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(DEADLINE)
    try:
        sock.connect(("127.0.0.1", runs_server.port))
        sock.sendall(
            f"POST /v1/threads/{thread.id}/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {KEY_A}\r\nOpenAI-Beta: assistants=v2\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_for(
            "the run to end while its stream is not read",
            lambda: [r for r in rclient.beta.threads.runs.list(thread_id=thread.id).data if r.status == "completed"],
        )
        events = _parse_sse(_read_chunked(sock))
    finally:
        sock.close()
    assert names(events) == TEXT_ANSWER
    message = of(events, "thread.message.created")[0]
    assert check_text_deltas(events, message["id"]) == "".join(chunks)
    assert len(of(events, "thread.message.delta")) == len(chunks)
