"""The seeds' run flows, as written in /work/shared/seeds, against assistantd and the scripted model.

Each test transcribes a seed's code; only the client's construction changes (``base_url`` and key)
and the model's answers come from the scripted upstream under the seed's own model name. Where a
seed prints, the test reads what it printed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from .remote import E2E_MARKS, KEY_A, RemoteServer
from .runs_support import ScriptedUpstream, wait_status

pytestmark = E2E_MARKS

PENGUIN = (
    "A penguin is a flightless seabird primarily found in the Southern Hemisphere, especially Antarctica. "
    "Recognizable by their black and white plumage, penguins have adapted flippers for swimming."
)
PENGUIN_CHUNKS = ["A", " peng", "uin", " is", " a", " flight", "less", " seab", "ird"]
PENGUIN_CHUNKS.append(PENGUIN[len("".join(PENGUIN_CHUNKS)) :])


def OpenAI(server: RemoteServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0, _strict_response_validation=True)


def test_seed_001_streamed_run_then_steps_runs_and_messages(
    runs_server: RemoteServer, upstream: ScriptedUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    # The universal cell imports pytz and time too; the notebook never uses them.
    from openai import AssistantEventHandler
    from typing_extensions import override

    seen_before = len(upstream.requests("gpt-4o"))
    upstream.script("gpt-4o", {"chunks": PENGUIN_CHUNKS, "usage": {"prompt_tokens": 44, "completion_tokens": 123}})

    client = OpenAI(runs_server)

    assistant = client.beta.assistants.create(
        model="gpt-4o",  # Specify the model to be used.
        instructions="You are a helpful assistant.",  # Set the instructions for the assistant.
        name="Run Step Friendly Assistant",  # Give the assistant a name.
        metadata={  # Add metadata about the assistant's capabilities.
            "holds_threads": "True",
            "likes_threads": "True",
            "holds_messages": "True",
            "likes_messages": "True",
        },
        temperature=1,  # Set the temperature for response variability.
        top_p=1,  # Set the top_p for nucleus sampling.
    )
    print(assistant)
    print(assistant.name)
    print(assistant.metadata)

    thread = client.beta.threads.create(metadata={"user": "abc123"})
    print(thread)

    message = client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content="Tell me what a penguin is in 100 words or less.",
        metadata={"key": "value"},
    )
    print(message)
    print(message.id)
    print(message.content)
    print(message.content[0].text.value)  # type: ignore[union-attr]
    print(message.role)

    class EventHandler(AssistantEventHandler):
        """Custom event handler for processing assistant events."""

        def __init__(self):  # type: ignore[no-untyped-def]
            super().__init__()
            self.results = []  # type: ignore[var-annotated]

        @override
        def on_text_created(self, text) -> None:  # type: ignore[no-untyped-def]
            print("\nassistant text > ", end="", flush=True)
            self.results.append(text)

        @override
        def on_text_delta(self, delta, snapshot):  # type: ignore[no-untyped-def]
            print(delta.value, end="", flush=True)
            self.results.append(delta.value)

        def on_tool_call_created(self, tool_call):  # type: ignore[no-untyped-def]
            print(f"\nassistant tool > {tool_call.type}\n", flush=True)

        def on_tool_call_delta(self, delta, snapshot):  # type: ignore[no-untyped-def]
            if delta.type == "code_interpreter":
                if delta.code_interpreter.input:
                    print(delta.code_interpreter.input, end="", flush=True)
                    self.results.append(delta.code_interpreter.input)
                if delta.code_interpreter.outputs:
                    print("\n\noutput >", flush=True)
                for output in delta.code_interpreter.outputs:
                    if output.type == "logs":
                        print(f"\n{output.logs}", flush=True)
                        self.results.append(output.logs)

    event_handler = EventHandler()

    with client.beta.threads.runs.stream(
        thread_id=thread.id,
        assistant_id=assistant.id,
        event_handler=event_handler,
    ) as stream:
        stream.until_done()

    results = event_handler.results
    print("\n\n")
    print("Collected results:", results)

    # The handler saw the text as the notebook did: the Text snapshot, then every fragment once.
    assert results[0].value == "A" and results[0].annotations == []
    assert results[1:] == PENGUIN_CHUNKS
    printed = capsys.readouterr().out
    assert f"\nassistant text > {PENGUIN}\n" in printed

    all_run_steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=stream.get_final_run().id)
    print(all_run_steps)
    for run_step in all_run_steps:
        print(run_step.id)
        print(run_step.status)
        print(run_step.usage)
        print(run_step.step_details)

    steps_page = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=stream.get_final_run().id)
    first_step = steps_page[0] if isinstance(steps_page, list) else next(iter(steps_page))
    run_step = client.beta.threads.runs.steps.retrieve(
        thread_id=thread.id, run_id=stream.get_final_run().id, step_id=first_step.id
    )
    print(run_step.id)
    print(run_step.status)
    print(run_step.usage)
    print(run_step.step_details.message_creation)  # type: ignore[union-attr]
    message = client.beta.threads.messages.retrieve(
        thread_id=thread.id,
        message_id=run_step.step_details.message_creation.message_id,  # type: ignore[union-attr]
    )
    print(message.content[0].text.value)  # type: ignore[union-attr]

    runs = client.beta.threads.runs.list(thread_id=thread.id, order="desc")
    for run in runs:
        run_steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id)
        for run_step in run_steps:
            print("\n====== Begin Run Step ======\n")
            print(run_step.id)
            print(run_step.status)
            print(run_step.usage)
            print(run_step.step_details)
            message = client.beta.threads.messages.retrieve(
                thread_id=thread.id,
                message_id=run_step.step_details.message_creation.message_id,  # type: ignore[union-attr]
            )
            print(message.content[0].text.value)  # type: ignore[union-attr]
            print("\n====== End Run Step ======\n")

    # What the notebook showed: one completed message_creation step with the model's usage, the run
    # it belongs to, and the message it points at holding the whole answer.
    final = stream.get_final_run()
    assert final.status == "completed" and final.thread_id == thread.id
    assert [s.id for s in all_run_steps] == [first_step.id] == [run_step.id]
    assert run_step.status == "completed" and run_step.type == "message_creation"
    assert run_step.usage is not None
    assert (run_step.usage.prompt_tokens, run_step.usage.completion_tokens, run_step.usage.total_tokens) == (
        44,
        123,
        167,
    )
    assert message.content[0].text.value == PENGUIN  # type: ignore[union-attr]
    assert message.role == "assistant" and message.run_id == final.id and message.assistant_id == assistant.id
    assert [r.id for r in runs] == [final.id]
    printed = capsys.readouterr().out
    assert printed.count("====== Begin Run Step ======") == 1
    assert "Usage(completion_tokens=123, prompt_tokens=44, total_tokens=167)" in printed
    assert f"{PENGUIN}\n" in printed

    # The model got the assistant's instructions and the user's question, and nothing else.
    request = upstream.requests("gpt-4o")[seen_before]
    assert request["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Tell me what a penguin is in 100 words or less."},
    ]
    assert (request["temperature"], request["top_p"]) == (1, 1)
    assert len(upstream.requests("gpt-4o")) == seen_before + 1


def check_out_of_stock() -> str:
    return "Out of stock: cold brew, oat milk."


def check_daily_revenue(date: str) -> str:
    return f"Revenue on {date}: 1,200,000 VND."


def seed_004_stream_response(client: openai.OpenAI, user_input: str, thread_id: str, assistant_id: str) -> Any:
    """The post's generator, put together from its snippets (text, message.completed, tool calls)."""
    from datetime import datetime

    message = client.beta.threads.messages.create(thread_id=thread_id, role="user", content=user_input)
    assert message.role == "user"
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id) as stream:
        for event in stream:
            if event.event == "thread.message.delta" and event.data.delta.content:
                yield event.data.delta.content[0].text.value  # type: ignore[union-attr]
            if event.event == "thread.message.completed" and event.data.content and event.data.completed_at:
                assistant_response = event.data.content[0].text.value  # type: ignore[union-attr]  # noqa: F841
                dt = datetime.fromtimestamp(event.data.completed_at)
                print("Message completed at {}".format(dt.strftime("%Y %b %d, %H:%M:%S")))
            if event.event == "thread.run.requires_action":
                # get the tool calls from the event
                tool_calls = event.data.required_action.submit_tool_outputs.tool_calls  # type: ignore[union-attr]
                tool_results = []
                # process the tool calls
                for tool_call in tool_calls:
                    tool_call_id = tool_call.id
                    function_name = tool_call.function.name
                    function_arguments = json.loads(tool_call.function.arguments)
                    if function_name == "CheckOutOfStock":
                        function_result = check_out_of_stock()
                    elif function_name == "CheckDailyRevenue":
                        function_result = check_daily_revenue(function_arguments.date)

                    if function_result != "An error occurred while connecting to the database.":
                        print("Results retrieved from database successfully!")
                        tool_results.append({"id": tool_call_id, "output": function_result})
                for tool_event in client.beta.threads.runs.submit_tool_outputs(
                    thread_id=thread_id,
                    run_id=event.data.id,
                    tool_outputs=tool_results,  # type: ignore[arg-type]
                    stream=True,
                ):
                    if tool_event.event == "thread.message.delta" and tool_event.data.delta.content:
                        yield tool_event.data.delta.content[0].text.value  # type: ignore[union-attr]
        stream.until_done()


def seed_004_chat(client: openai.OpenAI, user_input: str, thread_id: str, assistant_id: str) -> str:
    response = seed_004_stream_response(client, user_input, thread_id, assistant_id)
    full_response = ""  # this variable is used to collect each chunk of response, create a full response
    for chunk in response:
        if chunk:
            chunk_data = chunk.replace("data: ", "").strip()
            print(chunk_data, end=" ", flush=True)
            full_response += chunk_data + " "
    message = client.beta.threads.messages.create(thread_id=thread_id, role="assistant", content=full_response)
    assert message.role == "assistant"
    return full_response


def test_seed_004_chat_app_with_functions(
    runs_server: RemoteServer, upstream: ScriptedUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    model = "gpt-4o-mini"  # the post never names its model; the assistant was made on OpenAI's side
    seen_before = len(upstream.requests(model))
    upstream.script(
        model,
        {"text": "Hi there! I can check the inventory and the daily revenue."},
        {"tool_calls": [{"name": "CheckOutOfStock", "arguments": "{}"}]},
        {"text": "Cold brew and oat milk need restocking."},
    )
    client = OpenAI(runs_server)
    # Made once on OpenAI's side in the post: an assistant with the two functions.
    from .runs_support import FUNCTION_TOOLS

    assistant_id = client.beta.assistants.create(model=model, name="Xi Pho Coffee", tools=FUNCTION_TOOLS).id

    thread = client.beta.threads.create()
    print("Thread created successfully with id: {}".format(thread.id))  # noqa: UP032 - as in the post
    thread_id = thread.id

    first = seed_004_chat(client, "Hi what can you do?", thread_id, assistant_id)
    assert first == "Hi there! I can check the inventory and the daily revenue. "
    printed = capsys.readouterr().out
    assert "Message completed at " in printed
    assert "Hi there! I can check" in printed

    # The tool round: requires_action arrives inside the first stream, the outputs go back with
    # submit_tool_outputs(stream=True) from inside that loop, and the answer streams from there.
    second = seed_004_chat(client, "Which products are running out?", thread_id, assistant_id)
    assert second == "Cold brew and oat milk need restocking. "
    printed = capsys.readouterr().out
    assert "Results retrieved from database successfully!" in printed
    assert printed.count("Results retrieved") == 1
    # The post only watches the first stream for thread.message.completed; that one held no message.
    assert "Message completed at " not in printed

    # use the thread id to get the latest message
    messages = client.beta.threads.messages.list(thread_id=thread_id)
    latest_message = messages.data[0].content[0].text.value  # type: ignore[union-attr]
    assert latest_message == second

    # The conversation as stored: user, run answer, the user's copy, and again for the second turn.
    history = [(m.role, m.content[0].text.value) for m in reversed(messages.data)]  # type: ignore[union-attr]
    assert history == [
        ("user", "Hi what can you do?"),
        ("assistant", "Hi there! I can check the inventory and the daily revenue."),
        ("assistant", first),
        ("user", "Which products are running out?"),
        ("assistant", "Cold brew and oat milk need restocking."),
        ("assistant", second),
    ]
    runs = client.beta.threads.runs.list(thread_id=thread_id).data
    assert [r.status for r in runs] == ["completed", "completed"]

    # The model saw the function's output as the tool turn after its own call.
    requests = upstream.requests(model)[seen_before:]
    assert len(requests) == 3
    call_turn, tool_turn = requests[2]["messages"][-2:]
    assert call_turn["role"] == "assistant" and call_turn["tool_calls"][0]["function"]["name"] == "CheckOutOfStock"
    assert tool_turn == {
        "role": "tool",
        "tool_call_id": call_turn["tool_calls"][0]["id"],
        "content": "Out of stock: cold brew, oat milk.",
    }
    assert [t["function"]["name"] for t in requests[0]["tools"]] == ["CheckOutOfStock", "CheckDailyRevenue"]


def test_seed_000_math_tutor_create_poll_and_stream(
    runs_server: RemoteServer, upstream: ScriptedUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    from openai import AssistantEventHandler
    from typing_extensions import override

    answer = "SISTCA student, the solution to the equation `8x + 12 = 14` is `x = 1/4`."
    seen_before = len(upstream.requests("gpt-3.5-turbo"))
    upstream.script("gpt-3.5-turbo", {"text": answer}, {"text": answer}, {"text": answer})
    client = OpenAI(runs_server)

    assistant = client.beta.assistants.create(
        name="Math Tutor",
        instructions="You are a personal math tutor. Write and run code to answer math questions.",
        model="gpt-3.5-turbo",
    )
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content="I need to solve the equation `8x + 12 = 14`. Can you help me?"
    )
    assert message.role == "user"
    run = client.beta.threads.runs.create(
        thread_id=thread.id,
        assistant_id=assistant.id,
        instructions="Please address the user as SISTCA student.",  # This parameter is optional
    )
    if run.status == "completed":
        messages = client.beta.threads.messages.list(thread_id=thread.id)
        print(messages)
    else:
        print(run.status)
    assert capsys.readouterr().out == "queued\n"

    # The notebook's author ran the next cell once the run was done; a program polls for that.
    wait_status(client, thread.id, run.id, "completed")
    messages = client.beta.threads.messages.list(thread_id=thread.id)
    print(messages.data[0].content[0].text.value)  # type: ignore[union-attr]
    assert capsys.readouterr().out == answer + "\n"

    def std_run(thread_id, assistant_id, client):  # type: ignore[no-untyped-def]
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread_id, assistant_id=assistant_id, instructions="Please address the user as SISTCA student."
        )
        if run.status == "completed":
            messages = client.beta.threads.messages.list(thread_id=thread_id)
            print(messages.data[0].content[0].text.value)
        else:
            print(run.status)

    std_run(thread.id, assistant.id, client)
    assert capsys.readouterr().out == answer + "\n"

    def streaming_run(thread_id, assistant_id, client):  # type: ignore[no-untyped-def]
        class EventHandler(AssistantEventHandler):
            @override
            def on_text_created(self, text) -> None:  # type: ignore[no-untyped-def]
                print("\nassistant > ", end="", flush=True)

            @override
            def on_text_delta(self, delta, snapshot):  # type: ignore[no-untyped-def]
                print(delta.value, end="", flush=True)

            def on_tool_call_created(self, tool_call):  # type: ignore[no-untyped-def]
                print(f"\nassistant > {tool_call.type}\n", flush=True)

            def on_tool_call_delta(self, delta, snapshot):  # type: ignore[no-untyped-def]
                if delta.type == "code_interpreter":  # noqa: SIM102 - as in the notebook
                    if delta.code_interpreter.input:
                        print(delta.code_interpreter.input, end="", flush=True)
                if delta.code_interpreter.outputs:
                    print("\n\noutput >", flush=True)
                    for output in delta.code_interpreter.outputs:
                        if output.type == "logs":
                            print(f"\n{output.logs}", flush=True)

        with client.beta.threads.runs.stream(
            thread_id=thread_id,
            assistant_id=assistant_id,
            instructions="Please address the user as SISTCA student.",
            event_handler=EventHandler(),
        ) as stream:
            stream.until_done()

    print(streaming_run(thread.id, assistant.id, client))
    assert capsys.readouterr().out == f"\nassistant > {answer}None\n"

    # Each run's `instructions` replaced the assistant's for the model.
    requests = upstream.requests("gpt-3.5-turbo")[seen_before:]
    assert len(requests) == 3
    for request in requests:
        assert request["messages"][0] == {"role": "system", "content": "Please address the user as SISTCA student."}
    assert [r.status for r in client.beta.threads.runs.list(thread_id=thread.id)] == ["completed"] * 3


def test_seed_002_research_analyst_streams_and_lists_the_conversation(
    runs_server: RemoteServer, upstream: ScriptedUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    from openai import AssistantEventHandler
    from typing_extensions import override

    answer = "To analyze the statistical significance, we can conduct an independent samples t-test."
    upstream.script("gpt-4o", {"text": answer})
    client = OpenAI(runs_server)

    assistant = client.beta.assistants.create(
        name="Research Analyst",
        instructions="You are a research assistant specialized in analyzing academic papers and research data.",
        tools=[{"type": "code_interpreter"}],
        model="gpt-4o",
    )
    print(f"Assistant ID: {assistant.id}")
    thread = client.beta.threads.create()
    print(f"Thread ID: {thread.id}")
    client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content="""I have a dataset of patient recovery times after two different treatments.
    Can you help me analyze the statistical significance of the results?

    Treatment A: [45, 42, 39, 47, 41, 43, 40, 44, 38, 46]
    Treatment B: [52, 49, 51, 47, 50, 53, 48, 51, 49, 50]""",
    )

    class ResearchEventHandler(AssistantEventHandler):
        @override
        def on_text_created(self, text) -> None:  # type: ignore[no-untyped-def]
            print("\nAssistant > ", end="", flush=True)

        @override
        def on_text_delta(self, delta, snapshot):  # type: ignore[no-untyped-def]
            print(delta.value, end="", flush=True)

        def on_tool_call_created(self, tool_call):  # type: ignore[no-untyped-def]
            print(f"\nRunning analysis: {tool_call.type}\n", flush=True)

        def on_tool_call_delta(self, delta, snapshot):  # type: ignore[no-untyped-def]
            if delta.type == "code_interpreter":
                if delta.code_interpreter.input:
                    print(delta.code_interpreter.input, end="", flush=True)
                if delta.code_interpreter.outputs:
                    print("\nResults:", flush=True)
                    for output in delta.code_interpreter.outputs:
                        if output.type == "logs":
                            print(f"\n{output.logs}", flush=True)

    capsys.readouterr()
    with client.beta.threads.runs.stream(
        thread_id=thread.id,
        assistant_id=assistant.id,
        event_handler=ResearchEventHandler(),
    ) as stream:
        stream.until_done()
    assert capsys.readouterr().out == f"\nAssistant > {answer}"

    messages = client.beta.threads.messages.list(thread_id=thread.id)
    for msg in messages:
        print(f"{msg.role}: {msg.content[0].text.value}\n")  # type: ignore[union-attr]
    printed = capsys.readouterr().out
    assert printed.startswith(f"assistant: {answer}\n\nuser: I have a dataset")
    assert stream.get_final_run().tools[0].type == "code_interpreter"


def test_seed_003_async_create_poll_loop_with_retrieval_tool(
    runs_server: RemoteServer, upstream: ScriptedUpstream
) -> None:
    answer = "Here is the plot of y = x^2."
    upstream.script("o3", {"text": answer})

    async def scenario() -> None:
        async_openai_client = openai.AsyncOpenAI(
            base_url=runs_server.base_url, api_key=KEY_A, max_retries=0, _strict_response_validation=True
        )
        assistant = await async_openai_client.beta.assistants.create(
            name="VT.ai Code Assistant",
            instructions="You are a helpful code and data analysis assistant",
            tools=[{"type": "code_interpreter"}, {"type": "retrieval"}],  # type: ignore[list-item]
            model="o3",
        )
        assistant_id = assistant.id
        thread = await async_openai_client.beta.threads.create()
        thread_id = thread.id
        await async_openai_client.beta.threads.messages.create(thread_id=thread_id, role="user", content="Plot y = x^2")
        run = await async_openai_client.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant_id)
        tool_outputs: list[Any] = []
        seen_steps: list[Any] = []
        while True:
            run = await async_openai_client.beta.threads.runs.retrieve(thread_id=thread_id, run_id=run.id)
            steps = await async_openai_client.beta.threads.runs.steps.list(
                thread_id=thread_id, run_id=run.id, order="asc"
            )
            for step in steps.data:
                seen_steps.append(step)
            if run.status == "requires_action" and run.required_action.type == "submit_tool_outputs":  # type: ignore[union-attr]
                await async_openai_client.beta.threads.runs.submit_tool_outputs(
                    thread_id=thread_id, run_id=run.id, tool_outputs=tool_outputs
                )
            if run.status in ["cancelled", "failed", "completed", "expired"]:
                break
            await asyncio.sleep(1)

        assert run.status == "completed", run.last_error
        assert [t.type for t in run.tools] == ["code_interpreter", "file_search"]
        last = seen_steps[-1]
        assert last.type == "message_creation" and last.status == "completed"
        reply = await async_openai_client.beta.threads.messages.retrieve(
            last.step_details.message_creation.message_id, thread_id=thread_id
        )
        assert reply.content[0].text.value == answer  # type: ignore[union-attr]
        await async_openai_client.close()

    asyncio.run(scenario())
