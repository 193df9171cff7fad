"""Assistants: create, read, list, modify, delete."""

from __future__ import annotations

from typing import Any

from assistantd.clock import now
from assistantd.errors import NotFound
from assistantd.ids import new_id
from assistantd.protocol.assistants import CreateAssistant, ModifyAssistant
from assistantd.protocol.common import dump
from assistantd.service import resources
from assistantd.service.common import fetch, fetch_raw, page_or_400
from assistantd.store import Conn, Database
from assistantd.store import objects as rows
from assistantd.store.objects import Page, PageQuery

KIND = "assistant"


def _apply(obj: dict[str, Any], req: CreateAssistant, fields: set[str]) -> None:
    """Copy the given request fields onto the object; an explicit null resets a field to its default."""
    simple = ("model", "name", "description", "instructions", "reasoning_effort")
    for name in simple:
        if name in fields:
            obj[name] = getattr(req, name)
    if "tools" in fields:
        obj["tools"] = [dump(t) for t in req.tools or []]
    if "tool_resources" in fields:
        obj["tool_resources"] = resources.render(req.tool_resources)
    if "metadata" in fields:
        obj["metadata"] = dict(req.metadata or {})
    if "temperature" in fields:
        obj["temperature"] = 1.0 if req.temperature is None else float(req.temperature)
    if "top_p" in fields:
        obj["top_p"] = 1.0 if req.top_p is None else float(req.top_p)
    if "response_format" in fields:
        fmt = req.response_format
        obj["response_format"] = "auto" if fmt is None or fmt == "auto" else dump(fmt)


class AssistantService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, project: str, req: CreateAssistant) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": new_id("assistant"),
            "object": "assistant",
            "created_at": now(),
            "name": None,
            "description": None,
            "model": req.model,
            "instructions": None,
            "tools": [],
            "tool_resources": {},
            "metadata": {},
            "temperature": 1.0,
            "top_p": 1.0,
            "response_format": "auto",
        }
        _apply(obj, req, req.model_fields_set)
        if req.reasoning_effort is None:
            obj.pop("reasoning_effort", None)

        def tx(conn: Conn) -> None:
            resources.check(conn, project, req.tool_resources)
            resources.create_stores(conn, project, req.tool_resources, obj["tool_resources"])
            rows.insert(conn, rows.ASSISTANTS, project, obj)

        await self.db.write(tx)
        return obj

    async def retrieve_raw(self, project: str, assistant_id: str) -> str:
        return await self.db.read(lambda conn: fetch_raw(conn, rows.ASSISTANTS, project, KIND, assistant_id))

    async def list_page(self, project: str, query: PageQuery) -> Page:
        return await self.db.read(lambda conn: page_or_400(conn, rows.ASSISTANTS, project, query, KIND))

    async def modify(self, project: str, assistant_id: str, req: ModifyAssistant) -> dict[str, Any]:
        fields = set(req.model_fields_set)
        if req.model is None:
            fields.discard("model")  # the model can be changed, never cleared

        def tx(conn: Conn) -> dict[str, Any]:
            obj = fetch(conn, rows.ASSISTANTS, project, KIND, assistant_id)
            resources.check(conn, project, req.tool_resources)
            _apply(obj, req, fields)
            if "tool_resources" in fields:
                resources.create_stores(conn, project, req.tool_resources, obj["tool_resources"])
            if obj.get("reasoning_effort") is None:
                obj.pop("reasoning_effort", None)
            rows.replace(conn, rows.ASSISTANTS, project, obj)
            return obj

        return await self.db.write(tx)

    async def delete(self, project: str, assistant_id: str) -> dict[str, Any]:
        def tx(conn: Conn) -> None:
            if not rows.delete(conn, rows.ASSISTANTS, project, assistant_id):
                raise NotFound.object(KIND, assistant_id)

        await self.db.write(tx)
        return {"id": assistant_id, "object": "assistant.deleted", "deleted": True}
