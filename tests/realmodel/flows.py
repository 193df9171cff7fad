"""The flows checked against a real model server: the five seeds' flows, streaming, tool round trips,
truncation on a 1024-token window, budgets, a context overflow, the pass-through endpoints, and how close
the local token count is. Each flow returns a one-line detail or raises ``AssertionError`` saying what
went wrong. A 270M base model answers poorly; what is checked is the plumbing (statuses, events, steps,
usage, errors), never the quality of the text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import openai
from openai import AssistantEventHandler

from .harness import KEY, N_CTX, RealServers

TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}
FUNCTION_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "CheckOutOfStock", "description": "List the products out of stock.",
                                      "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "CheckDailyRevenue", "description": "Revenue of a day.",
                                      "parameters": {"type": "object", "properties": {"day": {"type": "string"}},
                                                     "required": ["day"]}}},
]  # fmt: skip
FORCE_STOCK: Any = {"type": "function", "function": {"name": "CheckOutOfStock"}}
INCLUDE: Any = "step_details.tool_calls[*].file_search.results[*].content"


def client_for(servers: RealServers) -> openai.OpenAI:
    return openai.OpenAI(base_url=servers.base_url, api_key=KEY, max_retries=0, timeout=600)


def _text(message: Any) -> str:
    return "".join(part.text.value for part in message.content if part.type == "text")


def _usage(run: Any) -> str:
    assert run.usage is not None, f"run {run.id} has no usage"
    assert run.usage.prompt_tokens > 0 and run.usage.completion_tokens > 0, f"empty usage {run.usage}"
    return f"usage {run.usage.prompt_tokens}+{run.usage.completion_tokens}"


def _done(run: Any, *allowed: str) -> None:
    allowed = allowed or ("completed",)
    assert run.status in allowed, f"run {run.status}: {run.last_error or run.incomplete_details}"


class _Handler(AssistantEventHandler):
    def __init__(self, cancel_after_calls: int = 0, client: openai.OpenAI | None = None) -> None:
        super().__init__()
        self.cancel_after_calls = cancel_after_calls
        self.client = client
        self.cancelled = False
        self.deltas: list[Any] = []
        self.tool_types: list[str] = []
        self.tool_steps = 0
        self.code: list[str] = []
        self.logs: list[str] = []

    def on_text_delta(self, delta: Any, snapshot: Any) -> None:
        self.deltas.append(delta.value)

    def on_tool_call_created(self, tool_call: Any) -> None:
        self.tool_types.append(tool_call.type)

    def on_run_step_created(self, run_step: Any) -> None:
        # Counted by step: the SDK's helper announces a call only when its index changes, and each step's
        # first call has index 0, so on_tool_call_created fires once for a run of one-call steps.
        if run_step.type != "tool_calls":
            return
        self.tool_steps += 1
        run = self.current_run
        if self.cancel_after_calls and self.tool_steps > self.cancel_after_calls and not self.cancelled:
            # A tool forced on every model call is called again and again: stop it rather than wait
            # for the engine's limit of model calls, a minute each on a loaded CPU.
            assert self.client is not None and run is not None
            self.cancelled = True
            self.client.beta.threads.runs.cancel(run.id, thread_id=run.thread_id)

    def on_tool_call_delta(self, delta: Any, snapshot: Any) -> None:
        if delta.type == "code_interpreter" and delta.code_interpreter:
            if delta.code_interpreter.input:
                self.code.append(delta.code_interpreter.input)
            for output in delta.code_interpreter.outputs or []:
                if output.type == "logs":
                    self.logs.append(output.logs)


def seed_000_math_tutor(servers: RealServers) -> str:
    client = client_for(servers)
    assistant = client.beta.assistants.create(
        name="Math Tutor", instructions="You are a personal math tutor. Write and run code to answer math questions.",
        model="gpt-3.5-turbo",
    )  # fmt: skip
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread_id=thread.id, role="user",
                                        content="I need to solve the equation `8x + 12 = 14`. Can you help me?")
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id,
                                          instructions="Please address the user as SISTCA student.")
    run = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=200)
    _done(run)
    polled = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                      instructions="Please address the user as SISTCA student.")
    _done(polled)
    handler = _Handler()
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                         instructions="Please address the user as SISTCA student.",
                                         event_handler=handler) as stream:
        stream.until_done()
        final = stream.get_final_run()
    _done(final)
    assert None not in handler.deltas, "a text delta had value None"
    latest = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert _text(latest) == "".join(handler.deltas), "stored message differs from the streamed deltas"
    return f"poll, create_and_poll, stream completed; {len(handler.deltas)} deltas; {_usage(final)}"


def seed_001_steps_and_messages(servers: RealServers) -> str:
    client = client_for(servers)
    assistant = client.beta.assistants.create(
        model="gpt-4o", instructions="You are a helpful assistant.", name="Run Step Friendly Assistant",
        metadata={"holds_threads": "True"}, temperature=1, top_p=1,
    )  # fmt: skip
    thread = client.beta.threads.create(metadata={"user": "abc123"})
    client.beta.threads.messages.create(thread_id=thread.id, role="user", metadata={"key": "value"},
                                        content="Tell me what a penguin is in 100 words or less.")
    handler = _Handler()
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                         event_handler=handler) as stream:
        stream.until_done()
        run = stream.get_final_run()
    _done(run)
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, limit=5, order="asc").data
    assert steps and steps[-1].type == "message_creation", f"steps {[s.type for s in steps]}"
    step = client.beta.threads.runs.steps.retrieve(step_id=steps[-1].id, thread_id=thread.id, run_id=run.id)
    assert step.usage is not None and step.usage.total_tokens > 0, "the step has no usage"
    message = client.beta.threads.messages.retrieve(
        step.step_details.message_creation.message_id, thread_id=thread.id  # type: ignore[union-attr]
    )
    assert _text(message) == "".join(handler.deltas)
    runs = client.beta.threads.runs.list(thread_id=thread.id).data
    assert [r.id for r in runs] == [run.id]
    return f"stream, steps list/retrieve, message via step; {_usage(run)}, step usage {step.usage.total_tokens}"


def seed_002_code_interpreter(servers: RealServers) -> str:
    """Streams a code interpreter run; the tool is forced so a small model calls it at all."""
    client = client_for(servers)
    assistant = client.beta.assistants.create(
        name="Research Analyst", model="gpt-4o", tools=[{"type": "code_interpreter"}],
        instructions="You are a research analyst. Run Python code to answer.",
    )  # fmt: skip
    thread = client.beta.threads.create(messages=[{"role": "user", "content":
        "Run scipy.stats.ttest_ind on [1, 2, 3, 4] and [2, 4, 6, 8] and report the p-value."}])  # fmt: skip
    handler = _Handler(cancel_after_calls=3, client=client)
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=handler,
                                         tool_choice={"type": "code_interpreter"}) as stream:
        stream.until_done()
        run = stream.get_final_run()
    steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
    calls = [c for s in steps if s.type == "tool_calls" for c in s.step_details.tool_calls]  # type: ignore[union-attr]
    assert calls and calls[0].type == "code_interpreter", (
        f"no code_interpreter call (steps {[s.type for s in steps]}); the forced tool must reach the server "
        "as a named function, not 'required'"
    )
    logs = sum(map(len, handler.logs))
    assert logs > 0, "the code ran but no logs were streamed"
    if handler.cancelled:
        return f"{_kept_calling(steps, 'code_interpreter')}; logs {logs} chars streamed"
    _done(run)
    messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    return f"{len(calls)} code call(s), logs {logs} chars, {len(messages)} messages; {_usage(run)}"


def _kept_calling(steps: list[Any], tool: str) -> str:
    """A run the check cancelled because the model called ``tool`` again and again. That is the model's
    choice, not the plumbing's, if the calls after the first were free choices made after reading the
    output: the second step's prompt grew by the first output (the engine sends ``auto`` after the first
    call; the scripted tests prove which tool_choice each call gets). No growth: the output was lost."""
    tool_steps = [s for s in steps if s.type == "tool_calls"]
    prompts = [s.usage.prompt_tokens for s in tool_steps if s.usage is not None]
    # Only the first step is compared: later prompts may shrink again as the oldest rounds are trimmed.
    assert len(prompts) >= 2 and prompts[1] > prompts[0], (
        f"cancelled after {len(tool_steps)} {tool} calls whose prompts did not grow ({prompts}): the tool "
        "output never reached the model"
    )
    return (f"the model called {tool} {len(tool_steps)} times, each after reading the last output (prompt "
            f"{' -> '.join(map(str, prompts))} tokens), and was cancelled by the check (a 270M model)")


def seed_003_async_o3_poll_loop(servers: RealServers) -> str:
    async def scenario() -> str:
        client = openai.AsyncOpenAI(base_url=servers.base_url, api_key=KEY, max_retries=0, timeout=600)
        assistant = await client.beta.assistants.create(
            name="VT.ai Code Assistant", instructions="You are a helpful code and data analysis assistant",
            tools=[{"type": "code_interpreter"}, {"type": "retrieval"}], model="o3",  # type: ignore[list-item]
        )  # fmt: skip
        thread = await client.beta.threads.create()
        await client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Plot y = x^2")
        run = await client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        seen: list[Any] = []
        cancelled = False
        deadline = asyncio.get_running_loop().time() + 900  # a slow CPU: a few tokens a second
        while asyncio.get_running_loop().time() < deadline:
            run = await client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=run.id)
            steps = await client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc")
            seen = steps.data
            if run.status in TERMINAL:
                break
            if sum(s.type == "tool_calls" and s.status == "completed" for s in seen) > 3 and not cancelled:
                cancelled = True  # a model calling the tool again and again: see _kept_calling
                await client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
            await asyncio.sleep(0.5)  # the seed's own polling loop (it sleeps 1 s)
        await client.close()
        assert [t.type for t in run.tools] == ["code_interpreter", "file_search"]
        if cancelled:
            _done(run, "cancelled")
            return f"o3 polled; {_kept_calling(seen, 'code_interpreter')}"
        _done(run, "completed")
        return f"o3 (reasoning params) polled to completed; {len(seen)} step(s); {_usage(run)}"

    return asyncio.run(scenario())


def _stream_until_answer(client: openai.OpenAI, thread_id: str, assistant_id: str, **extra: Any) -> tuple[Any, int]:
    """Seed 004's loop: read events; on requires_action submit outputs with stream=True and keep reading."""
    submissions = 0
    stream: Any = client.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant_id, stream=True, **extra)
    run = None
    while True:
        next_stream = None
        for event in stream:
            if event.event == "thread.run.requires_action":
                if submissions == 3:  # a model calling the function again and again: see _kept_calling
                    client.beta.threads.runs.cancel(event.data.id, thread_id=thread_id)
                    continue
                submissions += 1
                outputs = [{"tool_call_id": c.id, "output": "Out of stock: cold brew, oat milk."}
                           for c in event.data.required_action.submit_tool_outputs.tool_calls]
                next_stream = client.beta.threads.runs.submit_tool_outputs(
                    thread_id=thread_id, run_id=event.data.id, tool_outputs=outputs, stream=True)  # type: ignore[arg-type]
            elif event.event.startswith("thread.run.") and event.data.object == "thread.run":
                run = event.data
        if next_stream is None:
            return run, submissions
        stream = next_stream


def seed_004_functions_streamed(servers: RealServers) -> str:
    client = client_for(servers)
    assistant = client.beta.assistants.create(model="gpt-4o-mini", name="Xi Pho Coffee", tools=FUNCTION_TOOLS)
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Hi what can you do?")
    first, _ = _stream_until_answer(client, thread.id, assistant.id)
    _done(first)
    client.beta.threads.messages.create(thread_id=thread.id, role="assistant", content="(reply shown to the user)")
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Which products are running out?")
    second, submitted = _stream_until_answer(client, thread.id, assistant.id, tool_choice=FORCE_STOCK)
    assert submitted >= 1, "the forced function was never called"
    if submitted == 3 and second.status != "completed":
        second = client.beta.threads.runs.retrieve(second.id, thread_id=thread.id)
        if second.status == "cancelling":
            second = client.beta.threads.runs.poll(second.id, thread_id=thread.id, poll_interval_ms=200)
        _done(second, "cancelled")
        steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=second.id, order="asc").data
        return f"chat, then 3 streamed submits; {_kept_calling(steps, 'CheckOutOfStock')}"
    _done(second)
    history = client.beta.threads.messages.list(thread_id=thread.id).data
    return f"chat, then {submitted} streamed tool round trip(s) to completed; {len(history)} messages; {_usage(second)}"


def streaming_events(servers: RealServers) -> str:
    client = client_for(servers)
    assistant = client.beta.assistants.create(model="gpt-4o", instructions="Answer briefly.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Name three colours."}])
    events = list(client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id, stream=True))
    names = [e.event for e in events]
    want = ["thread.run.created", "thread.run.queued", "thread.run.in_progress", "thread.run.step.created"]
    assert names[:4] == want, names[:6]
    assert names[-1] == "thread.run.completed", names[-3:]
    deltas = [c.text.value for e in events if e.event == "thread.message.delta" for c in e.data.delta.content or []]
    assert all(isinstance(d, str) for d in deltas), "a delta value was not a string"
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert _text(message) == "".join(deltas)
    return f"{len(events)} events in order, {len(deltas)} text deltas = stored message; {_usage(events[-1].data)}"


def function_round_trip_polled(servers: RealServers) -> str:
    client = client_for(servers)
    assistant = client.beta.assistants.create(model="gpt-4o", tools=FUNCTION_TOOLS)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "What is out of stock?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   tool_choice=FORCE_STOCK, poll_interval_ms=200)
    rounds = 0
    while run.status == "requires_action":
        if rounds == 3:  # a model calling the function again and again: see _kept_calling
            run = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
            if run.status == "cancelling":
                run = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=200)
            _done(run, "cancelled")
            steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
            return f'3 round trips, content "" beside tool_calls accepted; {_kept_calling(steps, "CheckOutOfStock")}'
        rounds += 1
        calls = run.required_action.submit_tool_outputs.tool_calls  # type: ignore[union-attr]
        json.loads(calls[0].function.arguments or "{}")
        run = client.beta.threads.runs.submit_tool_outputs_and_poll(
            thread_id=thread.id, run_id=run.id, poll_interval_ms=200,
            tool_outputs=[{"tool_call_id": c.id, "output": "cold brew"} for c in calls])  # fmt: skip
    _done(run)
    assert rounds >= 1, "the forced function was never called"
    return f"{rounds} round trip(s), content \"\" beside tool_calls accepted; {_usage(run)}"


def _long_thread(client: openai.OpenAI, turns: int) -> str:
    sentence = "The quarterly report covers sales, staffing, inventory and the new warehouse in some detail. "
    messages = []
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": f"Turn {i}. " + sentence * 3})
    messages.append({"role": "user", "content": "Summarise the last turn in one line."})
    return client.beta.threads.create(messages=messages).id  # type: ignore[arg-type]


def truncation_small_window(servers: RealServers) -> str:
    client = client_for(servers)
    assistant = client.beta.assistants.create(model="gpt-4o", instructions="Answer briefly.")
    thread_id = _long_thread(client, 24)  # ~1900 tokens of history: twice the 1024-token window
    auto = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant.id,
                                                    max_completion_tokens=256, poll_interval_ms=200)
    _done(auto, "completed", "incomplete")
    assert auto.usage is not None and auto.usage.prompt_tokens < N_CTX, f"prompt {auto.usage} over the window"
    last = client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant.id, max_completion_tokens=256, poll_interval_ms=200,
        truncation_strategy={"type": "last_messages", "last_messages": 2})  # fmt: skip
    _done(last, "completed", "incomplete")
    return f"auto: {auto.status}, prompt {auto.usage.prompt_tokens} < {N_CTX}; last_messages=2: {last.status}"


def budgets(servers: RealServers) -> str:
    client = client_for(servers)
    assistant = client.beta.assistants.create(model="gpt-4o", instructions="Write at length.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Write a long story about a ship."}])
    capped = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                      max_completion_tokens=256, poll_interval_ms=200)
    _done(capped, "completed", "incomplete")
    if capped.status == "incomplete":
        assert capped.incomplete_details.reason == "max_completion_tokens"  # type: ignore[union-attr]
    thread_id = _long_thread(client, 24)
    prompt_capped = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant.id,
                                                             max_prompt_tokens=256, max_completion_tokens=256,
                                                             poll_interval_ms=200)
    _done(prompt_capped, "completed", "incomplete")
    assert prompt_capped.usage is not None and prompt_capped.usage.prompt_tokens <= 400, prompt_capped.usage
    return (f"max_completion_tokens=256: {capped.status}, {_usage(capped)}; max_prompt_tokens=256: "
            f"{prompt_capped.status}, prompt {prompt_capped.usage.prompt_tokens}")


def context_overflow(servers: RealServers) -> str:
    """One message longer than the window: the newest is always kept, so the server overflows; the run
    must fail with server_error saying what the server sent (llama-cpp-python: an empty event stream) and
    that the prompt is over the window."""
    client = client_for(servers)
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "word " * 1500}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   poll_interval_ms=200)
    assert run.status == "failed", f"run {run.status}, expected failed"
    assert run.last_error is not None and run.last_error.code == "server_error", run.last_error
    assert "context window" in run.last_error.message, f"last_error does not name the window: {run.last_error}"
    said = run.last_error.message
    return f"failed/server_error: {said[:60]}...{said[said.index(' (the prompt'):][:100]}"


def passthrough(servers: RealServers) -> str:
    client = client_for(servers)
    chunks = list(client.chat.completions.create(model="gpt-4o", stream=True, max_tokens=16,
                                                 messages=[{"role": "user", "content": "Say hi"}]))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(model="gpt-4o", max_tokens=16, messages=[{"role": "user", "content": "Hi"}])
    assert whole.usage is not None and whole.usage.prompt_tokens > 0
    legacy = client.completions.create(model="gpt-4o", prompt="Once upon a time", max_tokens=8)
    try:
        client.embeddings.create(model="text-embedding-3-small", input="hello")
        embeddings = "embeddings ok"
    except openai.APIStatusError as exc:  # llama's server serves embeddings only when started with --embedding
        embeddings = f"embeddings relayed upstream {exc.status_code}"
    return (f"chat stream {len(chunks)} chunks ({len(streamed)} chars), chat usage {whole.usage.prompt_tokens}"
            f"+{whole.usage.completion_tokens}, completions {len(legacy.choices[0].text)} chars, {embeddings}")


def usage_estimate(servers: RealServers) -> str:
    """How close the local count (MiniLM WordPiece) is to the server's own (Gemma's tokenizer), on the
    completion text of a few answers and on their prompts (chat template included on the server side)."""
    import httpx

    from assistantd.llm.tokens import count_prompt, count_text

    prompts = ["Explain how a bicycle works.", "Write a short poem about the sea.", "List five European capitals.",
               "Describe the water cycle for a child.", "What is a prime number? Give examples."]
    real_c = est_c = real_p = est_p = 0
    for prompt in prompts:
        messages = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": prompt}]
        doc = httpx.post(f"{servers.llama_url}/chat/completions", timeout=300,
                         json={"model": "m", "messages": messages, "max_tokens": 120}).json()
        real_c += doc["usage"]["completion_tokens"]
        est_c += count_text(doc["choices"][0]["message"]["content"] or "")
        real_p += doc["usage"]["prompt_tokens"]
        est_p += count_prompt(messages)
    # Plain text, counted by the server's own tokenizer: README's paragraphs and one source file.
    from .harness import ROOT

    corpus = [p for p in (ROOT / "README.md").read_text().split("\n\n") if len(p) > 200]
    corpus.append((ROOT / "assistantd" / "llm" / "shape.py").read_text())
    real_t = est_t = 0
    for text in corpus:
        tokens = httpx.post(f"{servers.llama_url.removesuffix('/v1')}/extras/tokenize", timeout=60,
                            json={"input": text}).json()["tokens"]
        real_t += len(tokens)
        est_t += count_text(text)
    return (f"text: local {est_t} vs server {real_t} ({est_t / real_t:.2f}x); answers: local {est_c} vs "
            f"{real_c} ({est_c / real_c:.2f}x); prompts: local {est_p} vs {real_p} ({est_p / real_p:.2f}x)")


class _SearchHandler(AssistantEventHandler):
    """Keeps every text delta with its annotations, and the streamed step details."""

    def __init__(self, client: openai.OpenAI) -> None:
        super().__init__()
        self.client = client
        self.deltas: list[Any] = []
        self.step_calls: list[Any] = []
        self.tool_steps = 0
        self.cancelled = False

    def on_run_step_created(self, run_step: Any) -> None:
        self.tool_steps += run_step.type == "tool_calls"
        run = self.current_run
        if self.tool_steps > 3 and not self.cancelled and run is not None:
            self.cancelled = True  # a model searching again and again: see _kept_calling
            self.client.beta.threads.runs.cancel(run.id, thread_id=run.thread_id)

    def on_text_delta(self, delta: Any, snapshot: Any) -> None:
        self.deltas.append(delta)

    def on_run_step_done(self, run_step: Any) -> None:
        if run_step.type == "tool_calls":
            self.step_calls += run_step.step_details.tool_calls


def file_search_streamed(servers: RealServers) -> str:
    """A streamed file search run (forced: a small model rarely calls the tool by itself): the step's
    results carry chunk text only when include[] asks for it (at create, and on steps list/retrieve
    afterwards), every text delta has a string value (an annotation rides on the delta with its marker
    text), and the stored message with its annotations equals what was streamed."""
    client = client_for(servers)
    notes = ("Opening hours of the Xi Pho Coffee shop: Monday to Friday 7am to 6pm, Saturday 8am to 4pm, "
             "closed on Sunday. The cold brew is made fresh every morning at 6am.\n")
    uploaded = client.files.create(file=("hours.txt", notes.encode()), purpose="assistants")
    stores: Any = getattr(client, "vector_stores", None) or client.beta.vector_stores  # type: ignore[attr-defined]
    store = stores.create(name="shop", file_ids=[uploaded.id])
    assistant = client.beta.assistants.create(
        model="gpt-4o", tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
        instructions="Answer from the files. Cite each result you use with its marker, e.g. 【0:0†hours.txt】.",
    )  # fmt: skip
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "When does the shop open on Saturday?"}])
    handler = _SearchHandler(client)
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=handler,
                                         tool_choice={"type": "file_search"}, include=[INCLUDE]) as stream:
        stream.until_done()
        run = stream.get_final_run()
    _done(run, "cancelled" if handler.cancelled else "completed")
    searches = [c for c in handler.step_calls if c.type == "file_search"]
    assert searches, f"no file_search call streamed (tool calls {[c.type for c in handler.step_calls]})"
    streamed = searches[0].file_search.results or []
    assert streamed and all(r.content for r in streamed), "include[] at create: streamed results lack content"
    assert all(isinstance(d.value, str) for d in handler.deltas), "a text delta had value None"
    stored_notes: list[Any] = []
    if not handler.cancelled:
        message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
        assert message.role == "assistant", "the run completed without an answer"
        text = message.content[0].text  # type: ignore[union-attr]
        assert text.value == "".join(d.value for d in handler.deltas), "stored message differs from the deltas"
        streamed_notes = [(a.start_index, a.end_index, a.text) for d in handler.deltas for a in d.annotations or []]
        stored_notes = [(a.start_index, a.end_index, a.text) for a in text.annotations]
        assert streamed_notes == stored_notes, f"annotations streamed {streamed_notes} but stored {stored_notes}"
        for delta in handler.deltas:
            for note in delta.annotations or []:
                assert note.text in delta.value, f"annotation {note.text!r} not on its delta ({delta.value!r})"
    plain = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
    step = next(s for s in plain if s.type == "tool_calls")
    bare = step.step_details.tool_calls[0].file_search.results or []  # type: ignore[union-attr]
    assert bare and not any(r.content for r in bare), "steps.list without include[] returned chunk content"
    listed = client.beta.threads.runs.steps.list(
        thread_id=thread.id, run_id=run.id, order="asc", include=[INCLUDE]
    ).data
    full = next(s for s in listed if s.type == "tool_calls").step_details.tool_calls[0].file_search.results  # type: ignore[union-attr]
    assert full and all(r.content for r in full), "steps.list with include[] lacks content"
    got = client.beta.threads.runs.steps.retrieve(step.id, thread_id=thread.id, run_id=run.id, include=[INCLUDE])
    kept = got.step_details.tool_calls[0].file_search.results  # type: ignore[union-attr]
    assert kept and kept[0].content and "Saturday" in (kept[0].content[0].text or ""), "retrieve lacks content"
    if handler.cancelled:
        return f"include[] right at create, list, retrieve; {_kept_calling(plain, 'file_search')}"
    return (f"{len(streamed)} result(s) with content at create, none without include[], content on list/retrieve "
            f"with include[]; {len(handler.deltas)} deltas, {len(stored_notes)} annotation(s) = stored; {_usage(run)}")


FLOWS: list[tuple[str, Callable[[RealServers], str]]] = [
    ("seed 000 math tutor (poll, create_and_poll, stream)", seed_000_math_tutor),
    ("seed 001 streamed run, steps, messages", seed_001_steps_and_messages),
    ("seed 002 code interpreter (streamed, forced)", seed_002_code_interpreter),
    ("seed 003 async o3 poll loop + retrieval", seed_003_async_o3_poll_loop),
    ("seed 004 streamed functions + submit(stream)", seed_004_functions_streamed),
    ("streaming events and deltas", streaming_events),
    ("file search streamed, include[], annotations", file_search_streamed),
    ("function round trip (polled)", function_round_trip_polled),
    ("truncation on a 1024-token window", truncation_small_window),
    ("budgets (max_completion/prompt_tokens)", budgets),
    ("context overflow -> failed/server_error", context_overflow),
    ("pass-through chat/completions/embeddings", passthrough),
    ("local token count vs server", usage_estimate),
]
