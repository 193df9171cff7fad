"""PostgreSQL backend: a psycopg connection pool driven from worker threads.

The same synchronous repository functions as SQLite run here, one pooled connection per unit of work,
so the two backends share all SQL. ``?`` placeholders are rewritten to psycopg's ``%s`` once per
statement text and cached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool

from assistantd.store.base import Conn, Database, Row, UniqueViolation
from assistantd.store.schema import migrate
from assistantd.store.workers import WorkerPool

T = TypeVar("T")

# Serializes concurrent migrations from several replicas starting at once.
_MIGRATION_LOCK_KEY = 0x61737369  # "assi"


@functools.lru_cache(maxsize=1024)
def _translate(sql: str) -> str:
    # Our SQL never contains a literal '?' or '%' outside placeholders.
    return sql.replace("%", "%%").replace("?", "%s")


class _PGConn(Conn):
    dialect = "postgres"

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        # Prepared once a connection has run the same text a few times (psycopg's prepare_threshold), as
        # reads are: PostgreSQL then skips parsing and planning a run's inserts and updates, about a third
        # of its CPU in a burst of 1,000 streamed runs. Migrations' DDL runs once and is never prepared.
        try:
            return self.raw.execute(_translate(sql), params).rowcount
        except psycopg.errors.UniqueViolation as exc:
            raise UniqueViolation(str(exc)) from exc

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.raw.execute(_translate(sql), params).fetchall()

    def fetchall_binary(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.raw.execute(_translate(sql), params, binary=True).fetchall()


class _OneStatement(_PGConn):
    """A write promised to be one statement, run in autocommit: a second one would not be atomic with it."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        super().__init__(raw)
        self._ran = False

    def _once(self) -> None:
        if self._ran:
            raise RuntimeError("a one_statement write ran a second statement (it would not be atomic)")
        self._ran = True

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._once()
        return super().execute(sql, params)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._once()
        return super().fetchall(sql, params)

    def fetchall_binary(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._once()
        return super().fetchall_binary(sql, params)


class PostgresDatabase(Database):
    dialect = "postgres"

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, kwargs={"autocommit": True})
        self._executor = WorkerPool(pool_size, "pg")
        self._migrate()

    def pool_stats(self) -> dict[str, int]:
        stats = self._pool.get_stats()
        return {
            "size": int(stats.get("pool_size", 0)),
            "idle": int(stats.get("pool_available", 0)),
            "waiting": int(stats.get("requests_waiting", 0)),
        }

    def _migrate(self) -> None:
        def locked(conn: Conn) -> list[int]:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))
            return migrate(conn)

        self.migrated = self._transaction(locked)

    def _transaction(self, fn: Callable[[Conn], T]) -> T:
        with self._pool.connection() as raw, raw.transaction():
            return fn(_PGConn(raw))

    def _read(self, fn: Callable[[Conn], T]) -> T:
        # REPEATABLE READ gives a multi-statement read one snapshot, as SQLite's WAL readers have.
        with self._pool.connection() as raw, raw.transaction():
            raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return fn(_PGConn(raw))

    async def read(self, fn: Callable[[Conn], T]) -> T:
        return await self._executor.run(self._read, fn)

    def _statement(self, fn: Callable[[Conn], T]) -> T:
        with self._pool.connection() as raw:
            return fn(_OneStatement(raw))

    async def write(self, fn: Callable[[Conn], T], *, one_statement: bool = False) -> T:
        return await self._executor.run(self._statement if one_statement else self._transaction, fn)

    def write_sync(self, fn: Callable[[Conn], T]) -> T:
        return self._transaction(fn)

    async def close(self) -> None:
        self._executor.shutdown()
        self._pool.close()
