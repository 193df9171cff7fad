"""Ingestion in the background: vector store files go from ``in_progress`` to ``completed`` or ``failed``.

The ``in_progress`` rows of ``vector_store_files`` are the queue, so there is nothing to lose on a
restart: a slot claims a row through the engine's lease helper (``leases.Leases``, as runs are held),
has the file parsed and chunked by a reader process (``tools.file_search.worker``) and embeds it in a
worker thread (never on the event loop, never in a request), and writes every chunk and the final status
in one transaction, only if the row is still its own (not cancelled, detached or deleted meanwhile). A
server that dies mid-file leaves a lease that lapses (on an embedded SQLite database, start-up drops it
at once); the file is then processed again from the start, and after ``MAX_ATTEMPTS`` such claims it
fails with ``server_error`` instead of looping forever. A graceful stop gives its files back without
counting the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from assistantd.engine.leases import FILES, Leases
from assistantd.observability.hooks import file_ingested
from assistantd.store import Database, ingest_queue
from assistantd.store import chunks as chunk_rows
from assistantd.store import vector_stores as vrows
from assistantd.store.base import Conn
from assistantd.store.blobs import BlobMissing, BlobStore
from assistantd.tools.file_search.embed import Embedder, EmbeddingError
from assistantd.tools.file_search.parse import ParseError
from assistantd.tools.file_search.pipeline import Processed, Stopped, process
from assistantd.tools.file_search.worker import ReaderPool

log = logging.getLogger("assistantd.ingest")

MAX_ATTEMPTS = 3
IDLE_POLL_SECONDS = 0.5  # how often an idle worker looks for files queued by another server
LEASE_SECONDS = 60.0


class Ingestor:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        *,
        readers: ReaderPool,
        embedder: Embedder | None,
        workers: int = 1,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.readers = readers
        self.embedder = embedder
        self.workers = max(0, workers)  # 0: this server leaves ingestion to other replicas
        self.leases = Leases(db, FILES, seconds=lease_seconds)
        self._executor: ThreadPoolExecutor | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # set (and replaced) whenever a file finishes
        self._jobs: dict[int, threading.Event] = {}  # file row seq -> its stop flag
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._indexed_dims: set[int] = set()  # PostgreSQL: vector sizes known to have their HNSW index

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, *, embedded: bool) -> None:
        self._executor = ThreadPoolExecutor(max(1, self.workers), thread_name_prefix="ingest")
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        if embedded:
            # One process owns an embedded database: leases of any other owner are of a process that is gone.
            released = await self.db.write(self.leases.release_others)
            if released:
                log.info("resuming ingestion of files a previous run left in progress count=%d", released)
        if self.workers == 0:
            log.info("ingestion is off in this server (ingest_workers = 0): other replicas process files")
            return
        self._background = [
            asyncio.create_task(self._loop(), name="ingest-loop"),
            asyncio.create_task(self.leases.keep(lambda: list(self._jobs), self._lost), name="ingest-renew"),
        ]

    async def stop(self) -> None:
        for stop in self._jobs.values():
            stop.set()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.readers.close)
        if self.workers:
            # Files we were processing go back to the queue now, not when our leases lapse.
            with contextlib.suppress(Exception):
                await self.db.write(lambda c: self.leases.release(c, attempt=False))

    def wake(self) -> None:
        self._wake.set()

    async def changed(self, seconds: float) -> None:
        """Wait until some file finishes here, or ``seconds`` pass."""
        # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancel that lands as it times out.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._changed.wait()

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- the loop --------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                claimed = False
                while len(self._tasks) < self.workers:
                    job = await self._claim()
                    if job is None:
                        break
                    claimed = True
                    task = asyncio.create_task(self._run(job), name=f"ingest-{job.file_id}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    task.add_done_callback(lambda _t: self._wake.set())
                if not claimed or len(self._tasks) >= self.workers:
                    # Not wait_for: in 3.11 it can swallow stop()'s cancel if that lands as the wait
                    # times out, and this loop would then never end.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE_POLL_SECONDS):
                            await self._wake.wait()
                    self._wake.clear()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ingestion loop failed; will retry")
                await asyncio.sleep(IDLE_POLL_SECONDS)

    async def _claim(self) -> ingest_queue.Job | None:
        def tx(conn: Conn) -> ingest_queue.Job | None:
            seq = self.leases.claim_next(conn)
            return None if seq is None else ingest_queue.job(conn, int(seq))

        return await self.db.write(tx)

    def _lost(self, seqs: set[Any]) -> None:
        for seq in seqs:
            stop = self._jobs.get(seq)
            if stop is not None:
                stop.set()  # cancelled, detached or deleted: stop reading or embedding it

    def _still_mine(self, conn: Conn, seq: int) -> bool:
        return bool(self.leases.held(conn, [seq]))

    # --- one file --------------------------------------------------------------------------------

    async def _run(self, job: ingest_queue.Job) -> None:
        stop = self._jobs[job.seq] = threading.Event()
        started = time.perf_counter()
        copies = contextlib.AsyncExitStack()  # the file's local copy from the blob store, until the end
        try:
            if job.attempts > MAX_ATTEMPTS:
                await self._fail(
                    job,
                    "server_error",
                    f"Processing stopped {job.attempts - 1} times before it finished (the server restarted or "
                    "crashed); add the file again to retry.",
                )
                return
            try:
                path = await copies.enter_async_context(self.blobs.local_copy(job.file_id))
            except BlobMissing:
                await self._fail(job, "invalid_file", f"The content of file {job.file_id} is no longer available.")
                return
            static = job.obj["chunking_strategy"]["static"]
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(
                    self._executor,
                    lambda: process(
                        path,
                        job.filename,
                        max_tokens=int(static["max_chunk_size_tokens"]),
                        overlap=int(static["chunk_overlap_tokens"]),
                        readers=self.readers,
                        embedder=self.embedder,
                        stop=stop,
                    ),
                )
            except ParseError as exc:
                await self._fail(job, exc.code, exc.message)
                return
            except EmbeddingError as exc:
                await self._fail(job, "server_error", f"The file could not be embedded: {exc}")
                return
            except Stopped:
                log.info("ingestion stopped file_id=%s vector_store_id=%s", job.file_id, job.store_id)
                return
            if await self._complete(job, result):
                file_ingested("completed", time.perf_counter() - started, len(result.chunks))
                log.info(
                    "file indexed file_id=%s vector_store_id=%s chunks=%d ms=%.0f",
                    job.file_id,
                    job.store_id,
                    len(result.chunks),
                    (time.perf_counter() - started) * 1000,
                )
        except asyncio.CancelledError:
            stop.set()
            raise
        except Exception:
            log.exception("ingestion failed file_id=%s vector_store_id=%s", job.file_id, job.store_id)
            with contextlib.suppress(Exception):
                await self._fail(job, "server_error", "The server failed while processing this file.")
        finally:
            await copies.aclose()
            self._jobs.pop(job.seq, None)
            self._pulse()

    async def _complete(self, job: ingest_queue.Job, result: Processed) -> bool:
        dims = None if result.vectors is None else int(result.vectors.shape[1])
        if dims is not None and dims not in self._indexed_dims:
            # In a transaction of its own, before the chunks' one: creating the index waits for every
            # open insert into the table, so it must never run inside a transaction that has written
            # chunks (two slots finishing at once deadlocked that way on PostgreSQL).
            await self.db.write(lambda conn: chunk_rows.ensure_vector_index(conn, dims))
            self._indexed_dims.add(dims)

        def tx(conn: Conn) -> bool:
            if not self._still_mine(conn, job.seq):
                return False
            target = vrows.ingest_target(conn, job.store_id)
            if target is None:
                return False
            store_seq, expired = target
            removed = chunk_rows.drop_file_chunks(conn, job.seq)  # an earlier attempt's, if any
            if expired:  # expired meanwhile: it keeps no index
                result_chunks: list[str] = []
            else:
                result_chunks = result.chunks
            chunk_rows.insert_chunks(
                conn,
                store_id=job.store_id,
                store_seq=store_seq,
                vsf_seq=job.seq,
                file_id=job.file_id,
                texts=result_chunks,
                model=result.model,
                vectors=result.vectors if result_chunks else None,
            )
            generation = vrows.bump(conn, job.store_id, len(result_chunks) - removed)
            obj: dict[str, Any] = {
                **job.obj,
                "status": "completed",
                "last_error": None,
                "usage_bytes": result.usage_bytes,
            }
            ingest_queue.finish(conn, job.seq, obj, content=result.segments, index_gen=generation)
            return True

        return bool(await self.db.write(tx))

    async def _fail(self, job: ingest_queue.Job, code: str, message: str) -> None:
        log.info("file not indexed file_id=%s vector_store_id=%s code=%s: %s", job.file_id, job.store_id, code, message)
        file_ingested(code)

        def tx(conn: Conn) -> None:
            if self._still_mine(conn, job.seq):
                obj = {
                    **job.obj,
                    "status": "failed",
                    "last_error": {"code": code, "message": message},
                    "usage_bytes": 0,
                }
                ingest_queue.finish(conn, job.seq, obj, content=None)

        await self.db.write(tx)
