"""What the model receives: run options, instructions, history, truncation, and function-call turns.

Read back from the scripted upstream's ``/_requests``: the Chat Completions bodies assistantd sent.
"""

from __future__ import annotations

import json

import openai

from .remote import E2E_MARKS, RemoteServer
from .runs_support import FUNCTION_TOOLS, ScriptedUpstream, make_assistant, new_model

pytestmark = E2E_MARKS

TWO_CALLS = {
    "tool_calls": [
        {"name": "CheckOutOfStock", "arguments": "{}"},
        {"name": "CheckDailyRevenue", "arguments": '{"date": "2024-11-17"}'},
    ],
    "usage": {"prompt_tokens": 40, "completion_tokens": 12},
}


def test_tool_outputs_reach_the_model_after_its_parallel_calls(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, TWO_CALLS, {"text": "Both checked.", "usage": {"prompt_tokens": 90, "completion_tokens": 3}})
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS, instructions="You run a coffee shop.")
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Stock and revenue?"}])

    run = rclient.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "requires_action" and run.required_action is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("CheckOutOfStock", "{}"),
        ("CheckDailyRevenue", '{"date": "2024-11-17"}'),
    ]
    assert len({c.id for c in calls}) == 2 and all(c.type == "function" for c in calls)

    done = rclient.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[
            {"tool_call_id": calls[1].id, "output": "1,200,000 VND"},
            {"tool_call_id": calls[0].id, "output": "oat milk"},
        ],
        poll_interval_ms=50,
    )
    assert done.status == "completed"

    first, second = upstream.requests(model)
    assert first["messages"] == [
        {"role": "system", "content": "You run a coffee shop."},
        {"role": "user", "content": "Stock and revenue?"},
    ]
    assert [t["function"]["name"] for t in first["tools"]] == ["CheckOutOfStock", "CheckDailyRevenue"]
    assert first["tools"][1]["function"]["parameters"]["required"] == ["date"]
    assert second["messages"][:2] == first["messages"]
    assistant_turn, *tool_turns = second["messages"][2:]
    assert assistant_turn["role"] == "assistant"
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in assistant_turn["tool_calls"]] == [
        (c.id, c.function.name, c.function.arguments) for c in calls
    ]
    assert tool_turns == [
        {"role": "tool", "tool_call_id": calls[0].id, "content": "oat milk"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "1,200,000 VND"},
    ]

    # Usage: per step as the model reported it, summed on the run.
    steps = rclient.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data
    assert [(s.type, s.usage.total_tokens if s.usage else None) for s in steps] == [
        ("tool_calls", 52),
        ("message_creation", 93),
    ]
    outputs = [c.function.output for c in steps[0].step_details.tool_calls]  # type: ignore[union-attr]
    assert outputs == ["oat milk", "1,200,000 VND"]
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (130, 15, 145)


def test_run_options_are_passed_upstream(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model, other = new_model(), new_model()
    upstream.script(model, {"text": "{}"}, {"text": "{}"}, STOCK_TWICE_FIRST_ONLY)
    upstream.script(other, {"text": "from the other model"})
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS, temperature=0.7, top_p=0.9)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Options"}])
    runs = rclient.beta.threads.runs

    first = runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        temperature=0.2,
        top_p=0.5,
        tool_choice={"type": "function", "function": {"name": "CheckOutOfStock"}},
        response_format={"type": "json_object"},
        metadata={"purpose": "options"},
        poll_interval_ms=50,
    )
    assert first.status == "completed" and first.metadata == {"purpose": "options"}
    assert (first.temperature, first.top_p) == (0.2, 0.5)
    assert first.tool_choice.type == "function"  # type: ignore[union-attr]
    sent = upstream.requests(model)[0]
    assert (sent["temperature"], sent["top_p"]) == (0.2, 0.5)
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "CheckOutOfStock"}}
    assert sent["response_format"] == {"type": "json_object"}
    assert "parallel_tool_calls" not in sent or sent["parallel_tool_calls"] is True

    schema = {"name": "answer", "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}
    second = runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        tool_choice="required",
        response_format={"type": "json_schema", "json_schema": schema},
        poll_interval_ms=50,
    )
    assert second.status == "completed"
    sent = upstream.requests(model)[1]
    assert sent["tool_choice"] == "required"
    assert sent["response_format"] == {"type": "json_schema", "json_schema": schema}
    assert (sent["temperature"], sent["top_p"]) == (0.7, 0.9)  # the assistant's, when the run sets none

    # parallel_tool_calls=false reaches the model, and a model answering with two calls anyway
    # has only its first one asked for.
    third = runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, parallel_tool_calls=False, poll_interval_ms=50
    )
    assert third.status == "requires_action" and third.parallel_tool_calls is False
    assert upstream.requests(model)[2]["parallel_tool_calls"] is False
    pending = third.required_action.submit_tool_outputs.tool_calls  # type: ignore[union-attr]
    assert [c.function.name for c in pending] == ["CheckOutOfStock"]
    runs.cancel(third.id, thread_id=thread.id)

    # A run's model replaces the assistant's, and tool_choice "none" sends no tool call.
    fourth = runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, model=other, tool_choice="none", poll_interval_ms=50
    )
    assert fourth.status == "completed" and fourth.model == other
    sent = upstream.requests(other)[0]
    assert sent["model"] == other and sent.get("tool_choice", "none") == "none"


STOCK_TWICE_FIRST_ONLY = {
    "tool_calls": [
        {"name": "CheckOutOfStock", "arguments": "{}"},
        {"name": "CheckDailyRevenue", "arguments": '{"date": "2024-11-18"}'},
    ]
}


def test_instructions_additional_instructions_and_additional_messages(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, {"text": "one"}, {"text": "two"}, {"text": "three"})
    assistant = make_assistant(rclient, model, instructions="Assistant rules.")
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "First question"}])
    runs = rclient.beta.threads.runs

    run = runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        additional_instructions="Today is Sunday.",
        additional_messages=[
            {"role": "assistant", "content": "An earlier answer"},
            {"role": "user", "content": "Second question", "metadata": {"via": "additional_messages"}},
        ],
        poll_interval_ms=50,
    )
    assert run.status == "completed" and run.instructions == "Assistant rules.\n\nToday is Sunday."
    sent = upstream.requests(model)[0]["messages"]
    assert sent == [
        {"role": "system", "content": "Assistant rules.\n\nToday is Sunday."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "An earlier answer"},
        {"role": "user", "content": "Second question"},
    ]
    listed = rclient.beta.threads.messages.list(thread.id, order="asc").data
    assert [(m.role, m.content[0].text.value) for m in listed] == [  # type: ignore[union-attr]
        ("user", "First question"),
        ("assistant", "An earlier answer"),
        ("user", "Second question"),
        ("assistant", "one"),
    ]
    assert listed[2].metadata == {"via": "additional_messages"} and listed[2].run_id is None

    # `instructions` replaces the assistant's; additional_instructions still comes after it.
    runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        instructions="Run rules.",
        additional_instructions="Be short.",
        poll_interval_ms=50,
    )
    assert upstream.requests(model)[1]["messages"][0] == {"role": "system", "content": "Run rules.\n\nBe short."}
    # The second run saw the first run's answer as history.
    assert upstream.requests(model)[1]["messages"][-1] == {"role": "assistant", "content": "one"}


def test_truncation_strategy_last_messages(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, {"text": "short memory"}, {"text": "long memory"})
    assistant = make_assistant(rclient, model, instructions="Rules.")
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": f"message {i}"} for i in range(5)])
    run = rclient.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        truncation_strategy={"type": "last_messages", "last_messages": 2},
        poll_interval_ms=50,
    )
    assert run.status == "completed"
    assert run.truncation_strategy is not None and run.truncation_strategy.last_messages == 2
    assert upstream.requests(model)[0]["messages"] == [
        {"role": "system", "content": "Rules."},
        # Consecutive user turns go up as one (strict chat templates require alternation).
        {"role": "user", "content": "message 3\n\nmessage 4"},
    ]
    auto = rclient.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert auto.truncation_strategy is not None and auto.truncation_strategy.type == "auto"
    sent = upstream.requests(model)[1]["messages"]
    assert [m["content"] for m in sent] == ["Rules.", "\n\n".join(f"message {i}" for i in range(5)), "short memory"]


def test_tool_arguments_are_kept_whole(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """Arguments arriving in many odd fragments (unicode, escapes) come out byte for byte."""
    model = new_model()
    arguments = json.dumps({"date": "2024-11-17", "note": 'café ☕ "quoted" \\ back\nslash'}, ensure_ascii=False)
    fragments = [arguments[i : i + 3] for i in range(0, len(arguments), 3)]
    upstream.script(
        model, {"tool_calls": [{"name": "CheckDailyRevenue", "arguments": arguments, "fragments": fragments}]}
    )
    assistant = make_assistant(rclient, model, tools=FUNCTION_TOOLS)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Revenue"}])
    with rclient.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        stream.until_done()
        run = stream.get_final_run()
        (step,) = stream.get_final_run_steps()
    call = run.required_action.submit_tool_outputs.tool_calls[0]  # type: ignore[union-attr]
    assert call.function.arguments == arguments
    assert step.step_details.tool_calls[0].function.arguments == arguments  # type: ignore[union-attr]
    assert json.loads(call.function.arguments)["note"] == 'café ☕ "quoted" \\ back\nslash'
    rclient.beta.threads.runs.cancel(run.id, thread_id=thread.id)
