"""Rows that hold API objects: insert, fetch, replace, delete, and page through them.

Every function takes the project id, and every query filters on it: an object of another project is
indistinguishable from one that does not exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from assistantd.store.base import Conn


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...] = ()  # indexed columns besides id/project_id/created_at/data


ASSISTANTS = Table("assistants")
THREADS = Table("threads")
MESSAGES = Table("messages", ("thread_id", "run_id"))
FILES = Table("files", ("purpose", "expires_at"))
RUNS = Table("runs", ("thread_id", "status", "expires_at", "lease_owner", "lease_until", "state"))
STEPS = Table("run_steps", ("thread_id", "run_id"))


@dataclass(frozen=True)
class PageQuery:
    limit: int = 20
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of raw JSON objects, in the order asked for."""

    items: list[str]
    first_id: str | None
    last_id: str | None
    has_more: bool

    def to_json(self) -> bytes:
        first = orjson.dumps(self.first_id).decode()
        last = orjson.dumps(self.last_id).decode()
        body = ",".join(self.items)
        more = "true" if self.has_more else "false"
        return (
            f'{{"object":"list","data":[{body}],"first_id":{first},"last_id":{last},"has_more":{more}}}'
        ).encode()


class CursorNotFound(Exception):
    def __init__(self, param: str, value: str) -> None:
        super().__init__(value)
        self.param = param
        self.value = value


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def insert(conn: Conn, table: Table, project: str, obj: Mapping[str, Any], **columns: Any) -> None:
    names = ["id", "project_id", "created_at", "data", *columns]
    values = [obj["id"], project, obj["created_at"], dumps(obj), *columns.values()]
    marks = ", ".join("?" for _ in names)
    conn.execute(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})", values)


def get_raw(conn: Conn, table: Table, project: str, object_id: str, **scope: Any) -> str | None:
    where, params = _where(project, scope)
    return conn.fetchval(f"SELECT data FROM {table.name} WHERE id = ? AND {where}", [object_id, *params])


def get(conn: Conn, table: Table, project: str, object_id: str, **scope: Any) -> dict[str, Any] | None:
    raw = get_raw(conn, table, project, object_id, **scope)
    return None if raw is None else orjson.loads(raw)


def exists(conn: Conn, table: Table, project: str, object_id: str, **scope: Any) -> bool:
    where, params = _where(project, scope)
    return (
        conn.fetchone(f"SELECT 1 FROM {table.name} WHERE id = ? AND {where}", [object_id, *params])
        is not None
    )


def replace(conn: Conn, table: Table, project: str, obj: Mapping[str, Any], **columns: Any) -> bool:
    sets = ", ".join(["data = ?", *(f"{c} = ?" for c in columns)])
    changed = conn.execute(
        f"UPDATE {table.name} SET {sets} WHERE id = ? AND project_id = ?",
        [dumps(obj), *columns.values(), obj["id"], project],
    )
    return changed > 0


def delete(conn: Conn, table: Table, project: str, object_id: str) -> bool:
    return conn.execute(f"DELETE FROM {table.name} WHERE id = ? AND project_id = ?", (object_id, project)) > 0


def delete_where(conn: Conn, table: Table, project: str, **scope: Any) -> int:
    where, params = _where(project, scope)
    return conn.execute(f"DELETE FROM {table.name} WHERE {where}", params)


def delete_expired_files(conn: Conn, moment: int) -> list[str]:
    """Delete, across projects, the file records whose expiry has passed; return their ids."""
    ids = [
        r[0]
        for r in conn.fetchall(
            "SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?", (moment,)
        )
    ]
    for file_id in ids:
        conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
    return ids


def page(
    conn: Conn,
    table: Table,
    project: str,
    query: PageQuery,
    *,
    condition: tuple[str, list[Any]] | None = None,
    **scope: Any,
) -> Page:
    """A page in ``seq`` order. ``after``/``before`` are ids of objects in the same list.

    ``after`` continues in the chosen order from the cursor; ``before`` returns the ``limit`` objects
    nearest the cursor on its other side, still in the chosen order. ``has_more`` says whether more
    objects lie beyond the page in the direction of travel, which is what the SDK's auto-pagination
    follows. ``condition`` is one more SQL clause (with its parameters) every listed row must meet.
    """
    where, params = _where(project, scope)
    if condition is not None:
        where += f" AND ({condition[0]})"
        params.extend(condition[1])
    forward = query.order == "asc"
    cursor_id, cursor_param = (query.after, "after") if query.after else (query.before, "before")
    if cursor_id is not None:
        seq = conn.fetchval(f"SELECT seq FROM {table.name} WHERE id = ? AND {where}", [cursor_id, *params])
        if seq is None:
            raise CursorNotFound(cursor_param, cursor_id)
        toward_larger = forward if cursor_param == "after" else not forward
        where += " AND seq > ?" if toward_larger else " AND seq < ?"
        params.append(seq)
    else:
        toward_larger = forward
    direction = "ASC" if toward_larger else "DESC"
    rows = conn.fetchall(
        f"SELECT id, data FROM {table.name} WHERE {where} ORDER BY seq {direction} LIMIT ?",
        [*params, query.limit + 1],
    )
    has_more = len(rows) > query.limit
    rows = rows[: query.limit]
    if cursor_param == "before" and cursor_id is not None:
        rows.reverse()  # fetched walking away from the cursor; present in the chosen order
    return Page(
        items=[r[1] for r in rows],
        first_id=rows[0][0] if rows else None,
        last_id=rows[-1][0] if rows else None,
        has_more=has_more,
    )


def _where(project: str, scope: Mapping[str, Any]) -> tuple[str, list[Any]]:
    clauses = ["project_id = ?"]
    params: list[Any] = [project]
    for column, value in scope.items():
        if value is None:
            continue  # an unset filter
        clauses.append(f"{column} = ?")
        params.append(value)
    return " AND ".join(clauses), params
