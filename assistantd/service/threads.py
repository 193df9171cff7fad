"""Threads: create (with initial messages), read, modify, delete (with everything in them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from assistantd.clock import now
from assistantd.errors import InvalidRequest, NotFound
from assistantd.ids import new_id
from assistantd.protocol.threads import CreateThread, ModifyThread
from assistantd.service import messages, resources
from assistantd.service.common import fetch, fetch_raw, page_or_400
from assistantd.store import Conn, Database, thread_filters
from assistantd.store import objects as rows
from assistantd.store import runs as run_rows
from assistantd.store.objects import Page, PageQuery

KIND = "thread"


class ThreadService:
    def __init__(
        self,
        db: Database,
        attach: messages.AttachToThread | None = None,
        closed: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.attach = attach
        self.closed = closed  # (project, thread_id) -> ends what lives outside the database (the code session)

    async def create(self, project: str, req: CreateThread) -> dict[str, Any]:
        created_at = now()
        thread_id = new_id("thread")
        thread = {
            "id": thread_id,
            "object": "thread",
            "created_at": created_at,
            "tool_resources": resources.render(req.tool_resources),
            "metadata": dict(req.metadata or {}),
        }
        initial = [messages.build(m, thread_id, created_at) for m in req.messages or []]

        def tx(conn: Conn) -> None:
            resources.check(conn, project, req.tool_resources)
            resources.create_stores(conn, project, req.tool_resources, thread["tool_resources"])
            for i, m in enumerate(req.messages or []):
                messages.check_references(conn, project, m, f"messages[{i}]")
            rows.insert(conn, rows.THREADS, project, thread)
            for message in initial:  # seq keeps them in the order given
                messages.insert(conn, project, message)

        await self.db.write(tx)
        searchable = messages.file_search_attachments(req.messages or [])
        if searchable and self.attach is not None:
            await self.attach(project, thread_id, searchable)
            # The thread now names its store in tool_resources.
            thread = await self.db.read(lambda conn: fetch(conn, rows.THREADS, project, KIND, thread_id))
        return thread

    async def retrieve_raw(self, project: str, thread_id: str) -> str:
        return await self.db.read(lambda conn: fetch_raw(conn, rows.THREADS, project, KIND, thread_id))

    async def list_page(
        self, project: str, query: PageQuery, *, assistant_id: str | None = None, metadata: dict[str, str] | None = None
    ) -> Page:
        """Our extension (OpenAI has no list of threads): newest first, filtered by assistant and metadata."""
        where = thread_filters.condition(self.db.dialect, assistant_id=assistant_id, metadata=metadata or {})
        return await self.db.read(lambda conn: page_or_400(conn, rows.THREADS, project, query, KIND, condition=where))

    async def modify(self, project: str, thread_id: str, req: ModifyThread) -> dict[str, Any]:
        def tx(conn: Conn) -> dict[str, Any]:
            thread = fetch(conn, rows.THREADS, project, KIND, thread_id)
            resources.check(conn, project, req.tool_resources)
            if "tool_resources" in req.model_fields_set:
                thread["tool_resources"] = resources.render(req.tool_resources)  # null clears, as on assistants
                resources.create_stores(conn, project, req.tool_resources, thread["tool_resources"])
            if "metadata" in req.model_fields_set:
                thread["metadata"] = dict(req.metadata or {})
            rows.replace(conn, rows.THREADS, project, thread)
            return thread

        return await self.db.write(tx)

    async def delete(self, project: str, thread_id: str) -> dict[str, Any]:
        def tx(conn: Conn) -> None:
            if not rows.exists(conn, rows.THREADS, project, thread_id):
                raise NotFound.object(KIND, thread_id)
            active = run_rows.active_run_id(conn, thread_id)
            if active is not None:
                raise InvalidRequest(f"Can't delete {thread_id} while a run {active} is active; cancel it first.")
            rows.delete(conn, rows.THREADS, project, thread_id)
            rows.delete_where(conn, rows.MESSAGES, project, thread_id=thread_id)
            run_rows.delete_for_thread(conn, project, thread_id)

        await self.db.write(tx)
        if self.closed is not None:
            await self.closed(project, thread_id)
        return {"id": thread_id, "object": "thread.deleted", "deleted": True}
