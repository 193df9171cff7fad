"""File bytes, behind a small interface so an object store can replace the folder later."""

from __future__ import annotations

import abc
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio


class BlobTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class BlobStore(abc.ABC):
    @abc.abstractmethod
    async def put(self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> int:
        """Store the bytes under ``key``; return their count. Nothing is left behind on failure."""

    @abc.abstractmethod
    def path(self, key: str) -> Path | None:
        """A local path to read the bytes from, or None when they are missing."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...


class LocalBlobStore(BlobStore):
    """A folder of files, fanned out by a two-character shard so no directory grows huge."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        safe = key.replace("/", "_")
        return self.root / safe[-2:] / safe

    async def put(self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> int:
        final = self._path(key)
        tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
        size = 0
        try:
            async with await anyio.open_file(tmp, "wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise BlobTooLarge(max_bytes)
                    await fh.write(chunk)
            final.parent.mkdir(parents=True, exist_ok=True)
            # rename is atomic: readers see the whole file or none of it.
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size

    def path(self, key: str) -> Path | None:
        p = self._path(key)
        return p if p.exists() else None

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
