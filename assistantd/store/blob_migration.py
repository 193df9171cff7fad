"""Moving a data folder's file bytes into the PostgreSQL blob store.

For a deployment that started on one node, with the bytes in its data folder, and now points several
replicas at PostgreSQL. Idempotent and resumable: a file whose bytes are already complete in the
database is skipped; one left half-written by an interrupted run is written again from the start (the
store's ``put`` replaces an incomplete blob), so running it again after a crash finishes the job and
never duplicates anything. The folder is only read: remove it once the command reports nothing left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from assistantd.store.base import Conn
from assistantd.store.blobs import LocalBlobStore, PostgresBlobStore, stored_keys


@dataclass
class MigrationReport:
    moved: int = 0
    moved_bytes: int = 0
    already: int = 0
    orphans: list[str] = field(default_factory=list)  # bytes in the folder with no file record
    missing: list[str] = field(default_factory=list)  # file records with bytes in neither place
    left: int = 0  # still to move when ``limit`` stopped the run


def _state(conn: Conn) -> tuple[set[str], set[str]]:
    return {str(r[0]) for r in conn.fetchall("SELECT id FROM files")}, stored_keys(conn)


async def move_folder_to_database(
    folder: LocalBlobStore,
    target: PostgresBlobStore,
    *,
    limit: int | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> MigrationReport:
    report = MigrationReport()
    records, in_db = await target.db.read(_state)
    on_disk = set(folder.keys())
    report.orphans = sorted(on_disk - records)
    report.missing = sorted(records - in_db - on_disk)
    todo = sorted((on_disk & records) - in_db)
    report.already = len(records & in_db)
    for key in todo:
        if limit is not None and report.moved >= limit:
            report.left = len(todo) - report.moved
            break
        # Streamed chunk by chunk, so a file of any size moves in bounded memory.
        size = await target.put(key, await folder.read(key), max_bytes=2**62)
        report.moved += 1
        report.moved_bytes += size
        if progress is not None:
            progress(key, size)
    return report
