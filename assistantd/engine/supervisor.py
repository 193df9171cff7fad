"""The engine: starts run executions, keeps their leases, and ends runs nobody is executing.

Each server process has an instance id. Executing a run means holding its lease (``lease_owner``,
``lease_until`` on the run's row), renewed every third of the lease time. A run whose lease lapsed
belongs to a server that died (SIGKILL, OOM, power): any server's reaper ends it ``failed`` with a
``last_error`` that says so, which also unlocks the thread. Runs left in ``requires_action`` past
``expires_at`` become ``expired``. Cancel requests are noticed through the database, so a cancel sent
to any replica reaches the one executing the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from assistantd.clock import now
from assistantd.engine.bus import EventBus, Subscription
from assistantd.engine.executor import OpenMessage, RunExecutor
from assistantd.engine.leases import RUNS, Leases
from assistantd.engine.records import Closed, close_run
from assistantd.llm.router import ModelRouter
from assistantd.store import Conn, Database
from assistantd.store import runs as run_rows
from assistantd.tools.base import BuiltinTool

log = logging.getLogger("assistantd.engine")

CANCEL_POLL_SECONDS = 0.5

LAPSED_MESSAGE = (
    "The server executing this run stopped before the run finished (its lease lapsed); the run was "
    "ended so the thread is usable again. Messages and steps written before that are kept."
)


class Engine:
    def __init__(
        self,
        db: Database,
        router: ModelRouter,
        *,
        lease_seconds: float = 30.0,
        reap_interval: float = 5.0,
        context_tokens: int = 128_000,
        tools: Mapping[str, BuiltinTool] | None = None,
        stream_save_seconds: float = 1.0,
    ) -> None:
        self.db = db
        self.router = router
        self.bus = EventBus()
        self.instance_id = uuid.uuid4().hex
        self.lease_seconds = lease_seconds
        self.reap_interval = reap_interval
        self.context_tokens = context_tokens
        self.tools: dict[str, BuiltinTool] = dict(tools or {})  # server-side tools by type
        self.stream_save_seconds = stream_save_seconds
        self.leases = Leases(db, RUNS, seconds=lease_seconds, owner=self.instance_id)
        self._jobs: dict[str, tuple[RunExecutor, asyncio.Task[None]]] = {}
        self._open_messages: set[OpenMessage] = set()
        self._background: list[asyncio.Task[None]] = []

    # --- starting and stopping executions ------------------------------------------------------

    def start(
        self,
        project: str,
        run_id: str,
        *,
        announce: bool,
        resumed_step: dict[str, Any] | None = None,
        subscribe: bool = False,
    ) -> Subscription | None:
        """Execute a run this process has claimed. With ``subscribe``, follow its events from the first."""
        sub = self.bus.subscribe(run_id) if subscribe else None
        job = RunExecutor(self, project, run_id)
        task = asyncio.create_task(job.execute(announce=announce, resumed_step=resumed_step), name=f"run-{run_id}")
        self._jobs[run_id] = (job, task)
        task.add_done_callback(lambda t: self._forget(run_id, t))
        return sub

    def _forget(self, run_id: str, task: asyncio.Task[None]) -> None:
        entry = self._jobs.get(run_id)
        if entry is not None and entry[1] is task:  # not a newer execution of the same run
            del self._jobs[run_id]

    def cancel_local(self, run_id: str) -> bool:
        """Interrupt a run executing in this process at once (a model call in flight is abandoned)."""
        entry = self._jobs.get(run_id)
        if entry is None:
            return False
        job, task = entry
        if not job.cancel_requested:
            job.cancel_requested = True
            # Not started yet: it will read the run's `cancelling` status itself when it starts.
            if job.started and not job.ending:
                task.cancel()
        return True

    async def start_background(self, *, embedded: bool) -> None:
        if embedded:
            # One process owns an embedded database: every run still marked executing is from a
            # process that is gone, so there is no need to wait for leases to lapse.
            await self._end_orphans(not_owner=self.instance_id)
        self._background = [
            asyncio.create_task(self.leases.keep(lambda: list(self._jobs)), name="lease-renew"),
            asyncio.create_task(self._every(CANCEL_POLL_SECONDS, self._poll_cancels), name="cancel-poll"),
            asyncio.create_task(self._every(self.reap_interval, self.reap), name="reaper"),
            asyncio.create_task(self._every(self.stream_save_seconds, self.save_streamed), name="stream-save"),
        ]

    async def stop(self, grace: float = 5.0) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        jobs = list(self._jobs.values())
        for job, task in jobs:
            job.shutting_down = True
            task.cancel()
        if jobs:
            await asyncio.wait([t for _, t in jobs], timeout=grace)

    # --- background duties ---------------------------------------------------------------------

    async def _every(self, seconds: float, fn: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await fn()
            except Exception:
                log.exception("engine task %s failed; will retry", getattr(fn, "__name__", fn))

    def watch_message(self, message: OpenMessage) -> None:
        self._open_messages.add(message)

    def unwatch_message(self, message: OpenMessage) -> None:
        self._open_messages.discard(message)

    async def save_streamed(self) -> None:
        """Store the text streamed since the last save into every open message, in one transaction, so
        a process killed mid-answer loses at most ``stream_save_seconds`` of it."""
        dirty = [m for m in self._open_messages if m.dirty]
        if not dirty:
            return
        batch = [(m, m.snapshot()) for m in dirty]
        for message, _ in batch:
            message.dirty = False

        def tx(conn: Conn) -> list[bool]:
            return [run_rows.save_partial(conn, m.project, m.message["id"], data, m.saved) for m, data in batch]

        for (message, data), saved in zip(batch, await self.db.write(tx), strict=True):
            if saved:
                message.saved = data

    async def _poll_cancels(self) -> None:
        ids = [rid for rid, (job, _) in self._jobs.items() if not job.cancel_requested]
        if not ids:
            return
        statuses = await self.db.read(lambda c: run_rows.statuses(c, ids))
        for run_id in ids:
            if statuses.get(run_id, "cancelling") == "cancelling":
                self.cancel_local(run_id)

    async def reap(self) -> None:
        """End runs whose executor died, and expire runs left waiting for tool outputs."""
        await self._end_orphans()
        moment = now()

        def expire(conn: Conn) -> list[Closed]:
            return [close_run(conn, r.project, r.run, r.state, "expired") for r in run_rows.overdue(conn, moment)]

        for closed in await self.db.write(expire):
            log.info("run expired run_id=%s", closed.run["id"])
            self._publish_closed(closed)

    async def _end_orphans(self, not_owner: str | None = None) -> None:
        moment = self.leases.now()
        mine = set(self._jobs)

        def tx(conn: Conn) -> list[Closed]:
            out = []
            for record in run_rows.orphans(conn, moment, not_owner=not_owner):
                if record.run["id"] in mine:
                    continue
                if record.run["status"] == "cancelling":
                    out.append(close_run(conn, record.project, record.run, record.state, "cancelled"))
                else:
                    out.append(
                        close_run(
                            conn,
                            record.project,
                            record.run,
                            record.state,
                            "failed",
                            last_error={"code": "server_error", "message": LAPSED_MESSAGE},
                        )
                    )
            return out

        for closed in await self.db.write(tx):
            log.warning("orphaned run ended run_id=%s status=%s", closed.run["id"], closed.run["status"])

    def _publish_closed(self, closed: Closed) -> None:
        run_id = closed.run["id"]
        for message in closed.messages:
            self.bus.publish(run_id, f"thread.message.{message['status']}", orjson.dumps(message))
        for step in closed.steps:
            self.bus.publish(run_id, f"thread.run.step.{step['status']}", orjson.dumps(step))
        self.bus.publish(run_id, f"thread.run.{closed.run['status']}", orjson.dumps(closed.run))
        self.bus.end(run_id)
