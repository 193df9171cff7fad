"""Search over vector stores: keyword and vector candidates per query, scored and ranked.

Each query gets a keyword list (FTS5 or tsvector, inside the stores searched and the files the attribute
filter lets through) and a vector list (the in-process matrix on SQLite, pgvector on PostgreSQL); every
candidate of either list gets its cosine similarity, and ``tools/file_search/rank.py`` scores them. A
search moves the stores' ``last_active_at`` (and so their expiry), at most once a minute per store.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assistantd.errors import InvalidRequest, NotFound
from assistantd.service.common import now
from assistantd.store import Conn, Database
from assistantd.store import vectors as vrows
from assistantd.store.vector_index import MatrixIndex
from assistantd.tools.file_search.embed import Embedder
from assistantd.tools.file_search.rank import combine, matches, rank, terms

KIND = "vector store"
DAY = 86_400
CANDIDATES = 100  # per query and kind (keyword, vector) fed to the scoring
TOUCH_SECONDS = 60  # a search moves last_active_at (a write) at most this often per store


@dataclass(frozen=True)
class SearchHit:
    file_id: str
    filename: str
    score: float  # in [0, 1]
    content: str  # the chunk's text
    attributes: dict[str, Any]
    vector_store_id: str


@dataclass(frozen=True)
class QueryCandidates:
    keyword: list[tuple[int, float]]  # (chunk seq, keyword relevance in [0, 1)) best first; [] if not searched
    vector: dict[int, float] | None  # cosine similarity of every candidate of both lists; None: no vectors


@dataclass(frozen=True)
class Candidates:
    queries: list[QueryCandidates]
    files: dict[int, vrows.Searchable]  # the searchable files by row seq
    allowed: set[int] | None  # the files the filter lets through (None: no filter)


def expired_error(store_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"Vector store {store_id} has expired and can no longer be used; create a new vector store.",
        code="vector_store_expired",
    )


def expiry(expires_after: dict[str, Any] | None, last_active_at: int) -> int | None:
    return last_active_at + int(expires_after["days"]) * DAY if expires_after else None


def touch(conn: Conn, project: str, row: vrows.StoreRow, moment: int) -> None:
    """Activity on a store: ``last_active_at`` is now, and the expiry counts from it."""
    obj = row.obj
    obj["last_active_at"] = moment
    obj["expires_at"] = expiry(obj.get("expires_after"), moment)
    vrows.save_store(conn, project, obj)


class VectorSearch:
    def __init__(self, db: Database, embedder: Embedder | None) -> None:
        self.db = db
        self.embedder = embedder
        # SQLite: vectors searched in process. PostgreSQL: by pgvector, in the database.
        self.index = MatrixIndex() if db.dialect == "sqlite" else None

    def forget(self, store_id: str) -> None:
        """The store was deleted or expired: drop its cached vectors."""
        if self.index is not None:
            self.index.drop(store_id)

    async def search(
        self,
        project: str,
        vector_store_ids: builtins.list[str],
        queries: builtins.list[str],
        *,
        max_num_results: int,
        score_threshold: float = 0.0,
        filters: dict[str, Any] | None = None,
        modes: Sequence[str] = ("keyword", "vector"),
    ) -> builtins.list[SearchHit]:
        """The best chunks for the queries across the stores, best first, each scored in [0, 1].

        Raises NotFound for a store id that names no store of the project, InvalidRequest for an expired
        one. Files still being processed are not searched yet. ``modes`` narrows the search to keywords
        or vectors alone (for evaluation; the API always searches both).
        """
        store_ids = builtins.list(dict.fromkeys(vector_store_ids))
        stores = await self.db.read(lambda conn: vrows.get_stores(conn, project, store_ids))
        for store_id in store_ids:
            if store_id not in stores:
                raise NotFound.object(KIND, store_id)
            if stores[store_id].obj.get("status") == "expired":
                raise expired_error(store_id)
        active = [q for q in queries if q.strip()]
        if not active or not store_ids:
            return []
        vectors = await self.embed_queries(active) if "vector" in modes else None
        hits = await self.db.read(
            lambda conn: self._search_tx(
                conn, project, store_ids, active, vectors, max_num_results, score_threshold, filters, modes
            )
        )
        await self._touch_after_search(project, stores)
        return hits

    async def embed_queries(self, queries: builtins.list[str]) -> NDArray[np.float32] | None:
        if self.embedder is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(None, self.embedder.embed, queries)

    def _search_tx(
        self,
        conn: Conn,
        project: str,
        store_ids: builtins.list[str],
        queries: builtins.list[str],
        vectors: NDArray[np.float32] | None,
        limit: int,
        threshold: float,
        filters: dict[str, Any] | None,
        modes: Sequence[str],
    ) -> builtins.list[SearchHit]:
        found = self.candidates(conn, project, store_ids, queries, vectors, filters, modes)
        if found is None:
            return []
        fused = rank(combine(q.keyword, q.vector) for q in found.queries)
        top = [r for r in fused if r.score >= threshold]
        texts = vrows.chunk_texts(conn, [r.chunk for r in top[: limit * 2]])
        hits: builtins.list[SearchHit] = []
        for ranked in top:
            if len(hits) >= limit:
                break
            chunk = texts.get(ranked.chunk)
            if chunk is None:
                continue
            f = found.files.get(chunk[0])
            if f is None or (found.allowed is not None and f.seq not in found.allowed):
                continue  # a file being processed again: its old chunks are on their way out
            hits.append(SearchHit(f.file_id, f.filename, round(ranked.score, 6), chunk[1], f.attributes, f.store_id))
        return hits

    def candidates(
        self,
        conn: Conn,
        project: str,
        store_ids: builtins.list[str],
        queries: builtins.list[str],
        vectors: NDArray[np.float32] | None,
        filters: dict[str, Any] | None,
        modes: Sequence[str] = ("keyword", "vector"),
    ) -> Candidates | None:
        """The ranked candidate lists, one per query and mode, as fusion sees them; None when the filter
        leaves no file to search."""
        # The stores again, in this snapshot: cached matrices must match the generation of these files.
        fresh = vrows.get_stores(conn, project, store_ids)
        files = vrows.searchable_files(conn, builtins.list(fresh))
        allowed: set[int] | None = None
        if filters is not None:
            allowed = {f.seq for f in files if matches(filters, f.attributes)}
            if not allowed:
                return None
        store_seqs = {sid: row.seq for sid, row in fresh.items()}
        narrowed = sorted(allowed) if allowed is not None else None
        per_query: builtins.list[QueryCandidates] = []
        for i, query in enumerate(queries):
            keyword: builtins.list[tuple[int, float]] = []
            if "keyword" in modes:
                keyword = vrows.keyword_search(
                    conn, store_seqs=store_seqs, files=narrowed, words=terms(query), limit=CANDIDATES
                )
            similar: dict[int, float] | None = None
            if vectors is not None and "vector" in modes:
                similar = dict(self._vector_candidates(conn, fresh, files, allowed, vectors[i]))
                missing = [seq for seq, _ in keyword if seq not in similar]
                similar.update(self._similarities(conn, fresh, missing, vectors[i]))
            per_query.append(QueryCandidates(keyword, similar))
        return Candidates(per_query, {f.seq: f for f in files}, allowed)

    def _similarities(
        self, conn: Conn, stores: dict[str, vrows.StoreRow], chunks: builtins.list[int], query: NDArray[np.float32]
    ) -> dict[int, float]:
        """Cosine similarity of keyword candidates the vector list did not reach."""
        if not chunks or self.embedder is None:
            return {}
        if self.index is None:
            return vrows.pg_similarities(
                conn, chunks=chunks, model=self.embedder.name, dims=int(query.shape[0]), query=query
            )
        out: dict[int, float] = {}
        for store_id in stores:
            out.update(self.index.similarities(store_id, chunks, query))
        return out

    def _vector_candidates(
        self,
        conn: Conn,
        stores: dict[str, vrows.StoreRow],
        files: builtins.list[vrows.Searchable],
        allowed: set[int] | None,
        query: NDArray[np.float32],
    ) -> builtins.list[tuple[int, float]]:
        assert self.embedder is not None
        model = self.embedder.name
        if self.index is None:
            return vrows.pg_vector_search(
                conn,
                store_ids=builtins.list(stores),
                total_chunks=sum(row.chunk_count for row in stores.values()),
                files=sorted(allowed) if allowed is not None else None,
                model=model,
                dims=int(query.shape[0]),
                query=query,
                limit=CANDIDATES,
            )
        found: builtins.list[tuple[int, float]] = []
        for store_id, row in stores.items():
            found += self.index.search(
                conn,
                store_id=store_id,
                generation=row.generation,
                files=files,
                allowed=allowed,
                model=model,
                query=query,
                limit=CANDIDATES,
            )
        found.sort(key=lambda item: -item[1])
        return found[:CANDIDATES]

    async def _touch_after_search(self, project: str, stores: dict[str, vrows.StoreRow]) -> None:
        moment = now()
        stale = [
            sid for sid, row in stores.items() if moment - int(row.obj.get("last_active_at") or 0) >= TOUCH_SECONDS
        ]
        if not stale:
            return

        def tx(conn: Conn) -> None:
            for store_id in stale:
                row = vrows.get_store(conn, project, store_id, lock=True)
                if row is not None and row.obj.get("status") != "expired":
                    touch(conn, project, row, moment)

        await self.db.write(tx)
