"""Runs and their steps. The ``runs`` table is also the job queue: a run's status is its job state,
and ``lease_owner``/``lease_until`` say which server is executing it and until when it is trusted to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from assistantd.store import objects as rows
from assistantd.store.base import Conn
from assistantd.store.leases import Held

# The one list of run statuses by phase. (The partial index ``runs_one_active`` in schema.py spells
# ACTIVE out too: a migration's DDL never changes once released.)
ACTIVE = ("queued", "in_progress", "requires_action", "cancelling")  # a run in these locks its thread
TERMINAL = ("completed", "failed", "cancelled", "expired", "incomplete")
EXECUTING = ("queued", "in_progress", "cancelling")  # statuses a server must hold a lease for
CANCELLABLE_BY_EXECUTOR = ("queued", "in_progress")  # a cancel marks these cancelling for their executor


def _sql_list(statuses: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{s}'" for s in statuses) + ")"


_ACTIVE_SQL = _sql_list(ACTIVE)
_EXECUTING_SQL = _sql_list(EXECUTING)


@dataclass
class RunRecord:
    project: str
    run: dict[str, Any]
    state: dict[str, Any]


def active_run_id(conn: Conn, thread_id: str) -> str | None:
    return conn.fetchval(f"SELECT id FROM runs WHERE thread_id = ? AND status IN {_ACTIVE_SQL}", (thread_id,))


def active_in_project(conn: Conn, project: str) -> int:
    return int(conn.fetchval(f"SELECT count(*) FROM runs WHERE project_id = ? AND status IN {_ACTIVE_SQL}", (project,)))


def active_by_status(conn: Conn) -> dict[str, int]:
    """Database-wide, every active status with its count (zero included), for the gauges."""
    found = conn.fetchall(f"SELECT status, count(*) FROM runs WHERE status IN {_ACTIVE_SQL} GROUP BY status")
    counts = {status: int(n) for status, n in found}
    return {status: counts.get(status, 0) for status in ACTIVE}


def insert(
    conn: Conn,
    project: str,
    run: dict[str, Any],
    state: dict[str, Any],
    *,
    lease: Held | None,
) -> None:
    rows.insert(
        conn,
        rows.RUNS,
        project,
        run,
        thread_id=run["thread_id"],
        status=run["status"],
        expires_at=run["expires_at"],
        lease_owner=lease.owner if lease is not None else None,
        lease_until=lease.until if lease is not None else None,
        state=rows.dumps(state),
    )


def load(conn: Conn, project: str, run_id: str, thread_id: str | None = None) -> RunRecord | None:
    where = "id = ? AND project_id = ?"
    params: list[Any] = [run_id, project]
    if thread_id is not None:
        where += " AND thread_id = ?"
        params.append(thread_id)
    row = conn.fetchone(f"SELECT data, state FROM runs WHERE {where}", params)
    if row is None:
        return None
    return RunRecord(project, orjson.loads(row[0]), orjson.loads(row[1]))


def save(
    conn: Conn,
    project: str,
    run: dict[str, Any],
    state: dict[str, Any] | None = None,
    *,
    release: bool = False,
    expect: str | None = None,
) -> bool:
    """Write the run back; False if ``expect`` is given and the stored status is no longer it.

    ``release`` drops the lease (the run waits on the client or has ended). ``expect`` makes the write
    conditional, so a status another server wrote meanwhile (a cancel) is never overwritten.
    """
    sets = ["data = ?", "status = ?", "expires_at = ?"]
    params: list[Any] = [rows.dumps(run), run["status"], run["expires_at"]]
    if state is not None:
        sets.append("state = ?")
        params.append(rows.dumps(state))
    if release:
        sets.append("lease_owner = NULL, lease_until = NULL")
    where = "id = ? AND project_id = ?"
    params += [run["id"], project]
    if expect is not None:
        where += " AND status = ?"
        params.append(expect)
    return conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE {where}", params) > 0


def statuses(conn: Conn, run_ids: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        out.update(dict(conn.fetchall(f"SELECT id, status FROM runs WHERE id IN ({marks})", chunk)))
    return out


def held_elsewhere(conn: Conn, run_ids: list[str], owner: str) -> set[str]:
    """Which of ``run_ids`` another server holds now (took over after our lease lapsed)."""
    out: set[str] = set()
    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        rows_ = conn.fetchall(
            f"SELECT id FROM runs WHERE id IN ({marks}) AND lease_owner IS NOT NULL AND lease_owner <> ?",
            [*chunk, owner],
        )
        out.update(r[0] for r in rows_)
    return out


def orphans(conn: Conn, now: float, *, not_owner: str | None = None) -> list[RunRecord]:
    """Executing runs whose lease lapsed (or, with ``not_owner``, that another process owned)."""
    if not_owner is not None:
        sql = (
            f"SELECT project_id, data, state FROM runs WHERE status IN {_EXECUTING_SQL} "
            "AND (lease_owner IS NULL OR lease_owner <> ?)"
        )
        params: tuple[Any, ...] = (not_owner,)
    else:
        sql = (
            f"SELECT project_id, data, state FROM runs WHERE status IN {_EXECUTING_SQL} "
            "AND (lease_until IS NULL OR lease_until < ?)"
        )
        params = (now,)
    return [RunRecord(r[0], orjson.loads(r[1]), orjson.loads(r[2])) for r in conn.fetchall(sql, params)]


def overdue(conn: Conn, now: int) -> list[RunRecord]:
    """Runs waiting on the client past their ``expires_at``."""
    rows_ = conn.fetchall(
        "SELECT project_id, data, state FROM runs WHERE status = 'requires_action' AND expires_at <= ?", (now,)
    )
    return [RunRecord(r[0], orjson.loads(r[1]), orjson.loads(r[2])) for r in rows_]


def steps_of(conn: Conn, project: str, run_id: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(r[0])
        for r in conn.fetchall(
            "SELECT data FROM run_steps WHERE run_id = ? AND project_id = ? ORDER BY seq", (run_id, project)
        )
    ]


def insert_step(conn: Conn, project: str, step: dict[str, Any]) -> None:
    rows.insert(conn, rows.STEPS, project, step, thread_id=step["thread_id"], run_id=step["run_id"])


def open_message(conn: Conn, project: str, step: dict[str, Any], message: dict[str, Any]) -> None:
    """Insert a message-creation step and its message. One statement on PostgreSQL (a data-modifying CTE:
    at a run's first token, two round trips and the transaction's two fewer); SQLite has no such
    statement and runs the two inserts (its writer wraps them in one transaction)."""
    if conn.dialect != "postgres":
        insert_step(conn, project, step)
        rows.insert(conn, rows.MESSAGES, project, message, thread_id=message["thread_id"], run_id=message["run_id"])
        return
    columns = "(id, project_id, created_at, data, thread_id, run_id) VALUES (?, ?, ?, ?, ?, ?)"
    conn.execute(
        f"WITH step AS (INSERT INTO {rows.STEPS.name} {columns}) INSERT INTO {rows.MESSAGES.name} {columns}",
        [
            *(step["id"], project, step["created_at"], rows.dumps(step), step["thread_id"], step["run_id"]),
            *(message["id"], project, message["created_at"], rows.dumps(message), message["thread_id"]),
            message["run_id"],
        ],
    )


def unopen_message(conn: Conn, project: str, step_id: str, message_id: str) -> None:
    """Undo ``open_message`` for a message nobody was told of (its run ended before the model said anything)."""
    rows.delete(conn, rows.MESSAGES, project, message_id)
    rows.delete(conn, rows.STEPS, project, step_id)


def save_step(conn: Conn, project: str, step: dict[str, Any]) -> None:
    rows.replace(conn, rows.STEPS, project, step)


@dataclass
class CreateInputs:
    thread: dict[str, Any] | None
    assistant: dict[str, Any] | None
    messages: list[dict[str, Any]]  # the thread's, oldest first (empty when the thread is not found)


def create_inputs(conn: Conn, project: str, thread_id: str, assistant_id: str) -> CreateInputs:
    """What creating a run on a thread reads, in one statement: the thread, the assistant and the thread's
    messages (the first model call's context). On PostgreSQL each statement is a round trip, and these
    were three of the six before a streamed run's model call."""
    found = conn.fetchall(
        "SELECT 0, 0, data FROM threads WHERE id = ? AND project_id = ?"
        " UNION ALL SELECT 1, 0, data FROM assistants WHERE id = ? AND project_id = ?"
        " UNION ALL SELECT 2, seq, data FROM messages WHERE thread_id = ? AND project_id = ?"
        " ORDER BY 1, 2",
        (thread_id, project, assistant_id, project, thread_id, project),
    )
    inputs = CreateInputs(None, None, [])
    for kind, _, data in found:
        value = orjson.loads(data)
        if kind == 0:
            inputs.thread = value
        elif kind == 1:
            inputs.assistant = value
        else:
            inputs.messages.append(value)
    return inputs


def thread_messages(conn: Conn, project: str, thread_id: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(r[0])
        for r in conn.fetchall(
            "SELECT data FROM messages WHERE thread_id = ? AND project_id = ? ORDER BY seq", (thread_id, project)
        )
    ]


def save_partial(conn: Conn, project: str, message_id: str, data: str, previous: str) -> bool:
    """Store the text streamed so far into an open message, unless the message changed since ``previous``
    was written (closed by its run meanwhile): a late partial save never overwrites a final one."""
    return (
        conn.execute(
            "UPDATE messages SET data = ? WHERE id = ? AND project_id = ? AND data = ?",
            (data, message_id, project, previous),
        )
        > 0
    )


def delete_for_thread(conn: Conn, project: str, thread_id: str) -> None:
    rows.delete_where(conn, rows.STEPS, project, thread_id=thread_id)
    rows.delete_where(conn, rows.RUNS, project, thread_id=thread_id)
