"""SQLite backend: one writer thread, a pool of reader threads, WAL.

SQLite allows one writer at a time, so every write goes through a single thread and connection
(``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction never fails half-way on an
upgrade). Readers each own a connection in their thread and, thanks to WAL, never wait for the writer.
``sqlean`` bundles a modern SQLite that can load extensions, which the stdlib build here cannot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlean as sqlite3

from assistantd.store.base import Conn, Database, Row, UniqueViolation
from assistantd.store.schema import migrate
from assistantd.store.workers import WorkerPool, resolve_future

T = TypeVar("T")

log = logging.getLogger("assistantd.sqlite")

# How often the checkpoint thread copies the WAL back into the database file, and the WAL size in
# pages at which the writer checkpoints itself (which is what lets the WAL start over: a background
# checkpoint never finishes while writes keep coming). Once a second rather than five times: a page
# rewritten many times in between (the runs table's, its indexes') is copied and synced once
# (bench/README.md, run_bench at 1,000 streams).
CHECKPOINT_SECONDS = 1.0
# Writes queued together are committed together (group commit), each in its own savepoint, so one
# that fails is undone alone. A commit writes every page a transaction touched to the WAL (and the
# checkpoint copies it again), so 50 runs' small writes in one transaction cost the shared pages of
# the runs, messages and steps tables and their indexes once instead of 50 times. Each caller still
# hears of its write only after the COMMIT.
MAX_GROUP_WRITES = 64
WRITER_CHECKPOINT_PAGES = 10_000


class _SQLiteConn(Conn):
    dialect = "sqlite"

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self.raw.execute(sql, params).rowcount
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise UniqueViolation(str(exc)) from exc
            raise

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.raw.execute(sql, params).fetchall()


# How long a statement waits for another connection's lock before "database is locked".
BUSY_TIMEOUT_MS = 10_000


def _enable_wal(raw: sqlite3.Connection) -> None:
    """Put the database in WAL mode, waiting out another connection that is doing the same.

    Switching a new database file to WAL takes an exclusive lock, and when another process or thread
    opens the same new file at that moment SQLite answers "database is locked" at once instead of
    through the busy timeout (4 threads opening one new file: 7 failures in 400 opens). The mode is
    stored in the file, so a retry finds WAL already set by whoever won."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            raw.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)  # startup only, bounded by the deadline above
        pause = min(pause * 2, 0.1)


def _connect(path: str, *, readonly: bool) -> sqlite3.Connection:
    # Each connection is only ever used by the one thread that made it; the check is off so that
    # close() can run from the shutting-down thread.
    raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    raw.execute("PRAGMA foreign_keys = ON")
    # NORMAL is durable across application crashes in WAL mode; only an OS crash can lose the
    # last commits, and the write path gets several times faster without an fsync per commit.
    raw.execute("PRAGMA synchronous = NORMAL")
    if readonly:
        raw.execute("PRAGMA query_only = ON")
    return raw


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: str, *, readers: int = 8) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._writer_pool = WorkerPool(1, "sqlite-writer")
        self._reader_pool = WorkerPool(max(1, readers), "sqlite-reader")
        self._readers = max(1, readers)
        self._local = threading.local()
        self._writer: sqlite3.Connection | None = None
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._queued: collections.deque[tuple[Callable[[Conn], Any], asyncio.AbstractEventLoop, asyncio.Future[Any]]]
        self._queued = collections.deque()
        self._draining = False  # a drain of ``_queued`` is scheduled on the writer thread
        # Schema first, in the writer thread, before anything can read.
        self._writer_pool.run_sync(self._init_writer)
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if path != ":memory:":
            self._checkpointer = threading.Thread(target=self._checkpoints, name="sqlite-checkpoint", daemon=True)
            self._checkpointer.start()

    def _init_writer(self) -> None:
        raw = _connect(self.path, readonly=False)
        _enable_wal(raw)
        # A checkpoint copies the WAL into the database file and fsyncs both: tens of milliseconds on
        # ordinary disks. By default SQLite runs one inside whichever COMMIT takes the WAL past 1000
        # pages, stalling every write queued behind it, several times a second under load. The
        # checkpoint thread copies pages in the background instead (see _checkpoints), so the
        # writer only checkpoints every 10000 pages, to restart the WAL from the top, and then finds
        # little left to copy. Durability is unchanged (WAL, synchronous=NORMAL); the background
        # checkpoints sync the WAL within CHECKPOINT_SECONDS of a commit even when writes are rare.
        raw.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
        self._writer = raw
        with self._lock:
            self._all.append(raw)
        self.migrated = self._transaction(migrate)

    def pool_stats(self) -> dict[str, int]:
        return {"size": self._readers, "waiting": self._reader_pool.backlog}

    def _transaction(self, fn: Callable[[Conn], T]) -> T:
        assert self._writer is not None
        self._writer.execute("BEGIN IMMEDIATE")
        try:
            result = fn(_SQLiteConn(self._writer))
        except BaseException:
            self._writer.execute("ROLLBACK")
            raise
        self._writer.execute("COMMIT")
        return result

    def _checkpoints(self) -> None:
        # PASSIVE never waits for, nor blocks, readers or the writer: it copies what it can now.
        raw = _connect(self.path, readonly=False)
        try:
            while not self._stop.wait(CHECKPOINT_SECONDS):
                try:
                    raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    log.warning("WAL checkpoint failed; will retry", exc_info=True)
        finally:
            raw.close()

    def _reader(self) -> _SQLiteConn:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            raw = _connect(self.path, readonly=True)
            with self._lock:
                self._all.append(raw)
            conn = self._local.conn = _SQLiteConn(raw)
        return conn

    def _read(self, fn: Callable[[Conn], T]) -> T:
        conn = self._reader()
        # A read transaction gives a multi-statement unit of work one consistent snapshot.
        conn.raw.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.raw.execute("COMMIT")

    async def read(self, fn: Callable[[Conn], T]) -> T:
        return await self._reader_pool.run(self._read, fn)

    async def write(self, fn: Callable[[Conn], T], *, one_statement: bool = False) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queued.append((fn, loop, fut))
            start, self._draining = not self._draining, True
        if start:
            try:
                self._writer_pool.submit(self._drain)
            except RuntimeError:
                with self._lock:
                    self._queued.clear()
                    self._draining = False
                raise
        return await fut

    def _drain(self) -> None:
        """On the writer thread: commit what is queued, a group at a time, until nothing is."""
        while True:
            with self._lock:
                if not self._queued:
                    self._draining = False
                    return
                group = [self._queued.popleft() for _ in range(min(len(self._queued), MAX_GROUP_WRITES))]
            live = [item for item in group if not item[2].cancelled()]  # nobody waits for the others
            if live:
                self._commit_group(live)

    def _commit_group(
        self, group: list[tuple[Callable[[Conn], Any], asyncio.AbstractEventLoop, asyncio.Future[Any]]]
    ) -> None:
        outcomes: list[tuple[bool, Any]] = []
        if len(group) == 1:
            try:
                outcomes.append((True, self._transaction(group[0][0])))
            except BaseException as exc:
                outcomes.append((False, exc))
        else:
            assert self._writer is not None
            conn = _SQLiteConn(self._writer)
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                for fn, _, _ in group:
                    self._writer.execute("SAVEPOINT w")
                    try:
                        outcomes.append((True, fn(conn)))
                    except BaseException as exc:
                        self._writer.execute("ROLLBACK TO w")
                        outcomes.append((False, exc))
                    self._writer.execute("RELEASE w")
                self._writer.execute("COMMIT")
            except BaseException as exc:  # the transaction itself failed: none of it holds
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                outcomes = [(False, exc)] * len(group)
        for (_, loop, fut), (ok, value) in zip(group, outcomes, strict=True):
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody awaits the answer
                loop.call_soon_threadsafe(resolve_future, fut, ok, value)

    def write_sync(self, fn: Callable[[Conn], T]) -> T:
        return self._writer_pool.run_sync(self._transaction, fn)

    async def close(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        self._reader_pool.shutdown()
        self._writer_pool.shutdown()
        with self._lock:
            for raw in self._all:
                raw.close()
            self._all.clear()
