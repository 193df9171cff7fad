"""Files that tools read from and write to the project's file store (bytes in the blob store, records
in the ``files`` table), the same objects ``/v1/files`` serves."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from assistantd.clock import now
from assistantd.ids import new_id
from assistantd.store import Database
from assistantd.store import objects as rows
from assistantd.store.blobs import BlobMissing, BlobStore

_CHUNK = 1024 * 1024


async def _chunks_of(source: bytes | Path | AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if isinstance(source, bytes):
        yield source
        return
    if not isinstance(source, Path):
        async for chunk in source:
            yield chunk
        return
    async with await anyio.open_file(source, "rb") as fh:
        while chunk := await fh.read(_CHUNK):
            yield chunk


async def store_output(
    db: Database,
    blobs: BlobStore,
    project: str,
    filename: str,
    source: bytes | Path | AsyncIterator[bytes],
    *,
    max_bytes: int,
) -> dict[str, Any]:
    """Save bytes a tool produced as a File with purpose ``assistants_output``."""
    file_id = new_id("file")
    size = await blobs.put(file_id, _chunks_of(source), max_bytes=max_bytes)
    obj = {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": now(),
        "expires_at": None,
        "filename": filename,
        "purpose": "assistants_output",
        "status": "processed",
        "status_details": None,
    }
    try:
        await db.write(lambda c: rows.insert(c, rows.FILES, project, obj, purpose="assistants_output", expires_at=None))
    except BaseException:
        await blobs.delete(file_id)
        raise
    return obj


async def lookup(
    db: Database, blobs: BlobStore, project: str, file_ids: list[str], copies: contextlib.AsyncExitStack
) -> list[tuple[str, str, Path]]:
    """(file id, filename, local path) for each id that still names a file with bytes; others are skipped.

    The paths are the blob store's local copies, valid until ``copies`` closes.
    """

    def tx(conn: Any) -> list[dict[str, Any]]:
        found = (rows.get(conn, rows.FILES, project, fid) for fid in dict.fromkeys(file_ids))
        return [f for f in found if f is not None]

    out = []
    for record in await db.read(tx):
        try:
            path = await copies.enter_async_context(blobs.local_copy(record["id"]))
        except BlobMissing:
            continue
        out.append((record["id"], record["filename"], path))
    return out
