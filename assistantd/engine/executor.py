"""One execution of a run: from ``queued`` to a terminal state or ``requires_action``.

The executor loads the run, drives the turn loop (``turns.py``) and does what its events ask: it
persists them at step boundaries and publishes them on the bus as the API's stream events. Streamed
text is saved by the engine every ``stream_save_seconds`` (one write for all open messages), so a killed
process loses at most that much of it. Writes that change nothing a client could read before the run
ends (closing the last message, then the run) are merged into one transaction. Every way out ends in
``records.close_run`` or ``requires_action``, so no run is left active with nobody executing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from assistantd.clock import now
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
from assistantd.engine.records import Closed, close_run, text_block
from assistantd.engine.state import RunState
from assistantd.engine.takeover import in_context
from assistantd.engine.turns import RunContext, TurnLoop
from assistantd.llm.base import UpstreamError
from assistantd.llm.router import NoRoute
from assistantd.observability import collector
from assistantd.observability.hooks import RunCalls, log_run_ended, run_span
from assistantd.store import Conn
from assistantd.store import objects as rows
from assistantd.store import runs as run_rows

if TYPE_CHECKING:
    from assistantd.engine.supervisor import Engine

log = logging.getLogger("assistantd.engine")

Write = Callable[[Conn], None]


class _Cancelled(Exception):
    """A cancel won the race for the run's status."""


class OpenMessage:
    """The message being streamed, as the engine's periodic partial save sees it."""

    def __init__(self, project: str, message: dict[str, Any]) -> None:
        self.project = project
        self.message = message
        self.saved = rows.dumps(message)  # what the row holds now
        self.text: list[str] = []
        self.annotations: list[dict[str, Any]] = []
        self.dirty = False

    def snapshot(self) -> str:
        message = {**self.message, "content": [text_block("".join(self.text))]}
        message["content"][0]["text"]["annotations"] = list(self.annotations)
        return rows.dumps(message)


@dataclass
class Begun:
    """A run stored in_progress by the transaction that created it: what ``_begin`` would have read."""

    queued: dict[str, Any]  # the run as created, what the ``created``/``queued`` events show
    started: dict[str, Any]  # the same, in_progress, as stored
    state: RunState
    context: RunContext


def _retrieved(write: asyncio.Future[None]) -> None:
    """An early message's write whose run ended without waiting for it (another server took the run over)
    must not warn that its outcome was never looked at."""
    if not write.cancelled():
        write.exception()


def run_started(run: dict[str, Any]) -> dict[str, Any]:
    """A queued run as it starts executing."""
    return {**run, "status": "in_progress", "started_at": run["started_at"] or now()}


class RunExecutor:
    def __init__(self, engine: Engine, project: str, run_id: str) -> None:
        self.engine = engine
        self.db = engine.db
        self.project = project
        self.run_id = run_id
        self.run: dict[str, Any] = {}
        self.state = RunState()
        self.loop: TurnLoop | None = None
        self.open_message: OpenMessage | None = None
        self.cancel_requested = False
        self.shutting_down = False  # the server stops: hand the run over (lease released), do not fail it
        self.lost = False  # another server holds the run now (our lease lapsed): write nothing more
        self.resume = False  # taken over in_progress from a server that is gone
        self.started = False  # a task cancelled before its first step never runs its own handlers
        self.ending = False  # closing the run: a cancel arriving now must not interrupt the closing write
        self._deferred: list[tuple[Write, list[tuple[str, Any]]]] = []
        self.calls: RunCalls | None = None  # its model calls, for its log line
        self.since = time.perf_counter()  # asked for (or picked up); the wait for its model call counts from here
        # Collections wait while runs are being set up (observability/collector.py): released when its
        # first model call goes out, or when its task ends (the supervisor's done callback, which always runs).
        self.setup = collector.hold()
        # The open message's id, and its text deltas' bytes before the value (``_on_text``).
        self._delta_prefix: tuple[str, bytes] = ("", b"")
        # The open message has been announced and its first text not sent yet: that text, with the
        # announcement, is written to the run's streams at once (``now``), everything after it batched.
        self._first_text = False
        # A message opened early (``MessageOpened.early``), being written while the model thinks and not
        # announced yet, and that write.
        self._early: MessageOpened | None = None
        self._early_write: asyncio.Future[None] | None = None

    # --- events out -------------------------------------------------------------------------------

    def emit(self, name: str, data: Any, *, more: bool = False, now: bool = False) -> None:
        """``more``: another event follows in this same turn (the bus sends them together); ``now``: it is
        written at once rather than with the stream's next write (bus.py)."""
        # Serialized now: the objects keep changing after the event is sent.
        self.engine.bus.publish(self.run_id, name, orjson.dumps(data), more=more, now=now)

    # --- lifecycle --------------------------------------------------------------------------------

    async def execute(self, *, announce: bool, resumed_step: dict[str, Any] | None, begun: Begun | None = None) -> None:
        self.started = True
        try:
            queued: dict[str, Any] | None
            context: RunContext | None
            if begun is not None:
                # Stored in_progress by the creating transaction: nothing to read or write before the model call.
                self.run, self.state = begun.started, begun.state
                queued, context = begun.queued, begun.context
            else:
                loaded = await self.db.write(self._begin)
                if loaded is None:
                    return  # deleted before it started
                queued, context = loaded
            shown = orjson.dumps(queued or self.run)  # one serialization for both events
            if announce:
                self.engine.bus.publish(self.run_id, "thread.run.created", shown)
            if resumed_step is not None:
                self.emit("thread.run.step.completed", resumed_step)
            if not self.resume:
                self.engine.bus.publish(self.run_id, "thread.run.queued", shown)
            if queued is None or context is None or self.cancel_requested:
                await self._end(RunFinished("cancelled"))  # a cancel landed before we started
                return
            self.emit("thread.run.in_progress", self.run)
            # Model and tool call spans nest under the run's span (observability/hooks.py).
            with run_span(
                project=self.project,
                thread_id=self.run["thread_id"],
                run_id=self.run_id,
                model=self.run["model"],
                since=self.since,
                setup=self.setup,
            ) as self.calls:
                route = self.engine.router.resolve(self.run["model"])
                self.loop = TurnLoop(
                    project=self.project,
                    run=self.run,
                    state=self.state,
                    context=context,
                    model=route.model,
                    upstream_model=route.upstream_model,
                    tools=self.engine.tools,
                    context_tokens=self.engine.context_tokens,
                )
                async with contextlib.aclosing(self.loop.events()) as events:  # type: ignore[type-var]
                    async for event in events:
                        if isinstance(event, RunFinished):
                            await self._end(event)
                            return
                        if await self._handle(event):
                            return
        except _Cancelled:
            await self._end(RunFinished("cancelled"))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # finish the bookkeeping below before the task ends
            if self.lost:
                log.warning("run %s is held by another server now; stopped here", self.run_id)
            elif self.cancel_requested and not self.shutting_down:
                await self._end(RunFinished("cancelled"))
            else:
                await self._hand_over()
        except UpstreamError as exc:
            await self._end(RunFinished("failed", last_error={"code": exc.code, "message": exc.message}))
        except NoRoute as exc:
            await self._end(RunFinished("failed", last_error={"code": "server_error", "message": str(exc)}))
        except Exception:
            log.exception("run %s failed on an internal error", self.run_id)
            await self._end(
                RunFinished(
                    "failed",
                    last_error={
                        "code": "server_error",
                        "message": "The server had an internal error while executing this run.",
                    },
                )
            )
        finally:
            self._forget_message()
            self.engine.bus.end(self.run_id)

    def _begin(self, conn: Conn) -> tuple[dict[str, Any] | None, RunContext | None] | None:
        """Load the run, mark it in_progress and read what its first model call needs, in one transaction.

        Returns the run as it was while queued (what the ``created``/``queued`` events show) and the
        context; (None, None) when a cancel got there first; None when the run is gone.
        """
        record = run_rows.load(conn, self.project, self.run_id)
        if record is None:
            return None
        self.run, self.state = record.run, RunState.from_json(record.state)
        status = record.run["status"]
        if self.resume and status == "in_progress":
            # Taken over mid-run (``takeover.adopt`` closed what the gone server left open): go on.
            queued = started = record.run
        else:
            if status != "queued":
                return None, None
            started = run_started(record.run)
            if not run_rows.save(conn, self.project, started, expect="queued"):
                return None, None
            queued = record.run
        self.run = started
        thread_id = started["thread_id"]
        context = RunContext(
            messages=run_rows.thread_messages(conn, self.project, thread_id),
            steps=[s for s in run_rows.steps_of(conn, self.project, self.run_id) if in_context(s)],
            thread=rows.get(conn, rows.THREADS, self.project, thread_id) or {"id": thread_id},
            assistant=rows.get(conn, rows.ASSISTANTS, self.project, started["assistant_id"]) or {},
        )
        return queued, context

    # --- the loop's events ------------------------------------------------------------------------

    async def _handle(self, event: Event) -> bool:
        """Persist and publish one event; True when the execution is over (requires_action)."""
        if self._early is not None:
            await self._announce_early()  # the model said something: its first text, or an empty answer
        if isinstance(event, TextDelta):
            self._on_text(event)
            return False
        if isinstance(event, ToolCallStarted | ToolInputDelta | ToolOutput):
            self._step_delta(event.step_id, event.call)
            return False
        if isinstance(event, ContentAdded):
            delta = {"content": event.blocks}
            self.emit(
                "thread.message.delta", {"id": event.message_id, "object": "thread.message.delta", "delta": delta}
            )
            return False
        if isinstance(event, TurnFinished):
            return False
        if isinstance(event, MessageClosed):
            # Saved with whatever comes next (usually the run's end): one write, not two.
            self._forget_message()
            message, step = event.message, event.step

            def close(conn: Conn) -> None:
                rows.replace(conn, rows.MESSAGES, self.project, message)
                run_rows.save_step(conn, self.project, step)

            self._defer(
                close,
                [(f"thread.message.{message['status']}", message), ("thread.run.step.completed", step)],
            )
            return False
        await self._flush()
        if isinstance(event, MessageOpened):
            await self._open_message(event)
        elif isinstance(event, ToolStepOpened):
            step = event.step
            await self.db.write(lambda c: run_rows.insert_step(c, self.project, step))
            self.emit("thread.run.step.created", step)
            self.emit("thread.run.step.in_progress", step)
        elif isinstance(event, StepCompleted):
            step, run, state = event.step, self.run, self.state.to_json()

            def done(conn: Conn) -> None:
                run_rows.save_step(conn, self.project, step)
                run_rows.save(conn, self.project, run, state)

            await self.db.write(done)
            self.emit("thread.run.step.completed", step)
        elif isinstance(event, EffectsStarting):
            run, state = self.run, self.state.to_json()
            # A cancel meanwhile leaves the stored status alone; the cancel poll then stops the call.
            await self.db.write(lambda c: run_rows.save(c, self.project, run, state, expect="in_progress"))
        elif isinstance(event, RequiresAction):
            await self._requires_action(event)
            return True
        return False

    def _defer(self, write: Write, events: list[tuple[str, Any]]) -> None:
        self._deferred.append((write, [(name, orjson.dumps(data)) for name, data in events]))

    async def _flush(self, extra: Callable[[Conn], Any] | None = None, *, more: bool = False) -> Any:
        """Write what was deferred (with ``extra``), then publish its events; ``more``: the caller publishes
        the next event right after (the run's end), so they go out together."""
        # Dropped only once written: if this write is interrupted (a cancel), the run's closing write
        # does them again (they are idempotent updates).
        deferred = list(self._deferred)
        if not deferred and extra is None:
            return None

        def tx(conn: Conn) -> Any:
            for write, _ in deferred:
                write(conn)
            return extra(conn) if extra is not None else None

        result = await self.db.write(tx)
        del self._deferred[: len(deferred)]
        for _, events in deferred:
            for name, data in events:
                self.engine.bus.publish(self.run_id, name, data, more=more)
        return result

    async def _open_message(self, event: MessageOpened) -> None:
        message, step = event.message, event.step
        write = self.db.write(lambda conn: run_rows.open_message(conn, self.project, step, message), one_statement=True)
        if event.early:
            # Written while the model call goes out and the model thinks; announced with what it says first.
            self._early, self._early_write = event, asyncio.ensure_future(write)
            self._early_write.add_done_callback(_retrieved)
            return
        await write
        self._announce_opened(message, step)

    async def _announce_early(self) -> None:
        event, write = self._early, self._early_write
        assert event is not None and write is not None
        await write  # done long since, as a rule: the model's first token takes longer than a write
        self._early = self._early_write = None  # only now: interrupted before this, the run's end removes it
        self._announce_opened(event.message, event.step)

    async def _unopen_early(self) -> Write | None:
        """The run ends before its early message was announced: the write that removes it (nobody was told
        of it, so it goes as if never made), or None if there is none (or it was never stored)."""
        event, write = self._early, self._early_write
        if event is None or write is None:
            return None
        self._early = self._early_write = None
        try:
            await write  # before the removal, which must not overtake it (PostgreSQL runs writes side by side)
        except Exception:
            return None
        step_id, message_id = event.step["id"], event.message["id"]
        return lambda conn: run_rows.unopen_message(conn, self.project, step_id, message_id)

    def _announce_opened(self, message: dict[str, Any], step: dict[str, Any]) -> None:
        self.open_message = OpenMessage(self.project, message)
        self.engine.watch_message(self.open_message)
        # Held for the message's first text, which the turn loop gives with this event (or, should its
        # annotator hold that text back, for the run's next event: the run's end at the latest).
        self.emit("thread.run.step.created", step, more=True)
        self.emit("thread.run.step.in_progress", step, more=True)
        self.emit("thread.message.created", message, more=True)
        self.emit("thread.message.in_progress", message, more=True)
        self._first_text = True

    def _forget_message(self) -> None:
        if self.open_message is not None:
            self.engine.unwatch_message(self.open_message)
            self.open_message = None

    def _on_text(self, event: TextDelta) -> None:
        first, self._first_text = self._first_text, False
        if event.annotations is None:
            # The common delta, built around its value from a per-message prefix: the same bytes as the
            # object below would serialize to, without building and serializing that object per token.
            if self._delta_prefix[0] != event.message_id:
                head = orjson.dumps({"id": event.message_id, "object": "thread.message.delta"})[:-1]
                self._delta_prefix = (
                    event.message_id,
                    head + b',"delta":{"content":[{"index":0,"type":"text","text":{"value":',
                )
            data = self._delta_prefix[1] + orjson.dumps(event.value) + b"}}]}}"
            self.engine.bus.publish(self.run_id, "thread.message.delta", data, now=first)
        else:
            part: dict[str, Any] = {"index": 0, "type": "text", "text": {"value": event.value}}
            part["text"]["annotations"] = event.annotations
            self.emit(
                "thread.message.delta",
                {"id": event.message_id, "object": "thread.message.delta", "delta": {"content": [part]}},
                now=first,
            )
        open_message = self.open_message
        if open_message is not None:
            open_message.text.append(event.value)
            for note in event.annotations or ():
                open_message.annotations.append({k: v for k, v in note.items() if k != "index"})
            open_message.dirty = True

    def _step_delta(self, step_id: str, call: dict[str, Any]) -> None:
        self.emit(
            "thread.run.step.delta",
            {
                "id": step_id,
                "object": "thread.run.step.delta",
                "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}},
            },
        )

    async def _requires_action(self, event: RequiresAction) -> None:
        step, run = event.step, self.run
        run["status"] = "requires_action"
        run["required_action"] = event.required_action
        state = self.state.to_json()

        def tx(conn: Conn) -> None:
            run_rows.save_step(conn, self.project, step)
            # Persisted before the event goes out: a client may submit outputs the moment it sees it.
            if not run_rows.save(conn, self.project, run, state, release=True, expect="in_progress"):
                raise _Cancelled()  # rolls the step back too; the cancel wins

        try:
            await self.db.write(tx)
        except _Cancelled:
            # The step stays open: it is closed as cancelled with the run.
            run["status"], run["required_action"] = "in_progress", None
            if self.loop is not None:
                self.loop.tool_step = step
            raise
        self.emit("thread.run.requires_action", run)

    # --- the end ------------------------------------------------------------------------------

    async def _hand_over(self) -> None:
        """The server is stopping: store what was streamed and give the lease back, so another server (or
        this one, restarted) takes the run over at once instead of failing it."""
        pending, _ = self.loop.unfinished() if self.loop is not None else (None, None)
        self._forget_message()
        leases = self.engine.leases
        unopen = await self._unopen_early()
        if unopen is not None:
            pending = None  # the taker opens its own

        def tx(conn: Conn) -> None:
            if unopen is not None:
                unopen(conn)
            if pending is not None:
                rows.replace(conn, rows.MESSAGES, self.project, pending)  # still open: the taker closes it
            leases.release(conn, [self.run_id], attempt=False)

        try:
            await self._flush(tx, more=True)  # sent with the stream's end (``bus.end``)
        except Exception:
            log.exception("run %s could not be handed over; its lease will lapse", self.run_id)
            return
        log.info("run handed over run_id=%s", self.run_id)

    async def _end(self, finished: RunFinished) -> None:
        self.ending = True
        status = finished.status
        if status == "cancelled" and self.run:
            self.run["status"] = "cancelling"
            self.emit("thread.run.cancelling", self.run)
        self._forget_message()
        pending, pending_step = self.loop.unfinished() if self.loop is not None else (None, None)
        unopen = await self._unopen_early()
        if unopen is not None:
            pending = None  # the model said nothing: no message, as if it had not been opened early
        state = self.state.to_json()

        def tx(conn: Conn) -> Closed:
            if unopen is not None:
                unopen(conn)
            if pending is not None:
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
                state,
                status,
                last_error=finished.last_error,
                incomplete_reason=finished.incomplete_reason,
                # Completed by the loop: its messages and steps are closed (in this transaction).
                scan_open=status != "completed" or pending is not None or pending_step is not None,
            )

        try:
            closed: Closed = await self._flush(tx, more=True)  # sent with the run's closing events
        except Exception:
            # The lease lapses and the reaper ends the run; nothing else can be done from here.
            log.exception("run %s could not be closed as %s", self.run_id, status)
            return
        self._announce(closed)
        log_run_ended(
            project=self.project,
            thread_id=self.run.get("thread_id", ""),
            run_id=self.run_id,
            model=self.run.get("model", ""),
            status=status,
            started_at=self.run.get("started_at") or self.run.get("created_at"),
            last_error=finished.last_error,
            calls=self.calls,
        )

    def _announce(self, closed: Closed) -> None:
        # One delivery for all of them (the last without ``more``; with no run to show, ``bus.end`` sends them).
        for message in closed.messages:
            self.emit(f"thread.message.{message['status']}", message, more=True)
        for step in closed.steps:
            self.emit(f"thread.run.step.{step['status']}", step, more=True)
        if closed.run:
            self.run = closed.run
            self.emit(f"thread.run.{closed.run['status']}", closed.run)
