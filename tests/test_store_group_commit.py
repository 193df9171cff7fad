"""SQLite's one writer commits writes queued together in one transaction, each in its own savepoint:
every caller gets its own result or its own exception, a failed write leaves nothing behind, and a
write sees the ones queued before it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from assistantd.store import Conn, open_database
from assistantd.store.base import UniqueViolation


def test_writes_queued_together_succeed_or_fail_alone(tmp_path: Path) -> None:
    async def go() -> list[object]:
        db = open_database(f"sqlite:///{tmp_path / 'g.db'}")
        try:
            await db.write(lambda c: c.execute("CREATE TABLE g (k TEXT PRIMARY KEY, n INTEGER)"))

            def put(i: int) -> object:
                def tx(conn: Conn) -> object:
                    conn.execute("INSERT INTO g (k, n) VALUES (?, ?)", (f"k{i}", i))
                    if i % 3 == 0:
                        raise ValueError(f"refused {i}")  # after its insert: the insert must go too
                    if i % 5 == 0:
                        conn.execute("INSERT INTO g (k, n) VALUES (?, ?)", (f"k{i}", i))  # a duplicate
                    return conn.fetchval("SELECT count(*) FROM g")

                return tx

            outcomes = await asyncio.gather(*(db.write(put(i)) for i in range(1, 200)), return_exceptions=True)
            stored = await db.read(lambda c: sorted(r[0] for r in c.fetchall("SELECT n FROM g")))
            return [outcomes, stored]
        finally:
            await db.close()

    outcomes, stored = asyncio.run(go())
    assert isinstance(outcomes, list) and isinstance(stored, list)
    kept = [i for i in range(1, 200) if i % 3 and i % 5]
    assert stored == kept
    for i, outcome in zip(range(1, 200), outcomes, strict=True):
        if i % 3 == 0:
            assert isinstance(outcome, ValueError) and str(outcome) == f"refused {i}"
        elif i % 5 == 0:
            assert isinstance(outcome, UniqueViolation)
        else:
            # Each write saw every kept write queued before it (and itself): serial order holds.
            assert outcome == kept.index(i) + 1


def test_a_queued_write_whose_caller_was_cancelled_is_skipped(tmp_path: Path) -> None:
    async def go() -> list[str]:
        db = open_database(f"sqlite:///{tmp_path / 'c.db'}")
        entered, gate = threading.Event(), threading.Event()
        try:
            await db.write(lambda c: c.execute("CREATE TABLE c (k TEXT)"))

            def held(conn: Conn) -> None:
                conn.execute("INSERT INTO c VALUES ('first')")
                entered.set()
                gate.wait(30)  # holds the writer while the next write queues and its caller gives up

            first = asyncio.ensure_future(db.write(held))
            assert await asyncio.to_thread(entered.wait, 30)
            doomed = asyncio.ensure_future(db.write(lambda c: c.execute("INSERT INTO c VALUES ('doomed')")))
            await asyncio.sleep(0)  # the task runs up to its wait: the write is queued
            doomed.cancel()
            gate.set()
            await first
            with pytest.raises(asyncio.CancelledError):
                await doomed
            await db.write(lambda c: c.execute("INSERT INTO c VALUES ('last')"))
            return [r[0] for r in await db.read(lambda c: c.fetchall("SELECT k FROM c"))]
        finally:
            gate.set()
            await db.close()

    assert asyncio.run(go()) == ["first", "last"]
