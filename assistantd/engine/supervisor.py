"""The engine: starts run executions, keeps their leases, and takes over runs nobody is executing.

Each server process has an instance id. Executing a run means holding its lease (``lease_owner``,
``lease_until`` on the run's row, through ``leases.Leases``), renewed every third of the lease time. A
run whose lease lapsed belongs to a server that died (SIGKILL, OOM, power): any server's reaper claims
it and carries it on (``takeover.adopt``: queued runs run, in_progress ones resume from their last
completed step). A server stopping gracefully hands its runs over (lease released) instead of failing
them. Runs left in ``requires_action`` past ``expires_at`` become ``expired``. Cancel requests are
noticed through the database, so a cancel sent to any replica reaches the one executing the run.
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
from assistantd.engine.executor import Begun, OpenMessage, RunExecutor
from assistantd.engine.leases import RUNS, Leases
from assistantd.engine.records import Closed, close_run
from assistantd.engine.takeover import adopt
from assistantd.llm.router import ModelRouter
from assistantd.store import Conn, Database
from assistantd.store import runs as run_rows
from assistantd.tools.base import BuiltinTool

log = logging.getLogger("assistantd.engine")

CANCEL_POLL_SECONDS = 0.5


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
        self.draining = False  # going down: runs of gone servers are left to the others
        self._stopping: set[asyncio.Task[None]] = set()

    # --- starting and stopping executions ------------------------------------------------------

    def start(
        self,
        project: str,
        run_id: str,
        *,
        announce: bool,
        resumed_step: dict[str, Any] | None = None,
        subscribe: bool = False,
        resume: bool = False,
        begun: Begun | None = None,
        since: float | None = None,
    ) -> Subscription | None:
        """Execute a run this process has claimed. With ``subscribe``, follow its events from the first;
        with ``resume``, it was taken over ``in_progress`` (``takeover.adopt``) and goes on from there;
        ``begun``: it was created in_progress (``executor.begin_new``), with what its first model call needs;
        ``since``: perf_counter() when a client asked for it (its wait for a model call counts from there)."""
        sub = self.bus.subscribe(run_id) if subscribe else None
        job = RunExecutor(self, project, run_id)
        job.resume = resume
        if since is not None:
            job.since = since
        task = asyncio.create_task(
            job.execute(announce=announce, resumed_step=resumed_step, begun=begun), name=f"run-{run_id}"
        )
        self._jobs[run_id] = (job, task)
        task.add_done_callback(lambda t: self._forget(run_id, job, t))
        return sub

    def _forget(self, run_id: str, job: RunExecutor, task: asyncio.Task[None]) -> None:
        job.setup.release()  # it ended (or was cancelled before it began) before its first model call
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
            await self._take_over(previous_process=True)
        self._background = [
            asyncio.create_task(self.leases.keep(lambda: list(self._jobs), self._lost), name="lease-renew"),
            asyncio.create_task(self._every(CANCEL_POLL_SECONDS, self._poll_cancels), name="cancel-poll"),
            asyncio.create_task(self._every(self.reap_interval, self.reap), name="reaper"),
            asyncio.create_task(self._every(self.stream_save_seconds, self.save_streamed), name="stream-save"),
        ]

    async def stop(self, grace: float = 5.0) -> None:
        """Stop executing: every run in progress here is handed over (its streamed text stored, its lease
        released), for another replica, or this server when it starts again, to take over at once."""
        self.draining = True
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._hand_over_all(grace)

    async def drain(self, grace: float) -> None:
        """The server is going down: take over nothing more, let the runs executing here finish for up to
        ``grace`` seconds, then hand the rest over. Each run's stream ends as its execution does."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._jobs and (left := deadline - loop.time()) > 0:
            tasks = [t for _, t in self._jobs.values()]
            await asyncio.wait(tasks, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        await self._hand_over_all(5.0)

    async def _hand_over_all(self, grace: float) -> None:
        jobs = list(self._jobs.values())
        for job, task in jobs:
            job.shutting_down = True
            if not job.ending:  # a run writing its end finishes that
                task.cancel()
        if jobs:
            await asyncio.wait([t for _, t in jobs], timeout=grace)
        # A task cancelled before it started never ran its own hand-over: give its lease back here.
        unstarted = [job.run_id for job, _ in jobs if not job.started]
        if unstarted:
            await self.db.write(lambda c: self.leases.release(c, unstarted, attempt=False))

    def _lost(self, run_ids: set[str]) -> None:
        """Renewal found runs that are no longer ours to hold. Most simply ended or paused here (requires_action)
        and their executors finish on their own; those another server holds now (taken over after our lease
        lapsed, e.g. this process was paused that long) are stopped without writing anything more."""
        task = asyncio.create_task(self._stop_taken(list(run_ids)), name="runs-lost")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop_taken(self, run_ids: list[str]) -> None:
        try:
            taken = await self.db.read(lambda c: run_rows.held_elsewhere(c, run_ids, self.instance_id))
        except Exception:
            log.exception("checking runs no longer ours failed")
            return
        for run_id in taken:
            entry = self._jobs.get(run_id)
            if entry is None:
                continue
            job, task = entry
            if job.ending or job.cancel_requested:
                continue
            log.warning("run taken over by another server while executing here run_id=%s", run_id)
            job.lost = True
            if job.started:
                task.cancel()

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
        """Take over runs whose server is gone, and expire runs left waiting for tool outputs."""
        await self._take_over()
        moment = now()

        def expire(conn: Conn) -> list[Closed]:
            return [close_run(conn, r.project, r.run, r.state, "expired") for r in run_rows.overdue(conn, moment)]

        for closed in await self.db.write(expire):
            log.info("run expired run_id=%s", closed.run["id"])
            self._publish_closed(closed)

    async def _take_over(self, *, previous_process: bool = False) -> None:
        """Claim the executing runs whose lease lapsed (``previous_process``: every run another process held,
        on an embedded database only one process uses) and carry them on here (``takeover.adopt``)."""
        if self.draining:
            return
        moment = self.leases.now()
        mine = set(self._jobs)

        def tx(conn: Conn) -> tuple[list[tuple[str, str, str]], list[Closed]]:
            resumed: list[tuple[str, str, str]] = []
            ended: list[Closed] = []
            for record in run_rows.orphans(conn, moment, not_owner=self.instance_id if previous_process else None):
                run_id = record.run["id"]
                if run_id in mine:
                    continue
                # A lease given back (graceful hand-over) is NULL; one that lapsed still names its server.
                lapsed = conn.fetchval("SELECT lease_owner FROM runs WHERE id = ?", (run_id,)) is not None
                if previous_process:
                    self.leases.take(conn, run_id)
                elif not self.leases.claim(conn, run_id):
                    continue  # another replica claimed it first
                closed = adopt(conn, record.project, run_id, lapsed=lapsed)
                if closed is None:
                    resumed.append((record.project, run_id, record.run["status"]))
                elif closed.run:
                    ended.append(closed)
            return resumed, ended

        resumed, ended = await self.db.write(tx)
        for closed in ended:
            log.warning("run taken over and ended run_id=%s status=%s", closed.run["id"], closed.run["status"])
            self._publish_closed(closed)
        for project, run_id, status in resumed:
            log.warning("run taken over run_id=%s status=%s", run_id, status)
            self.start(project, run_id, announce=False, resume=status == "in_progress")

    def _publish_closed(self, closed: Closed) -> None:
        run_id = closed.run["id"]
        for message in closed.messages:
            self.bus.publish(run_id, f"thread.message.{message['status']}", orjson.dumps(message))
        for step in closed.steps:
            self.bus.publish(run_id, f"thread.run.step.{step['status']}", orjson.dumps(step))
        self.bus.publish(run_id, f"thread.run.{closed.run['status']}", orjson.dumps(closed.run))
        self.bus.end(run_id)
