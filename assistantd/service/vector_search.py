"""Search over vector stores: keyword and vector candidates per query, scored and ranked.

Each query gets a keyword list (FTS5 or tsvector, inside the stores searched and the files the attribute
filter lets through) and a vector list (the in-process matrix on SQLite, pgvector on PostgreSQL); every
candidate of either list gets its cosine similarity, and ``tools/file_search/rank.py`` scores them. A
search moves the stores' ``last_active_at`` (and so their expiry), at most once a minute per store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from assistantd.clock import now
from assistantd.errors import InvalidRequest, NotFound
from assistantd.store import Conn, Database
from assistantd.store import chunks as chunk_rows
from assistantd.store import keyword_search as keywords
from assistantd.store import vector_stores as vrows
from assistantd.store.dense_search import DenseSearch
from assistantd.tools.file_search.embed import Embedder, EmbeddingError
from assistantd.tools.file_search.rank import (
    LEAD_SPREAD_HEAD,
    SPREAD_HEAD,
    Ranked,
    combine,
    lead,
    matches,
    rank,
    spread,
    terms,
)

log = logging.getLogger("assistantd.vector_stores")

KIND = "vector store"
DAY = 86_400
CANDIDATES = 100  # per query and kind (keyword, vector) fed to the scoring
RERANK_DEPTH = 50  # the best fused chunks the reranking stage reorders (the rest follow unchanged)
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
    vectors: NDArray[np.float32] | None = None  # the queries' vectors (None: keywords alone)
    stores: dict[str, vrows.StoreRow] | None = None  # the stores searched, as read in this snapshot


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
        self.dense = DenseSearch(db.dialect)
        self.lexemes = keywords.LexemeShares()

    def forget(self, store_id: str) -> None:
        """The store was deleted or expired: drop its cached vectors."""
        self.dense.forget(store_id)

    async def search(
        self,
        project: str,
        vector_store_ids: list[str],
        queries: list[str],
        *,
        max_num_results: int,
        score_threshold: float = 0.0,
        filters: dict[str, Any] | None = None,
        modes: Sequence[str] = ("keyword", "vector"),
        ranker: str = "auto",
    ) -> list[SearchHit]:
        """The best chunks for the queries across the stores, best first, each scored in [0, 1].

        Raises NotFound for a store id that names no store of the project, InvalidRequest for an expired
        one. Files still being processed are not searched yet. ``modes`` narrows the search to keywords
        or vectors alone (for evaluation; the API always searches both). ``ranker`` picks the reranking
        stage over the fused list (``tools/file_search/rank.py``): ``auto`` (``lead`` then ``spread``),
        ``default-2024-11-15`` (``spread``) or ``none``.
        """
        store_ids = list(dict.fromkeys(vector_store_ids))
        stores = await self.db.read(lambda conn: vrows.get_stores(conn, project, store_ids))
        for store_id in store_ids:
            if store_id not in stores:
                raise NotFound.object(KIND, store_id)
            if stores[store_id].obj.get("status") == "expired":
                raise expired_error(store_id)
        active = [q for q in queries if q.strip()]
        if not active or not store_ids:
            return []
        hybrid = "vector" in modes and self.embedder is not None
        # The query embedding (a model call) runs while the keyword search runs in the database.
        embedding = asyncio.ensure_future(self.embed_queries(active)) if hybrid else None
        try:
            keyword = await self.db.read(
                lambda conn: self._keyword_lists(conn, project, store_ids, active, filters, modes, hybrid=hybrid)
            )
            try:
                vectors = await embedding if embedding is not None else None
            except EmbeddingError as exc:  # the endpoint is down: keywords still answer
                log.warning("query embedding failed, searching by keywords alone: %s", exc)
                vectors = None
        finally:
            if embedding is not None and not embedding.done():
                embedding.cancel()
        if keyword is None:
            return []

        def finish(conn: Conn) -> list[SearchHit]:
            found = self._with_vectors(conn, project, store_ids, keyword, vectors, filters)
            return [] if found is None else self._hits(conn, found, max_num_results, score_threshold, ranker)

        hits = await self.db.read(finish)
        await self._touch_after_search(project, stores)
        return hits

    async def embed_queries(self, queries: list[str]) -> NDArray[np.float32] | None:
        if self.embedder is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(None, self.embedder.embed, queries)

    def _search_tx(
        self,
        conn: Conn,
        project: str,
        store_ids: list[str],
        queries: list[str],
        vectors: NDArray[np.float32] | None,
        limit: int,
        threshold: float,
        filters: dict[str, Any] | None,
        modes: Sequence[str],
        ranker: str = "auto",
    ) -> list[SearchHit]:
        """The whole search in one snapshot, given the query vectors (the benchmark times this)."""
        found = self.candidates(conn, project, store_ids, queries, vectors, filters, modes)
        return [] if found is None else self._hits(conn, found, limit, threshold, ranker)

    def _hits(self, conn: Conn, found: Candidates, limit: int, threshold: float, ranker: str) -> list[SearchHit]:
        fused = rank(combine(q.keyword, q.vector) for q in found.queries)
        top = [r for r in fused if r.score >= threshold]
        if ranker != "none":  # after the threshold: a reranked score never falls below the head's last, kept, one
            head = top[:RERANK_DEPTH]
            file_of = {
                chunk: f
                for chunk, f in chunk_rows.chunk_files(conn, [r.chunk for r in head]).items()
                if f in found.files and (found.allowed is None or f in found.allowed)
            }
            places = SPREAD_HEAD
            if ranker == "auto" and found.vectors is not None:  # keywords alone: ``spread`` as measured
                head, places = self._lead(conn, found, head, file_of), LEAD_SPREAD_HEAD
            top = spread(head, file_of, places) + top[RERANK_DEPTH:]
        texts = chunk_rows.chunk_texts(conn, [r.chunk for r in top[: limit * 2]])
        hits: list[SearchHit] = []
        for ranked in top:
            if len(hits) >= limit:
                break
            chunk = texts.get(ranked.chunk)
            if chunk is None:
                continue  # deleted since the keyword search
            f = found.files.get(chunk[0])
            if f is None or (found.allowed is not None and f.seq not in found.allowed):
                continue  # a file being processed again: its old chunks are on their way out
            hits.append(SearchHit(f.file_id, f.filename, round(ranked.score, 6), chunk[1], f.attributes, f.store_id))
        return hits

    def _lead(self, conn: Conn, found: Candidates, head: list[Ranked], file_of: dict[int, int]) -> list[Ranked]:
        """``rank.lead`` over the head: each chunk's file's first chunk scored for the queries as any
        chunk is (``combine``: its cosine and, when it is among a query's keyword matches, its keyword
        relevance; the best over the queries). Without query vectors (keywords alone) the head stays."""
        if found.vectors is None or found.stores is None or not file_of:
            return head
        openings = chunk_rows.first_chunks(conn, sorted(set(file_of.values())))
        wanted = set(openings.values())
        best: dict[int, float] = {}
        for q, query in zip(found.queries, found.vectors, strict=True):
            known = q.vector or {}
            cosine = {c: known[c] for c in wanted if c in known}
            cosine.update(self._similarities(conn, found.stores, [c for c in wanted if c not in known], query))
            for chunk, score in combine([(c, s) for c, s in q.keyword if c in wanted], cosine).items():
                best[chunk] = max(score, best.get(chunk, 0.0))
        by_file = {f: best[c] for f, c in openings.items() if c in best}
        return lead(head, {chunk: by_file[f] for chunk, f in file_of.items() if f in by_file})

    def candidates(
        self,
        conn: Conn,
        project: str,
        store_ids: list[str],
        queries: list[str],
        vectors: NDArray[np.float32] | None,
        filters: dict[str, Any] | None,
        modes: Sequence[str] = ("keyword", "vector"),
    ) -> Candidates | None:
        """The candidates of every query as scoring sees them, in one snapshot; None when the filter
        leaves no file to search."""
        hybrid = vectors is not None and "vector" in modes
        keyword = self._keyword_lists(conn, project, store_ids, queries, filters, modes, hybrid=hybrid)
        if keyword is None:
            return None
        return self._with_vectors(conn, project, store_ids, keyword, vectors if hybrid else None, filters)

    def _scope(
        self, conn: Conn, project: str, store_ids: list[str], filters: dict[str, Any] | None
    ) -> tuple[dict[str, vrows.StoreRow], list[vrows.Searchable], set[int] | None] | None:
        """The stores (read again in this snapshot: cached matrices must match the generation of these
        files), their searchable files, and those the filter lets through (None: no filter)."""
        fresh = vrows.get_stores(conn, project, store_ids)
        files = vrows.searchable_files(conn, list(fresh))
        allowed: set[int] | None = None
        if filters is not None:
            allowed = {f.seq for f in files if matches(filters, f.attributes)}
            if not allowed:
                return None
        return fresh, files, allowed

    def _keyword_lists(
        self,
        conn: Conn,
        project: str,
        store_ids: list[str],
        queries: list[str],
        filters: dict[str, Any] | None,
        modes: Sequence[str],
        *,
        hybrid: bool,
    ) -> list[list[tuple[int, float]]] | None:
        scope = self._scope(conn, project, store_ids, filters)
        if scope is None:
            return None
        fresh, _, allowed = scope
        if "keyword" not in modes:
            return [[] for _ in queries]
        store_seqs = {sid: row.seq for sid, row in fresh.items()}
        narrowed = sorted(allowed) if allowed is not None else None
        share, ceiling = (
            (keywords.HYBRID_COMMON_SHARE, keywords.HYBRID_MATCH_CEILING)
            if hybrid
            else (keywords.KEYWORD_COMMON_SHARE, keywords.KEYWORD_MATCH_CEILING)
        )
        shares = self.lexemes.get(conn)
        return [
            keywords.keyword_search(
                conn,
                store_seqs=store_seqs,
                files=narrowed,
                words=terms(query),
                limit=CANDIDATES,
                chunks=sum(row.chunk_count for row in fresh.values()),
                common_share=share,
                ceiling=ceiling,
                lexeme_shares=shares,
            )
            for query in queries
        ]

    def _with_vectors(
        self,
        conn: Conn,
        project: str,
        store_ids: list[str],
        keyword: list[list[tuple[int, float]]],
        vectors: NDArray[np.float32] | None,
        filters: dict[str, Any] | None,
    ) -> Candidates | None:
        """Add each query's vector candidates, and the cosine of every keyword candidate."""
        scope = self._scope(conn, project, store_ids, filters)
        if scope is None:
            return None
        fresh, files, allowed = scope
        per_query: list[QueryCandidates] = []
        for i, ranked in enumerate(keyword):
            similar: dict[int, float] | None = None
            if vectors is not None:
                similar = dict(self._vector_candidates(conn, fresh, files, allowed, vectors[i]))
                missing = [seq for seq, _ in ranked if seq not in similar]
                similar.update(self._similarities(conn, fresh, missing, vectors[i]))
            per_query.append(QueryCandidates(ranked, similar))
        return Candidates(per_query, {f.seq: f for f in files}, allowed, vectors, fresh)

    def _similarities(
        self, conn: Conn, stores: dict[str, vrows.StoreRow], chunks: list[int], query: NDArray[np.float32]
    ) -> dict[int, float]:
        """Cosine similarity of keyword candidates the vector list did not reach."""
        if not chunks or self.embedder is None:
            return {}
        return self.dense.similarities(conn, stores=stores, chunks=chunks, model=self.embedder.name, query=query)

    def _vector_candidates(
        self,
        conn: Conn,
        stores: dict[str, vrows.StoreRow],
        files: list[vrows.Searchable],
        allowed: set[int] | None,
        query: NDArray[np.float32],
    ) -> list[tuple[int, float]]:
        assert self.embedder is not None
        return self.dense.candidates(
            conn,
            stores=stores,
            files=files,
            allowed=allowed,
            model=self.embedder.name,
            query=query,
            limit=CANDIDATES,
        )

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
