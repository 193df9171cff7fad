"""Routes for /v1/files: multipart upload, metadata, raw content download."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from assistantd.api.common import ok, ok_page, ok_raw, page_query, project, services
from assistantd.api.streaming import StreamedResponse
from assistantd.errors import InvalidRequest
from assistantd.service.files import check_expiry, check_purpose

_CHUNK = 1024 * 1024


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_CHUNK):
        yield chunk


async def upload(request: Request) -> Response:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest(
            "Files are uploaded as multipart/form-data with a 'file' part and a 'purpose' field.",
            code="invalid_content_type",
        )
    async with request.form(max_files=1, max_fields=20) as form:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidRequest("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        purpose = form.get("purpose")
        purpose = check_purpose(purpose if isinstance(purpose, str) else None)
        anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
        expires = check_expiry(
            anchor if isinstance(anchor, str) else None, seconds if isinstance(seconds, str) else None
        )
        filename = (file.filename or "upload").replace("\\", "/").rsplit("/", 1)[-1] or "upload"
        obj = await services(request).files.upload(
            project(request), filename=filename, purpose=purpose, chunks=_chunks(file), expires_after=expires
        )
    return ok(obj)


async def list_(request: Request) -> Response:
    query = page_query(request, default_limit=10_000, max_limit=10_000)
    purpose = request.query_params.get("purpose") or None
    return ok_page(await services(request).files.list_page(project(request), query, purpose))


async def retrieve(request: Request) -> Response:
    return ok_raw(await services(request).files.retrieve_raw(project(request), request.path_params["file_id"]))


async def content(request: Request) -> Response:
    download = await services(request).files.content(project(request), request.path_params["file_id"])
    # Streamed from the blob store in bounded memory, whichever replica stored the bytes.
    quoted = quote(download.filename)
    disposition = (
        f'attachment; filename="{download.filename}"'
        if quoted == download.filename
        else f"attachment; filename*=utf-8''{quoted}"
    )
    return StreamedResponse(
        download.chunks,
        media_type=download.media_type,
        headers={"content-length": str(download.size), "content-disposition": disposition},
    )


async def delete(request: Request) -> Response:
    return ok(await services(request).files.delete(project(request), request.path_params["file_id"]))


routes = [
    Route("/files", upload, methods=["POST"]),
    Route("/files", list_, methods=["GET"]),
    Route("/files/{file_id}", retrieve, methods=["GET"]),
    Route("/files/{file_id}", delete, methods=["DELETE"]),
    Route("/files/{file_id}/content", content, methods=["GET"]),
]
