"""One lease helper for every job queue the engine works (runs, ingestion): claim, renew, release.

A server holds a job while its lease is live; it renews every lease it holds every third of the lease
time, in one statement per chunk of keys, and learns at each renewal which jobs are no longer its own
(ended, cancelled or deleted elsewhere, or taken over after a lapse), so it can stop working on them.
All lease times come from one clock (``clock``, ``time.time`` by default) so what a server writes and
what a reaper compares it with agree.

Use it inside the caller's own transactions (``claim``, ``take``, ``release``... take a ``Conn``), so a
claim and the job's first write, or a job's end and its release, commit together; and run ``keep`` as
a background task to renew.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Any

from assistantd.store import Conn, Database
from assistantd.store import leases as sql
from assistantd.store.leases import FILES, RUNS, Held, LeaseTable

__all__ = ["FILES", "RUNS", "Held", "LeaseTable", "Leases"]

log = logging.getLogger("assistantd.engine")


class Leases:
    """This server's leases on one table's rows."""

    def __init__(
        self,
        db: Database,
        table: LeaseTable,
        *,
        seconds: float,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.table = table
        self.seconds = seconds
        self.owner = owner or uuid.uuid4().hex  # share one owner (the instance id) between tables
        self.clock = clock

    def now(self) -> float:
        return self.clock()

    def until(self) -> float:
        """When a lease taken or renewed now lapses."""
        return self.clock() + self.seconds

    # --- inside a transaction ----------------------------------------------------------------------

    def new(self) -> Held:
        """The lease of a job this server creates and holds from its first commit, for its INSERT to write
        (one statement where an INSERT and a ``take`` are two)."""
        return Held(self.owner, self.until())

    def take(self, conn: Conn, key: Any) -> None:
        """Hold ``key`` unconditionally: a job this server has just created, or one it resumes."""
        sql.take(conn, self.table, key, self.owner, self.until())

    def claim(self, conn: Conn, key: Any) -> bool:
        """Hold ``key`` if nobody does (or its holder's lease lapsed)."""
        return sql.claim(conn, self.table, key, self.owner, self.until(), self.now())

    def claim_next(self, conn: Conn) -> Any:
        """Hold the oldest job nobody holds; its key, or None."""
        return sql.claim_next(conn, self.table, self.owner, self.until(), self.now())

    def held(self, conn: Conn, keys: Sequence[Any]) -> set[Any]:
        """Which of ``keys`` are still this server's to finish."""
        return sql.held(conn, self.table, keys, self.owner)

    def release(self, conn: Conn, keys: Sequence[Any] | None = None, *, attempt: bool = True) -> int:
        """Give jobs back to the queue (all of ours when ``keys`` is None). ``attempt=False``: the claim does
        not count as an attempt (a graceful shutdown, not a crash)."""
        return sql.release(conn, self.table, self.owner, keys, attempt=attempt)

    def release_others(self, conn: Conn) -> int:
        """Drop every other owner's lease: for an embedded database, whose one other owner is gone."""
        return sql.release_others(conn, self.table, self.owner)

    # --- renewal -----------------------------------------------------------------------------------

    async def renew(self, keys: Collection[Any], *, check: bool = True) -> set[Any]:
        """Extend our leases on ``keys``; with ``check``, return those that are no longer ours (stop working
        on them)."""
        if not keys:
            return set()
        listed = list(keys)
        until = self.until()

        def tx(conn: Conn) -> set[Any]:
            sql.renew(conn, self.table, listed, self.owner, until)
            return set(listed) - sql.held(conn, self.table, listed, self.owner) if check else set()

        return await self.db.write(tx)

    async def keep(self, keys: Callable[[], Collection[Any]], lost: Callable[[set[Any]], None] | None = None) -> None:
        """Renew the leases on ``keys()`` every third of the lease time, forever (run it as a task; cancel
        it to stop). ``lost`` hears of the jobs that stopped being ours."""
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                gone = await self.renew(keys(), check=lost is not None)
                if gone and lost is not None:
                    lost(gone)
            except Exception:
                log.exception("renewing %s leases failed; will retry", self.table.name)
