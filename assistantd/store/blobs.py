"""File bytes: a folder on the embedded (SQLite) deployment, the shared PostgreSQL database otherwise.

Every reader goes through this interface, never through a path of its own, so on PostgreSQL any
replica can serve any file: ``read`` streams the bytes in bounded memory, and ``local_copy`` lends a
path to readers that need one (the sandbox copies files into /mnt/data, the parser opens a file).

On PostgreSQL a blob is a header row in ``blobs`` and its bytes in ``blob_chunks``, 1 MiB per row
(measured against large objects in bench/blob_store.py). Plain rows, unlike large objects, are
deleted by an ordinary ``DELETE`` in the same transaction as the file record, cascade from the
header, and travel with ``pg_dump`` like every other table.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from assistantd.clock import now
from assistantd.store.base import Conn, Database

CHUNK_BYTES = 1024 * 1024
# Chunks fetched or written per database round trip: bounds memory (4 MiB) while keeping the
# per-transaction overhead small next to the bytes moved.
CHUNKS_PER_TRIP = 4
# A PostgreSQL blob still being written after this long belongs to a writer that died (kill -9 in
# the middle of an upload); the sweep removes it.
STALE_WRITE_SECONDS = 3600


class BlobTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class BlobMissing(KeyError):
    """No complete bytes are stored under this key (never stored, deleted, or cut short by a delete)."""


class BlobStore(abc.ABC):
    # True when the bytes live in the database itself, so a database dump (backup) already holds them.
    in_database: bool = False

    @abc.abstractmethod
    async def put(self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> int:
        """Store the bytes under ``key``; return their count. Nothing is left behind on failure."""

    @abc.abstractmethod
    async def read(self, key: str) -> AsyncIterator[bytes]:
        """The bytes as chunks of at most ``CHUNK_BYTES``. Raises ``BlobMissing`` here when there are none
        (so a caller can answer before it starts a response); a delete racing the stream raises it from
        the iterator."""

    @abc.abstractmethod
    def local_copy(self, key: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """A local file holding the bytes, valid inside the ``async with``; raises ``BlobMissing``."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the bytes (no error when there are none)."""

    def delete_in(self, conn: Conn, key: str) -> bool:
        """Remove the bytes inside the caller's database transaction, when they live in that database.

        Returns False when the store cannot (the folder): the caller then calls ``delete`` after commit.
        """
        return False

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise if the store cannot be used now (readiness)."""

    async def sweep(self) -> int:
        """Remove what crashed writers left behind; return how many blobs went."""
        return 0


async def _file_chunks(path: Path, key: str) -> AsyncIterator[bytes]:
    try:
        fh = await anyio.open_file(path, "rb")
    except FileNotFoundError:
        raise BlobMissing(key) from None  # deleted between the check and the first read
    async with fh:
        while chunk := await fh.read(CHUNK_BYTES):
            yield chunk


class LocalBlobStore(BlobStore):
    """A folder of files, fanned out by a two-character shard so no directory grows huge."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def file_path(self, key: str) -> Path:
        safe = key.replace("/", "_")
        return self.root / safe[-2:] / safe

    def keys(self) -> list[str]:
        """Every key stored in the folder (for moving them into another store)."""
        return sorted(p.name for p in self.root.glob("??/*") if p.is_file() and p.parent.name != "tmp")

    async def put(self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> int:
        final = self.file_path(key)
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

    async def read(self, key: str) -> AsyncIterator[bytes]:
        path = self.file_path(key)
        if not path.is_file():
            raise BlobMissing(key)
        return _file_chunks(path, key)

    @contextlib.asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        path = self.file_path(key)
        if not path.is_file():
            raise BlobMissing(key)
        yield path  # the folder's own file: nothing to copy or remove

    async def exists(self, key: str) -> bool:
        return self.file_path(key).is_file()

    async def delete(self, key: str) -> None:
        self.file_path(key).unlink(missing_ok=True)

    async def check(self) -> None:
        probe = self.root / "tmp" / f"ready-{uuid.uuid4().hex}"
        await anyio.Path(probe).write_bytes(b"")
        await anyio.Path(probe).unlink()


# --- PostgreSQL -----------------------------------------------------------------------------------


def _begin(conn: Conn, key: str, created_at: int) -> None:
    # A key left half-written by a writer that died (or by an interrupted migration) starts over.
    conn.execute("DELETE FROM blobs WHERE key = ? AND NOT complete", (key,))
    conn.execute(
        "INSERT INTO blobs (key, bytes, chunks, complete, created_at) VALUES (?, 0, 0, FALSE, ?)",
        (key, created_at),
    )


def _append(conn: Conn, key: str, first: int, parts: list[bytes]) -> None:
    # The header must still be ours: a delete racing the upload wins, and the upload fails.
    if conn.fetchone("SELECT 1 FROM blobs WHERE key = ? AND NOT complete FOR UPDATE", (key,)) is None:
        raise BlobMissing(key)
    for i, data in enumerate(parts):
        conn.execute("INSERT INTO blob_chunks (key, seq, data) VALUES (?, ?, ?)", (key, first + i, data))


def _finish(conn: Conn, key: str, size: int, chunks: int) -> None:
    if not conn.execute(
        "UPDATE blobs SET bytes = ?, chunks = ?, complete = TRUE WHERE key = ? AND NOT complete", (size, chunks, key)
    ):
        raise BlobMissing(key)


def _drop(conn: Conn, key: str) -> int:
    return conn.execute("DELETE FROM blobs WHERE key = ?", (key,))  # its chunks go by ON DELETE CASCADE


def _header(conn: Conn, key: str) -> tuple[int, int] | None:
    row = conn.fetchone("SELECT bytes, chunks FROM blobs WHERE key = ? AND complete", (key,))
    return None if row is None else (int(row[0]), int(row[1]))


def _chunks(conn: Conn, key: str, first: int, count: int) -> list[bytes]:
    rows = conn.fetchall_binary(
        "SELECT data FROM blob_chunks WHERE key = ? AND seq >= ? AND seq < ? ORDER BY seq", (key, first, first + count)
    )
    if len(rows) != count:
        raise BlobMissing(key)  # deleted while being read
    return [bytes(r[0]) for r in rows]


def _sweep(conn: Conn, before: int) -> int:
    return conn.execute("DELETE FROM blobs WHERE NOT complete AND created_at < ?", (before,))


class PostgresBlobStore(BlobStore):
    """Blobs in the shared database, so every replica reads what any replica wrote.

    A put writes its chunks over several short transactions (an upload never holds a pooled connection
    for its whole length) under a header marked incomplete; readers see the blob only once the last
    transaction marks it complete. ``spool`` is the local folder for ``local_copy``'s temporary files.
    """

    in_database = True

    def __init__(self, db: Database, spool: Path) -> None:
        if db.dialect != "postgres":
            raise ValueError("PostgresBlobStore needs a PostgreSQL database")
        self.db = db
        # A folder per process, so processes sharing a data dir (a server and the migrate command) never
        # remove each other's copies; those of processes that died inside a local_copy are removed.
        for old in spool.glob("*") if spool.is_dir() else []:
            if old.name.isdigit() and (int(old.name) == os.getpid() or not _alive(int(old.name))):
                shutil.rmtree(old, ignore_errors=True)
        self.spool = spool / str(os.getpid())
        self.spool.mkdir(parents=True, exist_ok=True)

    async def put(self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int) -> int:
        await self.db.write(functools.partial(_begin, key=key, created_at=now()))
        size = 0
        seq = 0
        pending: list[bytes] = []
        buffer = bytearray()
        try:
            async for piece in chunks:
                size += len(piece)
                if size > max_bytes:
                    raise BlobTooLarge(max_bytes)
                buffer += piece
                while len(buffer) >= CHUNK_BYTES:
                    pending.append(bytes(buffer[:CHUNK_BYTES]))
                    del buffer[:CHUNK_BYTES]
                if len(pending) >= CHUNKS_PER_TRIP:
                    await self.db.write(functools.partial(_append, key=key, first=seq, parts=pending))
                    seq += len(pending)
                    pending = []
            if buffer:
                pending.append(bytes(buffer))
            if pending:
                await self.db.write(functools.partial(_append, key=key, first=seq, parts=pending))
                seq += len(pending)
            await self.db.write(functools.partial(_finish, key=key, size=size, chunks=seq))
        except BaseException:
            with contextlib.suppress(Exception):
                await self.delete(key)
            raise
        return size

    async def read(self, key: str) -> AsyncIterator[bytes]:
        header = await self.db.read(functools.partial(_header, key=key))
        if header is None:
            raise BlobMissing(key)
        return self._stream(key, header[1])

    async def _stream(self, key: str, count: int) -> AsyncIterator[bytes]:
        for first in range(0, count, CHUNKS_PER_TRIP):
            n = min(CHUNKS_PER_TRIP, count - first)
            for part in await self.db.read(functools.partial(_chunks, key=key, first=first, count=n)):
                yield part

    @contextlib.asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        chunks = await self.read(key)
        path = self.spool / f"{uuid.uuid4().hex}.blob"
        try:
            async with await anyio.open_file(path, "wb") as fh:
                async for chunk in chunks:
                    await fh.write(chunk)
            yield path
        finally:
            path.unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        return await self.db.read(functools.partial(_header, key=key)) is not None

    async def delete(self, key: str) -> None:
        await self.db.write(functools.partial(_drop, key=key))

    def delete_in(self, conn: Conn, key: str) -> bool:
        _drop(conn, key)
        return True

    async def check(self) -> None:
        await self.db.read(lambda conn: conn.fetchval("SELECT 1 FROM blobs LIMIT 1"))

    async def sweep(self) -> int:
        return await self.db.write(functools.partial(_sweep, before=now() - STALE_WRITE_SECONDS))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_blob_store(db: Database, data_path: Path) -> BlobStore:
    """The database's own store on PostgreSQL (shared by every replica); the data folder on SQLite."""
    if db.dialect == "postgres":
        return PostgresBlobStore(db, data_path / "blob-spool")
    return LocalBlobStore(data_path / "files")


def stored_keys(conn: Conn) -> set[str]:
    """Keys with complete bytes in the database (for the migration command)."""
    return {str(r[0]) for r in conn.fetchall("SELECT key FROM blobs WHERE complete")}


__all__ = [
    "CHUNK_BYTES",
    "BlobMissing",
    "BlobStore",
    "BlobTooLarge",
    "LocalBlobStore",
    "PostgresBlobStore",
    "open_blob_store",
    "stored_keys",
]
