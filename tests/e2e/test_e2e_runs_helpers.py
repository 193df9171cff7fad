"""Every run helper of the official SDK, unmodified: poll helpers, stream managers and event handlers."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from openai import AssistantEventHandler, AsyncAssistantEventHandler

from .remote import E2E_MARKS, KEY_A, KEY_B, RemoteServer, make_async_client, make_client
from .runs_support import FUNCTION_TOOLS, ScriptedUpstream, make_assistant, new_model, wait_status

pytestmark = E2E_MARKS

STOCK_CALL = {"tool_calls": [{"name": "CheckOutOfStock", "arguments": '{"warehouse": "main"}'}]}


class Recorder(AssistantEventHandler):
    """Records every callback the helper makes, with what the user would read in it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []

    def on_event(self, event: Any) -> None:
        self.calls.append(("event", event.event))

    def on_run_step_created(self, run_step: Any) -> None:
        self.calls.append(("step_created", (run_step.type, run_step.status)))

    def on_run_step_delta(self, delta: Any, snapshot: Any) -> None:
        self.calls.append(("step_delta", snapshot.id))

    def on_run_step_done(self, run_step: Any) -> None:
        self.calls.append(("step_done", (run_step.type, run_step.status)))

    def on_tool_call_created(self, tool_call: Any) -> None:
        self.calls.append(("tool_created", (tool_call.id, tool_call.function.name)))

    def on_tool_call_delta(self, delta: Any, snapshot: Any) -> None:
        self.calls.append(("tool_delta", snapshot.function.arguments))

    def on_tool_call_done(self, tool_call: Any) -> None:
        self.calls.append(("tool_done", (tool_call.id, tool_call.function.name, tool_call.function.arguments)))

    def on_message_created(self, message: Any) -> None:
        self.calls.append(("message_created", message.id))

    def on_message_delta(self, delta: Any, snapshot: Any) -> None:
        self.calls.append(("message_delta", snapshot.content[0].text.value))

    def on_message_done(self, message: Any) -> None:
        self.calls.append(("message_done", (message.status, message.content[0].text.value)))

    def on_text_created(self, text: Any) -> None:
        self.calls.append(("text_created", text.value))

    def on_text_delta(self, delta: Any, snapshot: Any) -> None:
        self.calls.append(("text_delta", (delta.value, snapshot.value)))

    def on_text_done(self, text: Any) -> None:
        self.calls.append(("text_done", text.value))

    def on_end(self) -> None:
        self.calls.append(("end", None))

    def on_exception(self, exception: Exception) -> None:
        self.calls.append(("exception", exception))

    def of(self, kind: str) -> list[Any]:
        return [v for k, v in self.calls if k == kind]


def test_stream_handler_through_a_function_call(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, STOCK_CALL, {"chunks": ["Oat", " milk", " is", " out"]})
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "What is out of stock?"}])

    first = Recorder()
    with rclient.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=first
    ) as stream:
        stream.until_done()
        run = stream.get_final_run()
        assert stream.current_run is not None and stream.current_run.id == run.id
        steps = stream.get_final_run_steps()
    assert run.status == "requires_action" and run.thread_id == thread.id
    (required,) = run.required_action.submit_tool_outputs.tool_calls  # type: ignore[union-attr]
    assert (required.function.name, required.function.arguments) == ("CheckOutOfStock", '{"warehouse": "main"}')
    # One tool call, created once with its id and name, its arguments growing to the full string.
    assert first.of("tool_created") == [(required.id, "CheckOutOfStock")]
    assert first.of("tool_delta")[-1] == '{"warehouse": "main"}'
    assert (required.id, "CheckOutOfStock", '{"warehouse": "main"}') in first.of("tool_done")
    assert [s.type for s in steps] == ["tool_calls"]
    assert first.of("step_created") == [("tool_calls", "in_progress")]
    assert first.of("step_delta") and set(first.of("step_delta")) == {steps[0].id}
    assert first.of("text_created") == [] and first.of("exception") == []
    assert first.calls[-1] == ("end", None)
    assert first.of("event")[-1] == "thread.run.requires_action"

    second = Recorder()
    with rclient.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=thread.id,
        run_id=run.id,
        tool_outputs=[{"tool_call_id": required.id, "output": "oat milk"}],
        event_handler=second,
    ) as stream:
        stream.until_done()
        final = stream.get_final_run()
        messages = stream.get_final_messages()
    assert final.status == "completed" and final.id == run.id
    assert second.of("event")[:3] == ["thread.run.step.completed", "thread.run.queued", "thread.run.in_progress"]
    assert "thread.run.created" not in second.of("event")
    assert second.of("text_created") == ["Oat"]
    assert second.of("text_delta") == [
        ("Oat", "Oat"),
        (" milk", "Oat milk"),
        (" is", "Oat milk is"),
        (" out", "Oat milk is out"),
    ]
    assert second.of("text_done") == ["Oat milk is out"]
    assert second.of("message_done") == [("completed", "Oat milk is out")]
    assert second.of("step_done")[-1] == ("message_creation", "completed")
    assert [m.content[0].text.value for m in messages] == ["Oat milk is out"]  # type: ignore[union-attr]
    assert second.of("exception") == [] and second.calls[-1] == ("end", None)


def test_text_deltas_and_final_messages(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, {"chunks": ["one", " two", " three"]})
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Count"}])
    with rclient.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        pieces = list(stream.text_deltas)
        (message,) = stream.get_final_messages()
        run = stream.get_final_run()
    assert pieces == ["one", " two", " three"]
    assert message.content[0].text.value == "one two three" and message.status == "completed"  # type: ignore[union-attr]
    assert run.status == "completed"


def test_poll_helpers(runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    model = new_model()
    upstream.script(
        model,
        {"text": "polled answer"},
        STOCK_CALL,
        {"text": "after the tool"},
        {"text": "from create_and_run_poll"},
        {"text": "from create_and_run"},
    )
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Hello"}])
    runs = rclient.beta.threads.runs

    done = runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert done.status == "completed" and done.completed_at is not None
    assert rclient.beta.threads.messages.list(thread.id).data[0].content[0].text.value == "polled answer"  # type: ignore[union-attr]

    waiting = runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert waiting.status == "requires_action"
    call = waiting.required_action.submit_tool_outputs.tool_calls[0]  # type: ignore[union-attr]
    resumed = runs.submit_tool_outputs_and_poll(
        thread_id=thread.id,
        run_id=waiting.id,
        tool_outputs=[{"tool_call_id": call.id, "output": "none"}],
        poll_interval_ms=50,
    )
    assert resumed.status == "completed" and resumed.id == waiting.id
    assert runs.poll(waiting.id, thread_id=thread.id).status == "completed"

    fresh = rclient.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "New"}]}, poll_interval_ms=50
    )
    assert fresh.status == "completed" and fresh.thread_id != thread.id
    assert (
        rclient.beta.threads.messages.list(fresh.thread_id).data[0].content[0].text.value == "from create_and_run_poll"
    )  # type: ignore[union-attr]

    started = rclient.beta.threads.create_and_run(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "Again"}]}
    )
    assert started.status == "queued"
    assert wait_status(rclient, started.thread_id, started.id).status == "completed"


def test_create_and_run_stream_helper(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, {"chunks": ["fresh", " start"]})
    assistant = make_assistant(rclient, model)
    handler = Recorder()
    with rclient.beta.threads.create_and_run_stream(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "Begin"}]},
        event_handler=handler,
    ) as stream:
        stream.until_done()
        run = stream.get_final_run()
        (message,) = stream.get_final_messages()
    assert handler.of("event")[:2] == ["thread.created", "thread.run.created"]
    assert run.status == "completed" and message.thread_id == run.thread_id
    assert handler.of("text_done") == ["fresh start"]


def test_submit_tool_outputs_with_stream_true_returns_events(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, STOCK_CALL, {"text": "streamed after outputs"})
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Go"}])
    run = rclient.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    call = run.required_action.submit_tool_outputs.tool_calls[0]  # type: ignore[union-attr]
    events = list(
        rclient.beta.threads.runs.submit_tool_outputs(
            thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "x"}], stream=True
        )
    )
    assert events[0].event == "thread.run.step.completed" and events[-1].event == "thread.run.completed"
    text = "".join(
        e.data.delta.content[0].text.value or ""  # type: ignore[union-attr]
        for e in events
        if e.event == "thread.message.delta" and e.data.delta.content
    )
    assert text == "streamed after outputs"


def test_async_stream_handler(runs_server: RemoteServer, upstream: ScriptedUpstream) -> None:
    model = new_model()
    upstream.script(model, STOCK_CALL, {"chunks": ["async", " done"]})

    class Handler(AsyncAssistantEventHandler):
        def __init__(self) -> None:
            super().__init__()
            self.texts: list[str] = []
            self.tools: list[str] = []

        async def on_text_delta(self, delta: Any, snapshot: Any) -> None:
            self.texts.append(delta.value)

        async def on_tool_call_created(self, tool_call: Any) -> None:
            self.tools.append(tool_call.function.name)

    async def scenario() -> None:
        async with make_async_client(runs_server, KEY_A) as client:
            assistant = await client.beta.assistants.create(model=model, tools=FUNCTION_TOOLS)
            thread = await client.beta.threads.create(messages=[{"role": "user", "content": "async"}])
            first = Handler()
            async with client.beta.threads.runs.stream(
                thread_id=thread.id, assistant_id=assistant.id, event_handler=first
            ) as stream:
                await stream.until_done()
                run = await stream.get_final_run()
            assert run.status == "requires_action" and first.tools == ["CheckOutOfStock"]
            call = run.required_action.submit_tool_outputs.tool_calls[0]  # type: ignore[union-attr]
            second = Handler()
            async with client.beta.threads.runs.submit_tool_outputs_stream(
                thread_id=thread.id,
                run_id=run.id,
                tool_outputs=[{"tool_call_id": call.id, "output": "ok"}],
                event_handler=second,
            ) as stream:
                await stream.until_done()
                final = await stream.get_final_run()
            assert final.status == "completed" and second.texts == ["async", " done"]
            polled = await client.beta.threads.runs.create_and_poll(
                thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
            )
            assert polled.status == "completed"  # the default echo answers when the script is used up

    asyncio.run(scenario())


def test_two_function_rounds_then_steps_paged_like_seed_001(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(
        model,
        STOCK_CALL,
        {"tool_calls": [{"name": "CheckDailyRevenue", "arguments": '{"date": "2024-11-17"}'}]},
        {"text": "Restock oat milk; revenue was fine."},
    )
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Report"}])
    runs = rclient.beta.threads.runs

    with runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        stream.until_done()
        run = stream.get_final_run()
    outputs = {"CheckOutOfStock": "oat milk", "CheckDailyRevenue": "fine"}
    rounds = []
    while run.status == "requires_action":
        calls = run.required_action.submit_tool_outputs.tool_calls  # type: ignore[union-attr]
        rounds.append([c.function.name for c in calls])
        handler = Recorder()
        with runs.submit_tool_outputs_stream(
            thread_id=thread.id,
            run_id=run.id,
            tool_outputs=[{"tool_call_id": c.id, "output": outputs[c.function.name]} for c in calls],
            event_handler=handler,
        ) as stream:
            stream.until_done()
            run = stream.get_final_run()
        assert handler.of("exception") == []
    assert rounds == [["CheckOutOfStock"], ["CheckDailyRevenue"]]
    assert run.status == "completed"

    steps = runs.steps.list(run.id, thread_id=thread.id, order="asc").data
    assert [(s.type, s.status) for s in steps] == [
        ("tool_calls", "completed"),
        ("tool_calls", "completed"),
        ("message_creation", "completed"),
    ]
    ids = [s.id for s in steps]
    # limit / order / after / before, as seed 001 lists them.
    assert [s.id for s in runs.steps.list(run.id, thread_id=thread.id).data] == ids[::-1]  # desc by default
    first = runs.steps.list(run.id, thread_id=thread.id, order="asc", limit=1)
    assert [s.id for s in first.data] == ids[:1] and first.has_more
    assert [s.id for s in first] == ids  # auto-pagination follows `after` one step at a time
    after = runs.steps.list(run.id, thread_id=thread.id, order="asc", after=ids[0])
    assert [s.id for s in after.data] == ids[1:]
    before = runs.steps.list(run.id, thread_id=thread.id, order="asc", before=ids[2])
    assert [s.id for s in before.data] == ids[:2]
    second = runs.steps.retrieve(ids[1], thread_id=thread.id, run_id=run.id)
    assert second.step_details.tool_calls[0].function.output == "fine"  # type: ignore[union-attr]


def test_run_metadata_update_and_lookups(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    runs = rclient.beta.threads.runs
    run = runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, metadata={"a": "1"}, poll_interval_ms=50)
    assert run.status == "completed" and run.metadata == {"a": "1"}
    updated = runs.update(run.id, thread_id=thread.id, metadata={"a": "2", "b": "3"})
    assert updated.metadata == {"a": "2", "b": "3"} and updated.status == "completed"
    assert runs.retrieve(run.id, thread_id=thread.id).metadata == {"a": "2", "b": "3"}

    other = rclient.beta.threads.create()
    with pytest.raises(openai.NotFoundError):
        runs.retrieve(run.id, thread_id=other.id)  # a run is found only under its own thread
    with pytest.raises(openai.NotFoundError):
        runs.create("thread_missing", assistant_id=assistant.id)
    with pytest.raises(openai.NotFoundError):
        runs.create(thread.id, assistant_id="asst_missing")
    with pytest.raises(openai.NotFoundError):
        rclient.beta.threads.create_and_run(assistant_id="asst_missing")
    with pytest.raises(openai.NotFoundError):
        runs.steps.retrieve("step_missing", thread_id=thread.id, run_id=run.id)
    with pytest.raises(openai.BadRequestError):
        runs.create(thread.id, assistant_id=assistant.id, max_completion_tokens=10)  # below the minimum of 256
    with pytest.raises(openai.NotFoundError), runs.stream(thread_id="thread_missing", assistant_id=assistant.id):
        pass  # a stream that cannot start is an ordinary JSON error, raised on entering the block
    # The default echo answered; the model got the user's words.
    assert upstream.requests(model)[0]["messages"] == [{"role": "user", "content": "Hi"}]


def test_runs_belong_to_one_project(server: RemoteServer) -> None:
    # The harness's main server has no upstream: the run fails, but it exists and is project A's.
    with make_client(server, KEY_A) as client, make_client(server, KEY_B) as client_b:
        _check_runs_belong_to_one_project(client, client_b)


def _check_runs_belong_to_one_project(client: openai.OpenAI, client_b: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "failed"
    with pytest.raises(openai.NotFoundError):
        client_b.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        client_b.beta.threads.runs.list(thread.id)
    with pytest.raises(openai.NotFoundError):
        client_b.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        client_b.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        client_b.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    b_thread = client_b.beta.threads.create()
    with pytest.raises(openai.NotFoundError):
        client_b.beta.threads.runs.create(b_thread.id, assistant_id=assistant.id)  # A's assistant


def test_many_runs_at_once_keep_to_their_own_threads(runs_server: RemoteServer, upstream: ScriptedUpstream) -> None:
    """Concurrent streams on separate threads: each gets its own answer, events never cross."""
    model = new_model()  # nothing scripted: the model echoes each thread's own message

    async def one(client: openai.AsyncOpenAI, assistant_id: str, i: int) -> tuple[str, str, str]:
        thread = await client.beta.threads.create(messages=[{"role": "user", "content": f"thread number {i}"}])
        async with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant_id) as stream:
            text = "".join([t async for t in stream.text_deltas])
            run = await stream.get_final_run()
        assert run.thread_id == thread.id and run.status == "completed"
        stored = (await client.beta.threads.messages.list(thread.id)).data[0]
        return text, stored.content[0].text.value, stored.run_id or ""  # type: ignore[union-attr]

    async def scenario() -> None:
        async with make_async_client(runs_server, KEY_A) as client:
            assistant = await client.beta.assistants.create(model=model)
            results = await asyncio.gather(*(one(client, assistant.id, i) for i in range(12)))
        for i, (streamed, stored, run_id) in enumerate(results):
            assert streamed == stored == f"You said: thread number {i}"
            assert run_id.startswith("run_")
        assert len({r[2] for r in results}) == 12

    asyncio.run(scenario())
