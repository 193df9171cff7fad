"""The turn loop: asks the model, turns what it streams into typed events, runs server-side tools, and
asks again until the model answers, a client function is called, or a budget is spent.

It knows nothing of the database or the wire: it reads the run, its state and the thread's messages it
was given, and yields ``events``; the executor persists and publishes them. The loop is an async
generator, so it does not go on until the executor has handled each event (a step is saved before the
loop moves past it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from assistantd.clock import now
from assistantd.engine import context
from assistantd.engine.annotations import StreamAnnotator
from assistantd.engine.events import (
    ContentAdded,
    EffectsStarting,
    Event,
    MessageClosed,
    MessageOpened,
    RequiresAction,
    RunFinished,
    StepCompleted,
    TextDelta,
    ToolCallStarted,
    ToolInputDelta,
    ToolOutput,
    ToolStepOpened,
    TurnFinished,
)
from assistantd.engine.records import new_message, new_step, text_block
from assistantd.engine.state import RunState, ServerCall
from assistantd.ids import new_id
from assistantd.llm import base as llm
from assistantd.llm.base import ChatModel, ChatRequest, UpstreamError
from assistantd.tools.base import BuiltinTool, ToolContext

MAX_MODEL_CALLS = 32  # a model that keeps calling tools is stopped rather than looping forever
# Room left for the thread's newest message when the run's own tool rounds are trimmed to fit the window.
_NEWEST_HISTORY = 64


@dataclass
class RunContext:
    """What the run reads besides itself: the thread's messages, its own steps so far, the owners of
    its tool resources. The loop keeps it current with the messages and steps it makes."""

    messages: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    thread: dict[str, Any]
    assistant: dict[str, Any]


class _Stop(Exception):
    def __init__(self, finished: RunFinished) -> None:
        super().__init__(finished.status)
        self.finished = finished


@dataclass
class _Call:
    id: str
    out_index: int
    name: str = ""
    arguments: str = ""
    announced: bool = False


@dataclass
class _Turn:
    text: str = ""
    calls: dict[int, _Call] = field(default_factory=dict)
    streaming_index: int = -1
    finish: str = "stop"
    usage: llm.Usage | None = None
    wrote_message: bool = False

    def named_calls(self) -> list[_Call]:
        return [c for c in sorted(self.calls.values(), key=lambda c: c.out_index) if c.name]


class TurnLoop:
    def __init__(
        self,
        *,
        project: str,
        run: dict[str, Any],
        state: RunState,
        context: RunContext,
        model: ChatModel,
        upstream_model: str,
        tools: Mapping[str, BuiltinTool],
        context_tokens: int,
    ) -> None:
        self.project = project
        self.run = run
        self.state = state
        self.ctx = context
        self.model = model
        self.upstream_model = upstream_model
        self.tools = tools
        self.context_tokens = context_tokens
        self.message: dict[str, Any] | None = None  # the assistant message being streamed
        self.message_step: dict[str, Any] | None = None
        self.tool_step: dict[str, Any] | None = None
        self.annotator: StreamAnnotator | None = None
        self._first_delta = True
        self.turn = _Turn()
        self._prompt_estimate = 0  # the last request's estimated prompt tokens, for an upstream's error

    # --- what an interrupted execution leaves open ----------------------------------------------

    def unfinished(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The open message (with the text streamed so far) and the open tool step (with the calls
        streamed so far), for the executor to store when the run ends mid-turn."""
        message = self.message
        if message is not None and self.turn.text:
            message["content"] = [text_block(self.turn.text)]
            if self.annotator is not None:
                message["content"][0]["text"]["annotations"] = self.annotator.annotations
        step = self.tool_step
        if step is not None and not step["step_details"]["tool_calls"]:
            step["step_details"]["tool_calls"] = [self._unrun_details(c) for c in self.turn.named_calls()]
        return message, step

    def _unrun_details(self, call: _Call) -> dict[str, Any]:
        """A call the run ended before running: a server tool's keeps its type (and the input streamed so
        far), as the step's streamed deltas showed it, rather than passing for a client function."""
        builtin = self._builtin(call.name)
        if builtin is None:
            return _function_details([call])[0]
        details = {**builtin.first_details(), **(builtin.input_delta(call.arguments, call.arguments) or {})}
        return {"id": call.id, "type": builtin.type, builtin.type: details}

    # --- the loop ---------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        try:
            async for event in self._turns():
                yield event
        except _Stop as stop:
            yield stop.finished
        except UpstreamError as exc:
            message = exc.message
            if self._prompt_estimate > self.context_tokens:
                # Servers say this in many ways, or not at all (llama-cpp-python's stream is just empty).
                message += (
                    f" (the prompt is about {self._prompt_estimate} tokens by estimate, more than the "
                    f"{self.context_tokens}-token context window: the newest message alone does not fit; "
                    "shorten it, or raise context_tokens if the model's window is larger)"
                )
            yield RunFinished("failed", last_error={"code": exc.code, "message": message})

    async def _turns(self) -> AsyncIterator[Event]:
        for _ in range(MAX_MODEL_CALLS):
            self._check_budgets()
            request = self.request()
            self.state.model_calls += 1
            turn = self.turn = _Turn()
            if self.message is None and (not request.tools or request.tool_choice == "none"):
                # The answer can only be text (or nothing, which makes an empty message too): its message
                # is opened now, so its write is done while the model thinks, not after its first token.
                opened = self._open_message()
                turn.wrote_message = True
                yield MessageOpened(opened.message, opened.step, early=True)
            async for chunk in self.model.stream(request):
                if isinstance(chunk, llm.TextDelta):
                    for event in self._on_text(turn, chunk.text):
                        yield event
                elif isinstance(chunk, llm.ToolCallDelta):
                    for event in self._on_tool_delta(turn, chunk):
                        yield event
                elif isinstance(chunk, llm.Usage):
                    turn.usage = chunk
                elif isinstance(chunk, llm.Finish):
                    turn.finish = chunk.reason
            self.state.add_usage(turn.usage)
            yield TurnFinished(turn.usage, turn.finish)
            again = False
            async for event in self._finish_turn(turn):
                if isinstance(event, StepCompleted):
                    again = True
                yield event
            if not again:
                return
        raise _Stop(
            RunFinished(
                "failed",
                last_error={
                    "code": "server_error",
                    "message": f"The model called tools {MAX_MODEL_CALLS} times without answering; "
                    "the run was stopped.",
                },
            )
        )

    def _check_budgets(self) -> None:
        max_completion = self.run.get("max_completion_tokens")
        if max_completion and self.state.used("completion_tokens") >= max_completion:
            raise _Stop(RunFinished("incomplete", incomplete_reason="max_completion_tokens"))
        max_prompt = self.run.get("max_prompt_tokens")
        if max_prompt and self.state.used("prompt_tokens") >= max_prompt:
            raise _Stop(RunFinished("incomplete", incomplete_reason="max_prompt_tokens"))

    def _check_prompt_budget(self) -> None:
        max_prompt = self.run.get("max_prompt_tokens")
        if max_prompt and self.state.used("prompt_tokens") > max_prompt:
            raise _Stop(RunFinished("incomplete", incomplete_reason="max_prompt_tokens"))

    # --- the request ------------------------------------------------------------------------------

    def request(self) -> ChatRequest:
        run, state = self.run, self.state
        by_id = {m["id"]: m for m in self.ctx.messages}
        system = [{"role": "system", "content": run["instructions"]}] if run["instructions"] else []
        tools = []
        for tool in run["tools"]:
            if tool["type"] == "function":
                tools.append({"type": "function", "function": tool["function"]})
            elif tool["type"] in self.tools:
                tools.append(self.tools[tool["type"]].definition(tool))
        fixed = sum(context.message_tokens(m) for m in system)
        if tools:
            # The tool definitions take room in the window too (a small window overflows without this).
            fixed += context.message_tokens({"role": "system", "content": orjson.dumps(tools).decode()})
        room = self.context_tokens - context.answer_reserve(self.context_tokens)
        turns = context.run_turns(self.ctx.steps, by_id, state.server_call_dicts())
        # The run's own turns come first (they are what the model is answering); the thread's history
        # gets what they leave, and when they alone overflow the window their oldest tool rounds go.
        turns = context.fit_turns(turns, room - fixed - _NEWEST_HISTORY)
        fixed += sum(context.message_tokens(m) for m in turns)
        budget = room - fixed
        if run.get("max_prompt_tokens"):
            budget = min(budget, run["max_prompt_tokens"] - state.used("prompt_tokens") - fixed)
        history = context.truncate(
            context.thread_history(self.ctx.messages, run["id"]), run.get("truncation_strategy"), max(budget, 0)
        )
        self._prompt_estimate = fixed + sum(context.message_tokens(m) for m in history)
        max_tokens = None
        if run.get("max_completion_tokens"):
            max_tokens = run["max_completion_tokens"] - state.used("completion_tokens")
        fmt = run.get("response_format")
        return ChatRequest(
            model=self.upstream_model,
            messages=[*system, *history, *turns],
            tools=tools,
            tool_choice=self._tool_choice() if tools else None,
            parallel_tool_calls=None if run.get("parallel_tool_calls", True) else False,
            temperature=run.get("temperature"),
            top_p=run.get("top_p"),
            max_tokens=max_tokens,
            response_format=fmt if isinstance(fmt, dict) and fmt.get("type") != "text" else None,
            reasoning_effort=state.reasoning_effort,
        )

    def _tool_choice(self) -> Any:
        """The run's tool_choice for this model call. One that forces a call (``required``, a named
        function or built-in tool) holds for the run's first model call only, as OpenAI's "must call
        one or more tools before responding": after the tool output the model may answer."""
        choice = self.run.get("tool_choice") or "auto"
        if choice in ("auto", "none"):
            return choice
        if self.state.model_calls > 0:
            return "auto"
        if not isinstance(choice, dict):
            return choice  # "required"
        if choice.get("type") == "function":
            name = (choice.get("function") or {}).get("name", "")
        else:
            tool = self.tools.get(str(choice.get("type")))
            spec = next((t for t in self.run["tools"] if t["type"] == choice.get("type")), {"type": choice.get("type")})
            name = tool.definition(spec)["function"]["name"] if tool is not None else str(choice.get("type"))
        return {"type": "function", "function": {"name": name}}

    # --- text ---------------------------------------------------------------------------------

    def _on_text(self, turn: _Turn, text: str) -> list[Event]:
        events: list[Event] = []
        if self.message is None:
            events.append(self._open_message())
            turn.wrote_message = True
        assert self.message is not None and self.annotator is not None
        turn.text += text
        for value, notes in self.annotator.feed(text):
            events.append(self._text_delta(value, notes))
        return events

    def _text_delta(self, value: str, notes: list[dict[str, Any]]) -> TextDelta:
        assert self.message is not None
        first, self._first_delta = self._first_delta, False
        return TextDelta(self.message["id"], value, notes if (first or notes) else None)

    def _open_message(self) -> MessageOpened:
        message = new_message(self.run)
        step = new_step(self.run, {"type": "message_creation", "message_creation": {"message_id": message["id"]}})
        self.message, self.message_step = message, step
        self.annotator = StreamAnnotator(self.state.citations, self.state.links)
        self._first_delta = True
        self.ctx.messages.append(message)
        self.ctx.steps.append(step)
        return MessageOpened(message, step)

    def _close_message(self, turn: _Turn, usage: llm.Usage | None) -> list[Event]:
        message, step, annotator = self.message, self.message_step, self.annotator
        assert message is not None and step is not None and annotator is not None
        events: list[Event] = [self._text_delta(v, n) for v, n in annotator.flush()]
        moment = now()
        message["content"] = [text_block(turn.text)]
        message["content"][0]["text"]["annotations"] = annotator.annotations
        images, self.state.images = self.state.images, []
        if images:
            # The images made since the last message are shown in this one, streamed as one more delta,
            # so the SDK's snapshot matches the completed message.
            blocks = [{"type": "image_file", "image_file": {"file_id": fid}} for fid in images]
            message["content"] += blocks
            events.append(ContentAdded(message["id"], [{"index": i + 1, **b} for i, b in enumerate(blocks)]))
        if turn.finish == "length":
            message.update(status="incomplete", incomplete_at=moment, incomplete_details={"reason": "max_tokens"})
        else:
            message.update(status="completed", completed_at=moment)
        step.update(status="completed", completed_at=moment, usage=_usage_json(usage))
        self.message = self.message_step = self.annotator = None
        events.append(MessageClosed(message, step))
        return events

    # --- tool calls -----------------------------------------------------------------------------

    def _on_tool_delta(self, turn: _Turn, delta: llm.ToolCallDelta) -> list[Event]:
        events: list[Event] = []
        if self.message is not None:
            # Text before tool calls is its own message; it ends where the calls begin.
            events += self._close_message(turn, None)
            turn.text = ""
        if self.tool_step is None:
            self.tool_step = new_step(self.run, {"type": "tool_calls", "tool_calls": []})
            self.ctx.steps.append(self.tool_step)
            events.append(ToolStepOpened(self.tool_step))
        step_id = self.tool_step["id"]
        call = turn.calls.get(delta.index)
        if call is None:
            call = turn.calls[delta.index] = _Call(id=new_id("call"), out_index=len(turn.calls))
        if delta.name and not call.name:
            call.name = delta.name
        call.arguments += delta.arguments
        if not call.name:
            return events  # announced once its name is known
        builtin = self._builtin(call.name)
        if not call.announced:
            call.announced = True
            turn.streaming_index = call.out_index
            if builtin is not None:
                partial = builtin.input_delta(call.arguments, call.arguments) or {}
                details = {**builtin.first_details(), **partial}
                events.append(
                    ToolCallStarted(
                        step_id, {"index": call.out_index, "id": call.id, "type": builtin.type, builtin.type: details}
                    )
                )
            else:
                function = {"name": call.name, "arguments": call.arguments, "output": None}
                events.append(
                    ToolCallStarted(
                        step_id, {"index": call.out_index, "id": call.id, "type": "function", "function": function}
                    )
                )
        elif delta.arguments and call.out_index == turn.streaming_index:
            # Deltas for an earlier call arriving late are left to the completed objects: the SDK's
            # helper must never see indices go backwards.
            if builtin is not None:
                piece = builtin.input_delta(call.arguments, delta.arguments)
                if piece:
                    events.append(
                        ToolInputDelta(step_id, {"index": call.out_index, "type": builtin.type, builtin.type: piece})
                    )
            else:
                events.append(
                    ToolInputDelta(
                        step_id,
                        {"index": call.out_index, "type": "function", "function": {"arguments": delta.arguments}},
                    )
                )
        return events

    def _builtin(self, name: str) -> BuiltinTool | None:
        """The server tool a call is for, if the run has that tool and this server runs it."""
        tool = self.tools.get(name)
        if tool is None or not any(t["type"] == name for t in self.run["tools"]):
            return None
        return tool

    async def _finish_turn(self, turn: _Turn) -> AsyncIterator[Event]:
        """Record what the model said. Yields StepCompleted when tools ran here and the model is asked again."""
        if self.message is not None:
            for event in self._close_message(turn, turn.usage):
                yield event
            if turn.finish == "length" and self.run.get("max_completion_tokens"):
                raise _Stop(RunFinished("incomplete", incomplete_reason="max_completion_tokens"))
        calls = turn.named_calls()
        if not calls:
            if not turn.wrote_message:
                # The model said nothing at all: still answer with an (empty) message, as the SDK expects one.
                yield self._open_message()
                for event in self._close_message(turn, turn.usage):
                    yield event
            self._check_prompt_budget()
            yield RunFinished("completed")
            return
        if self.run.get("parallel_tool_calls") is False:
            calls = calls[:1]
        step = self.tool_step
        assert step is not None
        details = {c.id: d for c, d in zip(calls, _function_details(calls), strict=True)}
        for call in calls:
            builtin = self._builtin(call.name)
            if builtin is not None:
                async for item in self._run_builtin(builtin, call, step["id"]):
                    if isinstance(item, dict):
                        details[call.id] = item
                    else:
                        yield item
        step["step_details"]["tool_calls"] = [details[c.id] for c in calls]
        step["usage"] = _usage_json(turn.usage)
        functions = [c for c in calls if self._builtin(c.name) is None]
        if not functions:
            # Every call ran here: the step is done and the model reads the results.
            step.update(status="completed", completed_at=now())
            self.tool_step = None
            yield StepCompleted(step)
            self._check_prompt_budget()
            return
        self._check_prompt_budget()  # over budget: the step, calls filled in, is closed with the run
        self.tool_step = None
        self.state.pending_step_id = step["id"]
        required = {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {
                "tool_calls": [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in functions
                ]
            },
        }
        yield RequiresAction(step, required)

    async def _run_builtin(self, tool: BuiltinTool, call: _Call, step_id: str) -> AsyncIterator[Event | dict[str, Any]]:
        """Run one server-side call, yielding its streamed outputs, then (last) its step details."""
        number = self.state.server_call_count
        self.state.server_call_count = number + 1
        problem = tool.check_arguments(_spec(self.run, tool.type), call.arguments)
        if problem is not None:
            outcome = tool.rejected(self.run, problem)
        else:
            if not tool.repeatable:
                self.state.in_flight.append(tool.type)
                yield EffectsStarting(tool.type)  # stored before the call runs
            partials: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            ctx = ToolContext(
                project=self.project,
                run=self.run,
                thread=self.ctx.thread,
                assistant=self.ctx.assistant,
                attachments=[a for m in self.ctx.messages for a in m.get("attachments") or []],
                include=self.state.include,
                stream=partials.put_nowait,
                call_number=number,
            )
            task = asyncio.ensure_future(tool.invoke(ctx, call.arguments))
            try:
                while not task.done():
                    getter = asyncio.ensure_future(partials.get())
                    await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield ToolOutput(step_id, _partial(call, tool, getter.result()))
                    else:
                        getter.cancel()
                while not partials.empty():
                    yield ToolOutput(step_id, _partial(call, tool, partials.get_nowait()))
                outcome = task.result()
            finally:
                task.cancel()
            if not tool.repeatable:
                self.state.in_flight.remove(tool.type)  # stored with the step that records the call
        self.state.citations.update(outcome.citations)
        self.state.links.update(outcome.files)
        self.state.images.extend(outcome.images)
        self.state.server_calls[call.id] = ServerCall(call.name, call.arguments, outcome.output)
        yield {"id": call.id, "type": tool.type, tool.type: outcome.details}


def _partial(call: _Call, tool: BuiltinTool, partial: dict[str, Any]) -> dict[str, Any]:
    return {"index": call.out_index, "type": tool.type, tool.type: partial}


def _spec(run: dict[str, Any], tool_type: str) -> dict[str, Any]:
    return next((t for t in run["tools"] if t["type"] == tool_type), {"type": tool_type})


def _usage_json(usage: llm.Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _function_details(calls: list[_Call]) -> list[dict[str, Any]]:
    """The step's record of function calls, in the order they were streamed."""
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments, "output": None}}
        for c in calls
    ]
