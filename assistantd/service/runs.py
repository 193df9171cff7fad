"""Runs: creation under the thread lock, reads, cancel, submit_tool_outputs, and run steps."""

from __future__ import annotations

import time
from typing import Any

from assistantd.clock import now
from assistantd.engine.bus import Subscription
from assistantd.engine.executor import Begun, run_started
from assistantd.engine.records import close_run
from assistantd.engine.state import RunState
from assistantd.engine.supervisor import Engine
from assistantd.engine.turns import RunContext
from assistantd.errors import InvalidRequest, NotFound
from assistantd.ids import new_id
from assistantd.protocol.common import dump
from assistantd.protocol.runs import (
    CreateRun,
    CreateThreadAndRun,
    ModifyRun,
    RunOptions,
    SubmitToolOutputs,
    tool_choice_json,
)
from assistantd.protocol.threads import CreateThread
from assistantd.service import messages
from assistantd.service.common import fetch, fetch_raw, page_or_400
from assistantd.service.threads import ThreadService
from assistantd.store import Conn, Database
from assistantd.store import objects as rows
from assistantd.store import runs as run_rows
from assistantd.store.base import UniqueViolation
from assistantd.store.objects import Page, PageQuery

KIND = "run"


class _Moved(Exception):
    """The run's status changed between reading and writing it."""


def _locked(thread_id: str, run_id: str | None) -> InvalidRequest:
    if run_id is None:  # it ended between our insert and the look at it
        return InvalidRequest(f"Thread {thread_id} had an active run a moment ago; try again.")
    return InvalidRequest(f"Thread {thread_id} already has an active run {run_id}.")


def _build_run(
    req: RunOptions, assistant: dict[str, Any], thread_id: str, expiry: int, additional_instructions: str | None
) -> dict[str, Any]:
    created_at = now()
    given = req.model_fields_set
    instructions = (
        req.instructions
        if "instructions" in given and req.instructions is not None
        else (assistant.get("instructions") or "")
    )
    if additional_instructions:
        instructions = f"{instructions}\n\n{additional_instructions}" if instructions else additional_instructions
    fmt = req.response_format
    return {
        "id": new_id("run"),
        "object": "thread.run",
        "created_at": created_at,
        "assistant_id": assistant["id"],
        "thread_id": thread_id,
        "status": "queued",
        "required_action": None,
        "last_error": None,
        "expires_at": created_at + expiry,
        "started_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "incomplete_details": None,
        "model": req.model or assistant["model"],
        "instructions": instructions,
        "tools": [dump(t) for t in req.tools] if req.tools is not None else assistant["tools"],
        "metadata": dict(req.metadata or {}),
        "usage": None,
        "temperature": req.temperature if req.temperature is not None else assistant.get("temperature", 1.0),
        "top_p": req.top_p if req.top_p is not None else assistant.get("top_p", 1.0),
        "max_prompt_tokens": req.max_prompt_tokens,
        "max_completion_tokens": req.max_completion_tokens,
        "truncation_strategy": dump(req.truncation_strategy)
        if req.truncation_strategy
        else {"type": "auto", "last_messages": None},
        "tool_choice": tool_choice_json(req.tool_choice),
        "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        "response_format": (
            dump(fmt)
            if fmt is not None and fmt != "auto"
            else ("auto" if fmt == "auto" else assistant.get("response_format", "auto"))
        ),
    }


def _fetch_assistant(conn: Conn, project: str, assistant_id: str) -> dict[str, Any]:
    assistant = rows.get(conn, rows.ASSISTANTS, project, assistant_id)
    if assistant is None:
        raise NotFound.object("assistant", assistant_id)
    return assistant


class RunService:
    def __init__(self, db: Database, engine: Engine, threads: ThreadService, *, expiry_seconds: int) -> None:
        self.db = db
        self.engine = engine
        self.threads = threads
        self.expiry = expiry_seconds

    def _insert_run(self, conn: Conn, project: str, run: dict[str, Any], state: dict[str, Any]) -> None:
        # Held from its first commit (no reaper sees it unowned). A thread with an active run already
        # fails the INSERT (the runs_one_active index): UniqueViolation, answered by ``_lock_lost``.
        run_rows.insert(conn, project, run, state, lease=self.engine.leases.new())

    async def _lock_lost(self, thread_id: str) -> InvalidRequest:
        """The thread has an active run (the one-active-run index refused ours): name it."""
        active = await self.db.read(lambda c: run_rows.active_run_id(c, thread_id))
        return _locked(thread_id, active)

    async def create(
        self, project: str, thread_id: str, req: CreateRun, *, include: list[str], stream: bool
    ) -> tuple[dict[str, Any], Subscription | None]:
        since = time.perf_counter()  # the run's wait for its model call counts from here (observability)
        searchable = messages.file_search_attachments(req.additional_messages or [])
        attach = bool(searchable) and self.threads.attach is not None
        state = RunState(include=include, reasoning_effort=req.reasoning_effort)

        def tx(conn: Conn) -> tuple[dict[str, Any], Begun | None]:
            inputs = run_rows.create_inputs(conn, project, thread_id, req.assistant_id)
            thread, assistant = inputs.thread, inputs.assistant
            if thread is None:
                raise NotFound.object("thread", thread_id)
            if assistant is None:
                raise NotFound.object("assistant", req.assistant_id)
            for i, m in enumerate(req.additional_messages or []):
                messages.check_references(conn, project, m, f"additional_messages[{i}]")
            run = _build_run(req, assistant, thread_id, self.expiry, req.additional_instructions)
            created = run["created_at"]
            # Stored already started, unless its files must first be attached to the thread's store
            # (before it may search): the executor then neither reads it back nor writes it before its
            # first model call (a write and a database round trip fewer a run). The caller and the
            # ``created``/``queued`` events see it queued, as created.
            stored = run if attach else run_started(run)
            self._insert_run(conn, project, stored, state.to_json())
            history = inputs.messages
            for m in req.additional_messages or []:
                added = messages.build(m, thread_id, created)
                messages.insert(conn, project, added)
                history.append(added)  # after the thread's own, as their order in the thread is
            if attach:
                return run, None
            context = RunContext(messages=history, steps=[], thread=thread, assistant=assistant)  # no steps yet
            return run, Begun(run, stored, state, context)

        try:
            run, begun = await self.db.write(tx)
        except UniqueViolation:
            raise await self._lock_lost(thread_id) from None
        if attach and self.threads.attach is not None:
            await self.threads.attach(project, thread_id, searchable)  # before the run can search
        sub = self.engine.start(project, run["id"], announce=True, subscribe=stream, begun=begun, since=since)
        return run, sub

    async def create_thread_and_run(
        self, project: str, req: CreateThreadAndRun, *, stream: bool
    ) -> tuple[dict[str, Any], dict[str, Any], Subscription | None]:
        since = time.perf_counter()
        thread_req = req.thread or CreateThread()
        if req.tool_resources is not None:
            thread_req = thread_req.model_copy(update={"tool_resources": req.tool_resources})
        # The assistant is checked before the thread exists so a bad id creates nothing.
        await self.db.read(lambda c: _fetch_assistant(c, project, req.assistant_id))
        thread = await self.threads.create(project, thread_req)

        def tx(conn: Conn) -> dict[str, Any]:
            assistant = _fetch_assistant(conn, project, req.assistant_id)
            run = _build_run(req, assistant, thread["id"], self.expiry, None)
            self._insert_run(conn, project, run, RunState().to_json())
            return run

        run = await self.db.write(tx)
        sub = self.engine.start(project, run["id"], announce=True, subscribe=stream, since=since)
        return thread, run, sub

    async def active_counts(self) -> dict[str, int]:
        """Runs in each active status, across every project (an operator's gauge)."""
        return await self.db.read(run_rows.active_by_status)

    async def retrieve(self, project: str, thread_id: str, run_id: str) -> dict[str, Any]:
        def tx(conn: Conn) -> dict[str, Any]:
            _require_thread(conn, project, thread_id)
            return fetch(conn, rows.RUNS, project, KIND, run_id, thread_id=thread_id)

        return await self.db.read(tx)

    async def list_page(self, project: str, thread_id: str, query: PageQuery) -> Page:
        def tx(conn: Conn) -> Page:
            _require_thread(conn, project, thread_id)
            return page_or_400(conn, rows.RUNS, project, query, KIND, thread_id=thread_id)

        return await self.db.read(tx)

    async def modify(self, project: str, thread_id: str, run_id: str, req: ModifyRun) -> dict[str, Any]:
        def tx(conn: Conn) -> dict[str, Any]:
            _require_thread(conn, project, thread_id)
            record = run_rows.load(conn, project, run_id, thread_id)
            if record is None:
                raise NotFound.object(KIND, run_id)
            if "metadata" in req.model_fields_set:
                record.run["metadata"] = dict(req.metadata or {})
            run_rows.save(conn, project, record.run)
            return record.run

        return await self.db.write(tx)

    async def cancel(self, project: str, thread_id: str, run_id: str) -> dict[str, Any]:
        def tx(conn: Conn) -> dict[str, Any]:
            _require_thread(conn, project, thread_id)
            record = run_rows.load(conn, project, run_id, thread_id)
            if record is None:
                raise NotFound.object(KIND, run_id)
            status = record.run["status"]
            if status == "requires_action":
                # Nobody is executing it: it ends here.
                return close_run(conn, project, record.run, record.state, "cancelled").run
            if status not in run_rows.CANCELLABLE_BY_EXECUTOR:
                raise InvalidRequest(f"Cannot cancel run with status '{status}'.")
            record.run["status"] = "cancelling"
            if not run_rows.save(conn, project, record.run, expect=status):
                raise _Moved()
            return record.run

        for _attempt in range(5):
            try:
                run = await self.db.write(tx)
                break
            except _Moved:
                continue  # the executing server moved the run on meanwhile: decide again
        else:
            raise InvalidRequest(f"Run {run_id} is changing state too quickly to cancel; try again.")
        if run["status"] == "cancelling":
            self.engine.cancel_local(run_id)  # elsewhere, the executing server sees it in the database
        return run

    async def submit_tool_outputs(
        self, project: str, thread_id: str, run_id: str, req: SubmitToolOutputs
    ) -> tuple[dict[str, Any], Subscription | None, list[str]]:
        """The run, its event subscription if streamed, and the run's include[] (what its stream may show)."""
        since = time.perf_counter()

        def tx(conn: Conn) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
            _require_thread(conn, project, thread_id)
            record = run_rows.load(conn, project, run_id, thread_id)
            if record is None:
                raise NotFound.object(KIND, run_id)
            run, state = record.run, RunState.from_json(record.state)
            if run["status"] != "requires_action" or not run.get("required_action"):
                raise InvalidRequest(
                    f'Runs in status "{run["status"]}" do not accept tool outputs.', code="invalid_request"
                )
            pending = [c["id"] for c in run["required_action"]["submit_tool_outputs"]["tool_calls"]]
            given = [o.tool_call_id for o in req.tool_outputs]
            for i, call_id in enumerate(given):
                if call_id not in pending:
                    raise InvalidRequest(
                        f"Invalid 'tool_outputs[{i}].tool_call_id': no pending tool call '{call_id}' on run "
                        f"{run_id}. Pending: {', '.join(pending)}.",
                        param=f"tool_outputs[{i}].tool_call_id",
                        code="invalid_value",
                    )
                if given.count(call_id) > 1:
                    raise InvalidRequest(
                        f"Duplicate tool output for tool call '{call_id}'.",
                        param=f"tool_outputs[{i}].tool_call_id",
                        code="invalid_value",
                    )
            missing = [p for p in pending if p not in given]
            if missing:
                raise InvalidRequest(
                    f"Expected tool outputs for call_ids {pending}, got {given}. Submit every pending output "
                    "in one request.",
                    param="tool_outputs",
                    code="invalid_value",
                )
            outputs = {o.tool_call_id: o.output for o in req.tool_outputs}
            step = fetch(conn, rows.STEPS, project, "run step", state.pending_step_id or "", run_id=run_id)
            for call in step["step_details"]["tool_calls"]:
                if call["type"] == "function" and call["id"] in outputs:
                    call["function"]["output"] = outputs[call["id"]]
            step.update(status="completed", completed_at=now())
            run_rows.save_step(conn, project, step)
            run.update(status="queued", required_action=None)
            state.pending_step_id = None
            run_rows.save(conn, project, run, state.to_json())
            self.engine.leases.take(conn, run_id)
            return run, step, list(state.include)

        run, step, include = await self.db.write(tx)
        sub = self.engine.start(
            project, run_id, announce=False, resumed_step=step, subscribe=bool(req.stream), since=since
        )
        return run, sub, include

    async def list_steps(self, project: str, thread_id: str, run_id: str, query: PageQuery) -> Page:
        def tx(conn: Conn) -> Page:
            _require_thread(conn, project, thread_id)
            if not rows.exists(conn, rows.RUNS, project, run_id, thread_id=thread_id):
                raise NotFound.object(KIND, run_id)
            return page_or_400(conn, rows.STEPS, project, query, "run step", run_id=run_id)

        return await self.db.read(tx)

    async def retrieve_step(self, project: str, thread_id: str, run_id: str, step_id: str) -> str:
        def tx(conn: Conn) -> str:
            _require_thread(conn, project, thread_id)
            if not rows.exists(conn, rows.RUNS, project, run_id, thread_id=thread_id):
                raise NotFound.object(KIND, run_id)
            return fetch_raw(conn, rows.STEPS, project, "run step", step_id, run_id=run_id)

        return await self.db.read(tx)


def _require_thread(conn: Conn, project: str, thread_id: str) -> None:
    if not rows.exists(conn, rows.THREADS, project, thread_id):
        raise NotFound.object("thread", thread_id)
