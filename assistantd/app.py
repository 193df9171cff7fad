"""The composition root: the one place that builds concrete objects and wires them together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount

from assistantd.api import assistants, files, health, models, passthrough, runs, threads, vector_stores
from assistantd.api.errors import api_error, http_error, internal_error
from assistantd.api.middleware import EdgeMiddleware
from assistantd.api.routing import IndexedRouter
from assistantd.engine.supervisor import Engine
from assistantd.errors import APIError
from assistantd.llm.router import ModelRouter
from assistantd.service.assistants import AssistantService
from assistantd.service.files import FileService
from assistantd.service.ingestion import Ingestor
from assistantd.service.keys import KeyService
from assistantd.service.messages import MessageService
from assistantd.service.passthrough import PassthroughService
from assistantd.service.registry import Services
from assistantd.service.runs import RunService
from assistantd.service.threads import ThreadService
from assistantd.service.vector_stores import VectorStoreService
from assistantd.settings import Settings
from assistantd.store import open_database
from assistantd.store.blobs import LocalBlobStore
from assistantd.tools.code_interpreter import CodeInterpreter, sandbox_config_from_settings
from assistantd.tools.code_interpreter.tool import CodeInterpreterTool
from assistantd.tools.file_search.embed import build_embedder, chunk_tokenizer
from assistantd.tools.file_search.tool import FileSearchTool

log = logging.getLogger("assistantd")

SWEEP_SECONDS = 60.0


def build_services(settings: Settings) -> Services:
    db = open_database(settings.resolved_database_url, pool_size=settings.db_pool_size)
    blobs = LocalBlobStore(settings.data_path / "files")
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
    )
    ingestor = Ingestor(db, blobs, tokenizer=chunk_tokenizer(), embedder=embedder, workers=settings.ingest_workers)
    vector_stores = VectorStoreService(db, ingestor, embedder=embedder, mode=search_mode)
    threads = ThreadService(db, attach=vector_stores.ensure_thread_store)
    interpreter = CodeInterpreter(sandbox_config_from_settings(settings))
    tools = {
        "code_interpreter": CodeInterpreterTool(
            interpreter, db, blobs, max_file_bytes=settings.code_interpreter_max_file_mb * 1024 * 1024
        ),
        "file_search": FileSearchTool(
            vector_stores.search, lambda project, ids: vector_stores.wait_ready(project, ids)
        ),
    }
    engine = Engine(
        db,
        router,
        lease_seconds=settings.run_lease_seconds,
        reap_interval=settings.reap_interval_seconds,
        context_tokens=settings.context_tokens,
        tools=tools,
    )
    return Services(
        db=db,
        assistants=AssistantService(db),
        threads=threads,
        messages=MessageService(db, attach=vector_stores.ensure_thread_store),
        files=FileService(db, blobs, max_bytes=settings.max_upload_bytes),
        keys=KeyService(db, settings.static_keys),
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
        except Exception:
            log.exception("expiry sweep failed; will retry")
        await asyncio.sleep(SWEEP_SECONDS)


SHUTDOWN_STEP_SECONDS = 20.0


async def _bounded(what: str, step: Awaitable[None]) -> None:
    try:
        async with asyncio.timeout(SHUTDOWN_STEP_SECONDS):
            await step
    except TimeoutError:
        log.error("shutdown: %s did not stop within %.0f s; going on without it", what, SHUTDOWN_STEP_SECONDS)
    except Exception:
        log.exception("shutdown: stopping %s failed; going on", what)


def create_app(settings: Settings, services: Services | None = None) -> Starlette:
    services = services or build_services(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_sweep(services))
        engine = services.runs.engine
        await engine.start_background(embedded=services.db.dialect == "sqlite")
        await services.vector_stores.start()
        if settings.code_interpreter_pool_size > 0:
            # Sandboxes are started ahead of need; with no pool the tool starts the interpreter on first use.
            await services.code_interpreter.start()
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
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
        routes=[*health.routes, Mount("/v1", app=IndexedRouter(routes=v1))],
        exception_handlers={
            APIError: api_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
        middleware=[
            Middleware(
                EdgeMiddleware,
                keys=services.keys,
                max_body=settings.max_body_bytes,
                max_upload=settings.max_upload_bytes,
                log_requests=settings.access_log,
            )
        ],
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.settings = settings
    return app
