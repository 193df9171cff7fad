"""The SQL behind our threads list's filters (``GET /v1/threads`` is an assistantd extension).

Threads do not name an assistant: a thread belongs to an assistant's conversations when one of its runs
used that assistant. Metadata filters match exact string values. JSON is read with each backend's own
functions; everything else is the shared SQL of ``objects.page``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def condition(dialect: str, *, assistant_id: str | None, metadata: Mapping[str, str]) -> tuple[str, list[Any]] | None:
    """One SQL clause over the ``threads`` table (with its parameters), or None when nothing filters."""
    clauses: list[str] = []
    params: list[Any] = []
    postgres = dialect == "postgres"
    if assistant_id is not None:
        used = "r.data::jsonb ->> 'assistant_id'" if postgres else "json_extract(r.data, '$.assistant_id')"
        clauses.append(
            "EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = threads.id "
            f"AND r.project_id = threads.project_id AND {used} = ?)"
        )
        params.append(assistant_id)
    for key, value in metadata.items():
        if postgres:
            clauses.append("(threads.data::jsonb -> 'metadata' ->> ?) = ?")
        else:
            # json_each compares the key as data, so no key needs quoting inside a JSON path.
            clauses.append(
                "EXISTS (SELECT 1 FROM json_each(threads.data, '$.metadata') m "
                "WHERE m.key = ? AND m.type = 'text' AND m.value = ?)"
            )
        params.extend([key, value])
    if not clauses:
        return None
    return " AND ".join(clauses), params
