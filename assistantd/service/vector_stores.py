"""Vector stores: stores, the files attached to them, file batches, search, and the thread store of runs.

Attaching a file only queues it (``in_progress``); the ``Ingestor`` parses, chunks and embeds it in the
background. A store's ``file_counts``, ``usage_bytes`` and ``status`` are counted from its files when
read. Search is hybrid: a keyword list and a vector list per query, fused as a weighted sum of cosine
and saturated keyword relevance (see ``tools/file_search/rank.py``), inside the stores searched and the
files their attribute filter allows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson

from assistantd.clock import now
from assistantd.engine.ingestion import Ingestor
from assistantd.errors import InvalidRequest, NotFound
from assistantd.ids import new_id
from assistantd.protocol.common import ChunkingStrategy, StaticChunking, dump
from assistantd.protocol.vector_stores import (
    CreateFileBatch,
    CreateVectorStore,
    CreateVectorStoreFile,
    ModifyVectorStore,
    SearchVectorStore,
    UpdateVectorStoreFile,
)
from assistantd.service.common import page_or_400, require_file, require_files
from assistantd.service.vector_search import KIND, SearchHit, VectorSearch, expired_error, expiry, touch
from assistantd.store import Conn, Database, ingest_queue
from assistantd.store import objects as rows
from assistantd.store import vector_stores as vrows
from assistantd.store.objects import Page, PageQuery
from assistantd.tools.file_search.chunk import AUTO_MAX_TOKENS, AUTO_OVERLAP_TOKENS
from assistantd.tools.file_search.embed import Embedder
from assistantd.tools.file_search.rank import rewrite

FILE_STATUSES = vrows.STATUSES  # what a list of a store's files may be filtered by

log = logging.getLogger("assistantd.vector_stores")

THREAD_STORE_DAYS = 7
DEFAULT_RESULTS = 10


def chunking_json(strategy: ChunkingStrategy | None, param: str = "chunking_strategy") -> dict[str, Any]:
    """The stored (and returned) form: ``auto`` is reported as the static setting it stands for."""
    if isinstance(strategy, StaticChunking):
        size, overlap = strategy.static.max_chunk_size_tokens, strategy.static.chunk_overlap_tokens
        if overlap > size // 2:
            raise InvalidRequest(
                f"Invalid '{param}.static.chunk_overlap_tokens': {overlap} is more than half of "
                f"max_chunk_size_tokens ({size}). Expected a value <= {size // 2}.",
                param=f"{param}.static.chunk_overlap_tokens",
                code="invalid_value",
            )
    else:
        size, overlap = AUTO_MAX_TOKENS, AUTO_OVERLAP_TOKENS
    return {"type": "static", "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap}}


def _not_found_file(store_id: str, file_id: str) -> NotFound:
    return NotFound(f"No file found with id '{file_id}' in vector store '{store_id}'.")


def new_store(
    *,
    created_at: int,
    name: str | None = None,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
    expires_after: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": new_id("vector_store"),
        "object": "vector_store",
        "created_at": created_at,
        "name": name or "",
        "description": description,
        "usage_bytes": 0,
        "file_counts": vrows.Counts().as_json(),
        "status": "completed",
        "expires_after": expires_after,
        "expires_at": expiry(expires_after, created_at),
        "last_active_at": created_at,
        "metadata": dict(metadata or {}),
    }


def present(obj: dict[str, Any], counts: vrows.Counts) -> dict[str, Any]:
    """The store as the API returns it: counts, bytes and status as they are now."""
    out = dict(obj)
    out["file_counts"] = counts.as_json()
    out["usage_bytes"] = counts.usage_bytes
    if obj.get("status") != "expired":
        out["status"] = "in_progress" if counts.in_progress else "completed"
    return out


def _present_batch(obj: dict[str, Any], counts: vrows.Counts) -> dict[str, Any]:
    out = dict(obj)
    out["file_counts"] = counts.as_json()
    if obj.get("status") != "cancelled":
        total = out["file_counts"]["total"]
        if counts.in_progress:
            out["status"] = "in_progress"
        elif total and counts.failed == total:
            out["status"] = "failed"
        else:
            out["status"] = "completed"
    return out


def attach(
    conn: Conn,
    project: str,
    store_id: str,
    file_id: str,
    *,
    chunking: dict[str, Any],
    attributes: dict[str, Any] | None,
    batch_id: str | None,
    moment: int,
) -> dict[str, Any]:
    """Queue one file in a store (the caller checked both exist). A file already there is processed again
    if it failed, was cancelled or asks for other chunking; otherwise it stays as it is."""
    existing = vrows.get_file(conn, project, store_id, file_id)
    if existing is not None:
        obj = existing.obj
        same = obj.get("chunking_strategy") == chunking
        if existing.status == "in_progress" or (existing.status == "completed" and same):
            if attributes is not None:
                obj["attributes"] = attributes
                vrows.save_file(conn, existing.seq, obj)
            return obj
        obj.update(
            status="in_progress",
            last_error=None,
            usage_bytes=0,
            chunking_strategy=chunking,
            attributes=attributes if attributes is not None else obj.get("attributes") or {},
        )
        ingest_queue.requeue_file(conn, existing.seq, obj, batch_id=batch_id)
        return obj
    filename = conn.fetchval("SELECT data FROM files WHERE id = ? AND project_id = ?", (file_id, project))
    obj = {
        "id": file_id,
        "object": "vector_store.file",
        "usage_bytes": 0,
        "created_at": moment,
        "vector_store_id": store_id,
        "status": "in_progress",
        "last_error": None,
        "chunking_strategy": chunking,
        "attributes": attributes or {},
    }
    name = orjson.loads(filename)["filename"] if filename else file_id
    vrows.insert_file(conn, project, obj, filename=name, batch_id=batch_id)
    return obj


def create_store_tx(
    conn: Conn,
    project: str,
    *,
    file_ids: Sequence[str],
    chunking: ChunkingStrategy | None,
    metadata: dict[str, str] | None,
    name: str | None = None,
    description: str | None = None,
    expires_after: dict[str, Any] | None = None,
    param: str = "",
) -> dict[str, Any]:
    """Create a store with files queued, inside the caller's transaction (also used by the
    ``tool_resources.file_search.vector_stores`` helper of assistants and threads)."""
    prefix = f"{param}." if param else ""
    chunks = chunking_json(chunking, f"{prefix}chunking_strategy")
    require_files(conn, project, file_ids, f"{prefix}file_ids")
    moment = now()
    obj = new_store(
        created_at=moment, name=name, description=description, metadata=metadata, expires_after=expires_after
    )
    vrows.insert_store(conn, project, obj)
    for file_id in dict.fromkeys(file_ids):
        attach(conn, project, obj["id"], file_id, chunking=chunks, attributes=None, batch_id=None, moment=moment)
    return obj


class VectorStoreService:
    def __init__(self, db: Database, ingestor: Ingestor, *, embedder: Embedder | None, mode: str = "") -> None:
        self.db = db
        self.ingestor = ingestor
        self.embedder = embedder
        self.mode = mode  # what search runs on, said once at start-up
        self.searcher = VectorSearch(db, embedder)

    async def backlog(self) -> int:
        """Files waiting for or in ingestion, across every project (an operator's gauge)."""
        return await self.db.read(ingest_queue.backlog)

    async def start(self) -> None:
        if self.mode:
            (log.info if self.embedder is not None else log.warning)(self.mode)
        await self.ingestor.start(embedded=self.db.dialect == "sqlite")

    async def stop(self) -> None:
        await self.ingestor.stop()
        if self.embedder is not None:
            self.embedder.close()

    # --- stores ----------------------------------------------------------------------------------

    async def create(self, project: str, req: CreateVectorStore) -> dict[str, Any]:
        def tx(conn: Conn) -> dict[str, Any]:
            obj = create_store_tx(
                conn,
                project,
                file_ids=req.file_ids or [],
                chunking=req.chunking_strategy,
                metadata=req.metadata,
                name=req.name,
                description=req.description,
                expires_after=dump(req.expires_after),
            )
            return present(obj, vrows.counts(conn, "vector_store_id", [obj["id"]])[obj["id"]])

        obj = await self.db.write(tx)
        if req.file_ids:
            self.ingestor.wake()
        return obj

    async def retrieve(self, project: str, store_id: str) -> dict[str, Any]:
        return await self.db.read(lambda conn: self._view(conn, project, store_id))

    def _view(self, conn: Conn, project: str, store_id: str) -> dict[str, Any]:
        row = vrows.get_store(conn, project, store_id)
        if row is None:
            raise NotFound.object(KIND, store_id)
        return present(row.obj, vrows.counts(conn, "vector_store_id", [store_id])[store_id])

    async def list_page(self, project: str, query: PageQuery) -> Page:
        def tx(conn: Conn) -> Page:
            page = page_or_400(conn, vrows.STORES, project, query, KIND)
            objs = [orjson.loads(item) for item in page.items]
            counts = vrows.counts(conn, "vector_store_id", [o["id"] for o in objs])
            items = [orjson.dumps(present(o, counts[o["id"]])).decode() for o in objs]
            return Page(items=items, first_id=page.first_id, last_id=page.last_id, has_more=page.has_more)

        return await self.db.read(tx)

    async def modify(self, project: str, store_id: str, req: ModifyVectorStore) -> dict[str, Any]:
        fields = req.model_fields_set

        def tx(conn: Conn) -> dict[str, Any]:
            row = vrows.get_store(conn, project, store_id, lock=True)
            if row is None:
                raise NotFound.object(KIND, store_id)
            obj = row.obj
            if "name" in fields:
                obj["name"] = req.name or ""
            if "metadata" in fields:
                obj["metadata"] = dict(req.metadata or {})
            if "expires_after" in fields and obj.get("status") != "expired":
                obj["expires_after"] = dump(req.expires_after)
                obj["expires_at"] = expiry(obj["expires_after"], obj["last_active_at"])
            vrows.save_store(conn, project, obj)
            return present(obj, vrows.counts(conn, "vector_store_id", [store_id])[store_id])

        return await self.db.write(tx)

    async def delete(self, project: str, store_id: str) -> dict[str, Any]:
        if not await self.db.write(lambda conn: vrows.delete_store(conn, project, store_id)):
            raise NotFound.object(KIND, store_id)
        self.searcher.forget(store_id)
        return {"id": store_id, "object": "vector_store.deleted", "deleted": True}

    async def expire_due(self) -> int:
        """Stores past ``expires_at`` become ``expired`` and lose their index (the records stay)."""
        moment = now()

        def tx(conn: Conn) -> list[str]:
            done = []
            for project, store_id in vrows.due_to_expire(conn, moment):
                row = vrows.get_store(conn, project, store_id, lock=True)
                if row is None or row.obj.get("status") == "expired":
                    continue
                row.obj["status"] = "expired"
                vrows.save_store(conn, project, row.obj)
                vrows.clear_index(conn, store_id)
                done.append(store_id)
            return done

        expired = await self.db.write(tx)
        for store_id in expired:
            log.info("vector store expired vector_store_id=%s", store_id)
            self.searcher.forget(store_id)
        return len(expired)

    # --- files in a store ------------------------------------------------------------------------

    def _usable_store(self, conn: Conn, project: str, store_id: str) -> vrows.StoreRow:
        row = vrows.get_store(conn, project, store_id, lock=True)
        if row is None:
            raise NotFound.object(KIND, store_id)
        if row.obj.get("status") == "expired":
            raise expired_error(store_id)
        return row

    async def create_file(self, project: str, store_id: str, req: CreateVectorStoreFile) -> dict[str, Any]:
        chunking = chunking_json(req.chunking_strategy)

        def tx(conn: Conn) -> dict[str, Any]:
            row = self._usable_store(conn, project, store_id)
            require_file(conn, project, req.file_id, "file_id")
            moment = now()
            obj = attach(
                conn, project, store_id, req.file_id, chunking=chunking, attributes=req.attributes, batch_id=None,
                moment=moment,
            )  # fmt: skip
            touch(conn, project, row, moment)
            return obj

        obj = await self.db.write(tx)
        self.ingestor.wake()
        return obj

    async def list_files(self, project: str, store_id: str, query: PageQuery, status: str | None) -> Page:
        def tx(conn: Conn) -> Page:
            if vrows.get_store(conn, project, store_id) is None:
                raise NotFound.object(KIND, store_id)
            return page_or_400(
                conn, vrows.FILES, project, query, "vector store file", vector_store_id=store_id, status=status
            )

        return await self.db.read(tx)

    def _file(self, conn: Conn, project: str, store_id: str, file_id: str) -> vrows.FileRow:
        if vrows.get_store(conn, project, store_id) is None:
            raise NotFound.object(KIND, store_id)
        row = vrows.get_file(conn, project, store_id, file_id)
        if row is None:
            raise _not_found_file(store_id, file_id)
        return row

    async def retrieve_file(self, project: str, store_id: str, file_id: str) -> dict[str, Any]:
        return await self.db.read(lambda conn: self._file(conn, project, store_id, file_id).obj)

    async def update_file(
        self, project: str, store_id: str, file_id: str, req: UpdateVectorStoreFile
    ) -> dict[str, Any]:
        def tx(conn: Conn) -> dict[str, Any]:
            row = self._file(conn, project, store_id, file_id)
            row.obj["attributes"] = dict(req.attributes or {})
            vrows.save_file(conn, row.seq, row.obj)
            return row.obj

        return await self.db.write(tx)

    async def delete_file(self, project: str, store_id: str, file_id: str) -> dict[str, Any]:
        def tx(conn: Conn) -> None:
            vrows.delete_file(conn, self._file(conn, project, store_id, file_id))

        await self.db.write(tx)
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    async def file_content(self, project: str, store_id: str, file_id: str) -> dict[str, Any]:
        def tx(conn: Conn) -> list[str] | None:
            return vrows.file_content(conn, self._file(conn, project, store_id, file_id).seq)

        segments = await self.db.read(tx)
        return {
            "object": "vector_store.file_content.page",
            "data": [{"type": "text", "text": s} for s in segments or []],
            "has_more": False,
            "next_page": None,
        }

    # --- file batches ----------------------------------------------------------------------------

    async def create_batch(self, project: str, store_id: str, req: CreateFileBatch) -> dict[str, Any]:
        if req.files is not None:
            entries = [
                (f.file_id, chunking_json(f.chunking_strategy, f"files[{i}].chunking_strategy"), f.attributes)
                for i, f in enumerate(req.files)
            ]
            param = "files"
        else:
            chunking = chunking_json(req.chunking_strategy)
            entries = [(file_id, chunking, req.attributes) for file_id in req.file_ids or []]
            param = "file_ids"

        def tx(conn: Conn) -> dict[str, Any]:
            row = self._usable_store(conn, project, store_id)
            ids = [e[0] for e in entries]
            if param == "files":
                for i, file_id in enumerate(ids):
                    require_file(conn, project, file_id, f"files[{i}].file_id")
            else:
                require_files(conn, project, ids, "file_ids")
            moment = now()
            batch: dict[str, Any] = {
                "id": new_id("file_batch"),
                "object": "vector_store.files_batch",
                "created_at": moment,
                "vector_store_id": store_id,
                "status": "in_progress",
                "file_counts": vrows.Counts().as_json(),
            }
            rows.insert(conn, vrows.BATCHES, project, batch, vector_store_id=store_id)
            seen: set[str] = set()
            for file_id, chunks, attributes in entries:
                if file_id in seen:
                    continue
                seen.add(file_id)
                attach(
                    conn, project, store_id, file_id, chunking=chunks, attributes=attributes, batch_id=batch["id"],
                    moment=moment,
                )  # fmt: skip
            touch(conn, project, row, moment)
            return _present_batch(batch, vrows.counts(conn, "batch_id", [batch["id"]])[batch["id"]])

        batch = await self.db.write(tx)
        self.ingestor.wake()
        return batch

    def _batch(self, conn: Conn, project: str, store_id: str, batch_id: str) -> dict[str, Any]:
        if vrows.get_store(conn, project, store_id) is None:
            raise NotFound.object(KIND, store_id)
        obj = rows.get(conn, vrows.BATCHES, project, batch_id, vector_store_id=store_id)
        if obj is None:
            raise NotFound.object("vector store file batch", batch_id)
        return obj

    async def retrieve_batch(self, project: str, store_id: str, batch_id: str) -> dict[str, Any]:
        def tx(conn: Conn) -> dict[str, Any]:
            obj = self._batch(conn, project, store_id, batch_id)
            return _present_batch(obj, vrows.counts(conn, "batch_id", [batch_id])[batch_id])

        return await self.db.read(tx)

    async def cancel_batch(self, project: str, store_id: str, batch_id: str) -> dict[str, Any]:
        def tx(conn: Conn) -> dict[str, Any]:
            obj = self._batch(conn, project, store_id, batch_id)
            current = _present_batch(obj, vrows.counts(conn, "batch_id", [batch_id])[batch_id])
            if current["status"] == "cancelled":
                return current
            if current["status"] != "in_progress":
                raise InvalidRequest(f"Cannot cancel a file batch with status '{current['status']}'.")
            ingest_queue.cancel_batch_files(conn, batch_id, now())
            obj["status"] = "cancelled"
            rows.replace(conn, vrows.BATCHES, project, obj)
            return _present_batch(obj, vrows.counts(conn, "batch_id", [batch_id])[batch_id])

        return await self.db.write(tx)

    async def list_batch_files(
        self, project: str, store_id: str, batch_id: str, query: PageQuery, status: str | None
    ) -> Page:
        def tx(conn: Conn) -> Page:
            self._batch(conn, project, store_id, batch_id)
            return page_or_400(
                conn, vrows.FILES, project, query, "vector store file", vector_store_id=store_id, batch_id=batch_id,
                status=status,
            )  # fmt: skip

        return await self.db.read(tx)

    # --- search ----------------------------------------------------------------------------------

    async def search_page(self, project: str, store_id: str, req: SearchVectorStore) -> dict[str, Any]:
        queries = [req.query] if isinstance(req.query, str) else list(req.query)
        if req.rewrite_query:
            queries = [rewrite(q) for q in queries]
        ranking = req.ranking_options
        hits = await self.searcher.search(
            project,
            [store_id],
            queries,
            max_num_results=req.max_num_results or DEFAULT_RESULTS,
            score_threshold=(ranking.score_threshold or 0.0) if ranking else 0.0,
            filters=dump(req.filters),
            ranker=(ranking.ranker if ranking is not None else None) or "auto",
        )
        return {
            "object": "vector_store.search_results.page",
            "search_query": queries,
            "data": [
                {
                    "file_id": h.file_id,
                    "filename": h.filename,
                    "score": h.score,
                    "attributes": h.attributes,
                    "content": [{"type": "text", "text": h.content}],
                }
                for h in hits
            ],
            "has_more": False,
            "next_page": None,
        }

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
    ) -> list[SearchHit]:
        """The best chunks for the queries across the stores, best first, each scored in [0, 1] (see
        ``VectorSearch.search``): what a run's file_search tool calls."""
        return await self.searcher.search(
            project,
            vector_store_ids,
            queries,
            max_num_results=max_num_results,
            score_threshold=score_threshold,
            filters=filters,
            modes=modes,
        )

    # --- for runs --------------------------------------------------------------------------------

    async def ensure_thread_store(self, project: str, thread_id: str, file_ids: list[str]) -> str:
        """Files attached to a thread's messages for file_search go into the thread's store: the one its
        ``tool_resources`` names, or a new one that expires 7 days after its last activity."""

        def tx(conn: Conn) -> str:
            thread = vrows.thread_for_update(conn, project, thread_id)
            if thread is None:
                raise NotFound.object("thread", thread_id)
            require_files(conn, project, file_ids, "file_ids")
            moment = now()
            resources = thread.get("tool_resources") or {}
            named = (resources.get("file_search") or {}).get("vector_store_ids") or []
            row = vrows.get_store(conn, project, named[0], lock=True) if named else None
            if row is None or row.obj.get("status") == "expired":
                obj = new_store(
                    created_at=moment,
                    expires_after={"anchor": "last_active_at", "days": THREAD_STORE_DAYS},
                    metadata={},
                )
                vrows.insert_store(conn, project, obj)
                resources = {**resources, "file_search": {"vector_store_ids": [obj["id"]]}}
                thread["tool_resources"] = resources
                rows.replace(conn, rows.THREADS, project, thread)
                store_id = obj["id"]
            else:
                store_id = row.obj["id"]
                touch(conn, project, row, moment)
            chunking = chunking_json(None)
            for file_id in dict.fromkeys(file_ids):
                attach(
                    conn, project, store_id, file_id, chunking=chunking, attributes=None, batch_id=None, moment=moment
                )
            return store_id

        store_id = await self.db.write(tx)
        self.ingestor.wake()
        return store_id

    async def wait_ready(
        self,
        project: str,
        vector_store_ids: list[str],
        timeout: float = 60,  # noqa: ASYNC109 - the run engine's contract: a bound, not a cancellation
    ) -> None:
        """Return once no file of these stores is in progress, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        ids = list(dict.fromkeys(vector_store_ids))
        while True:
            pending = await self.db.read(lambda conn: ingest_queue.in_progress_count(conn, project, ids))
            left = deadline - time.monotonic()
            if pending == 0:
                return
            if left <= 0:
                log.info("vector stores still processing after %.0fs: %s (%d files)", timeout, ids, pending)
                return
            # Woken when a file finishes here; the bound also catches files another server finishes.
            await self.ingestor.changed(min(left, 0.5))
