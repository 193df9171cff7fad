"""``tool_resources`` on assistants and threads: checking the ids they name, and their response shape."""

from __future__ import annotations

from typing import Any

from assistantd.errors import InvalidRequest
from assistantd.ids import PREFIXES, has_prefix
from assistantd.protocol.common import ToolResources
from assistantd.service.common import require_files
from assistantd.store import Conn


def check(conn: Conn, project: str, resources: ToolResources | None, param: str = "tool_resources") -> None:
    if resources is None:
        return
    if resources.code_interpreter and resources.code_interpreter.file_ids:
        require_files(
            conn, project, resources.code_interpreter.file_ids, f"{param}.code_interpreter.file_ids"
        )
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
        # Vector stores arrive with the file-search work; until then no id can name one.
        raise InvalidRequest(f"No vector store found with id '{vs_id}'.", param=where, code="invalid_value")
    if fs.vector_stores:
        raise InvalidRequest(
            f"'{param}.file_search.vector_stores' is not supported by this server yet: vector stores "
            "arrive with file search.",
            param=f"{param}.file_search.vector_stores",
            code="unsupported_value",
        )


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
