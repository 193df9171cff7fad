"""The one schema, as numbered migrations shared by both backends.

Each object table keeps the object exactly as the API returns it in ``data`` (JSON text), plus the
columns queries filter or order on. ``seq`` is a monotonic insertion counter: list order and cursors
use it, so objects created within one second still page correctly.
"""

from __future__ import annotations

from assistantd.clock import now
from assistantd.store.base import Conn

# Dialect-specific spellings, substituted into the DDL below.
_TYPES = {
    "sqlite": {"SEQ": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgres": {"SEQ": "BIGSERIAL PRIMARY KEY"},
}

# A statement is SQL for both backends, or {dialect: SQL} where they differ (a dialect left out skips it).
Statement = str | dict[str, str]

MIGRATIONS: list[tuple[int, str, list[Statement]]] = [
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

MIGRATIONS.append(
    (
        3,
        "vector stores, their files and file batches, and the chunk index",
        [
            # pgvector: a clear message instead of "could not open extension control file".
            {
                "postgres": """DO $$ BEGIN
                    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
                        IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
                            RAISE EXCEPTION 'assistantd needs the pgvector extension for file search: install '
                                'pgvector on the PostgreSQL server (https://github.com/pgvector/pgvector)';
                        END IF;
                        CREATE EXTENSION vector;
                    END IF;
                END $$"""
            },
            """CREATE TABLE vector_stores (
                seq {SEQ},
                id TEXT NOT NULL UNIQUE,
                project_id TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT,
                generation BIGINT NOT NULL DEFAULT 0,
                chunk_count BIGINT NOT NULL DEFAULT 0,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX vector_stores_project ON vector_stores (project_id, seq)",
            "CREATE INDEX vector_stores_expiry ON vector_stores (expires_at)",
            # One row per (store, file): the file's id is the object's id, so it is unique per store only.
            # The in_progress rows are the ingestion queue; lease_* say which server is processing one.
            """CREATE TABLE vector_store_files (
                seq {SEQ},
                id TEXT NOT NULL,
                project_id TEXT NOT NULL,
                vector_store_id TEXT NOT NULL,
                batch_id TEXT,
                status TEXT NOT NULL,
                filename TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                usage_bytes BIGINT NOT NULL DEFAULT 0,
                lease_owner TEXT,
                lease_until DOUBLE PRECISION,
                attempts INTEGER NOT NULL DEFAULT 0,
                index_gen BIGINT NOT NULL DEFAULT 0,
                content TEXT,
                data TEXT NOT NULL,
                UNIQUE (vector_store_id, id)
            )""",
            "CREATE INDEX vector_store_files_store ON vector_store_files (vector_store_id, seq)",
            "CREATE INDEX vector_store_files_batch ON vector_store_files (batch_id, seq)",
            "CREATE INDEX vector_store_files_file ON vector_store_files (id)",
            "CREATE INDEX vector_store_files_queue ON vector_store_files (status) WHERE status = 'in_progress'",
            """CREATE TABLE vector_store_file_batches (
                seq {SEQ},
                id TEXT NOT NULL UNIQUE,
                project_id TEXT NOT NULL,
                vector_store_id TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX vector_store_file_batches_store ON vector_store_file_batches (vector_store_id, seq)",
            # Chunks: text, vector (BLOB of float32 on SQLite, pgvector on PostgreSQL) and the model that
            # made it. Keywords: FTS5 (contentless, rows keyed by seq) or a generated tsvector column.
            {
                "sqlite": """CREATE TABLE vector_store_chunks (
                    seq {SEQ},
                    vector_store_id TEXT NOT NULL,
                    file_id TEXT NOT NULL,
                    vsf_seq BIGINT NOT NULL,
                    chunk_index INTEGER NOT NULL,
                    text TEXT NOT NULL,
                    model TEXT,
                    dims INTEGER,
                    embedding BLOB
                )""",
                "postgres": """CREATE TABLE vector_store_chunks (
                    seq {SEQ},
                    vector_store_id TEXT NOT NULL,
                    file_id TEXT NOT NULL,
                    vsf_seq BIGINT NOT NULL,
                    chunk_index INTEGER NOT NULL,
                    text TEXT NOT NULL,
                    model TEXT,
                    dims INTEGER,
                    embedding vector,
                    tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
                )""",
            },
            "CREATE INDEX vector_store_chunks_file ON vector_store_chunks (vsf_seq)",
            "CREATE INDEX vector_store_chunks_store ON vector_store_chunks (vector_store_id)",
            {"postgres": "CREATE INDEX vector_store_chunks_tsv ON vector_store_chunks USING gin (tsv)"},
            {
                "sqlite": """CREATE VIRTUAL TABLE vector_store_chunks_fts USING fts5(
                    scope, body, content='', contentless_delete=1,
                    tokenize='porter unicode61 remove_diacritics 2'
                )"""
            },
        ],
    )
)

MIGRATIONS.append(
    (
        4,
        "finer statistics of the chunks' lexemes",
        [
            # Keyword search budgets its matches by how common each word is (store/keyword_search.py): PostgreSQL's
            # statistics name the ~10,000 commonest lexemes instead of ~1,000, so words rarer than those are
            # known to be rare without counting them. ANALYZE then samples 300,000 rows instead of 30,000.
            {"postgres": "ALTER TABLE vector_store_chunks ALTER COLUMN tsv SET STATISTICS 1000"},
        ],
    )
)

MIGRATIONS.append(
    (
        5,
        "file bytes in the database (PostgreSQL; SQLite keeps them in the data folder)",
        [
            {
                "postgres": """CREATE TABLE blobs (
                    key TEXT PRIMARY KEY,
                    bytes BIGINT NOT NULL,
                    chunks INTEGER NOT NULL,
                    complete BOOLEAN NOT NULL,
                    created_at BIGINT NOT NULL
                )"""
            },
            {
                "postgres": """CREATE TABLE blob_chunks (
                    key TEXT NOT NULL REFERENCES blobs (key) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    data BYTEA NOT NULL,
                    PRIMARY KEY (key, seq)
                )"""
            },
            # Uploads are mostly compressed formats (PDF, images, zip): trying pglz on every chunk costs
            # CPU for nothing, so the bytes are stored out of line as they are.
            {"postgres": "ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL"},
            {"postgres": "CREATE INDEX blobs_incomplete ON blobs (created_at) WHERE NOT complete"},
        ],
    )
)

MIGRATIONS.append(
    (
        6,
        "chunks indexed by file and position",
        [
            # The auto ranker reads the first chunk of each candidate file (store/chunks.py, first_chunks): with the
            # file alone indexed, that read scanned every chunk of those files (30 ms at 100k chunks in files
            # of 2,000). The pair serves every lookup by file the old index served.
            "CREATE INDEX vector_store_chunks_file_position ON vector_store_chunks (vsf_seq, chunk_index)",
            "DROP INDEX vector_store_chunks_file",
        ],
    )
)

MIGRATIONS.append(
    (
        7,
        "int8 vectors of the local model under its one name",
        [
            # The bundled model's int8 runtime stored its vectors as 'local:all-MiniLM-L6-v2-int8', so a store
            # ingested with one runtime was searched on keywords alone under the other. Every runtime now
            # uses the one name (tools/file_search/embed.py says why that is sound).
            "UPDATE vector_store_chunks SET model = 'local:all-MiniLM-L6-v2' "
            "WHERE model = 'local:all-MiniLM-L6-v2-int8'",
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
        for statement in statements:
            sql = statement.get(conn.dialect) if isinstance(statement, dict) else statement
            if sql is not None:
                conn.execute(sql.format(**types))
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (version, name, now()),
        )
        applied.append(version)
    return applied
