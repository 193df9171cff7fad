"""Messages: the content and attachment rules, and create/read/list/modify/delete on a thread."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from assistantd.clock import now
from assistantd.errors import InvalidRequest, NotFound
from assistantd.ids import new_id
from assistantd.protocol.common import dump
from assistantd.protocol.threads import CreateMessage, ImageFilePart, ImageUrlPart, ModifyMessage, TextPart
from assistantd.service.common import fetch, fetch_raw, page_or_400, require_file
from assistantd.store import Conn, Database
from assistantd.store import objects as rows
from assistantd.store import runs as run_rows
from assistantd.store.objects import Page, PageQuery

KIND = "message"


def _content(req: CreateMessage) -> list[dict[str, Any]]:
    """Request content (a string or parts) in the stored form: text parts become ``{value, annotations}``."""
    if isinstance(req.content, str):
        return [{"type": "text", "text": {"value": req.content, "annotations": []}}]
    blocks: list[dict[str, Any]] = []
    for part in req.content:
        if isinstance(part, TextPart):
            blocks.append({"type": "text", "text": {"value": part.text, "annotations": []}})
        elif isinstance(part, ImageFilePart):
            blocks.append(
                {
                    "type": "image_file",
                    "image_file": {
                        "file_id": part.image_file.file_id,
                        "detail": part.image_file.detail or "auto",
                    },
                }
            )
        elif isinstance(part, ImageUrlPart):
            blocks.append(
                {
                    "type": "image_url",
                    "image_url": {"url": part.image_url.url, "detail": part.image_url.detail or "auto"},
                }
            )
    return blocks


def check_references(conn: Conn, project: str, req: CreateMessage, param: str = "") -> None:
    prefix = f"{param}." if param else ""
    if not isinstance(req.content, str):
        for i, part in enumerate(req.content):
            if isinstance(part, ImageFilePart):
                require_file(
                    conn, project, part.image_file.file_id, f"{prefix}content[{i}].image_file.file_id"
                )
    for i, attachment in enumerate(req.attachments or []):
        require_file(conn, project, attachment.file_id, f"{prefix}attachments[{i}].file_id")


def build(
    req: CreateMessage,
    thread_id: str,
    created_at: int,
    *,
    assistant_id: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": new_id("message"),
        "object": "thread.message",
        "created_at": created_at,
        "assistant_id": assistant_id,
        "thread_id": thread_id,
        "run_id": run_id,
        "status": "completed",
        "incomplete_details": None,
        "completed_at": None,
        "incomplete_at": None,
        "role": req.role,
        "content": _content(req),
        "attachments": [
            {"file_id": a.file_id, "tools": [dump(t) for t in a.tools]} for a in req.attachments or []
        ],
        "metadata": dict(req.metadata or {}),
    }


def insert(conn: Conn, project: str, message: dict[str, Any]) -> None:
    rows.insert(
        conn, rows.MESSAGES, project, message, thread_id=message["thread_id"], run_id=message["run_id"]
    )


# Puts files into a thread's vector store (creating it if needed); the vector-store service provides it.
AttachToThread = Callable[[str, str, list[str]], Awaitable[str]]


def file_search_attachments(reqs: Iterable[CreateMessage]) -> list[str]:
    """Ids of the files attached for file_search: they belong in the thread's vector store."""
    return [
        a.file_id for r in reqs for a in r.attachments or [] if any(t.type == "file_search" for t in a.tools)
    ]


class MessageService:
    def __init__(self, db: Database, attach: AttachToThread | None = None) -> None:
        self.db = db
        self.attach = attach

    async def create(self, project: str, thread_id: str, req: CreateMessage) -> dict[str, Any]:
        message = build(req, thread_id, now())

        def tx(conn: Conn) -> None:
            if not rows.exists(conn, rows.THREADS, project, thread_id):
                raise NotFound.object("thread", thread_id)
            active = run_rows.active_run_id(conn, thread_id)
            if active is not None:
                raise InvalidRequest(f"Can't add messages to {thread_id} while a run {active} is active.")
            check_references(conn, project, req)
            insert(conn, project, message)

        await self.db.write(tx)
        searchable = file_search_attachments([req])
        if searchable and self.attach is not None:
            await self.attach(project, thread_id, searchable)
        return message

    async def retrieve_raw(self, project: str, thread_id: str, message_id: str) -> str:
        def tx(conn: Conn) -> str:
            _require_thread(conn, project, thread_id)
            return fetch_raw(conn, rows.MESSAGES, project, KIND, message_id, thread_id=thread_id)

        return await self.db.read(tx)

    async def list_page(self, project: str, thread_id: str, query: PageQuery, run_id: str | None = None) -> Page:
        def tx(conn: Conn) -> Page:
            _require_thread(conn, project, thread_id)
            return page_or_400(conn, rows.MESSAGES, project, query, KIND, thread_id=thread_id, run_id=run_id)

        return await self.db.read(tx)

    async def modify(
        self, project: str, thread_id: str, message_id: str, req: ModifyMessage
    ) -> dict[str, Any]:
        def tx(conn: Conn) -> dict[str, Any]:
            _require_thread(conn, project, thread_id)
            message = fetch(conn, rows.MESSAGES, project, KIND, message_id, thread_id=thread_id)
            if "metadata" in req.model_fields_set:
                message["metadata"] = dict(req.metadata or {})
            rows.replace(conn, rows.MESSAGES, project, message)
            return message

        return await self.db.write(tx)

    async def delete(self, project: str, thread_id: str, message_id: str) -> dict[str, Any]:
        def tx(conn: Conn) -> None:
            _require_thread(conn, project, thread_id)
            fetch(conn, rows.MESSAGES, project, KIND, message_id, thread_id=thread_id)
            rows.delete(conn, rows.MESSAGES, project, message_id)

        await self.db.write(tx)
        return {"id": message_id, "object": "thread.message.deleted", "deleted": True}


def _require_thread(conn: Conn, project: str, thread_id: str) -> None:
    if not rows.exists(conn, rows.THREADS, project, thread_id):
        raise NotFound.object("thread", thread_id)
