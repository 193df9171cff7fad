"""SQLite's vector search: each store's chunk vectors as one numpy matrix in memory, searched exactly.

A search is one matrix-vector product (100k chunks of 384 dimensions: a few milliseconds), exact, with
no index to build or tune. The matrix is rebuilt from the database when the store's ``generation``
(bumped in the same transaction as every chunk insert or delete) differs from the cached one; files
whose vectors are already cached (same ``index_gen``) are not read again. Only one process owns an
embedded SQLite database, so the cache cannot miss a writer elsewhere; a second app on the same file
(tests) sees the generation move and reloads. Stores least recently searched leave the cache when it holds
more than ``max_rows`` vectors (the default, 2 million of 384 dimensions, is about 3 GB).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from assistantd.store.base import Conn
from assistantd.store.chunks import load_vectors
from assistantd.store.vector_stores import Searchable


@dataclass
class _StoreMatrix:
    generation: int = -1
    model: str = ""
    files: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # file seq -> (index_gen, first row, rows)
    seqs: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    owners: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    matrix: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    order: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))  # rows by ascending seq
    lock: threading.Lock = field(default_factory=threading.Lock)
    used: float = 0.0


class MatrixIndex:
    def __init__(self, max_rows: int = 2_000_000) -> None:
        self.max_rows = max_rows
        self._stores: dict[str, _StoreMatrix] = {}
        self._lock = threading.Lock()

    def _entry(self, store_id: str) -> _StoreMatrix:
        with self._lock:
            entry = self._stores.get(store_id)
            if entry is None:
                entry = self._stores[store_id] = _StoreMatrix()
            entry.used = time.monotonic()
            return entry

    def _evict(self, keep: str) -> None:
        """Drop the least recently searched stores until the cache fits (the one just loaded stays)."""
        with self._lock:
            total = sum(len(e.seqs) for e in self._stores.values())
            for store_id, entry in sorted(self._stores.items(), key=lambda item: item[1].used):
                if total <= self.max_rows:
                    break
                if store_id != keep:
                    total -= len(entry.seqs)
                    del self._stores[store_id]

    @property
    def cached_rows(self) -> int:
        with self._lock:
            return sum(len(e.seqs) for e in self._stores.values())

    def drop(self, store_id: str) -> None:
        with self._lock:
            self._stores.pop(store_id, None)

    def search(
        self,
        conn: Conn,
        *,
        store_id: str,
        generation: int,
        files: list[Searchable],
        allowed: set[int] | None,
        model: str,
        query: NDArray[np.float32],
        limit: int,
    ) -> list[tuple[int, float]]:
        """(chunk seq, cosine similarity) best first, among the chunks of ``allowed`` files (None: all)."""
        entry = self._entry(store_id)
        with entry.lock:
            refreshed = entry.generation != generation or entry.model != model
            if refreshed:
                self._refresh(conn, entry, store_id, files, model)
                entry.generation = generation
            seqs, owners, matrix = entry.seqs, entry.owners, entry.matrix
        if refreshed:
            self._evict(keep=store_id)
        if len(seqs) == 0:
            return []
        scores = matrix @ query
        if allowed is not None:
            keep = np.isin(owners, np.fromiter(allowed, dtype=np.int64, count=len(allowed)))
            scores = np.where(keep, scores, -np.inf)
            limit = min(limit, int(keep.sum()))
        limit = min(limit, len(scores))
        if limit <= 0:
            return []
        top = np.argpartition(-scores, limit - 1)[:limit]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(seqs[i]), float(scores[i])) for i in top]

    def similarities(self, store_id: str, chunks: list[int], query: NDArray[np.float32]) -> dict[int, float]:
        """Cosine similarity of the query to these chunks of the store (as last loaded by ``search``)."""
        entry = self._entry(store_id)
        with entry.lock:
            seqs, matrix, order = entry.seqs, entry.matrix, entry.order
        if not chunks or len(seqs) == 0:
            return {}
        wanted = np.asarray(chunks, dtype=np.int64)
        sorted_seqs = seqs[order]
        at = np.clip(np.searchsorted(sorted_seqs, wanted), 0, len(order) - 1)
        found = sorted_seqs[at] == wanted
        rows = order[at[found]]
        sims = matrix[rows] @ query
        return {int(c): float(v) for c, v in zip(wanted[found], sims, strict=True)}

    def _refresh(
        self, conn: Conn, entry: _StoreMatrix, store_id: str, files: list[Searchable], model: str
    ) -> None:
        """Rebuild the matrix: rows of files still current are kept, new and changed files are read."""
        if entry.model != model:
            entry.files.clear()
            entry.model = model
        current = {f.seq: f.index_gen for f in files if f.store_id == store_id}
        seq_parts: list[NDArray[np.int64]] = []
        vec_parts: list[NDArray[np.float32]] = []
        layout: dict[int, tuple[int, int, int]] = {}
        row = 0
        for seq, gen in current.items():
            cached = entry.files.get(seq)
            if cached is not None and cached[0] == gen:
                first, count = cached[1], cached[2]
                chunk_seqs, matrix = entry.seqs[first : first + count], entry.matrix[first : first + count]
            else:
                chunk_seqs, matrix = load_vectors(conn, seq, model)
            layout[seq] = (gen, row, len(chunk_seqs))
            row += len(chunk_seqs)
            if len(chunk_seqs):
                seq_parts.append(chunk_seqs)
                vec_parts.append(matrix)
        entry.files = layout
        if not seq_parts:
            entry.seqs = np.zeros(0, np.int64)
            entry.owners = np.zeros(0, np.int64)
            entry.matrix = np.zeros((0, 0), np.float32)
            entry.order = np.zeros(0, np.int64)
            return
        entry.seqs = np.concatenate(seq_parts)
        entry.owners = np.concatenate([np.full(c, s, np.int64) for s, (_, _, c) in layout.items() if c])
        entry.matrix = np.ascontiguousarray(np.concatenate(vec_parts))
        entry.order = np.argsort(entry.seqs, kind="stable")
