"""Files: upload (bytes to the blob store, the record to the database), read, list, download, delete."""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from assistantd.clock import now
from assistantd.errors import InvalidRequest, NotFound, PayloadTooLarge, ServiceUnavailable
from assistantd.ids import new_id
from assistantd.protocol.files import MAX_EXPIRY_SECONDS, MIN_EXPIRY_SECONDS, UPLOAD_PURPOSES
from assistantd.service.common import page_or_400
from assistantd.store import Conn, Database
from assistantd.store import objects as rows
from assistantd.store import vector_stores as vector_rows
from assistantd.store.blobs import BlobMissing, BlobStore, BlobTooLarge
from assistantd.store.objects import Page, PageQuery

log = logging.getLogger("assistantd.files")

KIND = "file"


@dataclass(frozen=True)
class Download:
    chunks: AsyncIterator[bytes]
    size: int
    filename: str
    media_type: str


def _not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="id")


def check_purpose(purpose: str | None) -> str:
    if purpose is None or purpose == "":
        raise InvalidRequest(
            "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
        )
    if purpose not in UPLOAD_PURPOSES:
        allowed = ", ".join(f"'{p}'" for p in UPLOAD_PURPOSES)
        raise InvalidRequest(
            f"Invalid value for 'purpose': '{purpose}'. Supported values are: {allowed}.",
            param="purpose",
            code="invalid_value",
        )
    return purpose


def check_expiry(anchor: str | None, seconds: str | None) -> int | None:
    """``expires_after[anchor]`` and ``expires_after[seconds]`` arrive as form fields; return seconds."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "Invalid value for 'expires_after.anchor': expected 'created_at'.",
            param="expires_after.anchor",
            code="invalid_value",
        )
    try:
        value = int(seconds or "")
    except ValueError:
        raise InvalidRequest(
            "Invalid 'expires_after.seconds': expected an integer number of seconds.",
            param="expires_after.seconds",
            code="invalid_type",
        ) from None
    if not MIN_EXPIRY_SECONDS <= value <= MAX_EXPIRY_SECONDS:
        raise InvalidRequest(
            f"Invalid 'expires_after.seconds': expected a value between {MIN_EXPIRY_SECONDS} and "
            f"{MAX_EXPIRY_SECONDS}, but got {value} instead.",
            param="expires_after.seconds",
            code="invalid_value",
        )
    return value


class FileService:
    def __init__(self, db: Database, blobs: BlobStore, *, max_bytes: int) -> None:
        self.db = db
        self.blobs = blobs
        self.max_bytes = max_bytes

    async def upload(
        self,
        project: str,
        *,
        filename: str,
        purpose: str,
        chunks: AsyncIterator[bytes],
        expires_after: int | None = None,
    ) -> dict[str, Any]:
        file_id = new_id("file")
        try:
            size = await self.blobs.put(file_id, chunks, max_bytes=self.max_bytes)
        except BlobTooLarge as exc:
            raise PayloadTooLarge(
                f"File is too large: the limit is {exc.limit} bytes.", param="file"
            ) from None
        created_at = now()
        obj: dict[str, Any] = {
            "id": file_id,
            "object": "file",
            "bytes": size,
            "created_at": created_at,
            "expires_at": created_at + expires_after if expires_after else None,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        try:
            await self.db.write(
                lambda conn: rows.insert(
                    conn, rows.FILES, project, obj, purpose=purpose, expires_at=obj["expires_at"]
                )
            )
        except BaseException:
            await self.blobs.delete(file_id)  # no bytes without a record
            raise
        return obj

    async def retrieve_raw(self, project: str, file_id: str) -> str:
        def tx(conn: Conn) -> str:
            raw = rows.get_raw(conn, rows.FILES, project, file_id)
            if raw is None:
                raise _not_found(file_id)
            return raw

        return await self.db.read(tx)

    async def list_page(self, project: str, query: PageQuery, purpose: str | None) -> Page:
        return await self.db.read(
            lambda conn: page_or_400(conn, rows.FILES, project, query, KIND, purpose=purpose)
        )

    async def content(self, project: str, file_id: str) -> Download:
        def tx(conn: Conn) -> dict[str, Any] | None:
            return rows.get(conn, rows.FILES, project, file_id)

        obj = await self.db.read(tx)
        if obj is None:
            raise _not_found(file_id)
        try:
            chunks = await self.blobs.read(file_id)
        except BlobMissing:
            log.error("file %s has a record but no bytes", file_id)
            raise ServiceUnavailable(f"The content of file {file_id} is not available right now.") from None
        media_type = mimetypes.guess_type(obj["filename"])[0] or "application/octet-stream"
        return Download(chunks=chunks, size=int(obj["bytes"]), filename=obj["filename"], media_type=media_type)

    async def delete(self, project: str, file_id: str) -> dict[str, Any]:
        def tx(conn: Conn) -> tuple[bool, bool]:
            if not rows.delete(conn, rows.FILES, project, file_id):
                return False, False
            vector_rows.detach_everywhere(conn, project, file_id)  # its chunks leave every vector store
            # In the database's store the bytes go with the record, in this transaction.
            return True, self.blobs.delete_in(conn, file_id)

        found, bytes_gone = await self.db.write(tx)
        if not found:
            raise _not_found(file_id)
        if not bytes_gone:
            await self.blobs.delete(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    async def delete_expired(self) -> int:
        """Remove files whose ``expires_after`` has passed, across all projects."""
        moment = now()

        def tx(conn: Conn) -> tuple[list[str], bool]:
            ids = rows.delete_expired_files(conn, moment)
            gone = True
            for file_id in ids:
                vector_rows.detach_everywhere(conn, None, file_id)
                gone = self.blobs.delete_in(conn, file_id) and gone
            return ids, gone

        ids, bytes_gone = await self.db.write(tx)
        if not bytes_gone:
            for file_id in ids:
                await self.blobs.delete(file_id)
        return len(ids)

    async def check_storage(self) -> None:
        """Raise if file bytes cannot be stored or read now (for readiness)."""
        await self.blobs.check()

    async def sweep_blobs(self) -> int:
        """Remove bytes that writers which died half-way left behind."""
        return await self.blobs.sweep()
