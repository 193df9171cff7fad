"""One execution of a run: from ``queued`` to a terminal state or ``requires_action``.

The loop asks the model, streams what it says as message or tool-call step events, and loops while
tools run on the server; client-side functions pause the run in ``requires_action``. Writes happen at
step boundaries (never per token). Every way out ends in ``records.close_run`` or ``requires_action``,
so no run is left active with nobody executing it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from assistantd.engine import context
from assistantd.engine.annotations import annotate
from assistantd.engine.records import Closed, close_run, new_message, new_step, now, text_block
from assistantd.ids import new_id
from assistantd.llm.base import ChatRequest, Finish, TextDelta, ToolCallDelta, UpstreamError, Usage
from assistantd.llm.router import NoRoute
from assistantd.store import Conn
from assistantd.store import objects as rows
from assistantd.store import runs as run_rows
from assistantd.tools.base import BuiltinTool, ToolContext
from assistantd.tools.file_search.tool import render as render_search

if TYPE_CHECKING:
    from assistantd.engine.supervisor import Engine

log = logging.getLogger("assistantd.engine")

MAX_MODEL_CALLS = 32  # a model that keeps calling tools is stopped rather than looping forever
_TOKEN_RESERVE = 1024  # room kept for the model's answer when truncating to the context window


class _Stop(Exception):
    """End the run now with this terminal status."""

    def __init__(
        self, status: str, *, last_error: dict[str, str] | None = None, incomplete_reason: str | None = None
    ) -> None:
        super().__init__(status)
        self.status = status
        self.last_error = last_error
        self.incomplete_reason = incomplete_reason


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
    usage: Usage | None = None
    wrote_message: bool = False


class RunJob:
    def __init__(self, engine: Engine, project: str, run_id: str) -> None:
        self.engine = engine
        self.db = engine.db
        self.project = project
        self.run_id = run_id
        self.run: dict[str, Any] = {}
        self.state: dict[str, Any] = {}
        self.message: dict[str, Any] | None = None  # the assistant message being streamed
        self.message_step: dict[str, Any] | None = None
        self.tool_step: dict[str, Any] | None = None
        self.cancel_requested = False
        self.shutting_down = False
        self.started = False  # a task cancelled before its first step never runs its own handlers
        self.ending = False  # closing the run: a cancel arriving now must not interrupt the closing write
        self._turn: _Turn | None = None
        self.thread: dict[str, Any] = {}
        self.assistant: dict[str, Any] = {}
        self.attachments: list[dict[str, Any]] = []

    # --- events -----------------------------------------------------------------------------

    def emit(self, name: str, data: Any) -> None:
        # Serialized now: the objects keep changing after the event is sent.
        self.engine.bus.publish(self.run_id, name, orjson.dumps(data))

    # --- lifecycle ----------------------------------------------------------------------------

    async def execute(self, *, announce: bool, resumed_step: dict[str, Any] | None) -> None:
        self.started = True
        try:
            record, queued = await self.db.write(self._begin)
            if record is None:
                return  # deleted before it started
            self.run, self.state = record.run, record.state
            if announce:
                self.emit("thread.run.created", queued or self.run)
            if resumed_step is not None:
                self.emit("thread.run.step.completed", resumed_step)
            self.emit("thread.run.queued", queued or self.run)
            if queued is None:
                raise _Stop("cancelled")  # a cancel landed before we started
            self.emit("thread.run.in_progress", self.run)
            await self._loop()
        except _Stop as stop:
            await self._end(stop.status, last_error=stop.last_error, incomplete_reason=stop.incomplete_reason)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # finish the bookkeeping below before the task ends
            if self.cancel_requested and not self.shutting_down:
                await self._end("cancelled")
            else:
                await self._end(
                    "failed",
                    last_error={
                        "code": "server_error",
                        "message": "The server was shut down while this run was in progress.",
                    },
                )
        except UpstreamError as exc:
            await self._end("failed", last_error={"code": exc.code, "message": exc.message})
        except NoRoute as exc:
            await self._end("failed", last_error={"code": "server_error", "message": str(exc)})
        except Exception:
            log.exception("run %s failed on an internal error", self.run_id)
            await self._end(
                "failed",
                last_error={
                    "code": "server_error",
                    "message": "The server had an internal error while executing this run.",
                },
            )
        finally:
            self.engine.bus.end(self.run_id)

    def _begin(self, conn: Conn) -> tuple[run_rows.RunRecord | None, dict[str, Any] | None]:
        """Load the run and mark it in_progress in one transaction (one database round trip, not two).

        Returns the record and, if it was still queued, the run as it was before (what the
        ``created``/``queued`` events show); None when a cancel got there first.
        """
        record = run_rows.load(conn, self.project, self.run_id)
        if record is None or record.run["status"] != "queued":
            return record, None
        started = {**record.run, "status": "in_progress", "started_at": record.run["started_at"] or now()}
        if not run_rows.save(conn, self.project, started, record.state, expect="queued"):
            return record, None
        queued, record.run = record.run, started
        return record, queued

    async def _end(
        self, status: str, *, last_error: dict[str, str] | None = None, incomplete_reason: str | None = None
    ) -> None:
        self.ending = True
        if status == "cancelled" and self.run:
            self.run["status"] = "cancelling"
            self.emit("thread.run.cancelling", self.run)
        pending = self.message
        pending_step = self.tool_step
        turn = self._turn
        if pending_step is not None and turn is not None and not pending_step["step_details"]["tool_calls"]:
            # Ended mid-turn: keep the calls that were already streamed on the stored step.
            pending_step["step_details"]["tool_calls"] = _call_details(turn)

        def tx(conn: Conn) -> Closed:
            if pending is not None:
                if self._turn_text:
                    pending["content"] = [text_block(self._turn_text)]
                rows.replace(conn, rows.MESSAGES, self.project, pending)
            if pending_step is not None:
                # Its calls were streamed: the stored step keeps them when it is closed with the run.
                run_rows.save_step(conn, self.project, pending_step)
            current = run_rows.load(conn, self.project, self.run_id)
            if current is None or current.run["status"] in run_rows.TERMINAL:
                return Closed()  # already ended (deleted, or closed by a reaper): nothing to overwrite
            return close_run(
                conn,
                self.project,
                current.run,
                self.state,
                status,
                last_error=last_error,
                incomplete_reason=incomplete_reason,
            )

        try:
            closed = await self.db.write(tx)
        except Exception:
            # The lease lapses and the reaper ends the run; nothing else can be done from here.
            log.exception("run %s could not be closed as %s", self.run_id, status)
            return
        self._announce(closed)
        log.info("run ended run_id=%s status=%s", self.run_id, status)

    def _announce(self, closed: Closed) -> None:
        for message in closed.messages:
            self.emit(f"thread.message.{message['status']}", message)
        for step in closed.steps:
            self.emit(f"thread.run.step.{step['status']}", step)
        if closed.run:
            self.run = closed.run
            self.emit(f"thread.run.{closed.run['status']}", closed.run)

    # --- the model/tool loop --------------------------------------------------------------------

    _turn_text = ""

    async def _loop(self) -> None:
        for _ in range(MAX_MODEL_CALLS):
            self._check_budgets()
            request = await self._request()
            route = self.engine.router.resolve(self.run["model"])
            turn = self._turn = _Turn()
            self._turn_text = ""
            async for event in route.model.stream(ChatRequest(**{**request, "model": route.upstream_model})):
                if isinstance(event, TextDelta):
                    await self._on_text(turn, event.text)
                elif isinstance(event, ToolCallDelta):
                    await self._on_tool_delta(turn, event)
                elif isinstance(event, Usage):
                    turn.usage = event
                elif isinstance(event, Finish):
                    turn.finish = event.reason
            self._add_usage(turn.usage)
            if not await self._finish_turn(turn):
                return
        raise _Stop(
            "failed",
            last_error={
                "code": "server_error",
                "message": f"The model called tools {MAX_MODEL_CALLS} times without answering; the run was stopped.",
            },
        )

    def _check_budgets(self) -> None:
        usage = self.state.get("usage") or {}
        max_completion = self.run.get("max_completion_tokens")
        if max_completion and usage.get("completion_tokens", 0) >= max_completion:
            raise _Stop("incomplete", incomplete_reason="max_completion_tokens")
        max_prompt = self.run.get("max_prompt_tokens")
        if max_prompt and usage.get("prompt_tokens", 0) >= max_prompt:
            raise _Stop("incomplete", incomplete_reason="max_prompt_tokens")

    def _add_usage(self, usage: Usage | None) -> None:
        if usage is None:
            return
        total = self.state.setdefault("usage", {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        total["prompt_tokens"] += usage.prompt_tokens
        total["completion_tokens"] += usage.completion_tokens
        total["total_tokens"] = total["prompt_tokens"] + total["completion_tokens"]

    async def _request(self) -> dict[str, Any]:
        def tx(conn: Conn) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any, Any]:
            return (
                run_rows.thread_messages(conn, self.project, self.run["thread_id"]),
                run_rows.steps_of(conn, self.project, self.run_id),
                rows.get(conn, rows.THREADS, self.project, self.run["thread_id"]),
                rows.get(conn, rows.ASSISTANTS, self.project, self.run["assistant_id"]),
            )

        messages, steps, thread, assistant = await self.db.read(tx)
        self.thread, self.assistant = thread or {"id": self.run["thread_id"]}, assistant or {}
        self.attachments = [a for m in messages for a in m.get("attachments") or []]
        by_id = {m["id"]: m for m in messages}
        system = [{"role": "system", "content": self.run["instructions"]}] if self.run["instructions"] else []
        turns = context.run_turns(steps, by_id, self.state.get("server_calls"))
        fixed = sum(context.message_tokens(m) for m in [*system, *turns])
        budget = self.engine.context_tokens - context.answer_reserve(self.engine.context_tokens) - fixed
        usage = self.state.get("usage") or {}
        if self.run.get("max_prompt_tokens"):
            budget = min(budget, self.run["max_prompt_tokens"] - usage.get("prompt_tokens", 0) - fixed)
        history = context.truncate(
            context.thread_history(messages, self.run_id), self.run.get("truncation_strategy"), max(budget, 0)
        )
        tools = []
        for tool in self.run["tools"]:
            if tool["type"] == "function":
                tools.append({"type": "function", "function": tool["function"]})
            elif tool["type"] in self.engine.tools:
                tools.append(self.engine.tools[tool["type"]].definition(tool))
        choice = self.run.get("tool_choice") or "auto"
        if isinstance(choice, dict):
            if choice.get("type") == "function":
                choice = {"type": "function", "function": {"name": (choice.get("function") or {}).get("name", "")}}
            else:
                choice = "required"  # a named server-side tool: the model must call a tool
        max_tokens = None
        if self.run.get("max_completion_tokens"):
            max_tokens = self.run["max_completion_tokens"] - usage.get("completion_tokens", 0)
        fmt = self.run.get("response_format")
        return {
            "model": self.run["model"],
            "messages": [*system, *history, *turns],
            "tools": tools,
            "tool_choice": choice if tools else None,
            "parallel_tool_calls": None if self.run.get("parallel_tool_calls", True) else False,
            "temperature": self.run.get("temperature"),
            "top_p": self.run.get("top_p"),
            "max_tokens": max_tokens,
            "response_format": fmt if isinstance(fmt, dict) and fmt.get("type") != "text" else None,
            "reasoning_effort": self.state.get("reasoning_effort"),
        }

    async def _on_text(self, turn: _Turn, text: str) -> None:
        if self.message is None:
            await self._open_message()
            turn.wrote_message = True
        assert self.message is not None
        delta: dict[str, Any] = {"index": 0, "type": "text", "text": {"value": text}}
        if not turn.text:
            delta["text"]["annotations"] = []
        turn.text += text
        self._turn_text = turn.text
        self.emit(
            "thread.message.delta",
            {"id": self.message["id"], "object": "thread.message.delta", "delta": {"content": [delta]}},
        )

    async def _open_message(self) -> None:
        message = new_message(self.run)
        step = new_step(self.run, {"type": "message_creation", "message_creation": {"message_id": message["id"]}})

        def tx(conn: Conn) -> None:
            run_rows.insert_step(conn, self.project, step)
            rows.insert(
                conn, rows.MESSAGES, self.project, message, thread_id=message["thread_id"], run_id=message["run_id"]
            )

        await self.db.write(tx)
        self.message, self.message_step = message, step
        self.emit("thread.run.step.created", step)
        self.emit("thread.run.step.in_progress", step)
        self.emit("thread.message.created", message)
        self.emit("thread.message.in_progress", message)

    async def _close_message(self, turn: _Turn, usage: Usage | None) -> None:
        message, step = self.message, self.message_step
        assert message is not None and step is not None
        moment = now()
        message["content"] = [text_block(turn.text)]
        self._decorate(message)
        if turn.finish == "length":
            message.update(status="incomplete", incomplete_at=moment, incomplete_details={"reason": "max_tokens"})
        else:
            message.update(status="completed", completed_at=moment)
        step.update(status="completed", completed_at=moment, usage=_usage_json(usage))

        def tx(conn: Conn) -> None:
            rows.replace(conn, rows.MESSAGES, self.project, message)
            run_rows.save_step(conn, self.project, step)

        await self.db.write(tx)
        self.message = self.message_step = None
        self._turn_text = ""
        self.emit(f"thread.message.{message['status']}", message)
        self.emit("thread.run.step.completed", step)

    def _decorate(self, message: dict[str, Any]) -> None:
        """Cite search results and link written files in the text; show the images made since the last
        message. Streamed as one more delta, so the SDK's snapshot matches the completed message."""
        text = message["content"][0]["text"]
        found = annotate(text["value"], self.state.get("citations") or {}, self.state.get("links") or {})
        images = self.state.pop("images", [])
        if not found and not images:
            return
        text["annotations"] = found
        blocks = [{"type": "image_file", "image_file": {"file_id": fid}} for fid in images]
        message["content"] += blocks
        delta: list[dict[str, Any]] = []
        if found:
            delta.append(
                {"index": 0, "type": "text", "text": {"annotations": [{"index": i, **a} for i, a in enumerate(found)]}}
            )
        delta += [{"index": i + 1, **b} for i, b in enumerate(blocks)]
        self.emit(
            "thread.message.delta", {"id": message["id"], "object": "thread.message.delta", "delta": {"content": delta}}
        )

    async def _on_tool_delta(self, turn: _Turn, delta: ToolCallDelta) -> None:
        if self.message is not None:
            # Text before tool calls is its own message; it ends where the calls begin.
            await self._close_message(turn, None)
            turn.text = ""
        if self.tool_step is None:
            step = new_step(self.run, {"type": "tool_calls", "tool_calls": []})
            await self.db.write(lambda c: run_rows.insert_step(c, self.project, step))
            self.tool_step = step
            self.emit("thread.run.step.created", step)
            self.emit("thread.run.step.in_progress", step)
        call = turn.calls.get(delta.index)
        if call is None:
            call = turn.calls[delta.index] = _Call(id=new_id("call"), out_index=len(turn.calls))
        if delta.name and not call.name:
            call.name = delta.name
        call.arguments += delta.arguments
        if not call.name:
            return  # announced once its name is known
        builtin = self._builtin(call.name)
        if not call.announced:
            call.announced = True
            turn.streaming_index = call.out_index
            if builtin is not None:
                first = builtin.first_details()
                partial = builtin.input_delta(call.arguments, call.arguments) or {}
                self._emit_step_delta(
                    {"index": call.out_index, "id": call.id, "type": builtin.type, builtin.type: {**first, **partial}}
                )
                return
            self._emit_step_delta(
                {
                    "index": call.out_index,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments, "output": None},
                }
            )
        elif builtin is not None:
            if delta.arguments and call.out_index == turn.streaming_index:
                piece = builtin.input_delta(call.arguments, delta.arguments)
                if piece:
                    self._emit_step_delta({"index": call.out_index, "type": builtin.type, builtin.type: piece})
        elif delta.arguments and call.out_index == turn.streaming_index:
            # Deltas for an earlier call arriving late are left to the completed objects: the SDK's
            # helper must never see indices go backwards.
            self._emit_step_delta(
                {"index": call.out_index, "type": "function", "function": {"arguments": delta.arguments}}
            )

    def _emit_step_delta(self, call_delta: dict[str, Any]) -> None:
        assert self.tool_step is not None
        self.emit(
            "thread.run.step.delta",
            {
                "id": self.tool_step["id"],
                "object": "thread.run.step.delta",
                "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call_delta]}},
            },
        )

    async def _finish_turn(self, turn: _Turn) -> bool:
        """Record what the model said; True to ask the model again (tools ran on the server)."""
        if self.message is not None:
            await self._close_message(turn, turn.usage)
            if turn.finish == "length" and self.run.get("max_completion_tokens"):
                raise _Stop("incomplete", incomplete_reason="max_completion_tokens")
        calls = [c for c in sorted(turn.calls.values(), key=lambda c: c.out_index) if c.name]
        if not calls:
            if not turn.wrote_message:
                # The model said nothing at all: still answer with a (empty) message, as the SDK expects one.
                await self._open_message()
                await self._close_message(turn, turn.usage)
            self._check_prompt_budget()
            await self._complete()
            return False
        if self.run.get("parallel_tool_calls") is False:
            calls = calls[:1]
        step = self.tool_step
        assert step is not None
        details = {c.id: d for c, d in zip(calls, _call_details(turn, calls), strict=True)}
        for call in calls:
            builtin = self._builtin(call.name)
            if builtin is not None:
                details[call.id] = await self._run_builtin(builtin, call)
        step["step_details"]["tool_calls"] = [details[c.id] for c in calls]
        step["usage"] = _usage_json(turn.usage)
        functions = [c for c in calls if self._builtin(c.name) is None]
        if not functions:
            # Every call ran here: the step is done and the model reads the results.
            step.update(status="completed", completed_at=now())
            self.tool_step = None

            def done(conn: Conn) -> None:
                run_rows.save_step(conn, self.project, step)
                run_rows.save(conn, self.project, self.run, self.state)

            await self.db.write(done)
            self.emit("thread.run.step.completed", step)
            self._check_prompt_budget()
            return True
        calls = functions
        self._check_prompt_budget()  # over budget: the step, calls filled in, is closed with the run
        self.tool_step = None
        self.run["status"] = "requires_action"
        self.run["required_action"] = {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {
                "tool_calls": [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in calls
                ]
            },
        }
        self.state["pending_step_id"] = step["id"]

        def tx(conn: Conn) -> None:
            run_rows.save_step(conn, self.project, step)
            # Persisted before the event goes out: a client may submit outputs the moment it sees it.
            if not run_rows.save(conn, self.project, self.run, self.state, release=True, expect="in_progress"):
                raise _Stop("cancelled")  # rolls the step back too; the cancel wins

        try:
            await self.db.write(tx)
        except _Stop:
            self.tool_step = step  # still open: it is closed as cancelled with the run
            raise
        self.emit("thread.run.requires_action", self.run)
        return False

    def _builtin(self, name: str) -> BuiltinTool | None:
        """The server tool a call is for, if the run has that tool and this server runs it."""
        tool = self.engine.tools.get(name)
        if tool is None or not any(t["type"] == name for t in self.run["tools"]):
            return None
        return tool

    async def _run_builtin(self, tool: BuiltinTool, call: _Call) -> dict[str, Any]:
        """Run one server-side call; stream its outputs; remember what the model is told."""
        number = self.state.get("server_call_count", 0)
        self.state["server_call_count"] = number + 1

        def stream(partial: dict[str, Any]) -> None:
            self._emit_step_delta({"index": call.out_index, "type": tool.type, tool.type: partial})

        ctx = ToolContext(
            project=self.project,
            run=self.run,
            thread=self.thread,
            assistant=self.assistant,
            attachments=self.attachments,
            include=self.state.get("include") or [],
            stream=stream,
        )
        outcome = await tool.invoke(ctx, call.arguments)
        output = outcome.output
        if tool.type == "file_search" and not output:
            output = render_search(number, outcome.sources)
            citations = self.state.setdefault("citations", {})
            for i, source in enumerate(outcome.sources):
                citations[f"{number}:{i}"] = source["file_id"]
        self.state.setdefault("links", {}).update(outcome.files)
        self.state.setdefault("images", []).extend(outcome.images)
        self.state.setdefault("server_calls", {})[call.id] = {
            "name": call.name,
            "arguments": call.arguments,
            "output": output,
        }
        return {"id": call.id, "type": tool.type, tool.type: outcome.details}

    def _check_prompt_budget(self) -> None:
        max_prompt = self.run.get("max_prompt_tokens")
        usage = self.state.get("usage") or {}
        if max_prompt and usage.get("prompt_tokens", 0) > max_prompt:
            raise _Stop("incomplete", incomplete_reason="max_prompt_tokens")

    async def _complete(self) -> None:
        await self._end("completed")


def _usage_json(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _call_details(turn: _Turn, calls: list[_Call] | None = None) -> list[dict[str, Any]]:
    """The step's record of the turn's function calls, in the order they were streamed."""
    if calls is None:
        calls = [c for c in sorted(turn.calls.values(), key=lambda c: c.out_index) if c.name]
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments, "output": None}}
        for c in calls
    ]
