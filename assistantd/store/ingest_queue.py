"""The ingestion queue: the ``in_progress`` rows of ``vector_store_files``.

A server claims a queued file by setting its lease (``store.leases``, held through ``engine.leases``),
and a lapsed lease makes it claimable again; ``finish`` writes the outcome and gives the lease up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from assistantd.store.base import Conn, marks
from assistantd.store.objects import dumps


@dataclass(frozen=True)
class Job:
    seq: int
    project: str
    store_id: str
    file_id: str
    filename: str
    attempts: int
    obj: dict[str, Any]


def job(conn: Conn, seq: int) -> Job:
    """The queued file ``seq`` (just claimed through ``store.leases``) as a job."""
    got = conn.fetchone(
        "SELECT seq, project_id, vector_store_id, id, filename, attempts, data FROM vector_store_files WHERE seq = ?",
        (seq,),
    )
    assert got is not None
    return Job(int(got[0]), got[1], got[2], got[3], got[4], int(got[5]), orjson.loads(got[6]))


def finish(conn: Conn, seq: int, obj: dict[str, Any], *, content: list[str] | None, index_gen: int = 0) -> None:
    """The file's outcome (``obj["status"]`` completed or failed), its parsed text, and the store generation
    its chunks were written in; the lease is given up."""
    conn.execute(
        "UPDATE vector_store_files SET data = ?, status = ?, usage_bytes = ?, content = ?, index_gen = ?, "
        "lease_owner = NULL, lease_until = NULL WHERE seq = ?",
        (
            dumps(obj),
            obj["status"],
            obj["usage_bytes"],
            None if content is None else dumps(content),
            index_gen,
            seq,
        ),
    )


def requeue_file(conn: Conn, seq: int, obj: dict[str, Any], *, batch_id: str | None) -> None:
    """Process an attached file again (it was added anew): back to the queue, chunks dropped on success."""
    conn.execute(
        "UPDATE vector_store_files SET status = ?, batch_id = ?, data = ?, usage_bytes = 0, lease_owner = NULL, "
        "lease_until = NULL, attempts = 0 WHERE seq = ?",
        (obj["status"], batch_id, dumps(obj), seq),
    )


def backlog(conn: Conn) -> int:
    """Database-wide, the files waiting for or in ingestion."""
    return int(conn.fetchval("SELECT count(*) FROM vector_store_files WHERE status = 'in_progress'") or 0)


def in_progress_count(conn: Conn, project: str, store_ids: Sequence[str]) -> int:
    """How many files of these stores are still queued or being processed."""
    if not store_ids:
        return 0
    return int(
        conn.fetchval(
            f"SELECT count(*) FROM vector_store_files WHERE project_id = ? AND status = 'in_progress' "
            f"AND vector_store_id IN ({marks(len(store_ids))})",
            [project, *store_ids],
        )
        or 0
    )


def cancel_batch_files(conn: Conn, batch_id: str, moment: int) -> int:
    """Every file of the batch still waiting or being processed becomes ``cancelled``."""
    rows = conn.fetchall(
        "SELECT seq, data FROM vector_store_files WHERE batch_id = ? AND status = 'in_progress'", (batch_id,)
    )
    for seq, raw in rows:
        obj = orjson.loads(raw)
        obj["status"] = "cancelled"
        conn.execute(
            "UPDATE vector_store_files SET status = 'cancelled', data = ?, lease_owner = NULL, lease_until = NULL "
            "WHERE seq = ?",
            (dumps(obj), seq),
        )
    return len(rows)
