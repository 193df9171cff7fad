"""Runs in process: the app on both databases, a scripted ``ChatModel`` injected through the composition
root, the real engine, tools and stores. Statuses, event order, tool calls, requires_action and submit,
cancel, budgets, truncation, errors, the forced tool_choice, argument errors, streamed-text saves and
annotation deltas; the wire, the SDKs over a socket, durability and the seeds stay in tests/e2e.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterator
from typing import Any

import openai
import psycopg
import pytest
import sqlean
from conftest import Api, MakeApi
from engine_support import (
    FakeChatModel,
    Gate,
    assistant,
    messages,
    names,
    of,
    ok,
    sse,
    steps,
    thread,
    wait_for,
    wait_run,
)
from file_search_support import store_with

from assistantd.engine import context
from assistantd.observability import collector

FUNCTION = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a thing up.",
        "parameters": {"type": "object", "properties": {"what": {"type": "string"}}, "required": ["what"]},
    },
}
TEXT_EVENTS = [
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
    "thread.message.delta+",
    "thread.message.completed",
    "thread.run.step.completed",
]


@pytest.fixture
def model() -> Iterator[FakeChatModel]:
    fake = FakeChatModel()
    yield fake
    fake.open_all()  # a run still held by the model ends with the app


@pytest.fixture
def runs(make_api: MakeApi, model: FakeChatModel) -> Api:
    return make_api(chat_model=model)


def start(api: Api, model_name: str, *texts: str, **body: Any) -> tuple[str, str]:
    """A thread with these user messages and a (non-streamed) run on it: (thread id, run id)."""
    asst = assistant(api.client, model_name, tools=body.pop("tools", []))
    t = thread(api.client, *texts)
    run = ok(api.client.post(f"/v1/threads/{t['id']}/runs", json={"assistant_id": asst["id"], **body}))
    return t["id"], run["id"]


def write(api: Api, sql: str, params: tuple[Any, ...]) -> None:
    """Change a row behind the API's back (committed), on either database."""
    if api.backend == "sqlite":
        path = api.database_url.removeprefix("sqlite:").removeprefix("//")
        with contextlib.closing(sqlean.connect(path)) as conn:
            conn.execute(sql, params)
            conn.commit()
    else:
        with psycopg.connect(api.database_url) as conn:
            conn.execute(sql.replace("?", "%s"), params)


# --- statuses and events ----------------------------------------------------------------------


def test_a_run_on_an_unknown_thread_or_with_an_unknown_assistant_is_a_404_and_creates_nothing(runs: Api) -> None:
    asst = assistant(runs.client, "m")
    t = thread(runs.client, "hi")
    r = runs.client.post("/v1/threads/thread_nope/runs", json={"assistant_id": asst["id"]})
    assert r.status_code == 404 and r.json()["error"]["message"] == "No thread found with id 'thread_nope'."
    r = runs.client.post(f"/v1/threads/{t['id']}/runs", json={"assistant_id": "asst_nope"})
    assert r.status_code == 404 and r.json()["error"]["message"] == "No assistant found with id 'asst_nope'."
    # Both unknown: the thread is named, as the path comes first.
    r = runs.client.post("/v1/threads/thread_nope/runs", json={"assistant_id": "asst_nope"})
    assert r.status_code == 404 and "thread_nope" in r.json()["error"]["message"]
    assert runs.client.get(f"/v1/threads/{t['id']}/runs").json()["data"] == []


def test_text_answer_event_by_event(runs: Api, model: FakeChatModel) -> None:
    model.script(
        "m", {"chunks": ["Hello", " there", ",", " friend"], "usage": {"prompt_tokens": 11, "completion_tokens": 4}}
    )
    asst = assistant(runs.client, "m", instructions="Be brief.")
    t = thread(runs.client, "Say hello")
    events = sse(runs.client, f"/threads/{t['id']}/runs", {"assistant_id": asst["id"], "stream": True})

    assert names(events) == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        *TEXT_EVENTS,
        "thread.run.completed",
        "done",
    ]
    deltas = of(events, "thread.message.delta")
    assert [d["delta"]["content"][0]["text"]["value"] for d in deltas] == ["Hello", " there", ",", " friend"]
    assert [("annotations" in d["delta"]["content"][0]["text"]) for d in deltas] == [True, False, False, False]
    completed = of(events, "thread.run.completed")[0]
    assert completed["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
    assert completed["started_at"] and completed["completed_at"]
    done_message = of(events, "thread.message.completed")[0]
    assert done_message["content"] == [{"type": "text", "text": {"value": "Hello there, friend", "annotations": []}}]
    assert messages(runs.client, t["id"])[-1] == done_message
    assert ok(runs.client.get(f"/v1/threads/{t['id']}/runs/{completed['id']}")) == completed
    sent = model.requests["m"][0]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    assert sent["tools"] == [] and sent["tool_choice"] is None


def test_function_call_requires_action_then_submit_resumes(runs: Api, model: FakeChatModel) -> None:
    arguments = json.dumps({"what": "revenue"})
    model.script(
        "m",
        {
            "tool_calls": [{"name": "lookup", "arguments": arguments}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 9},
        },
        {"chunks": ["Revenue", " was", " fine"], "usage": {"prompt_tokens": 50, "completion_tokens": 3}},
    )
    asst = assistant(runs.client, "m", tools=[FUNCTION])
    t = thread(runs.client, "Revenue?")
    events = sse(runs.client, f"/threads/{t['id']}/runs", {"assistant_id": asst["id"], "stream": True})
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
    deltas = [d["delta"]["step_details"]["tool_calls"][0] for d in of(events, "thread.run.step.delta")]
    assert deltas[0]["function"]["name"] == "lookup" and deltas[0]["index"] == 0
    assert "".join(d["function"]["arguments"] for d in deltas) == arguments
    waiting = of(events, "thread.run.requires_action")[0]
    (call,) = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert call["function"] == {"name": "lookup", "arguments": arguments}
    run_id = waiting["id"]
    assert steps(runs.client, t["id"], run_id)[0]["status"] == "in_progress"

    resumed = sse(
        runs.client,
        f"/threads/{t['id']}/runs/{run_id}/submit_tool_outputs",
        {"tool_outputs": [{"tool_call_id": call["id"], "output": "1,200"}], "stream": True},
    )
    assert names(resumed) == [
        "thread.run.step.completed",
        "thread.run.queued",
        "thread.run.in_progress",
        *TEXT_EVENTS,
        "thread.run.completed",
        "done",
    ]
    completed = of(resumed, "thread.run.completed")[0]
    assert completed["usage"] == {"prompt_tokens": 80, "completion_tokens": 12, "total_tokens": 92}
    tool_step = resumed[0][1]
    assert tool_step["step_details"]["tool_calls"][0]["function"]["output"] == "1,200"
    # The model read its call and the output back.
    second = model.requests["m"][1]["messages"]
    assert second[-2]["role"] == "assistant" and second[-2]["tool_calls"][0]["id"] == call["id"]
    assert second[-1] == {"role": "tool", "tool_call_id": call["id"], "content": "1,200"}
    assert [(s["type"], s["status"]) for s in steps(runs.client, t["id"], run_id)] == [
        ("tool_calls", "completed"),
        ("message_creation", "completed"),
    ]


def test_parallel_calls_and_parallel_tool_calls_false(runs: Api, model: FakeChatModel) -> None:
    calls = [{"name": "lookup", "arguments": json.dumps({"what": w})} for w in ("a", "b", "c")]
    model.script("m", {"tool_calls": calls}, {"tool_calls": calls})
    t, run_id = start(runs, "m", "go", tools=[FUNCTION])
    waiting = wait_run(runs.client, t, run_id, ("requires_action",))
    pending = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"])["what"] for c in pending] == ["a", "b", "c"]
    assert model.requests["m"][0]["parallel_tool_calls"] is None

    t2, run2 = start(runs, "m", "go", tools=[FUNCTION], parallel_tool_calls=False)
    waiting = wait_run(runs.client, t2, run2, ("requires_action",))
    assert len(waiting["required_action"]["submit_tool_outputs"]["tool_calls"]) == 1
    assert model.requests["m"][1]["parallel_tool_calls"] is False


def test_text_then_function_call_in_one_turn(runs: Api, model: FakeChatModel) -> None:
    model.script(
        "m", {"chunks": ["Let me", " check."], "tool_calls": [{"name": "lookup", "arguments": '{"what": "x"}'}]}
    )
    asst = assistant(runs.client, "m", tools=[FUNCTION])
    t = thread(runs.client, "go")
    events = sse(runs.client, f"/threads/{t['id']}/runs", {"assistant_id": asst["id"], "stream": True})
    assert names(events) == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        *TEXT_EVENTS,
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta+",
        "thread.run.requires_action",
        "done",
    ]
    assert of(events, "thread.message.completed")[0]["content"][0]["text"]["value"] == "Let me check."


def test_an_empty_answer_still_makes_a_message(runs: Api, model: FakeChatModel) -> None:
    model.script("m", {"chunks": []})
    asst = assistant(runs.client, "m")
    t = thread(runs.client, "go")
    events = sse(runs.client, f"/threads/{t['id']}/runs", {"assistant_id": asst["id"], "stream": True})
    assert "thread.message.delta+" not in names(events)
    assert of(events, "thread.message.completed")[0]["content"] == [
        {"type": "text", "text": {"value": "", "annotations": []}}
    ]
    assert of(events, "thread.run.completed")


# --- cancel, errors, expiry ---------------------------------------------------------------------


def test_cancel_while_the_model_is_answering(runs: Api, model: FakeChatModel) -> None:
    gate = Gate()
    model.script("m", {"chunks": ["First", " words", " never"], "gate": gate})
    t, run_id = start(runs, "m", "go")
    gate.wait_reached()
    cancelling = ok(runs.client.post(f"/v1/threads/{t}/runs/{run_id}/cancel"))
    assert cancelling["status"] == "cancelling"
    run = wait_run(runs.client, t, run_id)
    assert run["status"] == "cancelled" and run["cancelled_at"]
    (message,) = [m for m in messages(runs.client, t) if m["role"] == "assistant"]
    assert message["status"] == "incomplete" and message["incomplete_details"] == {"reason": "run_cancelled"}
    assert message["content"][0]["text"]["value"] == "First"
    assert [s["status"] for s in steps(runs.client, t, run_id)] == ["cancelled"]
    # The thread is usable again.
    model.script("m", {"text": "again"})
    again = ok(runs.client.post(f"/v1/threads/{t}/runs", json={"assistant_id": run["assistant_id"]}))
    assert wait_run(runs.client, t, again["id"])["status"] == "completed"


def test_cancel_a_run_waiting_for_tool_outputs(runs: Api, model: FakeChatModel) -> None:
    model.script("m", {"tool_calls": [{"name": "lookup", "arguments": '{"what": "x"}'}]})
    t, run_id = start(runs, "m", "go", tools=[FUNCTION])
    wait_run(runs.client, t, run_id, ("requires_action",))
    cancelled = ok(runs.client.post(f"/v1/threads/{t}/runs/{run_id}/cancel"))
    assert cancelled["status"] == "cancelled" and cancelled["required_action"] is None
    assert [s["status"] for s in steps(runs.client, t, run_id)] == ["cancelled"]


@pytest.fixture
def deferring() -> Iterator[collector.Deferral]:
    """The process's deferral of collections switched on, as ``serve`` does (``collector.tune``)."""
    deferral = collector._deferral
    assert gc.isenabled() and deferral.holders == 0 and gc.get_freeze_count() == 0
    deferral.start()
    try:
        yield deferral
    finally:
        deferral.enabled = False
        gc.unfreeze()
        gc.enable()


def test_every_run_and_request_releases_its_hold_on_the_collector_however_it_ends(
    runs: Api, model: FakeChatModel, deferring: collector.Deferral
) -> None:
    gate = Gate()
    model.script("m", {"chunks": ["held", " words"], "gate": gate})
    t, held = start(runs, "m", "go")
    gate.wait_reached()
    assert deferring.holders >= 1 and not gc.isenabled()  # a run being set up: collections wait
    ok(runs.client.post(f"/v1/threads/{t}/runs/{held}/cancel"))
    assert wait_run(runs.client, t, held)["status"] == "cancelled"
    model.script("m", {"error": {"message": "Overloaded.", "code": "server_error"}})
    t, failed = start(runs, "m", "go")
    assert wait_run(runs.client, t, failed)["status"] == "failed"
    model.script("m", {"tool_calls": [{"name": "lookup", "arguments": "{}"}]}, {"text": "done"})
    t, waiting = start(runs, "m", "go", tools=[FUNCTION])
    run = wait_run(runs.client, t, waiting, ("requires_action",))
    call = run["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
    submitted = {"tool_outputs": [{"tool_call_id": call, "output": "x"}], "stream": True}
    assert names(sse(runs.client, f"/threads/{t}/runs/{waiting}/submit_tool_outputs", submitted))[-2:] == [
        "thread.run.completed",
        "done",
    ]
    assert runs.client.post("/v1/threads/thread_nope/runs", json={"assistant_id": "asst_nope"}).status_code == 404
    wait_for("every hold released", lambda: deferring.holders == 0)
    assert gc.isenabled()


def test_upstream_error_fails_the_run_with_its_code(runs: Api, model: FakeChatModel) -> None:
    model.script("m", {"error": {"message": "Rate limit reached for m.", "code": "rate_limit_exceeded"}})
    asst = assistant(runs.client, "m")
    t = thread(runs.client, "go")
    events = sse(runs.client, f"/threads/{t['id']}/runs", {"assistant_id": asst["id"], "stream": True})
    assert names(events) == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.failed",
        "done",
    ]
    failed = of(events, "thread.run.failed")[0]
    assert failed["last_error"] == {"code": "rate_limit_exceeded", "message": "Rate limit reached for m."}
    assert failed["failed_at"]


def test_a_text_only_answer_is_stored_while_the_model_thinks(runs: Api, model: FakeChatModel) -> None:
    """No tools offered, so the answer can only be text: its message is written as the model call goes out
    (not after the first token, which would wait for that write). Its events still come right before its
    first text (``test_text_answer_event_by_event``)."""
    gate = Gate()
    model.script("m", {"text": "Hi there", "gate_before": gate})
    t, run_id = start(runs, "m", "go")
    gate.wait_reached()  # the model call is out, nothing said yet
    (thinking,) = [m for m in messages(runs.client, t) if m["role"] == "assistant"]
    assert thinking["status"] == "in_progress" and thinking["content"] == [] and thinking["run_id"] == run_id
    gate.open()
    assert wait_run(runs.client, t, run_id)["status"] == "completed"
    (answered,) = [m for m in messages(runs.client, t) if m["role"] == "assistant"]
    assert answered["id"] == thinking["id"] and answered["content"][0]["text"]["value"] == "Hi there"


@pytest.mark.parametrize("end", ["upstream error", "cancel"])
def test_a_run_that_ends_before_the_model_says_anything_leaves_no_message(
    runs: Api, model: FakeChatModel, end: str
) -> None:
    gate = Gate()
    if end == "upstream error":
        model.script("m", {"error": {"message": "Overloaded.", "code": "server_error"}})
    else:
        model.script("m", {"text": "never said", "gate_before": gate})
    t, run_id = start(runs, "m", "go")
    if end == "cancel":
        gate.wait_reached()
        ok(runs.client.post(f"/v1/threads/{t}/runs/{run_id}/cancel"))
    run = wait_run(runs.client, t, run_id)
    assert run["status"] == ("failed" if end == "upstream error" else "cancelled")
    # The message opened for its answer went with it, unannounced: as if the model had never been asked.
    assert [m["role"] for m in messages(runs.client, t)] == ["user"]
    assert steps(runs.client, t, run_id) == []
    gate.open()


def test_a_stream_broken_mid_answer_fails_and_keeps_the_text(runs: Api, model: FakeChatModel) -> None:
    model.script("m", {"chunks": ["Half", " an", " answer"], "fail_after": 2})
    t, run_id = start(runs, "m", "go")
    run = wait_run(runs.client, t, run_id)
    assert run["status"] == "failed" and "broke off" in run["last_error"]["message"]
    (message,) = [m for m in messages(runs.client, t) if m["role"] == "assistant"]
    assert message["status"] == "incomplete" and message["incomplete_details"] == {"reason": "run_failed"}
    assert message["content"][0]["text"]["value"] == "Half an"
    assert [s["status"] for s in steps(runs.client, t, run_id)] == ["failed"]


def test_a_run_left_waiting_for_tool_outputs_expires(make_api: MakeApi, model: FakeChatModel) -> None:
    api = make_api(chat_model=model, run_expiry_seconds=1, reap_interval_seconds=0.1)
    model.script("m", {"tool_calls": [{"name": "lookup", "arguments": '{"what": "x"}'}]})
    t, run_id = start(api, "m", "go", tools=[FUNCTION])
    wait_run(api.client, t, run_id, ("requires_action",))
    run = wait_run(api.client, t, run_id, ("expired",))
    assert run["required_action"] is None
    assert [s["status"] for s in steps(api.client, t, run_id)] == ["expired"]


def test_an_active_run_locks_its_thread(runs: Api, model: FakeChatModel) -> None:
    gate = Gate()
    model.script("m", {"chunks": ["a", "b"], "gate": gate})
    t, run_id = start(runs, "m", "go")
    gate.wait_reached()
    asst = ok(runs.client.get(f"/v1/threads/{t}/runs/{run_id}"))["assistant_id"]
    r = runs.client.post(f"/v1/threads/{t}/runs", json={"assistant_id": asst})
    assert r.status_code == 400 and run_id in r.json()["error"]["message"]
    gate.open()
    assert wait_run(runs.client, t, run_id)["status"] == "completed"


# --- budgets, truncation, options ---------------------------------------------------------------


def test_max_completion_tokens_reached_makes_the_run_incomplete(runs: Api, model: FakeChatModel) -> None:
    model.script(
        "m",
        {
            "chunks": ["cut", " short"],
            "finish_reason": "length",
            "usage": {"prompt_tokens": 5, "completion_tokens": 256},
        },
    )
    t, run_id = start(runs, "m", "go", max_completion_tokens=256)
    run = wait_run(runs.client, t, run_id)
    assert run["status"] == "incomplete" and run["incomplete_details"] == {"reason": "max_completion_tokens"}
    (message,) = [m for m in messages(runs.client, t) if m["role"] == "assistant"]
    assert message["status"] == "incomplete" and message["incomplete_details"] == {"reason": "max_tokens"}
    assert model.requests["m"][0]["max_tokens"] == 256


def test_max_prompt_tokens_exceeded_makes_the_run_incomplete(runs: Api, model: FakeChatModel) -> None:
    model.script(
        "m",
        {
            "tool_calls": [{"name": "lookup", "arguments": '{"what": "x"}'}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 5},
        },
    )
    t, run_id = start(runs, "m", "go", tools=[FUNCTION], max_prompt_tokens=500)
    run = wait_run(runs.client, t, run_id)
    assert run["status"] == "incomplete" and run["incomplete_details"] == {"reason": "max_prompt_tokens"}
    assert run["usage"]["prompt_tokens"] == 900
    assert [s["status"] for s in steps(runs.client, t, run_id)] == ["cancelled"]


def test_truncation_last_messages_and_run_options_reach_the_model(runs: Api, model: FakeChatModel) -> None:
    t, run_id = start(
        runs,
        "m",
        "one",
        "two",
        "three",
        truncation_strategy={"type": "last_messages", "last_messages": 2},
        temperature=0.2,
        top_p=0.5,
        response_format={"type": "json_object"},
        instructions="Answer in JSON.",
    )
    assert wait_run(runs.client, t, run_id)["status"] == "completed"
    sent = model.requests["m"][0]
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    assert (sent["temperature"], sent["top_p"], sent["response_format"]) == (0.2, 0.5, {"type": "json_object"})


# --- issue 15: the run loop ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("required", "required"),
        ({"type": "function", "function": {"name": "lookup"}}, {"type": "function", "function": {"name": "lookup"}}),
    ],
)
def test_a_forced_tool_choice_holds_for_the_first_model_call_only(
    runs: Api, model: FakeChatModel, choice: Any, sent: Any
) -> None:
    model.script("m", {"tool_calls": [{"name": "lookup", "arguments": '{"what": "x"}'}]}, {"text": "done"})
    t, run_id = start(runs, "m", "go", tools=[FUNCTION], tool_choice=choice)
    waiting = wait_run(runs.client, t, run_id, ("requires_action",))
    assert waiting["tool_choice"] == choice  # the run object keeps what the client asked for
    (call,) = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    ok(
        runs.client.post(
            f"/v1/threads/{t}/runs/{run_id}/submit_tool_outputs",
            json={"tool_outputs": [{"tool_call_id": call["id"], "output": "1"}]},
        )
    )
    assert wait_run(runs.client, t, run_id)["status"] == "completed"
    assert [r["tool_choice"] for r in model.requests["m"]] == [sent, "auto"]


def test_a_forced_builtin_tool_goes_upstream_as_its_named_function(runs: Api, model: FakeChatModel) -> None:
    model.script("m", {"tool_calls": [{"name": "code_interpreter", "arguments": "not json"}]}, {"text": "done"})
    t, run_id = start(runs, "m", "go", tools=[{"type": "code_interpreter"}], tool_choice={"type": "code_interpreter"})
    assert wait_run(runs.client, t, run_id)["status"] == "completed"
    first, second = model.requests["m"]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "code_interpreter"}}
    assert second["tool_choice"] == "auto"


def test_a_run_whose_own_tool_rounds_overflow_a_small_window_drops_its_oldest_rounds(
    make_api: MakeApi, model: FakeChatModel
) -> None:
    """A model that calls a tool again and again (here with arguments that are not JSON, so nothing runs)
    must not push a 1024-token window over: the request keeps the user's message and the newest rounds."""
    api = make_api(chat_model=model, context_tokens=1024)
    long_call = {"tool_calls": [{"name": "code_interpreter", "arguments": "print(1) " * 60}]}  # ~135 tokens
    model.script("m", long_call, long_call, long_call, long_call, long_call, {"text": "done"})
    t, run_id = start(api, "m", "go", tools=[{"type": "code_interpreter"}], instructions="Run code.")
    assert wait_run(api.client, t, run_id)["status"] == "completed"
    sent = model.requests["m"]
    assert len(sent) == 6
    last = sent[-1]["messages"]
    room = 1024 - context.answer_reserve(1024)
    tools = context.message_tokens({"role": "system", "content": json.dumps(sent[-1]["tools"], separators=(",", ":"))})
    assert sum(context.message_tokens(m) for m in last) + tools <= room
    assert last[:2] == [{"role": "system", "content": "Run code."}, {"role": "user", "content": "go"}]
    calls = [m["tool_calls"][0]["id"] for m in last if m.get("tool_calls")]
    all_calls = [c["id"] for s in steps(api.client, t, run_id) if s["type"] == "tool_calls"
                 for c in s["step_details"]["tool_calls"]]
    assert 0 < len(calls) < 5 and calls == all_calls[-len(calls):]  # the newest rounds, in order
    answered = [m["tool_call_id"] for m in last if m["role"] == "tool"]
    assert answered == calls  # every kept call still has its output, and no output lost its call


def test_a_newest_message_over_the_window_fails_with_an_error_that_says_so(
    make_api: MakeApi, model: FakeChatModel
) -> None:
    """The newest message is always sent; when the upstream then fails (llama-cpp-python sends an empty
    stream), last_error says the prompt is over the window rather than only what the server sent."""
    api = make_api(chat_model=model, context_tokens=1024)
    model.script("m", {"error": {"message": "The model provider sent an empty body"}}, {"error": {"message": "x"}})
    t, run_id = start(api, "m", "word " * 1500)
    failed = wait_run(api.client, t, run_id, ("failed",))
    said = failed["last_error"]["message"]
    assert said.startswith("The model provider sent an empty body (the prompt is about ")
    assert "more than the 1024-token context window" in said and "context_tokens" in said
    t, run_id = start(api, "m", "a short question")  # an error on a prompt that fits says nothing more
    assert wait_run(api.client, t, run_id, ("failed",))["last_error"]["message"] == "x"


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ("print(1)", "not valid JSON"),
        ('{"code": "print(1)"', "not valid JSON"),  # cut off at the token limit
        ('{"source": "print(1)"}', "lack the required field 'code'"),
        ('["print(1)"]', "must be a JSON object"),
    ],
)
def test_bad_builtin_arguments_go_back_to_the_model(runs: Api, model: FakeChatModel, arguments: str, said: str) -> None:
    model.script("m", {"tool_calls": [{"name": "code_interpreter", "arguments": arguments}]}, {"text": "sorry"})
    t, run_id = start(runs, "m", "go", tools=[{"type": "code_interpreter"}])
    assert wait_run(runs.client, t, run_id)["status"] == "completed"
    told = model.requests["m"][1]["messages"][-1]
    assert told["role"] == "tool" and said in told["content"] and "nothing was run" in told["content"]
    assert '{"code": "..."}' in told["content"]  # how to call it right
    tool_step = steps(runs.client, t, run_id)[0]
    (call,) = tool_step["step_details"]["tool_calls"]
    assert call["type"] == "code_interpreter" and call["code_interpreter"]["outputs"] == []


def test_bad_client_function_arguments_still_pause_with_the_raw_arguments(runs: Api, model: FakeChatModel) -> None:
    model.script("m", {"tool_calls": [{"name": "lookup", "arguments": '{"what": "x'}]})
    t, run_id = start(runs, "m", "go", tools=[FUNCTION])
    waiting = wait_run(runs.client, t, run_id, ("requires_action",))
    (call,) = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert call["function"]["arguments"] == '{"what": "x'


@pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")
def test_annotations_ride_on_their_marker_text_and_the_sdk_snapshot_is_the_stored_message(
    runs: Api, model: FakeChatModel
) -> None:
    store_id, _ = store_with(runs.client, {"tides.txt": "Spring tides happen at new and full moon."})
    model.script(
        "m",
        {"tool_calls": [{"name": "file_search", "arguments": '{"queries": ["spring tides"]}'}]},
        # The marker is split over chunks, as a model's tokens split it.
        {"chunks": ["At new and full moon", "【0", ":0†tid", "es.txt】", ". Also 【9:9†x】."]},
    )
    asst = assistant(
        runs.client,
        "m",
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store_id]}},
    )
    t = thread(runs.client, "When are spring tides?")
    sdk = openai.OpenAI(base_url="http://localhost/v1", api_key="sk-test", http_client=runs.client)
    snapshots: list[str] = []

    class Handler(openai.AssistantEventHandler):
        def on_text_delta(self, delta: Any, snapshot: Any) -> None:
            assert delta.value is not None
            snapshots.append(snapshot.value)

    with sdk.beta.threads.runs.stream(thread_id=t["id"], assistant_id=asst["id"], event_handler=Handler()) as stream:
        stream.until_done()
        final = stream.get_final_messages()[-1]
    stored = messages(runs.client, t["id"])[-1]
    text = stored["content"][0]["text"]
    assert text["value"] == "At new and full moon【0:0†tides.txt】. Also 【9:9†x】."
    (note,) = text["annotations"]
    assert note["type"] == "file_citation" and note["text"] == "【0:0†tides.txt】"
    assert text["value"][note["start_index"] : note["end_index"]] == note["text"]
    assert snapshots[-1] == text["value"]
    assert (
        final.model_dump(mode="json")["content"][0]["text"]["annotations"][0]["file_citation"] == note["file_citation"]
    )


def test_citation_delta_carries_its_marker(runs: Api, model: FakeChatModel) -> None:
    store_id, ids = store_with(runs.client, {"tides.txt": "Spring tides happen at new and full moon."})
    model.script(
        "m",
        {"tool_calls": [{"name": "file_search", "arguments": '{"queries": ["spring tides"]}'}]},
        {"chunks": ["Moon", "【0:", "0†tides.txt】", " yes"]},
    )
    asst = assistant(
        runs.client,
        "m",
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store_id]}},
    )
    t = thread(runs.client, "When?")
    events = sse(runs.client, f"/threads/{t['id']}/runs", {"assistant_id": asst["id"], "stream": True})
    parts = [d["delta"]["content"][0]["text"] for d in of(events, "thread.message.delta")]
    assert [p["value"] for p in parts] == ["Moon", "【0:0†tides.txt】", " yes"]
    assert parts[0]["annotations"] == [] and "annotations" not in parts[2]
    (note,) = parts[1]["annotations"]
    assert note == {
        "index": 0,
        "type": "file_citation",
        "text": "【0:0†tides.txt】",
        "file_citation": {"file_id": ids["tides.txt"]},
        "start_index": 4,
        "end_index": 4 + len("【0:0†tides.txt】"),
    }
    stored = of(events, "thread.message.completed")[0]["content"][0]["text"]
    assert stored["value"] == "".join(p["value"] for p in parts)
    assert stored["annotations"] == [{k: v for k, v in note.items() if k != "index"}]


# --- streamed text is saved while it streams --------------------------------------------------


def test_streamed_text_is_saved_at_a_bounded_rate(make_api: MakeApi, model: FakeChatModel) -> None:
    api = make_api(chat_model=model, stream_save_seconds=0.05)
    gate = Gate()
    model.script("m", {"chunks": ["Saved", " later"], "gate": gate})
    t, run_id = start(api, "m", "go")
    gate.wait_reached()

    def saved() -> dict[str, Any] | None:
        found = [m for m in messages(api.client, t) if m["role"] == "assistant"]
        return found[0] if found and found[0]["content"] else None

    message = wait_for("the streamed text in the stored message", saved)
    assert message["status"] == "in_progress"
    assert message["content"] == [{"type": "text", "text": {"value": "Saved", "annotations": []}}]
    gate.open()
    assert wait_run(api.client, t, run_id)["status"] == "completed"
    final = next(m for m in messages(api.client, t) if m["role"] == "assistant")
    assert final["status"] == "completed" and final["content"][0]["text"]["value"] == "Saved later"


def test_a_run_stored_by_the_previous_engine_resumes(runs: Api, model: FakeChatModel) -> None:
    """The state column as the free-form dict wrote it (no model_calls, server calls in a dict)."""
    model.script("m", {"tool_calls": [{"name": "lookup", "arguments": '{"what": "x"}'}]}, {"text": "ok"})
    t, run_id = start(runs, "m", "go", tools=[FUNCTION])
    waiting = wait_run(runs.client, t, run_id, ("requires_action",))
    (step,) = steps(runs.client, t, run_id)
    old = {
        "include": [],
        "reasoning_effort": None,
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        "pending_step_id": step["id"],
        "server_calls": {},
        "future_key": {"kept": True},
    }
    write(runs, "UPDATE runs SET state = ? WHERE id = ?", (json.dumps(old), run_id))
    (call,) = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    ok(
        runs.client.post(
            f"/v1/threads/{t}/runs/{run_id}/submit_tool_outputs",
            json={"tool_outputs": [{"tool_call_id": call["id"], "output": "1"}]},
        )
    )
    assert wait_run(runs.client, t, run_id)["status"] == "completed"
    (state,) = runs.sql("SELECT state FROM runs WHERE id = ?", (run_id,))[0]
    assert json.loads(state)["future_key"] == {"kept": True}
