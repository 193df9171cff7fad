"""The one schema, as numbered migrations shared by both backends.

Each object table keeps the object exactly as the API returns it in ``data`` (JSON text), plus the
columns queries filter or order on. ``seq`` is a monotonic insertion counter: list order and cursors
use it, so objects created within one second still page correctly.
"""

from __future__ import annotations

from assistantd.store.base import Conn

# Dialect-specific spellings, substituted into the DDL below.
_TYPES = {
    "sqlite": {"SEQ": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgres": {"SEQ": "BIGSERIAL PRIMARY KEY"},
}

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "objects: keys, assistants, threads, messages, files",
        [
            """CREATE TABLE api_keys (
                seq {SEQ},
                id TEXT NOT NULL UNIQUE,
                key_hash TEXT NOT NULL UNIQUE,
                project_id TEXT NOT NULL,
                name TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                revoked_at BIGINT
            )""",
            """CREATE TABLE assistants (
                seq {SEQ},
                id TEXT NOT NULL UNIQUE,
                project_id TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX assistants_project ON assistants (project_id, seq)",
            """CREATE TABLE threads (
                seq {SEQ},
                id TEXT NOT NULL UNIQUE,
                project_id TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX threads_project ON threads (project_id, seq)",
            """CREATE TABLE messages (
                seq {SEQ},
                id TEXT NOT NULL UNIQUE,
                project_id TEXT NOT NULL,
                thread_id TEXT NOT NULL,
                run_id TEXT,
                created_at BIGINT NOT NULL,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX messages_thread ON messages (thread_id, seq)",
            "CREATE INDEX messages_run ON messages (run_id, seq)",
            """CREATE TABLE files (
                seq {SEQ},
                id TEXT NOT NULL UNIQUE,
                project_id TEXT NOT NULL,
                purpose TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX files_project ON files (project_id, seq)",
            "CREATE INDEX files_expiry ON files (expires_at)",
        ],
    ),
]

MIGRATIONS.append(
    (
        2,
        "runs and run steps; one active run per thread",
        [
            """CREATE TABLE runs (
                seq {SEQ},
                id TEXT NOT NULL UNIQUE,
                project_id TEXT NOT NULL,
                thread_id TEXT NOT NULL,
                status TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT,
                lease_owner TEXT,
                lease_until DOUBLE PRECISION,
                state TEXT NOT NULL,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX runs_thread ON runs (thread_id, seq)",
            "CREATE INDEX runs_status ON runs (status)",
            # The thread lock: at most one run per thread in an active status. Two racing creates
            # cannot both insert; the loser gets a unique violation and the API's 400.
            """CREATE UNIQUE INDEX runs_one_active ON runs (thread_id)
                WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling')""",
            """CREATE TABLE run_steps (
                seq {SEQ},
                id TEXT NOT NULL UNIQUE,
                project_id TEXT NOT NULL,
                thread_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX run_steps_run ON run_steps (run_id, seq)",
        ],
    )
)

LATEST = MIGRATIONS[-1][0]


def migrate(conn: Conn) -> list[int]:
    """Apply every migration not yet applied, in order; return the versions applied now.

    Runs inside the caller's transaction, so a failed migration leaves the schema as it was.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
        "name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
    )
    done = {row[0] for row in conn.fetchall("SELECT version FROM schema_migrations")}
    applied = []
    types = _TYPES[conn.dialect]
    for version, name, statements in MIGRATIONS:
        if version in done:
            continue
        for sql in statements:
            conn.execute(sql.format(**types))
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (version, name, _now()),
        )
        applied.append(version)
    return applied


def _now() -> int:
    import time

    return int(time.time())
