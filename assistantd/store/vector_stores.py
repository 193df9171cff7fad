"""Vector stores and the files in them: rows, counts, and removal, in SQL shared by both backends.

Store and file objects live in ``data`` like every other object; what changes underneath them (a
store's ``file_counts``, ``usage_bytes`` and ``status``) is counted from ``vector_store_files`` when
read, so it is never stale. The ``in_progress`` rows of ``vector_store_files`` are the ingestion queue
(``store.ingest_queue``); a file's chunks are in ``store.chunks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from assistantd.store.base import Conn, marks
from assistantd.store.chunks import drop_file_chunks, drop_store_chunks
from assistantd.store.objects import Table, dumps

STORES = Table("vector_stores", ("expires_at",))
FILES = Table("vector_store_files", ("vector_store_id", "batch_id", "status"))
BATCHES = Table("vector_store_file_batches", ("vector_store_id",))

STATUSES = ("in_progress", "completed", "failed", "cancelled")


# --- stores --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreRow:
    seq: int
    project: str
    obj: dict[str, Any]
    generation: int
    chunk_count: int


def insert_store(conn: Conn, project: str, obj: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO vector_stores (id, project_id, created_at, expires_at, data) VALUES (?, ?, ?, ?, ?)",
        (obj["id"], project, obj["created_at"], obj.get("expires_at"), dumps(obj)),
    )


def get_store(conn: Conn, project: str, store_id: str, *, lock: bool = False) -> StoreRow | None:
    # FOR UPDATE (PostgreSQL) serialises read-modify-write of a store's JSON between replicas.
    suffix = " FOR UPDATE" if lock and conn.dialect == "postgres" else ""
    row = conn.fetchone(
        "SELECT seq, data, generation, chunk_count FROM vector_stores WHERE id = ? AND project_id = ?" + suffix,
        (store_id, project),
    )
    if row is None:
        return None
    return StoreRow(int(row[0]), project, orjson.loads(row[1]), int(row[2]), int(row[3]))


def get_stores(conn: Conn, project: str, store_ids: Sequence[str]) -> dict[str, StoreRow]:
    if not store_ids:
        return {}
    rows = conn.fetchall(
        f"SELECT seq, data, generation, chunk_count, id FROM vector_stores WHERE project_id = ? "
        f"AND id IN ({marks(len(store_ids))})",
        [project, *store_ids],
    )
    return {r[4]: StoreRow(int(r[0]), project, orjson.loads(r[1]), int(r[2]), int(r[3])) for r in rows}


def save_store(conn: Conn, project: str, obj: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE vector_stores SET data = ?, expires_at = ? WHERE id = ? AND project_id = ?",
        (dumps(obj), obj.get("expires_at"), obj["id"], project),
    )


def delete_store(conn: Conn, project: str, store_id: str) -> bool:
    if conn.execute("DELETE FROM vector_stores WHERE id = ? AND project_id = ?", (store_id, project)) == 0:
        return False
    drop_store_chunks(conn, store_id)
    conn.execute("DELETE FROM vector_store_files WHERE vector_store_id = ?", (store_id,))
    conn.execute("DELETE FROM vector_store_file_batches WHERE vector_store_id = ?", (store_id,))
    return True


@dataclass(frozen=True)
class Counts:
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    usage_bytes: int = 0

    def as_json(self) -> dict[str, int]:
        total = self.in_progress + self.completed + self.failed + self.cancelled
        return {
            "in_progress": self.in_progress,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "total": total,
        }


def counts(conn: Conn, column: str, ids: Sequence[str]) -> dict[str, Counts]:
    """File counts and bytes per store (``column='vector_store_id'``) or per batch (``'batch_id'``)."""
    assert column in ("vector_store_id", "batch_id")
    if not ids:
        return {}
    rows = conn.fetchall(
        f"SELECT {column}, status, count(*), coalesce(sum(usage_bytes), 0) FROM vector_store_files "
        f"WHERE {column} IN ({marks(len(ids))}) GROUP BY {column}, status",
        list(ids),
    )
    acc: dict[str, dict[str, int]] = {i: {} for i in ids}
    for key, status, n, size in rows:
        acc[key][status] = int(n)
        acc[key]["usage_bytes"] = acc[key].get("usage_bytes", 0) + int(size)
    return {key: Counts(**values) for key, values in acc.items()}


def bump(conn: Conn, store_id: str, chunks: int) -> int:
    """A store's chunk set changed: a new generation (for in-process caches) and its chunk count."""
    conn.execute(
        "UPDATE vector_stores SET generation = generation + 1, chunk_count = chunk_count + ? WHERE id = ?",
        (chunks, store_id),
    )
    return int(conn.fetchval("SELECT generation FROM vector_stores WHERE id = ?", (store_id,)) or 0)


def clear_index(conn: Conn, store_id: str) -> None:
    """The store keeps its records but loses every chunk (it expired)."""
    removed = drop_store_chunks(conn, store_id)
    bump(conn, store_id, -removed)


def ingest_target(conn: Conn, store_id: str) -> tuple[int, bool] | None:
    """Ingestion: the store's row seq (its chunks are scoped by it) and whether it has expired (then it keeps
    no chunks), of whichever project; None once the store is deleted."""
    row = conn.fetchone("SELECT seq, data FROM vector_stores WHERE id = ?", (store_id,))
    return None if row is None else (int(row[0]), orjson.loads(row[1]).get("status") == "expired")


def due_to_expire(conn: Conn, moment: int) -> list[tuple[str, str]]:
    """(project, id) of stores past ``expires_at`` and not yet marked expired."""
    rows = conn.fetchall(
        "SELECT project_id, id, data FROM vector_stores WHERE expires_at IS NOT NULL AND expires_at <= ?", (moment,)
    )
    return [(r[0], r[1]) for r in rows if orjson.loads(r[2]).get("status") != "expired"]


def thread_for_update(conn: Conn, project: str, thread_id: str) -> dict[str, Any] | None:
    """A thread's object, locked until the transaction ends (PostgreSQL) so two requests that each give the
    thread a store cannot both do so."""
    suffix = " FOR UPDATE" if conn.dialect == "postgres" else ""
    raw = conn.fetchval("SELECT data FROM threads WHERE id = ? AND project_id = ?" + suffix, (thread_id, project))
    return None if raw is None else dict(orjson.loads(raw))


# --- files in stores -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRow:
    seq: int
    store_id: str
    file_id: str
    filename: str
    status: str
    obj: dict[str, Any]


def get_file(conn: Conn, project: str, store_id: str, file_id: str) -> FileRow | None:
    row = conn.fetchone(
        "SELECT seq, filename, status, data FROM vector_store_files WHERE vector_store_id = ? AND id = ? "
        "AND project_id = ?",
        (store_id, file_id, project),
    )
    if row is None:
        return None
    return FileRow(int(row[0]), store_id, file_id, row[1], row[2], orjson.loads(row[3]))


def insert_file(conn: Conn, project: str, obj: dict[str, Any], *, filename: str, batch_id: str | None) -> None:
    conn.execute(
        "INSERT INTO vector_store_files (id, project_id, vector_store_id, batch_id, status, filename, created_at, "
        "data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (obj["id"], project, obj["vector_store_id"], batch_id, obj["status"], filename, obj["created_at"], dumps(obj)),
    )


def save_file(conn: Conn, seq: int, obj: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE vector_store_files SET data = ?, status = ?, usage_bytes = ? WHERE seq = ?",
        (dumps(obj), obj["status"], obj["usage_bytes"], seq),
    )


def delete_file(conn: Conn, row: FileRow) -> None:
    removed = drop_file_chunks(conn, row.seq)
    conn.execute("DELETE FROM vector_store_files WHERE seq = ?", (row.seq,))
    bump(conn, row.store_id, -removed)


def detach_everywhere(conn: Conn, project: str | None, file_id: str) -> list[str]:
    """Remove a deleted File from every store it is in (of any project if None); return those stores' ids."""
    if project is None:
        rows = conn.fetchall("SELECT seq, vector_store_id FROM vector_store_files WHERE id = ?", (file_id,))
    else:
        rows = conn.fetchall(
            "SELECT seq, vector_store_id FROM vector_store_files WHERE id = ? AND project_id = ?", (file_id, project)
        )
    for seq, store_id in rows:
        removed = drop_file_chunks(conn, seq)
        conn.execute("DELETE FROM vector_store_files WHERE seq = ?", (seq,))
        bump(conn, store_id, -removed)
    return [r[1] for r in rows]


def file_content(conn: Conn, seq: int) -> list[str] | None:
    raw = conn.fetchval("SELECT content FROM vector_store_files WHERE seq = ?", (seq,))
    return None if raw is None else list(orjson.loads(raw))


@dataclass(frozen=True)
class Searchable:
    """A completed file of a store being searched."""

    seq: int
    store_id: str
    file_id: str
    filename: str
    attributes: dict[str, Any]
    index_gen: int


def searchable_files(conn: Conn, store_ids: Sequence[str]) -> list[Searchable]:
    if not store_ids:
        return []
    rows = conn.fetchall(
        f"SELECT seq, vector_store_id, id, filename, data, index_gen FROM vector_store_files "
        f"WHERE vector_store_id IN ({marks(len(store_ids))}) AND status = 'completed'",
        list(store_ids),
    )
    return [
        Searchable(int(r[0]), r[1], r[2], r[3], orjson.loads(r[4]).get("attributes") or {}, int(r[5])) for r in rows
    ]
