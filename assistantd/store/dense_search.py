"""Vector search over chunks, the same to its callers on both databases: ``DenseSearch``.

SQLite: each store's chunk vectors as a matrix in memory (``vector_index.MatrixIndex``), searched exactly.
PostgreSQL: pgvector in the database (nothing held in memory), through the HNSW index for large stores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assistantd.store.base import Conn, marks
from assistantd.store.chunks import has_hnsw, vector_literal
from assistantd.store.vector_index import MatrixIndex
from assistantd.store.vector_stores import Searchable, StoreRow

# PostgreSQL: below this many chunks an exact scan is about as fast as the HNSW index, and exact (no
# approximate-recall loss), so vector search uses the index only past it.
HNSW_MIN_CHUNKS = 5_000


class DenseSearch:
    """Vector candidates and cosine similarities for a search; ``matrix`` is SQLite's in-process cache
    (None on PostgreSQL)."""

    def __init__(self, dialect: str) -> None:
        self.matrix = MatrixIndex() if dialect == "sqlite" else None

    def forget(self, store_id: str) -> None:
        """The store was deleted or expired: drop its cached vectors."""
        if self.matrix is not None:
            self.matrix.drop(store_id)

    def candidates(
        self,
        conn: Conn,
        *,
        stores: Mapping[str, StoreRow],
        files: list[Searchable],
        allowed: set[int] | None,
        model: str,
        query: NDArray[np.float32],
        limit: int,
    ) -> list[tuple[int, float]]:
        """(chunk seq, cosine similarity) best first, at most ``limit``, among the chunks of the stores'
        ``files`` (their searchable files, read in this snapshot) that are ``allowed`` (None: all)."""
        if self.matrix is None:
            return pg_vector_search(
                conn,
                store_ids=list(stores),
                total_chunks=sum(row.chunk_count for row in stores.values()),
                files=sorted(allowed) if allowed is not None else None,
                model=model,
                dims=int(query.shape[0]),
                query=query,
                limit=limit,
            )
        found: list[tuple[int, float]] = []
        for store_id, row in stores.items():
            found += self.matrix.search(
                conn,
                store_id=store_id,
                generation=row.generation,
                files=files,
                allowed=allowed,
                model=model,
                query=query,
                limit=limit,
            )
        found.sort(key=lambda item: -item[1])
        return found[:limit]

    def similarities(
        self, conn: Conn, *, stores: Mapping[str, StoreRow], chunks: list[int], model: str, query: NDArray[np.float32]
    ) -> dict[int, float]:
        """Cosine similarity of the query to these chunks of the stores (those with a vector of the model;
        on SQLite, as ``candidates`` last loaded them)."""
        if not chunks:
            return {}
        if self.matrix is None:
            return pg_similarities(conn, chunks=chunks, model=model, dims=int(query.shape[0]), query=query)
        out: dict[int, float] = {}
        for store_id in stores:
            out.update(self.matrix.similarities(store_id, chunks, query))
        return out


def pg_vector_search(
    conn: Conn,
    *,
    store_ids: Sequence[str],
    total_chunks: int,
    files: Sequence[int] | None,
    model: str,
    dims: int,
    query: NDArray[np.float32],
    limit: int,
) -> list[tuple[int, float]]:
    """(chunk seq, cosine similarity) best first, by pgvector.

    Large stores go through the HNSW index (approximate; candidates of other stores are filtered out
    after the index scan, so ``ef_search`` is raised well past ``limit``); small ones, or a search
    narrowed to some files, by an exact scan of the store's rows, which is then both faster and exact.
    If the index scan comes back short, the exact scan runs instead.
    """
    if not store_ids or (files is not None and not files):
        return []
    vec = vector_literal(query)
    # dims is spelled out, not bound: the planner must see it to use the partial HNSW index.
    where = f"vector_store_id IN ({marks(len(store_ids))}) AND model = ? AND dims = {int(dims)}"
    params: list[Any] = [*store_ids, model]
    if files is not None:
        where += " AND vsf_seq = ANY(?)"
        params.append(list(files))
    if files is None and total_chunks > HNSW_MIN_CHUNKS and has_hnsw(conn, dims):
        ef = min(1000, max(100, 4 * limit))
        conn.fetchall("SELECT set_config('hnsw.ef_search', ?, false)", (str(ef),))
        rows = conn.fetchall(
            f"SELECT seq, 1 - ((embedding::vector({dims})) <=> ?::vector({dims})) FROM vector_store_chunks "
            f"WHERE {where} ORDER BY (embedding::vector({dims})) <=> ?::vector({dims}) LIMIT ?",
            [vec, *params, vec, limit],
        )
        if len(rows) >= min(limit, total_chunks):
            return [(int(r[0]), float(r[1])) for r in rows]
    rows = conn.fetchall(
        f"SELECT seq, 1 - (embedding <=> ?::vector) FROM vector_store_chunks WHERE {where} "
        "ORDER BY embedding <=> ?::vector LIMIT ?",
        [vec, *params, vec, limit],
    )
    return [(int(r[0]), float(r[1])) for r in rows]


def pg_similarities(
    conn: Conn, *, chunks: Sequence[int], model: str, dims: int, query: NDArray[np.float32]
) -> dict[int, float]:
    """PostgreSQL: cosine similarity of the query to these chunks (those with a vector of the model)."""
    if not chunks:
        return {}
    rows = conn.fetchall(
        f"SELECT seq, 1 - (embedding <=> ?::vector) FROM vector_store_chunks WHERE seq = ANY(?) AND model = ? "
        f"AND dims = {int(dims)}",
        (vector_literal(query), list(chunks), model),
    )
    return {int(r[0]): float(r[1]) for r in rows}
