"""Small pieces every service uses: the clock, and checks that ids in a body name real objects."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from assistantd.errors import InvalidRequest, NotFound
from assistantd.ids import PREFIXES, has_prefix
from assistantd.store import Conn
from assistantd.store import objects as rows
from assistantd.store.objects import CursorNotFound, Page, PageQuery, Table

__all__ = ["Page", "PageQuery", "fetch", "fetch_raw", "page_or_400", "require_file", "require_files"]


def require_files(conn: Conn, project: str, file_ids: Iterable[str], param: str) -> None:
    """Every id must name a file of this project; the error names the offending element."""
    for i, file_id in enumerate(file_ids):
        where = f"{param}[{i}]"
        if not has_prefix("file", file_id):
            raise InvalidRequest(
                f"Invalid '{where}': '{file_id}'. Expected an ID that begins with '{PREFIXES['file']}'.",
                param=where,
                code="invalid_value",
            )
        if not rows.exists(conn, rows.FILES, project, file_id):
            raise InvalidRequest(f"No file found with id '{file_id}'.", param=where, code="invalid_value")


def require_file(conn: Conn, project: str, file_id: str, param: str) -> None:
    if not has_prefix("file", file_id):
        raise InvalidRequest(
            f"Invalid '{param}': '{file_id}'. Expected an ID that begins with '{PREFIXES['file']}'.",
            param=param,
            code="invalid_value",
        )
    if not rows.exists(conn, rows.FILES, project, file_id):
        raise InvalidRequest(f"No file found with id '{file_id}'.", param=param, code="invalid_value")


def page_or_400(
    conn: Conn,
    table: Table,
    project: str,
    query: PageQuery,
    kind: str,
    *,
    condition: tuple[str, list[Any]] | None = None,
    **scope: object,
) -> Page:
    """Page through a list, turning an unknown cursor into a 400 that names it."""
    try:
        return rows.page(conn, table, project, query, condition=condition, **scope)
    except CursorNotFound as exc:
        raise InvalidRequest(
            f"Invalid '{exc.param}': no {kind} with id '{exc.value}' is in this list.",
            param=exc.param,
            code="invalid_value",
        ) from None


def fetch(conn: Conn, table: Table, project: str, kind: str, object_id: str, **scope: object) -> dict:
    obj = rows.get(conn, table, project, object_id, **scope)
    if obj is None:
        raise NotFound.object(kind, object_id)
    return obj


def fetch_raw(conn: Conn, table: Table, project: str, kind: str, object_id: str, **scope: object) -> str:
    """The object's stored JSON, as the API returns it, without decoding it."""
    raw = rows.get_raw(conn, table, project, object_id, **scope)
    if raw is None:
        raise NotFound.object(kind, object_id)
    return raw
