"""Chunk rows: their text, their vectors, and the indexes that keep both searchable.

Keywords: SQLite indexes chunk text in a contentless FTS5 table (rowid = chunk ``seq``), with a
``scope`` column of tokens naming the chunk's store (``v<store seq>``) and file (``f<file seq>``) so a
MATCH stays inside the stores searched; PostgreSQL keeps a generated ``tsvector`` with a GIN index.
Vectors: a float32 BLOB on SQLite (searched in process, see ``vector_index``), pgvector on PostgreSQL
(with an HNSW index per vector size, see ``ensure_vector_index``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assistantd.store.base import Conn, marks

INSERT_BATCH = 100  # chunk rows per INSERT statement
HNSW_LOCK = 0x76736869  # advisory lock class for creating an HNSW index ("vshi")


def drop_file_chunks(conn: Conn, vsf_seq: int) -> int:
    """Delete the chunks of one file (its ``vector_store_files`` seq); return how many."""
    return _drop(conn, "vsf_seq", vsf_seq)


def drop_store_chunks(conn: Conn, store_id: str) -> int:
    """Delete the chunks of every file of one store; return how many."""
    return _drop(conn, "vector_store_id", store_id)


def _drop(conn: Conn, column: str, value: Any) -> int:
    if conn.dialect == "sqlite":
        conn.execute(
            "DELETE FROM vector_store_chunks_fts WHERE rowid IN "
            f"(SELECT seq FROM vector_store_chunks WHERE {column} = ?)",
            (value,),
        )
    return conn.execute(f"DELETE FROM vector_store_chunks WHERE {column} = ?", (value,))


def insert_chunks(
    conn: Conn,
    *,
    store_id: str,
    store_seq: int,
    vsf_seq: int,
    file_id: str,
    texts: Sequence[str],
    model: str | None,
    vectors: NDArray[np.float32] | None,
) -> None:
    """One file's chunks (``vectors``: one row per text, or None when the file has no vectors), and on
    SQLite their FTS5 rows (PostgreSQL's ``tsvector`` column is generated)."""
    dims = None if vectors is None else int(vectors.shape[1])
    postgres = conn.dialect == "postgres"
    vector_mark = "?::vector" if postgres else "?"
    for start in range(0, len(texts), INSERT_BATCH):
        end = min(len(texts), start + INSERT_BATCH)
        values: list[Any] = []
        for i in range(start, end):
            vec: Any = None
            if vectors is not None:
                vec = vector_literal(vectors[i]) if postgres else vectors[i].astype("<f4").tobytes()
            values += [store_id, file_id, vsf_seq, i, texts[i], model if vectors is not None else None, dims, vec]
        row = f"(?, ?, ?, ?, ?, ?, ?, {vector_mark})"
        returned = conn.fetchall(
            "INSERT INTO vector_store_chunks (vector_store_id, file_id, vsf_seq, chunk_index, text, model, dims, "
            f"embedding) VALUES {', '.join(row for _ in range(start, end))} RETURNING seq, chunk_index",
            values,
        )
        if not postgres:
            scope = f"v{store_seq} f{vsf_seq}"
            fts: list[Any] = []
            for seq, index in returned:
                fts += [seq, scope, texts[index]]
            conn.execute(
                "INSERT INTO vector_store_chunks_fts (rowid, scope, body) VALUES "
                + ", ".join("(?, ?, ?)" for _ in returned),
                fts,
            )


def vector_literal(v: NDArray[np.float32]) -> str:
    """PostgreSQL: a vector as pgvector's text input (``[1.0,2.0,...]``), bound as ``?::vector``."""
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def chunk_texts(conn: Conn, seqs: Sequence[int]) -> dict[int, tuple[int, str]]:
    """{chunk seq: (file seq, text)}."""
    if not seqs:
        return {}
    rows = conn.fetchall(
        f"SELECT seq, vsf_seq, text FROM vector_store_chunks WHERE seq IN ({marks(len(seqs))})", list(seqs)
    )
    return {int(r[0]): (int(r[1]), r[2]) for r in rows}


def chunk_files(conn: Conn, seqs: Sequence[int]) -> dict[int, int]:
    """{chunk seq: file seq} (a chunk deleted since is missing)."""
    if not seqs:
        return {}
    rows = conn.fetchall(f"SELECT seq, vsf_seq FROM vector_store_chunks WHERE seq IN ({marks(len(seqs))})", list(seqs))
    return {int(r[0]): int(r[1]) for r in rows}


def has_hnsw(conn: Conn, dims: int) -> bool:
    """PostgreSQL: whether the HNSW index for vectors of this size exists (``ensure_vector_index``)."""
    return (
        conn.fetchone("SELECT 1 FROM pg_indexes WHERE indexname = ?", (f"vector_store_chunks_hnsw_{dims}",)) is not None
    )


def ensure_vector_index(conn: Conn, dims: int) -> None:
    """PostgreSQL: an HNSW index for vectors of this size (pgvector indexes need a fixed dimension); pgvector
    cannot index more than 2000 dimensions, which are then always scanned. SQLite needs none (its vectors
    are searched in process): a no-op there."""
    if conn.dialect != "postgres" or dims > 2000:
        return
    # Call it in a transaction that has not written chunks (CREATE INDEX waits for every open insert).
    # Two callers at once (two ingestion slots finishing their first files) would each hold the table's
    # share lock and then wait for the other: one at a time (the lock lasts until commit), and once the
    # index exists nobody takes the table's share lock again.
    conn.fetchval(f"SELECT pg_advisory_xact_lock({HNSW_LOCK}, {int(dims)})")
    if conn.fetchval("SELECT to_regclass(?)", (f"vector_store_chunks_hnsw_{dims}",)) is not None:
        return
    conn.execute(
        f"CREATE INDEX IF NOT EXISTS vector_store_chunks_hnsw_{dims} ON vector_store_chunks USING hnsw "
        f"((embedding::vector({dims})) vector_cosine_ops) WHERE dims = {dims}"
    )


def load_vectors(conn: Conn, vsf_seq: int, model: str) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """SQLite: one file's chunk seqs and vectors of the model, by seq (for the in-process index)."""
    rows = conn.fetchall(
        "SELECT seq, embedding FROM vector_store_chunks WHERE vsf_seq = ? AND model = ? ORDER BY seq",
        (vsf_seq, model),
    )
    seqs = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    if not rows:
        return seqs, np.zeros((0, 0), np.float32)
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
    return seqs, matrix.astype(np.float32, copy=False)


def first_chunks(conn: Conn, file_seqs: Sequence[int]) -> dict[int, int]:
    """{file seq: seq of its first chunk} for those of the files (vector store file rows) that have one: the
    file's opening (title, name line, first paragraphs), which the ``auto`` ranker compares with the
    question (``tools/file_search/rank.py``, ``lead``)."""
    if not file_seqs:
        return {}
    rows = conn.fetchall(
        f"SELECT vsf_seq, MIN(seq) FROM vector_store_chunks WHERE vsf_seq IN ({marks(len(file_seqs))}) "
        "AND chunk_index = 0 GROUP BY vsf_seq",
        list(file_seqs),
    )
    return {int(r[0]): int(r[1]) for r in rows}
