"""API keys, stored as SHA-256 hashes: the database never holds a usable key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from assistantd.store.base import Conn


@dataclass(frozen=True)
class KeyRecord:
    id: str
    project_id: str
    name: str
    created_at: int
    revoked_at: int | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def insert(conn: Conn, *, key_id: str, key: str, project: str, name: str, created_at: int) -> None:
    conn.execute(
        "INSERT INTO api_keys (id, key_hash, project_id, name, created_at) VALUES (?, ?, ?, ?, ?)",
        (key_id, hash_key(key), project, name, created_at),
    )


def project_for(conn: Conn, key: str) -> str | None:
    return conn.fetchval("SELECT project_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (hash_key(key),))


def any_active(conn: Conn) -> bool:
    return conn.fetchone("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1") is not None


def list_all(conn: Conn) -> list[KeyRecord]:
    rows = conn.fetchall("SELECT id, project_id, name, created_at, revoked_at FROM api_keys ORDER BY seq")
    return [KeyRecord(*row) for row in rows]


def revoke(conn: Conn, key_id: str, at: int) -> bool:
    return conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, key_id)) > 0


def any_ever(conn: Conn) -> bool:
    """Whether any key, active or revoked, was ever created: then the server never opens again.

    ``revoke`` only marks rows, never deletes them, so the table itself remembers."""
    return conn.fetchone("SELECT 1 FROM api_keys LIMIT 1") is not None


def _project_tables(conn: Conn) -> list[str]:
    """Every table with a project_id column, except the keys themselves (found, not listed, so a table a
    later migration adds is moved too)."""
    if conn.dialect == "sqlite":
        names = [r[0] for r in conn.fetchall("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        tables = [n for n in names if any(c[1] == "project_id" for c in conn.fetchall(f'PRAGMA table_info("{n}")'))]
    else:
        tables = [
            r[0]
            for r in conn.fetchall(
                "SELECT table_name FROM information_schema.columns WHERE column_name = 'project_id' "
                "AND table_schema = current_schema() ORDER BY table_name"
            )
        ]
    return [t for t in tables if t != "api_keys"]


def move_project(conn: Conn, source: str, target: str) -> dict[str, int]:
    """Move every object of ``source`` to ``target``; the number moved per table."""
    return {
        table: conn.execute(f'UPDATE "{table}" SET project_id = ? WHERE project_id = ?', (target, source))
        for table in _project_tables(conn)
    }
