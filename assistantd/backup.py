"""``assistantd backup`` and ``assistantd restore``: the database and the file bytes, in one tar file.

Backups are taken online, while the server runs:

- SQLite: SQLite's backup API copies the database in one step, a consistent snapshot that does not
  block the server's writes (WAL mode).
- PostgreSQL: ``pg_dump --format=custom`` (its version must be at least the server's).
- File bytes: every file the database snapshot names, read through the blob store. A blob store that
  keeps bytes inside the database (``in_database``) is covered by the dump and adds nothing here.

The snapshot is taken first and the bytes copied after, so every file in the backup has its bytes,
except one deleted in between (listed as ``missing_blobs`` in the manifest). Restore writes into a
database that has no objects yet (``--force`` overwrites), then migrates it to this version's schema.

The archive: ``manifest.json``, ``database.sqlite`` or ``database.pgdump``, and ``blobs/<file id>``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistantd import __version__
from assistantd.app import build_blob_store
from assistantd.clock import now
from assistantd.settings import Settings
from assistantd.store import open_database
from assistantd.store.blobs import BlobStore, LocalBlobStore

FORMAT = 1
CHUNK = 1024 * 1024
NO_LIMIT = 1 << 62


class BackupError(Exception):
    """Something the operator must fix; the message says what."""


@dataclass
class Result:
    dialect: str
    schema_version: int
    files: int
    blobs: int
    missing_blobs: list[str]


def _sqlite_path(url: str) -> Path:
    raw = url.removeprefix("sqlite:").removeprefix("//")
    return Path("/" + raw.lstrip("/") if raw.startswith("/") else raw).resolve()


def _readonly(path: Path) -> str:
    """A URI opening the database read-only (never creating it)."""
    return path.as_uri() + "?mode=ro"


def _dialect(url: str) -> str:
    if url.startswith("sqlite:"):
        return "sqlite"
    if url.startswith(("postgresql:", "postgres:")):
        return "postgres"
    raise BackupError(f"unsupported database URL {url!r}")


def _tool(name: str, given: str) -> str:
    found = shutil.which(given)
    if found is None:
        raise BackupError(
            f"{given} was not found: install PostgreSQL's client tools (Debian: apt-get install postgresql-client) "
            f"or pass --{name.replace('_', '-')} /path/to/{name}, of the server's major version or newer"
        )
    return found


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise BackupError(f"{what} failed ({result.returncode}): {result.stderr.strip()[:2000]}")


def _snapshot_sqlite(url: str, out: Path) -> None:
    import sqlean as sqlite3

    path = _sqlite_path(url)
    if not path.exists():
        raise BackupError(f"there is no database at {path}")
    src = sqlite3.connect(_readonly(path), uri=True)
    dst = sqlite3.connect(str(out))
    try:
        src.execute("PRAGMA busy_timeout = 10000")
        src.backup(dst)  # one step: a consistent snapshot; the server's writers are not blocked (WAL)
        dst.execute("PRAGMA journal_mode = DELETE")  # a self-contained file, no -wal beside it
    finally:
        dst.close()
        src.close()


def _file_ids(settings: Settings) -> tuple[list[str], int, str]:
    """The file ids, the schema version and the dialect of the snapshot just taken (opened read-only)."""
    url = settings.resolved_database_url
    db = open_database(url, pool_size=1)
    try:

        def read(conn: Any) -> tuple[list[str], int]:
            ids = [row[0] for row in conn.fetchall("SELECT id FROM files ORDER BY seq")]
            return ids, int(conn.fetchval("SELECT MAX(version) FROM schema_migrations") or 0)

        ids, version = db.write_sync(read)
        return ids, version, db.dialect
    finally:
        asyncio.run(db.close())


def _snapshot_file_ids(snapshot: Path) -> tuple[list[str], int]:
    import sqlean as sqlite3

    conn = sqlite3.connect(_readonly(snapshot), uri=True)
    try:
        ids = [row[0] for row in conn.execute("SELECT id FROM files ORDER BY seq")]
        version = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
        return ids, int(version or 0)
    finally:
        conn.close()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = now()
    tar.addfile(info, io.BytesIO(data))


def backup(settings: Settings, dest: Path, *, pg_dump: str = "pg_dump") -> Result:
    """Write a backup of the configured database and its file bytes to ``dest`` (a .tar file)."""
    url = settings.resolved_database_url
    dialect = _dialect(url)
    dest = dest.expanduser().resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="assistantd-backup-", dir=dest.parent) as tmp:
        work = Path(tmp)
        if dialect == "sqlite":
            snapshot = work / "database.sqlite"
            _snapshot_sqlite(url, snapshot)
            ids, version = _snapshot_file_ids(snapshot)
        else:
            snapshot = work / "database.pgdump"
            _run([_tool("pg_dump", pg_dump), "--format=custom", f"--file={snapshot}", f"--dbname={url}"], "pg_dump")
            # The ids are read after the dump: a file created in between is in neither the dump nor here,
            # one deleted in between is listed as missing.
            ids, version, _ = _file_ids(settings)
        db = open_database(url, pool_size=1)
        try:
            blobs = build_blob_store(settings, db)
            partial = dest.with_name(dest.name + ".partial")
            with tarfile.open(partial, "w") as tar:
                tar.add(snapshot, arcname=snapshot.name)
                copied, missing = _add_blobs(tar, blobs, ids)
                manifest = {
                    "format": FORMAT,
                    "assistantd_version": __version__,
                    "dialect": dialect,
                    "schema_version": version,
                    "created_at": now(),
                    "files": len(ids),
                    "blobs": copied,
                    "blobs_in_database": blobs.in_database,
                    "missing_blobs": missing,
                }
                _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
            os.replace(partial, dest)  # a backup file is whole or absent
        finally:
            asyncio.run(db.close())
    return Result(dialect, version, len(ids), copied, missing)


def _add_blobs(tar: tarfile.TarFile, blobs: BlobStore, ids: list[str]) -> tuple[int, list[str]]:
    if blobs.in_database:
        return 0, []  # the dump holds them
    assert isinstance(blobs, LocalBlobStore)  # the one store that keeps bytes outside the database
    copied, missing = 0, []
    for file_id in ids:
        path = blobs.file_path(file_id)
        if not path.is_file():
            missing.append(file_id)
            continue
        try:
            tar.add(path, arcname=f"blobs/{file_id}")
        except FileNotFoundError:
            missing.append(file_id)  # deleted while we copied
            continue
        copied += 1
    return copied, missing


async def _file_chunks(fh: Any) -> AsyncIterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk


def _has_objects_sqlite(path: Path) -> bool:
    if not path.exists():
        return False
    import sqlean as sqlite3

    conn = sqlite3.connect(_readonly(path), uri=True)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return any(
            conn.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() is not None
            for t in ("assistants", "threads", "files", "vector_stores", "api_keys")
            if t in tables
        )
    finally:
        conn.close()


def _has_objects_postgres(url: str) -> bool:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL").fetchone()
        return bool(row and row[0])


def restore(settings: Settings, src: Path, *, pg_restore: str = "pg_restore", force: bool = False) -> Result:
    """Restore a backup into the configured database and blob store, then migrate it to this version."""
    url = settings.resolved_database_url
    dialect = _dialect(url)
    if not src.exists():
        raise BackupError(f"there is no backup at {src}")
    with tarfile.open(src, "r") as tar, tempfile.TemporaryDirectory(prefix="assistantd-restore-") as tmp:
        try:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        except KeyError:
            raise BackupError(f"{src} is not an assistantd backup (no manifest.json)") from None
        if manifest.get("format") != FORMAT:
            raise BackupError(f"{src} has backup format {manifest.get('format')}; this assistantd reads {FORMAT}")
        if manifest["dialect"] != dialect:
            raise BackupError(
                f"{src} is a {manifest['dialect']} backup and the configured database is {dialect}: restore into "
                f"a {manifest['dialect']} database"
            )
        work = Path(tmp)
        if dialect == "sqlite":
            target = _sqlite_path(url)
            if _has_objects_sqlite(target) and not force:
                raise BackupError(f"{target} already holds objects: restore into a fresh data dir, or pass --force")
            tar.extract("database.sqlite", work, filter="data")
            target.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("-wal", "-shm"):
                Path(str(target) + suffix).unlink(missing_ok=True)
            shutil.copyfile(work / "database.sqlite", target)
        else:
            if _has_objects_postgres(url) and not force:
                raise BackupError("the target database already has assistantd's tables: use a fresh one, or --force")
            tar.extract("database.pgdump", work, filter="data")
            argv = [_tool("pg_restore", pg_restore), "--no-owner", "--exit-on-error", f"--dbname={url}"]
            if force:
                argv += ["--clean", "--if-exists"]
            _run([*argv, str(work / "database.pgdump")], "pg_restore")
        db = open_database(url, pool_size=1)  # migrates a backup from an older version
        try:
            blobs = build_blob_store(settings, db)
            restored = 0
            for member in tar.getmembers():
                if not member.name.startswith("blobs/") or not member.isfile():
                    continue
                fh = tar.extractfile(member)
                assert fh is not None
                asyncio.run(blobs.put(member.name.removeprefix("blobs/"), _file_chunks(fh), max_bytes=NO_LIMIT))
                restored += 1
            version = int(db.write_sync(lambda conn: conn.fetchval("SELECT MAX(version) FROM schema_migrations")))
        finally:
            asyncio.run(db.close())
    return Result(dialect, version, int(manifest["files"]), restored, list(manifest.get("missing_blobs") or []))
