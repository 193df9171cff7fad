"""Leases on queue rows, in SQL shared by both backends and by every table that is a job queue.

A row is held by a server while ``lease_owner`` names it and ``lease_until`` (epoch seconds) is in the
future; a lapsed lease means its server died. Runs (``runs``, keyed by ``id``) and ingestion
(``vector_store_files``, keyed by ``seq``) are both queues of this kind. The engine's ``Leases`` wraps
these statements with an owner and a clock; nothing else writes the two columns, except the statements
that end a job (they clear them in the same UPDATE that writes the job's final status) and the INSERT
of a job its server holds from the start (with a ``Held`` the engine's ``Leases`` made).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from assistantd.store.base import Conn

CHUNK = 500  # keys per statement (SQLite allows 32766 parameters; this keeps statements small)
FREE = "(lease_until IS NULL OR lease_until < ?)"  # unclaimed, or its owner's lease lapsed


@dataclass(frozen=True)
class LeaseTable:
    """A table whose rows are jobs: ``key`` names a row, ``live`` is what a row needing a holder is."""

    name: str
    key: str
    live: str  # SQL condition: the statuses a server must hold a lease for
    attempts: bool = False  # an ``attempts`` column counts claims, so a file that kills servers can be failed


@dataclass(frozen=True)
class Held:
    """A lease as a new row is inserted with it: the holder, and when the lease lapses."""

    owner: str
    until: float


RUNS = LeaseTable("runs", "id", "status IN ('queued', 'in_progress', 'cancelling')")
FILES = LeaseTable("vector_store_files", "seq", "status = 'in_progress'", attempts=True)


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


def _chunks(keys: Sequence[Any]) -> list[list[Any]]:
    return [list(keys[i : i + CHUNK]) for i in range(0, len(keys), CHUNK)]


def take(conn: Conn, table: LeaseTable, key: Any, owner: str, until: float) -> None:
    """Hold ``key`` whatever its lease says (a row this server has just created or resumed)."""
    conn.execute(f"UPDATE {table.name} SET lease_owner = ?, lease_until = ? WHERE {table.key} = ?", (owner, until, key))


def claim(conn: Conn, table: LeaseTable, key: Any, owner: str, until: float, now: float) -> bool:
    """Hold ``key`` if it needs a holder and has none (or a lapsed one); counts an attempt."""
    bump = ", attempts = attempts + 1" if table.attempts else ""
    return (
        conn.execute(
            f"UPDATE {table.name} SET lease_owner = ?, lease_until = ?{bump} "
            f"WHERE {table.key} = ? AND {table.live} AND {FREE}",
            (owner, until, key, now),
        )
        > 0
    )


def claim_next(conn: Conn, table: LeaseTable, owner: str, until: float, now: float, *, tries: int = 5) -> Any:
    """Hold the oldest row that needs a holder and has none; its key, or None when there is none (or
    other servers kept taking them first: the caller tries again on its next pass)."""
    for _ in range(tries):
        key = conn.fetchval(
            f"SELECT {table.key} FROM {table.name} WHERE {table.live} AND {FREE} ORDER BY {table.key} LIMIT 1",
            (now,),
        )
        if key is None:
            return None
        if claim(conn, table, key, owner, until, now):
            return key
    return None


def renew(conn: Conn, table: LeaseTable, keys: Sequence[Any], owner: str, until: float) -> None:
    for part in _chunks(keys):
        conn.execute(
            f"UPDATE {table.name} SET lease_until = ? WHERE lease_owner = ? AND {table.key} IN ({_marks(len(part))})",
            [until, owner, *part],
        )


def held(conn: Conn, table: LeaseTable, keys: Sequence[Any], owner: str) -> set[Any]:
    """Which of ``keys`` are still ours and still need a holder (not ended, cancelled, deleted or taken)."""
    out: set[Any] = set()
    for part in _chunks(keys):
        rows = conn.fetchall(
            f"SELECT {table.key} FROM {table.name} WHERE lease_owner = ? AND {table.live} "
            f"AND {table.key} IN ({_marks(len(part))})",
            [owner, *part],
        )
        out.update(r[0] for r in rows)
    return out


def release(conn: Conn, table: LeaseTable, owner: str, keys: Sequence[Any] | None = None, *, attempt: bool) -> int:
    """Give back ``keys`` (all of this owner's when None). ``attempt=False`` (a graceful stop) takes back
    the attempt the claim counted: only a server that dies mid-job brings a job closer to failing."""
    undo = ", attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END" if table.attempts and not attempt else ""
    sql = f"UPDATE {table.name} SET lease_owner = NULL, lease_until = NULL{undo} WHERE lease_owner = ? AND {table.live}"
    if keys is None:
        return conn.execute(sql, (owner,))
    return sum(conn.execute(f"{sql} AND {table.key} IN ({_marks(len(p))})", [owner, *p]) for p in _chunks(keys))


def release_others(conn: Conn, table: LeaseTable, owner: str) -> int:
    """Forget every lease but ``owner``'s (an embedded database, owned by one process: theirs are gone)."""
    return conn.execute(
        f"UPDATE {table.name} SET lease_owner = NULL, lease_until = NULL WHERE {table.live} "
        "AND lease_owner IS NOT NULL AND lease_owner <> ?",
        (owner,),
    )
