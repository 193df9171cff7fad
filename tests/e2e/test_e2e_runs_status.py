"""Every way a run ends, the thread lock, and submit_tool_outputs' refusals.

A model turn scripted with ``hold`` stops after its first chunk until the test releases it, so a run
can be caught ``in_progress`` without any timing guess.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from .remote import E2E_MARKS, KEY_A, RemoteServer, make_client
from .runs_support import (
    FUNCTION_TOOLS,
    ScriptedUpstream,
    assert_unlocked,
    make_assistant,
    new_model,
    sse,
    wait_for,
    wait_status,
)

pytestmark = E2E_MARKS

STOCK_CALL = {"tool_calls": [{"name": "CheckOutOfStock", "arguments": "{}"}]}


def held_run(client: openai.OpenAI, upstream: ScriptedUpstream, model: str, thread_id: str, assistant_id: str) -> Any:
    """Start a run whose model turn is held after its first chunk; return it once that chunk is in."""
    upstream.script(model, {"chunks": ["partial", " rest"], "hold": True})
    run = client.beta.threads.runs.create(thread_id, assistant_id=assistant_id)
    upstream.wait_requests(model, 1)
    wait_for(
        "the held run's message",
        lambda: client.beta.threads.messages.list(thread_id, run_id=run.id).data,
    )
    return run


def error_message(exc: openai.APIStatusError) -> str:
    assert isinstance(exc.body, dict)
    return str(exc.body["message"])


def final_parts(client: openai.OpenAI, thread_id: str, run_id: str) -> tuple[list[Any], list[Any]]:
    steps = client.beta.threads.runs.steps.list(run_id, thread_id=thread_id, order="asc").data
    messages = client.beta.threads.messages.list(thread_id, run_id=run_id, order="asc").data
    return steps, messages


# --- completed, cancelled --------------------------------------------------------------------------


def test_cancel_a_run_while_the_model_is_answering(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Talk"}])
    run = held_run(rclient, upstream, model, thread.id, assistant.id)
    assert rclient.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "in_progress"

    cancelling = rclient.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.status in ("cancelling", "cancelled")
    cancelled = wait_status(rclient, thread.id, run.id)
    upstream.release(model)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert cancelled.last_error is None and cancelled.completed_at is None
    (step,), (message,) = final_parts(rclient, thread.id, run.id)
    assert step.status == "cancelled" and step.cancelled_at is not None
    assert message.status == "incomplete" and message.incomplete_details.reason == "run_cancelled"  # type: ignore[union-attr]
    assert message.content[0].text.value == "partial"  # type: ignore[union-attr]  # what was said before the cancel
    assert_unlocked(rclient, thread.id)
    with pytest.raises(openai.BadRequestError, match="Cannot cancel run with status 'cancelled'"):
        rclient.beta.threads.runs.cancel(run.id, thread_id=thread.id)


def test_cancel_while_streaming_ends_the_stream(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, {"chunks": ["partial", " rest"], "hold": True})
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Talk"}])
    with ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(
            sse, runs_server, f"/threads/{thread.id}/runs", {"assistant_id": assistant.id, "stream": True}
        )
        run = wait_for("the streamed run", lambda: rclient.beta.threads.runs.list(thread.id).data)[0]
        wait_for("the held message", lambda: rclient.beta.threads.messages.list(thread.id, run_id=run.id).data)
        rclient.beta.threads.runs.cancel(run.id, thread_id=thread.id)
        events = streaming.result(timeout=30)
    upstream.release(model)
    names = [n for n, _ in events]
    assert names[-1] == "done" and names[-2] == "thread.run.cancelled"
    tail = names[names.index("thread.message.delta") + 1 : -1]
    assert sorted(tail) == sorted(
        ["thread.run.cancelling", "thread.message.incomplete", "thread.run.step.cancelled", "thread.run.cancelled"]
    )
    assert events[-2][1]["status"] == "cancelled" and events[-2][1]["cancelled_at"]
    assert_unlocked(rclient, thread.id)


def test_cancel_a_run_waiting_for_tool_outputs(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, STOCK_CALL)
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Stock?"}])
    run = rclient.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "requires_action"

    cancelled = rclient.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelled.status == "cancelled" and cancelled.required_action is None and cancelled.cancelled_at
    (step,), messages = final_parts(rclient, thread.id, run.id)
    assert (step.type, step.status) == ("tool_calls", "cancelled") and messages == []
    call = run.required_action.submit_tool_outputs.tool_calls[0]  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError, match='status "cancelled" do not accept tool outputs'):
        rclient.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "late"}]
        )
    assert_unlocked(rclient, thread.id)


# --- failed ----------------------------------------------------------------------------------------


def test_upstream_500_fails_the_run_with_its_message(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    # The adapter tries a 5xx three times before any token was shown: all three fail here.
    failure = {"status": 500, "error": "the model is on fire"}
    upstream.script(model, failure, failure, failure)
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    run = rclient.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "failed" and run.failed_at is not None
    assert run.last_error is not None and run.last_error.code == "server_error"
    assert "the model is on fire" in run.last_error.message and "500" in run.last_error.message
    assert len(upstream.requests(model)) == 3
    assert final_parts(rclient, thread.id, run.id) == ([], [])
    assert_unlocked(rclient, thread.id)


def test_upstream_429_is_rate_limit_exceeded(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    # 429 is retried twice (with backoff, or as Retry-After says) before the run gives up.
    upstream.script(model, *[{"status": 429, "error": "Rate limit reached for requests"}] * 3)
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    run = rclient.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "failed"
    assert run.last_error is not None and run.last_error.code == "rate_limit_exceeded"
    assert "Rate limit reached for requests" in run.last_error.message
    assert len(upstream.requests(model)) == 3
    assert_unlocked(rclient, thread.id)


def test_no_upstream_configured_fails_saying_how_to_configure_one(open_server: RemoteServer) -> None:
    with make_client(open_server, "sk-any") as client:
        assistant = client.beta.assistants.create(model="gpt-4o")
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
        )
        assert run.status == "failed"
        assert run.last_error is not None and run.last_error.code == "server_error"
        assert "gpt-4o" in run.last_error.message
        assert "ASSISTANTD_UPSTREAM_BASE_URL" in run.last_error.message
        assert_unlocked(client, thread.id)


def test_stream_broken_mid_answer_fails_the_run_and_leaves_the_message_incomplete(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, {"chunks": ["It", " was", " going", " well"], "fail_after": 2})
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    events = sse(runs_server, f"/threads/{thread.id}/runs", {"assistant_id": assistant.id, "stream": True})

    names = [n for n, _ in events]
    assert names[-4:] == ["thread.message.incomplete", "thread.run.step.failed", "thread.run.failed", "done"]
    assert names.count("thread.message.delta") == 2
    message, step, run = (d for _, d in events[-4:-1])
    assert message["status"] == "incomplete" and message["incomplete_details"] == {"reason": "run_failed"}
    assert message["content"][0]["text"]["value"] == "It was"  # the part that arrived is kept
    assert step["status"] == "failed" and step["last_error"] == run["last_error"] and step["failed_at"]
    assert run["status"] == "failed" and run["last_error"]["code"] == "server_error"
    assert "model provider" in run["last_error"]["message"]
    stored = rclient.beta.threads.messages.retrieve(message["id"], thread_id=thread.id)
    assert stored.status == "incomplete" and stored.content[0].text.value == "It was"  # type: ignore[union-attr]
    assert_unlocked(rclient, thread.id)


@pytest.mark.parametrize(
    ("turn", "said"),
    [
        # What llama-cpp-python answers on a context overflow: some text, then the end of the stream.
        ({"raw_stream": ['data: {"choices": [{"index": 0, "delta": {"content": "It was"}}]}\n\n']},
         "ended without a finish_reason or [DONE]"),
        ({"raw": {"body": "<html><body>502 Bad Gateway</body></html>", "content_type": "text/html"}},
         "text/html body instead of an event stream"),
    ],
)
def test_a_cut_or_malformed_upstream_answer_fails_the_run_saying_what_was_sent(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream, turn: dict[str, Any], said: str
) -> None:
    # Before, both ended the run "completed" (with the cut text, or with nothing) and no last_error.
    model = new_model()
    upstream.script(model, turn)
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    run = rclient.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "failed" and run.last_error is not None
    assert run.last_error.code == "server_error" and said in run.last_error.message, run.last_error
    messages = rclient.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert all(m.status == "incomplete" for m in messages)
    assert_unlocked(rclient, thread.id)


# --- expired, incomplete ---------------------------------------------------------------------------


def test_run_left_waiting_for_tool_outputs_expires(expiry_server: RemoteServer, upstream: ScriptedUpstream) -> None:
    model = new_model()
    upstream.script(model, STOCK_CALL)
    with make_client(expiry_server, KEY_A) as client:
        assistant = make_assistant(client, model, tools=FUNCTION_TOOLS)
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "Stock?"}])
        run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
        assert run.expires_at == run.created_at + 1
        expired = wait_status(client, thread.id, run.id, "expired", "completed", "failed", "cancelled")
        assert expired.status == "expired" and expired.required_action is None
        (step,) = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
        assert step.type == "tool_calls" and step.status == "expired" and step.expired_at is not None
        call = step.step_details.tool_calls[0]  # type: ignore[union-attr]
        with pytest.raises(openai.BadRequestError, match='status "expired"'):
            client.beta.threads.runs.submit_tool_outputs(
                run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "late"}]
            )
        assert_unlocked(client, thread.id)


def test_max_completion_tokens_reached_makes_the_run_incomplete(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(
        model,
        {
            "text": "A long answer cut short",
            "finish_reason": "length",
            "usage": {"prompt_tokens": 20, "completion_tokens": 300},
        },
    )
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Write a lot"}])
    run = rclient.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256, poll_interval_ms=50
    )
    assert run.status == "incomplete"
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_completion_tokens"
    assert run.max_completion_tokens == 256
    assert run.usage is not None and run.usage.completion_tokens == 300
    assert upstream.requests(model)[0]["max_tokens"] == 256
    _, (message,) = final_parts(rclient, thread.id, run.id)
    assert message.status == "incomplete" and message.incomplete_details.reason == "max_tokens"  # type: ignore[union-attr]
    assert message.content[0].text.value == "A long answer cut short"  # type: ignore[union-attr]
    assert_unlocked(rclient, thread.id)


def test_max_prompt_tokens_exceeded_makes_the_run_incomplete(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, STOCK_CALL | {"usage": {"prompt_tokens": 300, "completion_tokens": 5}})
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Long context"}])
    run = rclient.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_prompt_tokens=256, poll_interval_ms=50
    )
    assert run.status == "incomplete" and run.required_action is None
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_prompt_tokens"
    assert run.usage is not None and run.usage.prompt_tokens == 300
    (step,) = rclient.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    assert step.type == "tool_calls" and step.status == "cancelled" and step.cancelled_at is not None
    # The call the stream showed is kept on the stored step, though it will never get an output.
    assert [c.function.name for c in step.step_details.tool_calls] == ["CheckOutOfStock"]  # type: ignore[union-attr]
    assert_unlocked(rclient, thread.id)


# --- the thread lock --------------------------------------------------------------------------------


def test_an_active_run_locks_its_thread(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Talk"}])
    run = held_run(rclient, upstream, model, thread.id, assistant.id)

    with pytest.raises(openai.BadRequestError) as second:
        rclient.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    assert error_message(second.value) == f"Thread {thread.id} already has an active run {run.id}."
    with pytest.raises(openai.BadRequestError) as message:
        rclient.beta.threads.messages.create(thread.id, role="user", content="wait for me")
    assert error_message(message.value) == f"Can't add messages to {thread.id} while a run {run.id} is active."
    with pytest.raises(openai.BadRequestError, match="already has an active run"):
        rclient.beta.threads.runs.create(
            thread.id, assistant_id=assistant.id, additional_messages=[{"role": "user", "content": "sneak in"}]
        )

    upstream.release(model)
    assert wait_status(rclient, thread.id, run.id).status == "completed"
    # requires_action holds the lock as well.
    upstream.script(model, STOCK_CALL)
    waiting = rclient.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert waiting.status == "requires_action"
    with pytest.raises(openai.BadRequestError, match=f"already has an active run {waiting.id}"):
        rclient.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    rclient.beta.threads.runs.cancel(waiting.id, thread_id=thread.id)
    assert_unlocked(rclient, thread.id)
    texts = [m.content[0].text.value for m in rclient.beta.threads.messages.list(thread.id, order="asc").data]  # type: ignore[union-attr]
    assert "wait for me" not in texts and "sneak in" not in texts


def test_concurrent_run_creates_on_one_thread_have_one_winner(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, {"text": "only one of us", "hold": True})
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Race"}])
    racers = 8
    start = threading.Barrier(racers)

    def create(_: int) -> Any:
        start.wait(timeout=30)
        try:
            return rclient.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
        except openai.BadRequestError as exc:
            return exc

    with ThreadPoolExecutor(racers) as pool:
        outcomes = list(pool.map(create, range(racers)))
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    losers = [o for o in outcomes if isinstance(o, openai.BadRequestError)]
    assert len(winners) == 1 and len(losers) == racers - 1, outcomes
    (winner,) = winners
    for loser in losers:
        assert loser.status_code == 400
        assert error_message(loser) == f"Thread {thread.id} already has an active run {winner.id}."
    assert [r.id for r in rclient.beta.threads.runs.list(thread.id).data] == [winner.id]
    upstream.release(model)
    assert wait_status(rclient, thread.id, winner.id).status == "completed"
    assert len(upstream.requests(model)) == 1


# --- submit_tool_outputs refusals --------------------------------------------------------------------


def test_submit_tool_outputs_refusals(
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
        {"text": "all good"},
    )
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Both"}])
    run = rclient.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "requires_action"
    first, second = run.required_action.submit_tool_outputs.tool_calls  # type: ignore[union-attr]
    submit = rclient.beta.threads.runs.submit_tool_outputs

    with pytest.raises(openai.BadRequestError, match="Submit every pending output") as missing:
        submit(run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": first.id, "output": "a"}])
    assert missing.value.param == "tool_outputs" and second.id in error_message(missing.value)
    with pytest.raises(openai.BadRequestError, match="no pending tool call 'call_nope'") as unknown:
        submit(
            run.id,
            thread_id=thread.id,
            tool_outputs=[{"tool_call_id": first.id, "output": "a"}, {"tool_call_id": "call_nope", "output": "b"}],
        )
    assert unknown.value.param == "tool_outputs[1].tool_call_id"
    with pytest.raises(openai.BadRequestError) as no_id:
        submit(run.id, thread_id=thread.id, tool_outputs=[{"output": "a"}])  # type: ignore[typeddict-item]
    assert no_id.value.param == "tool_outputs[0].tool_call_id"
    with pytest.raises(openai.BadRequestError, match="Duplicate tool output"):
        submit(
            run.id,
            thread_id=thread.id,
            tool_outputs=[{"tool_call_id": first.id, "output": "a"}, {"tool_call_id": first.id, "output": "a"}],
        )
    with pytest.raises(openai.NotFoundError):
        submit("run_missing", thread_id=thread.id, tool_outputs=[{"tool_call_id": first.id, "output": "a"}])

    # Nothing was consumed by the refusals: the run still waits, and a right submission resumes it.
    assert rclient.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "requires_action"
    done = rclient.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": second.id, "output": "b"}, {"tool_call_id": first.id, "output": "a"}],
        poll_interval_ms=50,
    )
    assert done.status == "completed"
    with pytest.raises(openai.BadRequestError, match='Runs in status "completed" do not accept tool outputs'):
        submit(run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": first.id, "output": "a"}])
