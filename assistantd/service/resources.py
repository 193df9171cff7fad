"""``tool_resources`` on assistants and threads: checking the ids they name, and their response shape."""

from __future__ import annotations

from typing import Any

from assistantd.errors import InvalidRequest
from assistantd.ids import PREFIXES, has_prefix
from assistantd.protocol.common import ToolResources
from assistantd.service import vector_stores
from assistantd.service.common import require_files
from assistantd.store import Conn
from assistantd.store import objects as rows
from assistantd.store import vector_stores as vector_rows


def check(conn: Conn, project: str, resources: ToolResources | None, param: str = "tool_resources") -> None:
    if resources is None:
        return
    if resources.code_interpreter and resources.code_interpreter.file_ids:
        require_files(conn, project, resources.code_interpreter.file_ids, f"{param}.code_interpreter.file_ids")
    fs = resources.file_search
    if fs is None:
        return
    if fs.vector_store_ids and fs.vector_stores:
        raise InvalidRequest(
            f"Invalid '{param}.file_search': give either 'vector_store_ids' or 'vector_stores', not both.",
            param=f"{param}.file_search",
            code="invalid_value",
        )
    for i, vs_id in enumerate(fs.vector_store_ids or []):
        where = f"{param}.file_search.vector_store_ids[{i}]"
        if not has_prefix("vector_store", vs_id):
            raise InvalidRequest(
                f"Invalid '{where}': '{vs_id}'. Expected an ID that begins with '{PREFIXES['vector_store']}'.",
                param=where,
                code="invalid_value",
            )
        if not rows.exists(conn, vector_rows.STORES, project, vs_id):
            raise InvalidRequest(f"No vector store found with id '{vs_id}'.", param=where, code="invalid_value")


def create_stores(
    conn: Conn, project: str, resources: ToolResources | None, rendered: Any, param: str = "tool_resources"
) -> None:
    """The ``file_search.vector_stores`` helper: make each store it describes (its files queued for
    ingestion) and name it in the rendered ``tool_resources``. Runs in the caller's transaction."""
    fs = resources.file_search if resources is not None else None
    if fs is None or not fs.vector_stores:
        return
    ids = rendered.setdefault("file_search", {}).setdefault("vector_store_ids", [])
    for i, helper in enumerate(fs.vector_stores):
        store = vector_stores.create_store_tx(
            conn,
            project,
            file_ids=helper.file_ids or [],
            chunking=helper.chunking_strategy,
            metadata=helper.metadata,
            param=f"{param}.file_search.vector_stores[{i}]",
        )
        ids.append(store["id"])


def render(resources: ToolResources | None) -> dict[str, Any]:
    """The response shape: ``{}`` when nothing is set, else only the tools that have resources."""
    if resources is None:
        return {}
    out: dict[str, Any] = {}
    if resources.code_interpreter is not None:
        out["code_interpreter"] = {"file_ids": list(resources.code_interpreter.file_ids or [])}
    if resources.file_search is not None:
        out["file_search"] = {"vector_store_ids": list(resources.file_search.vector_store_ids or [])}
    return out
