"""The database seam: run a whole unit of work in one call.

Repository code is plain synchronous functions that take a ``Conn``. A backend runs such a function in
a worker thread, inside a transaction for writes, so one unit of work costs one thread hop, and SQLite
and PostgreSQL share every line of SQL. SQL is written with ``?`` placeholders; the PostgreSQL
backend translates them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

Row = tuple[Any, ...]


def marks(n: int) -> str:
    """``n`` placeholders for an ``IN (...)`` list."""
    return ", ".join("?" for _ in range(n))


class UniqueViolation(Exception):
    """An insert or update broke a unique constraint (raised by either backend)."""


class Conn(abc.ABC):
    """The connection a unit of work sees."""

    dialect: str

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""

    @abc.abstractmethod
    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def fetchall_binary(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """``fetchall`` with results sent in the backend's binary format where it has one (PostgreSQL sends
        ``bytea`` as hex text otherwise: twice the bytes on the wire and a decode)."""
        return self.fetchall(sql, params)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.fetchone(sql, params)
        return None if row is None else row[0]


class Database(abc.ABC):
    dialect: str
    # The schema versions opening this database applied (``assistantd migrate`` reports them).
    migrated: tuple[int, ...] | list[int] = ()

    @abc.abstractmethod
    async def read(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` on a read connection (it sees a consistent snapshot on both backends)."""

    @abc.abstractmethod
    async def write(self, fn: Callable[[Conn], T], *, one_statement: bool = False) -> T:
        """Run ``fn`` in one transaction: committed if it returns, rolled back if it raises.

        ``one_statement``: ``fn`` runs a single statement on this backend, which is atomic by itself, so
        PostgreSQL runs it without BEGIN and COMMIT (two round trips fewer; a second statement raises).
        SQLite's writer commits whatever it runs in a transaction of its own either way."""

    @abc.abstractmethod
    def write_sync(self, fn: Callable[[Conn], T]) -> T:
        """The same as ``write`` for callers outside the event loop (the CLI, migrations)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    def pool_stats(self) -> dict[str, int]:
        """Connection pool figures for /metrics: size, idle and waiting (where the backend knows them)."""
        return {}


def open_database(url: str, *, pool_size: int = 8) -> Database:
    """Open (and migrate) the database named by ``url``."""
    if url.startswith("sqlite:"):
        from assistantd.store.sqlite import SQLiteDatabase

        path = url.removeprefix("sqlite:").removeprefix("//")
        return SQLiteDatabase(path, readers=pool_size)
    if url.startswith(("postgresql:", "postgres:")):
        try:
            from assistantd.store.postgres import PostgresDatabase
        except ImportError as exc:
            raise ValueError(
                "PostgreSQL support is not installed: pip install '.[postgres]' in an assistantd checkout"
            ) from exc
        return PostgresDatabase(url, pool_size=pool_size)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://...")
