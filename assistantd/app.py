"""The composition root: the one place that builds concrete objects and wires them together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.routing import Mount

from assistantd.api import assistants, console, files, health, models, passthrough, runs, threads, vector_stores
from assistantd.api.errors import api_error, client_disconnected, http_error, internal_error
from assistantd.api.lifecycle import Draining
from assistantd.api.middleware import EdgeMiddleware
from assistantd.api.routing import IndexedRouter
from assistantd.diagnostics import startup_block
from assistantd.engine.ingestion import Ingestor
from assistantd.engine.supervisor import Engine
from assistantd.errors import APIError
from assistantd.llm.base import ChatModel
from assistantd.llm.router import ModelRouter, Upstream
from assistantd.observability import web as observability_web
from assistantd.observability.loop_lag import LoopLagWatch
from assistantd.observability.tools import ObservedCodeInterpreter, observe_tools
from assistantd.observability.web import MetricsMiddleware, metrics_listener
from assistantd.service.assistants import AssistantService
from assistantd.service.files import FileService
from assistantd.service.keys import KeyService, change_marker_path, is_loopback
from assistantd.service.messages import MessageService
from assistantd.service.passthrough import PassthroughService
from assistantd.service.registry import Services
from assistantd.service.runs import RunService
from assistantd.service.threads import ThreadService
from assistantd.service.vector_stores import VectorStoreService
from assistantd.settings import Settings
from assistantd.store import open_database
from assistantd.store.base import Database
from assistantd.store.blobs import BlobStore, open_blob_store
from assistantd.tools.code_interpreter import sandbox_config_from_settings
from assistantd.tools.code_interpreter.tool import CodeInterpreterTool
from assistantd.tools.file_search.embed import build_embedder, chunk_tokenizer_file
from assistantd.tools.file_search.parse import Limits
from assistantd.tools.file_search.tool import FileSearchTool
from assistantd.tools.file_search.worker import ReaderConfig, ReaderPool

log = logging.getLogger("assistantd")

SWEEP_SECONDS = 60.0


def build_blob_store(settings: Settings, db: Database) -> BlobStore:
    """Where file bytes live (also used by ``assistantd backup`` and ``restore``)."""
    return open_blob_store(db, settings.data_path)


def build_services(settings: Settings, *, chat_model: ChatModel | None = None) -> Services:
    """``chat_model``, when given, answers every model name instead of the configured upstreams (tests
    drive runs in process with a scripted one)."""
    db = open_database(settings.resolved_database_url, pool_size=settings.db_pool_size)
    blobs = build_blob_store(settings, db)
    if chat_model is not None:
        router = ModelRouter([Upstream(name="injected", base_url="", _client=chat_model)])
    else:
        router = ModelRouter.from_config(
            base_url=settings.upstream_base_url,
            api_key=settings.upstream_api_key,
            timeout=settings.upstream_timeout,
            extra=settings.extra,
            total_timeout=settings.upstream_total_timeout or None,
        )
    embedder, search_mode = build_embedder(
        base_url=settings.embedding_base_url,
        model=settings.embedding_model,
        api_key=settings.embedding_api_key,
        local=settings.local_embeddings,
        runtime=settings.local_embedding_runtime,
    )
    readers = ReaderPool(
        ReaderConfig(
            limits=Limits(
                max_chars=settings.ingest_max_chars,
                max_unzipped_bytes=settings.ingest_max_unzipped_mb * 1024 * 1024,
                max_zip_ratio=settings.ingest_max_zip_ratio,
            ),
            max_chunks=settings.ingest_max_chunks,
            memory_mb=settings.ingest_worker_memory_mb,
            timeout_seconds=settings.ingest_file_timeout_seconds,
            tokenizer_json=str(tokenizer_file) if (tokenizer_file := chunk_tokenizer_file()) else None,
        ),
        keep=settings.ingest_workers,
    )
    ingestor = Ingestor(db, blobs, readers=readers, embedder=embedder, workers=settings.ingest_workers)
    vector_stores = VectorStoreService(db, ingestor, embedder=embedder, mode=search_mode)
    interpreter = ObservedCodeInterpreter(sandbox_config_from_settings(settings))
    threads = ThreadService(db, attach=vector_stores.ensure_thread_store, closed=interpreter.close_thread)
    tools = observe_tools({
        "code_interpreter": CodeInterpreterTool(
            interpreter, db, blobs, max_file_bytes=settings.code_interpreter_max_file_mb * 1024 * 1024
        ),
        "file_search": FileSearchTool(
            vector_stores.search, lambda project, ids: vector_stores.wait_ready(project, ids)
        ),
    })
    engine = Engine(
        db,
        router,
        lease_seconds=settings.run_lease_seconds,
        reap_interval=settings.reap_interval_seconds,
        context_tokens=settings.context_tokens,
        tools=tools,
        stream_save_seconds=settings.stream_save_seconds,
    )
    return Services(
        db=db,
        assistants=AssistantService(db),
        threads=threads,
        messages=MessageService(db, attach=vector_stores.ensure_thread_store),
        files=FileService(db, blobs, max_bytes=settings.max_upload_bytes),
        keys=KeyService(
            db,
            settings.static_keys,
            open_allowed=is_loopback(settings.host) or settings.allow_no_auth,
            cache_seconds=settings.key_cache_seconds,
            marker=change_marker_path(settings.resolved_database_url, settings.data_path),
        ),
        runs=RunService(db, engine, threads, expiry_seconds=settings.run_expiry_seconds),
        router=router,
        vector_stores=vector_stores,
        code_interpreter=interpreter,
        passthrough=PassthroughService(router, total_timeout=settings.upstream_total_timeout or None),
    )


async def _sweep(services: Services) -> None:
    """Background housekeeping: expired files go away even if nobody asks for them."""
    while True:
        try:
            removed = await services.files.delete_expired()
            if removed:
                log.info("expired files removed count=%d", removed)
            await services.vector_stores.expire_due()
            swept = await services.files.sweep_blobs()
            if swept:
                log.info("half-written file bytes removed count=%d", swept)
        except Exception:
            log.exception("expiry sweep failed; will retry")
        await asyncio.sleep(SWEEP_SECONDS)


SHUTDOWN_STEP_SECONDS = 20.0


async def _drain_on_signal(draining: Draining, engine: Engine, grace: float) -> None:
    """When the server is told to stop: runs executing here get ``grace`` seconds to finish (their streams
    end with their terminal event), then the rest are handed over, which ends their streams too, so the
    server is not left waiting on them."""
    await draining.wait()
    log.info("stopping: runs in progress here have %.0f s to finish, then are handed over", grace)
    try:
        await engine.drain(grace)
    except Exception:
        log.exception("shutdown: handing runs over failed; their leases will lapse")


async def _bounded(what: str, step: Awaitable[None]) -> None:
    try:
        async with asyncio.timeout(SHUTDOWN_STEP_SECONDS):
            await step
    except TimeoutError:
        log.error("shutdown: %s did not stop within %.0f s; going on without it", what, SHUTDOWN_STEP_SECONDS)
    except Exception:
        log.exception("shutdown: stopping %s failed; going on", what)


def create_app(
    settings: Settings, services: Services | None = None, *, chat_model: ChatModel | None = None
) -> Starlette:
    services = services or build_services(settings, chat_model=chat_model)
    draining = Draining()  # fired by the server on SIGTERM/SIGINT (api/lifecycle.py), before it waits on streams

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_sweep(services))
        services.router.prepare()
        engine = services.runs.engine
        await engine.start_background(embedded=services.db.dialect == "sqlite")
        draining.bind(asyncio.get_running_loop())
        drainer = asyncio.create_task(_drain_on_signal(draining, engine, settings.shutdown_grace_seconds))
        await services.vector_stores.start()
        if settings.code_interpreter_pool_size > 0:
            # Sandboxes are started ahead of need; with no pool the tool starts the interpreter on first use.
            await services.code_interpreter.start()
        log.info("%s", await startup_block(settings, services))
        lag = LoopLagWatch(asyncio.get_running_loop()).start()
        try:
            async with metrics_listener(settings, services):
                yield
        finally:
            lag.stop()
            for task in (sweeper, drainer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Each part gets a bounded time to stop, so one that hangs cannot keep the process alive;
            # the database closes last, whatever happened before.
            await _bounded("vector stores", services.vector_stores.stop())
            await _bounded("run engine", engine.stop())
            await _bounded("code interpreter", services.code_interpreter.stop())
            await _bounded("model router", services.router.aclose())
            await services.db.close()

    # runs before threads: /threads/runs must not be taken for a thread id.
    v1 = [
        *assistants.routes,
        *runs.routes,
        *threads.routes,
        *files.routes,
        *vector_stores.routes,
        *models.routes,
        *passthrough.routes,
    ]
    app = Starlette(
        routes=[*health.routes, *observability_web.routes, *console.routes, Mount("/v1", app=IndexedRouter(routes=v1))],
        exception_handlers={
            APIError: api_error,
            HTTPException: http_error,
            ClientDisconnect: client_disconnected,
            Exception: internal_error,
        },
        middleware=[
            Middleware(MetricsMiddleware),
            Middleware(
                EdgeMiddleware,
                keys=services.keys,
                max_body=settings.max_body_bytes,
                max_upload=settings.max_upload_bytes,
                log_requests=settings.access_log,
                # With --allow-no-auth on a public address, clients reach it by its real names.
                loopback_hosts_only=is_loopback(settings.host),
            )
        ],
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.settings = settings
    app.state.draining = draining
    return app
