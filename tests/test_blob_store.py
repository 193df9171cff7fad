"""The blob stores behind file bytes: the data folder (SQLite) and the PostgreSQL tables, one contract.

Each test runs on both backends: ``open_blob_store`` picks the folder on SQLite and the database on
PostgreSQL, as the server does. The migration command is driven as an operator runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run

from assistantd.ids import new_id
from assistantd.store import Database, open_database
from assistantd.store import objects as rows
from assistantd.store.blobs import (
    CHUNK_BYTES,
    BlobMissing,
    BlobStore,
    BlobTooLarge,
    LocalBlobStore,
    PostgresBlobStore,
    open_blob_store,
)


@pytest.fixture
def store(db: Database, tmp_path: Path) -> BlobStore:
    return open_blob_store(db, tmp_path / "data")


def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    return gen()


async def collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [c async for c in chunks]


def payload(n: int) -> bytes:
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def blob_rows(db: Database) -> list[tuple[Any, ...]]:
    if db.dialect != "postgres":
        return []
    return run(db.read(lambda c: c.fetchall("SELECT key, complete FROM blobs ORDER BY key")))


def folder_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "data" / "files"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_the_backend_picks_the_store(db: Database, store: BlobStore, tmp_path: Path) -> None:
    expected = PostgresBlobStore if db.dialect == "postgres" else LocalBlobStore
    assert type(store) is expected


def test_bytes_round_trip_in_bounded_chunks_across_chunk_boundaries(
    db: Database, store: BlobStore, tmp_path: Path
) -> None:
    data = payload(2 * CHUNK_BYTES + CHUNK_BYTES // 2 + 7)

    async def go() -> None:
        assert await store.put("file-a", pieces(data, 300_001), max_bytes=len(data)) == len(data)
        chunks = await collect(await store.read("file-a"))
        assert b"".join(chunks) == data
        assert max(len(c) for c in chunks) <= CHUNK_BYTES
        assert await store.exists("file-a")
        async with store.local_copy("file-a") as path:
            assert path.read_bytes() == data
            copy = path
        # The database's copies are temporary; the folder lends its own file, which stays.
        assert copy.exists() is (db.dialect == "sqlite")

    run(go())
    if db.dialect == "postgres":
        assert folder_files(tmp_path) == []  # nothing on this replica's disk
        assert blob_rows(db) == [("file-a", True)]


def test_an_empty_file_is_stored_and_read_back(store: BlobStore) -> None:
    async def go() -> None:
        assert await store.put("file-empty", pieces(b"", 1), max_bytes=10) == 0
        assert await collect(await store.read("file-empty")) == []
        async with store.local_copy("file-empty") as path:
            assert path.read_bytes() == b""

    run(go())


def test_missing_bytes_raise_the_typed_error(store: BlobStore) -> None:
    async def go() -> None:
        with pytest.raises(BlobMissing):
            await store.read("file-none")
        with pytest.raises(BlobMissing):
            async with store.local_copy("file-none"):
                pass
        assert not await store.exists("file-none")
        await store.delete("file-none")  # deleting nothing is no error

    run(go())


def test_too_large_or_failed_puts_leave_nothing(db: Database, store: BlobStore, tmp_path: Path) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield payload(CHUNK_BYTES * 5)
        raise OSError("client went away")

    async def go() -> None:
        with pytest.raises(BlobTooLarge):
            await store.put("file-big", pieces(payload(CHUNK_BYTES * 6), CHUNK_BYTES), max_bytes=CHUNK_BYTES * 5)
        with pytest.raises(OSError):
            await store.put("file-cut", failing(), max_bytes=CHUNK_BYTES * 10)
        assert not await store.exists("file-big") and not await store.exists("file-cut")

    run(go())
    assert blob_rows(db) == []
    assert [p for p in folder_files(tmp_path) if p.parent.name != "tmp"] == []
    assert [p for p in folder_files(tmp_path)] == []


def test_delete_removes_the_bytes(store: BlobStore) -> None:
    async def go() -> None:
        await store.put("file-d", pieces(b"bye", 2), max_bytes=10)
        await store.delete("file-d")
        assert not await store.exists("file-d")

    run(go())


def test_in_the_database_the_bytes_go_with_the_transaction(db: Database, store: BlobStore) -> None:
    run(store.put("file-tx", pieces(b"abc", 2), max_bytes=10))

    class Abort(Exception):
        pass

    def rolled_back(conn: Any) -> None:
        assert store.delete_in(conn, "file-tx") is (db.dialect == "postgres")
        raise Abort

    with pytest.raises(Abort):
        db.write_sync(rolled_back)
    assert run(store.exists("file-tx"))  # the transaction rolled back: the bytes are still there
    if db.dialect == "postgres":
        db.write_sync(lambda conn: store.delete_in(conn, "file-tx"))
        assert not run(store.exists("file-tx"))
        assert run(db.read(lambda c: c.fetchval("SELECT count(*) FROM blob_chunks"))) == 0


@pytest.fixture
def pg(pg_database: str, tmp_path: Path) -> Iterator[tuple[Database, PostgresBlobStore]]:
    """PostgreSQL only: the folder store writes a temporary file and renames it, so it has no half-written
    state, and a file it serves stays readable after unlink."""
    database = open_database(pg_database, pool_size=4)
    try:
        yield database, PostgresBlobStore(database, tmp_path / "spool")
    finally:
        run(database.close())


def test_a_half_written_blob_is_invisible_replaced_by_a_new_put_and_swept_when_stale(
    pg: tuple[Database, PostgresBlobStore],
) -> None:
    db, store = pg

    # What a writer killed mid-upload leaves: a header never marked complete, and some chunks.
    def crashed(conn: Any, key: str, at: float) -> None:
        conn.execute(
            "INSERT INTO blobs (key, bytes, chunks, complete, created_at) VALUES (?, 0, 0, FALSE, ?)", (key, int(at))
        )
        conn.execute("INSERT INTO blob_chunks (key, seq, data) VALUES (?, 0, ?)", (key, b"partial"))

    db.write_sync(lambda c: crashed(c, "file-old", time.time() - 7200))
    db.write_sync(lambda c: crashed(c, "file-new", time.time()))
    db.write_sync(lambda c: crashed(c, "file-redo", time.time() - 7200))

    async def go() -> None:
        with pytest.raises(BlobMissing):
            await store.read("file-old")
        assert await store.put("file-redo", pieces(b"whole", 2), max_bytes=10) == 5
        assert b"".join(await collect(await store.read("file-redo"))) == b"whole"
        assert await store.sweep() == 1  # only the stale one: file-new may still be being written

    run(go())
    assert blob_rows(db) == [("file-new", False), ("file-redo", True)]


def test_a_delete_racing_a_download_ends_the_stream_with_the_typed_error(
    pg: tuple[Database, PostgresBlobStore],
) -> None:
    _, store = pg
    data = payload(CHUNK_BYTES * 9)

    async def go() -> None:
        await store.put("file-race", pieces(data, CHUNK_BYTES), max_bytes=len(data))
        chunks = await store.read("file-race")
        first = await anext(chunks)
        await store.delete("file-race")
        with pytest.raises(BlobMissing):
            async for _ in chunks:
                pass
        assert first == data[:CHUNK_BYTES]

    run(go())


# --- moving a data folder into PostgreSQL -----------------------------------------------------------


def _record(conn: Any, file_id: str, size: int) -> None:
    obj = {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": 1,
        "expires_at": None,
        "filename": f"{file_id}.bin",
        "purpose": "assistants",
        "status": "processed",
        "status_details": None,
    }
    rows.insert(conn, rows.FILES, "p", obj, purpose="assistants", expires_at=None)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANTD_")}
    return subprocess.run(
        [sys.executable, "-m", "assistantd", "blobs", "migrate", *args],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def test_blobs_migrate_moves_a_folder_into_postgres_resumably_and_idempotently(
    pg_database: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "node1"
    folder = LocalBlobStore(data_dir / "files")
    db = open_database(pg_database, pool_size=2)
    try:
        contents = {new_id("file"): payload(CHUNK_BYTES * (i % 3) + 1000 * i) for i in range(6)}
        for key, data in contents.items():
            run(folder.put(key, pieces(data, 65536), max_bytes=len(data)))
            db.write_sync(lambda c, key=key, data=data: _record(c, key, len(data)))
        orphan = new_id("file")
        run(folder.put(orphan, pieces(b"no record", 4), max_bytes=100))
        args = ["--data-dir", str(data_dir), "--database-url", pg_database]

        first = _cli(*args, "--limit", "3")
        assert first.returncode == 0, first.stderr
        assert "moved 3 file(s)" in first.stdout and "3 left to move" in first.stdout
        # Interrupted half-way through the next file, as kill -9 would leave it.
        pending = sorted(set(contents) - {r[0] for r in blob_rows(db)})
        cut = pending[0]
        db.write_sync(lambda c: c.execute(
            "INSERT INTO blobs (key, bytes, chunks, complete, created_at) VALUES (?, 0, 0, FALSE, ?)",
            (cut, int(time.time()))))  # fmt: skip
        db.write_sync(lambda c: c.execute("INSERT INTO blob_chunks (key, seq, data) VALUES (?, 0, ?)", (cut, b"xx")))

        second = _cli(*args)
        assert second.returncode == 0, second.stderr
        assert "moved 3 file(s)" in second.stdout and "3 already in the database" in second.stdout
        assert "1 file(s) in the folder have no file record" in second.stdout
        third = _cli(*args)
        assert "moved 0 file(s), 0 bytes; 6 already in the database; 0 left" in third.stdout

        store = PostgresBlobStore(db, tmp_path / "spool")
        for key, data in contents.items():
            assert b"".join(run(collect(run(store.read(key))))) == data
        assert blob_rows(db) == [(k, True) for k in sorted(contents)]  # once each, the orphan not moved
        expected_chunks = sum(-(-len(d) // CHUNK_BYTES) for d in contents.values())
        assert run(db.read(lambda c: c.fetchval("SELECT count(*) FROM blob_chunks"))) == expected_chunks
    finally:
        run(db.close())


def test_blobs_migrate_on_sqlite_says_there_is_nothing_to_do(tmp_path: Path) -> None:
    out = _cli("--data-dir", str(tmp_path / "d"))
    assert out.returncode == 2
    assert "SQLite" in out.stderr


def test_blobs_migrate_killed_mid_way_finishes_on_the_next_run(pg_database: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "node1"
    folder = LocalBlobStore(data_dir / "files")
    db = open_database(pg_database, pool_size=2)
    try:
        contents = {new_id("file"): payload(2 * CHUNK_BYTES + i) for i in range(20)}
        for key, data in contents.items():
            run(folder.put(key, pieces(data, CHUNK_BYTES), max_bytes=len(data)))
            db.write_sync(lambda c, key=key, data=data: _record(c, key, len(data)))
        args = ["--data-dir", str(data_dir), "--database-url", pg_database]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANTD_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistantd", "blobs", "migrate", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            done: list[tuple[Any, ...]] = []
            while time.monotonic() < deadline and proc.poll() is None:
                done = [r for r in blob_rows(db) if r[1]]
                if done:
                    break
                time.sleep(0.01)
            proc.kill()  # SIGKILL: no cleanup of the file it was writing
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
        assert 1 <= len(done) < len(contents), "the migration was not caught half-way"

        again = _cli(*args)
        assert again.returncode == 0, again.stderr
        store = PostgresBlobStore(db, tmp_path / "spool")
        for key, data in contents.items():
            assert b"".join(run(collect(run(store.read(key))))) == data
        assert blob_rows(db) == [(k, True) for k in sorted(contents)]
        expected_chunks = sum(-(-len(d) // CHUNK_BYTES) for d in contents.values())  # nothing written twice
        assert run(db.read(lambda c: c.fetchval("SELECT count(*) FROM blob_chunks"))) == expected_chunks
    finally:
        run(db.close())
