"""Vector stores, their files and batches, and the chunk index, in SQL shared by both backends.

Store and file objects live in ``data`` like every other object; what changes underneath them (a
store's ``file_counts``, ``usage_bytes`` and ``status``) is counted from ``vector_store_files`` when
read, so it is never stale. The ``in_progress`` rows of ``vector_store_files`` are the ingestion
queue: a server claims one by setting a lease (``store.leases``), and a lapsed lease makes it claimable again.

Keywords: SQLite indexes chunk text in a contentless FTS5 table (rowid = chunk ``seq``), with a
``scope`` column of tokens naming the chunk's store (``v<store seq>``) and file (``f<file seq>``) so a
MATCH stays inside the stores searched; PostgreSQL keeps a generated ``tsvector`` with a GIN index.
Vectors: a float32 BLOB on SQLite (searched in process, see ``vector_index``), pgvector on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from assistantd.store.base import Conn
from assistantd.store.objects import Table, dumps

STORES = Table("vector_stores", ("expires_at",))
FILES = Table("vector_store_files", ("vector_store_id", "batch_id", "status"))
BATCHES = Table("vector_store_file_batches", ("vector_store_id",))

STATUSES = ("in_progress", "completed", "failed", "cancelled")
INSERT_BATCH = 100  # chunk rows per INSERT statement
HNSW_LOCK = 0x76736869  # advisory lock class for creating an HNSW index ("vshi")
# PostgreSQL: below this many chunks an exact scan is about as fast as the HNSW index, and exact (no
# approximate-recall loss), so vector search uses the index only past it.
HNSW_MIN_CHUNKS = 5_000
# Keyword relevance is reported as s / (s + K), in [0, 1): K is the median score of the best keyword match
# for the benchmark's 100 questions (bench/file_search_bench.py), so a typical best match gets about 0.5.
# FTS5's BM25 (negated) and ts_rank with length normalisation live on very different scales.
BM25_HALF = 20.0
TS_RANK_HALF = 0.01
# Ranking costs per matching chunk (FTS5's bm25 or ts_rank reads each one's positions), so a query ranks at
# most a budget of matches: its rarest words, together in no more than this share of the chunks searched
# (and never fewer than COMMON_MIN, never more than the ceiling); more common words are left out, as
# stopwords are (see keyword_search). Beside vectors, keywords only need to lift rare terms: there the
# benchmark's quality held down to a 2% share, and the ceiling keeps a 1M-chunk store's ranking near the
# cost of a 100k one's. Keywords alone prune only past the store's size (their quality fell with a
# budget of a quarter of it) and the larger ceiling.
HYBRID_COMMON_SHARE = 0.05
HYBRID_MATCH_CEILING = 8_000
KEYWORD_COMMON_SHARE = 1.0
KEYWORD_MATCH_CEILING = 50_000
COMMON_MIN = 4000


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


# --- stores --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreRow:
    seq: int
    project: str
    obj: dict[str, Any]
    generation: int
    chunk_count: int


def insert_store(conn: Conn, project: str, obj: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO vector_stores (id, project_id, created_at, expires_at, data) VALUES (?, ?, ?, ?, ?)",
        (obj["id"], project, obj["created_at"], obj.get("expires_at"), dumps(obj)),
    )


def get_store(conn: Conn, project: str, store_id: str, *, lock: bool = False) -> StoreRow | None:
    # FOR UPDATE (PostgreSQL) serialises read-modify-write of a store's JSON between replicas.
    suffix = " FOR UPDATE" if lock and conn.dialect == "postgres" else ""
    row = conn.fetchone(
        "SELECT seq, data, generation, chunk_count FROM vector_stores WHERE id = ? AND project_id = ?" + suffix,
        (store_id, project),
    )
    if row is None:
        return None
    return StoreRow(int(row[0]), project, orjson.loads(row[1]), int(row[2]), int(row[3]))


def get_stores(conn: Conn, project: str, store_ids: Sequence[str]) -> dict[str, StoreRow]:
    if not store_ids:
        return {}
    rows = conn.fetchall(
        f"SELECT seq, data, generation, chunk_count, id FROM vector_stores WHERE project_id = ? "
        f"AND id IN ({_marks(len(store_ids))})",
        [project, *store_ids],
    )
    return {r[4]: StoreRow(int(r[0]), project, orjson.loads(r[1]), int(r[2]), int(r[3])) for r in rows}


def save_store(conn: Conn, project: str, obj: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE vector_stores SET data = ?, expires_at = ? WHERE id = ? AND project_id = ?",
        (dumps(obj), obj.get("expires_at"), obj["id"], project),
    )


def delete_store(conn: Conn, project: str, store_id: str) -> bool:
    if conn.execute("DELETE FROM vector_stores WHERE id = ? AND project_id = ?", (store_id, project)) == 0:
        return False
    drop_chunks(conn, "vector_store_id", store_id)
    conn.execute("DELETE FROM vector_store_files WHERE vector_store_id = ?", (store_id,))
    conn.execute("DELETE FROM vector_store_file_batches WHERE vector_store_id = ?", (store_id,))
    return True


@dataclass(frozen=True)
class Counts:
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    usage_bytes: int = 0

    def as_json(self) -> dict[str, int]:
        total = self.in_progress + self.completed + self.failed + self.cancelled
        return {
            "in_progress": self.in_progress,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "total": total,
        }


def counts(conn: Conn, column: str, ids: Sequence[str]) -> dict[str, Counts]:
    """File counts and bytes per store (``column='vector_store_id'``) or per batch (``'batch_id'``)."""
    assert column in ("vector_store_id", "batch_id")
    if not ids:
        return {}
    rows = conn.fetchall(
        f"SELECT {column}, status, count(*), coalesce(sum(usage_bytes), 0) FROM vector_store_files "
        f"WHERE {column} IN ({_marks(len(ids))}) GROUP BY {column}, status",
        list(ids),
    )
    acc: dict[str, dict[str, int]] = {i: {} for i in ids}
    for key, status, n, size in rows:
        acc[key][status] = int(n)
        acc[key]["usage_bytes"] = acc[key].get("usage_bytes", 0) + int(size)
    return {key: Counts(**values) for key, values in acc.items()}


def bump(conn: Conn, store_id: str, chunks: int) -> int:
    """A store's chunk set changed: a new generation (for in-process caches) and its chunk count."""
    conn.execute(
        "UPDATE vector_stores SET generation = generation + 1, chunk_count = chunk_count + ? WHERE id = ?",
        (chunks, store_id),
    )
    return int(conn.fetchval("SELECT generation FROM vector_stores WHERE id = ?", (store_id,)) or 0)


def due_to_expire(conn: Conn, moment: int) -> list[tuple[str, str]]:
    """(project, id) of stores past ``expires_at`` and not yet marked expired."""
    rows = conn.fetchall(
        "SELECT project_id, id, data FROM vector_stores WHERE expires_at IS NOT NULL AND expires_at <= ?", (moment,)
    )
    return [(r[0], r[1]) for r in rows if orjson.loads(r[2]).get("status") != "expired"]


def thread_for_update(conn: Conn, project: str, thread_id: str) -> dict[str, Any] | None:
    """A thread's object, locked until the transaction ends (PostgreSQL) so two requests that each give the
    thread a store cannot both do so."""
    suffix = " FOR UPDATE" if conn.dialect == "postgres" else ""
    raw = conn.fetchval("SELECT data FROM threads WHERE id = ? AND project_id = ?" + suffix, (thread_id, project))
    return None if raw is None else dict(orjson.loads(raw))


# --- files in stores -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRow:
    seq: int
    store_id: str
    file_id: str
    filename: str
    status: str
    obj: dict[str, Any]


def get_file(conn: Conn, project: str, store_id: str, file_id: str) -> FileRow | None:
    row = conn.fetchone(
        "SELECT seq, filename, status, data FROM vector_store_files WHERE vector_store_id = ? AND id = ? "
        "AND project_id = ?",
        (store_id, file_id, project),
    )
    if row is None:
        return None
    return FileRow(int(row[0]), store_id, file_id, row[1], row[2], orjson.loads(row[3]))


def insert_file(conn: Conn, project: str, obj: dict[str, Any], *, filename: str, batch_id: str | None) -> None:
    conn.execute(
        "INSERT INTO vector_store_files (id, project_id, vector_store_id, batch_id, status, filename, created_at, "
        "data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (obj["id"], project, obj["vector_store_id"], batch_id, obj["status"], filename, obj["created_at"], dumps(obj)),
    )


def requeue_file(conn: Conn, seq: int, obj: dict[str, Any], *, batch_id: str | None) -> None:
    """Process an attached file again (it was added anew): back to the queue, chunks dropped on success."""
    conn.execute(
        "UPDATE vector_store_files SET status = ?, batch_id = ?, data = ?, usage_bytes = 0, lease_owner = NULL, "
        "lease_until = NULL, attempts = 0 WHERE seq = ?",
        (obj["status"], batch_id, dumps(obj), seq),
    )


def save_file(conn: Conn, seq: int, obj: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE vector_store_files SET data = ?, status = ?, usage_bytes = ? WHERE seq = ?",
        (dumps(obj), obj["status"], obj["usage_bytes"], seq),
    )


def delete_file(conn: Conn, row: FileRow) -> None:
    removed = drop_chunks(conn, "vsf_seq", row.seq)
    conn.execute("DELETE FROM vector_store_files WHERE seq = ?", (row.seq,))
    bump(conn, row.store_id, -removed)


def detach_everywhere(conn: Conn, project: str | None, file_id: str) -> list[str]:
    """Remove a deleted File from every store it is in (of any project if None); return those stores' ids."""
    if project is None:
        rows = conn.fetchall("SELECT seq, vector_store_id FROM vector_store_files WHERE id = ?", (file_id,))
    else:
        rows = conn.fetchall(
            "SELECT seq, vector_store_id FROM vector_store_files WHERE id = ? AND project_id = ?", (file_id, project)
        )
    for seq, store_id in rows:
        removed = drop_chunks(conn, "vsf_seq", seq)
        conn.execute("DELETE FROM vector_store_files WHERE seq = ?", (seq,))
        bump(conn, store_id, -removed)
    return [r[1] for r in rows]


def file_content(conn: Conn, seq: int) -> list[str] | None:
    raw = conn.fetchval("SELECT content FROM vector_store_files WHERE seq = ?", (seq,))
    return None if raw is None else list(orjson.loads(raw))


@dataclass(frozen=True)
class Searchable:
    """A completed file of a store being searched."""

    seq: int
    store_id: str
    file_id: str
    filename: str
    attributes: dict[str, Any]
    index_gen: int


def searchable_files(conn: Conn, store_ids: Sequence[str]) -> list[Searchable]:
    if not store_ids:
        return []
    rows = conn.fetchall(
        f"SELECT seq, vector_store_id, id, filename, data, index_gen FROM vector_store_files "
        f"WHERE vector_store_id IN ({_marks(len(store_ids))}) AND status = 'completed'",
        list(store_ids),
    )
    return [
        Searchable(int(r[0]), r[1], r[2], r[3], orjson.loads(r[4]).get("attributes") or {}, int(r[5])) for r in rows
    ]


def in_progress_count(conn: Conn, project: str, store_ids: Sequence[str]) -> int:
    if not store_ids:
        return 0
    return int(
        conn.fetchval(
            f"SELECT count(*) FROM vector_store_files WHERE project_id = ? AND status = 'in_progress' "
            f"AND vector_store_id IN ({_marks(len(store_ids))})",
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


# --- the ingestion queue -------------------------------------------------------------------------


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


# --- chunks --------------------------------------------------------------------------------------


def drop_chunks(conn: Conn, column: str, value: Any) -> int:
    """Delete the chunks of one file (``vsf_seq``) or one store (``vector_store_id``); return how many."""
    assert column in ("vsf_seq", "vector_store_id")
    if conn.dialect == "sqlite":
        conn.execute(
            "DELETE FROM vector_store_chunks_fts WHERE rowid IN "
            f"(SELECT seq FROM vector_store_chunks WHERE {column} = ?)",
            (value,),
        )
    return conn.execute(f"DELETE FROM vector_store_chunks WHERE {column} = ?", (value,))


def insert_chunks(
    conn: Conn,
    *,
    store_id: str,
    store_seq: int,
    vsf_seq: int,
    file_id: str,
    texts: Sequence[str],
    model: str | None,
    vectors: NDArray[np.float32] | None,
) -> None:
    dims = None if vectors is None else int(vectors.shape[1])
    postgres = conn.dialect == "postgres"
    vector_mark = "?::vector" if postgres else "?"
    for start in range(0, len(texts), INSERT_BATCH):
        end = min(len(texts), start + INSERT_BATCH)
        values: list[Any] = []
        for i in range(start, end):
            vec: Any = None
            if vectors is not None:
                vec = _pg_vector(vectors[i]) if postgres else vectors[i].astype("<f4").tobytes()
            values += [store_id, file_id, vsf_seq, i, texts[i], model if vectors is not None else None, dims, vec]
        row = f"(?, ?, ?, ?, ?, ?, ?, {vector_mark})"
        returned = conn.fetchall(
            "INSERT INTO vector_store_chunks (vector_store_id, file_id, vsf_seq, chunk_index, text, model, dims, "
            f"embedding) VALUES {', '.join(row for _ in range(start, end))} RETURNING seq, chunk_index",
            values,
        )
        if not postgres:
            scope = f"v{store_seq} f{vsf_seq}"
            fts: list[Any] = []
            for seq, index in returned:
                fts += [seq, scope, texts[index]]
            conn.execute(
                "INSERT INTO vector_store_chunks_fts (rowid, scope, body) VALUES "
                + ", ".join("(?, ?, ?)" for _ in returned),
                fts,
            )


def _pg_vector(v: NDArray[np.float32]) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def chunk_texts(conn: Conn, seqs: Sequence[int]) -> dict[int, tuple[int, str]]:
    """{chunk seq: (file seq, text)}."""
    if not seqs:
        return {}
    rows = conn.fetchall(
        f"SELECT seq, vsf_seq, text FROM vector_store_chunks WHERE seq IN ({_marks(len(seqs))})", list(seqs)
    )
    return {int(r[0]): (int(r[1]), r[2]) for r in rows}


def chunk_files(conn: Conn, seqs: Sequence[int]) -> dict[int, int]:
    """{chunk seq: file seq} (a chunk deleted since is missing)."""
    if not seqs:
        return {}
    rows = conn.fetchall(f"SELECT seq, vsf_seq FROM vector_store_chunks WHERE seq IN ({_marks(len(seqs))})", list(seqs))
    return {int(r[0]): int(r[1]) for r in rows}


def keyword_search(
    conn: Conn,
    *,
    store_seqs: dict[str, int],
    files: Sequence[int] | None,
    words: Sequence[str],
    limit: int,
    chunks: int = 0,
    common_share: float = KEYWORD_COMMON_SHARE,
    common_min: int = COMMON_MIN,
    ceiling: int = KEYWORD_MATCH_CEILING,
    lexeme_shares: Mapping[str, float] | None = None,
) -> list[tuple[int, float]]:
    """(chunk seq, relevance in [0, 1)) best first by keywords: BM25 (SQLite FTS5) or ts_rank divided by
    1 + log(length) (PostgreSQL), saturated as ``s / (s + K)``. Any of the words may match.

    ``files`` (file seqs) narrows the search to those files; None searches every file of the stores.
    ``chunks`` (how many the stores hold) sets the match budget: ranking costs about a microsecond (FTS5)
    to ten (ts_rank) per matching chunk, so the query keeps its rarest words while together they match no
    more than ``common_share`` of the chunks (at least ``common_min``, at most ``ceiling``); the words left
    out are common ones, which would add little to the ranking (their IDF is low) and most of the cost.
    When even the rarest word is over the budget, chunks must contain every word. Each word's matches are
    counted up to the budget (cheap: no ranking); on PostgreSQL, words made of the commonest lexemes are
    estimated from the planner's statistics instead (``lexeme_shares``, see ``pg_lexeme_shares``).
    """
    if not words or not store_seqs or (files is not None and not files):
        return []
    budget = min(ceiling, max(common_min, int(common_share * chunks)))
    if conn.dialect == "sqlite":
        scope = f"scope : ({' OR '.join(f'v{seq}' for seq in store_seqs.values())})"
        if files is not None and len(files) <= 256:
            scope += f" AND scope : ({' OR '.join(f'f{s}' for s in files)})"
            files = None
        counts = {w: _fts5_count(conn, f"{scope} AND body : ({_fts5_any([w])})", budget + 1) for w in words}
        rare = affordable(words, counts, budget)
        body = _fts5_any(rare) if rare else " AND ".join(_fts5_any([w]) for w in words)
        rows = conn.fetchall(
            "SELECT rowid, -bm25(vector_store_chunks_fts, 0.0, 1.0) AS score FROM vector_store_chunks_fts "
            "WHERE vector_store_chunks_fts MATCH ? ORDER BY score DESC LIMIT ?",
            (f"{scope} AND body : ({body})", limit if files is None else limit * 8),
        )
        found = [(int(r[0]), _saturate(float(r[1]), BM25_HALF)) for r in rows]
        if files is not None:  # too many files for the MATCH: keep those of the allowed files
            owner = _file_of(conn, [seq for seq, _ in found])
            allowed = set(files)
            found = [hit for hit in found if owner.get(hit[0]) in allowed][:limit]
        return found
    params: list[Any] = [*store_seqs]
    where = f"c.vector_store_id IN ({_marks(len(store_seqs))})"
    if files is not None:
        where += " AND c.vsf_seq = ANY(?)"
        params.append(list(files))
    # Narrowed to some files, the table-wide statistics say little: count.
    counts = _pg_estimates(conn, words, chunks, lexeme_shares) if lexeme_shares and files is None else {}
    counts.update(_pg_counts(conn, where, params, [w for w in words if w not in counts], budget + 1))
    rare = affordable(words, counts, budget)
    query = _tsquery_any(rare) if rare else " & ".join(_tsquery_any([w]) for w in words)
    rows = conn.fetchall(
        f"SELECT c.seq, ts_rank(c.tsv, q, 1) AS score FROM vector_store_chunks c, to_tsquery('english', ?) q "
        f"WHERE {where} AND c.tsv @@ q ORDER BY score DESC, c.seq LIMIT ?",
        [query, *params, limit],
    )
    return [(int(r[0]), _saturate(float(r[1]), TS_RANK_HALF)) for r in rows]


def affordable(words: Sequence[str], counts: Mapping[str, int], budget: int) -> list[str]:
    """The rarest words (in the query's order) whose matches together stay within ``budget``; words that
    match nothing are left out. Empty when even the rarest word is over the budget."""
    kept: set[str] = set()
    total = 0
    for word in sorted(words, key=lambda w: counts[w]):  # stable: equally common words in query order
        n = counts[word]
        if n == 0:
            continue
        if total + n > budget:
            break
        kept.add(word)
        total += n
    return [w for w in words if w in kept]


def _fts5_count(conn: Conn, match: str, cap: int) -> int:
    """How many chunks match, counting no further than ``cap`` (cheap: no ranking)."""
    return int(
        conn.fetchval(
            "SELECT count(*) FROM (SELECT rowid FROM vector_store_chunks_fts WHERE vector_store_chunks_fts "
            "MATCH ? LIMIT ?)",
            (match, cap),
        )
    )


def _pg_estimates(conn: Conn, words: Sequence[str], chunks: int, shares: Mapping[str, float]) -> dict[str, int]:
    """PostgreSQL: how many of ``chunks`` each word matches, estimated from the statistics for the words made
    only of the commonest lexemes (the share of the whole table, taken as the store's), and 0 for stopwords.
    Words with a lexeme rarer than those are left out: they are rare, so counting them is cheap."""
    out: dict[str, int] = {}
    for word, lexemes in pg_lexemes(conn, words).items():
        if not lexemes:
            out[word] = 0
        elif all(x in shares for x in lexemes):  # it matches no more chunks than its rarest lexeme
            out[word] = round(min(shares[x] for x in lexemes) * chunks)
    return out


def _pg_counts(conn: Conn, where: str, params: list[Any], words: Sequence[str], cap: int) -> dict[str, int]:
    """PostgreSQL: how many chunks each word matches, counting no further than ``cap``, in one round trip.
    The GIN index answers each word without reading the chunks' tsvectors (no ranking, no recheck)."""
    if not words:
        return {}
    rows = conn.fetchall(
        f"SELECT u.i, (SELECT count(*) FROM (SELECT 1 FROM vector_store_chunks c WHERE {where} "
        "AND c.tsv @@ to_tsquery('english', u.q) LIMIT ?) m) "
        "FROM unnest(?::text[]) WITH ORDINALITY AS u(q, i)",
        [*params, cap, [_tsquery_any([w]) for w in words]],
    )
    return {words[int(r[0]) - 1]: int(r[1]) for r in rows}


def pg_lexeme_shares(conn: Conn) -> dict[str, float]:
    """The share of all chunks each of the commonest lexemes is in, from the statistics ANALYZE (autovacuum)
    keeps for the planner: about a thousand lexemes of the ``tsv`` column. Empty before the first ANALYZE."""
    row = conn.fetchone(
        "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats "
        "WHERE schemaname = current_schema() AND tablename = 'vector_store_chunks' AND attname = 'tsv'"
    )
    if row is None or row[0] is None or row[1] is None:
        return {}
    return {e: float(f) for e, f in zip(row[0], row[1], strict=False)}


def pg_lexemes(conn: Conn, words: Sequence[str]) -> dict[str, list[str]]:
    """What each word becomes in the English text search configuration (stemmed; [] for a stopword)."""
    rows = conn.fetchall(
        "SELECT u.w, tsvector_to_array(to_tsvector('english', u.w)) FROM unnest(?::text[]) AS u(w)", [list(words)]
    )
    return {r[0]: list(r[1]) for r in rows}


def _saturate(score: float, half: float) -> float:
    return max(0.0, score) / (max(0.0, score) + half)


def _fts5_any(words: Sequence[str]) -> str:
    """An FTS5 MATCH expression for any of the words, each quoted so none is read as an operator."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def _tsquery_any(words: Sequence[str]) -> str:
    """``to_tsquery`` text for any of the words (each quoted as a lexeme, so none is an operator)."""
    return " | ".join("'" + w.replace("'", "''").replace("\\", "") + "'" for w in words)


def _file_of(conn: Conn, seqs: Sequence[int]) -> dict[int, int]:
    if not seqs:
        return {}
    rows = conn.fetchall(f"SELECT seq, vsf_seq FROM vector_store_chunks WHERE seq IN ({_marks(len(seqs))})", list(seqs))
    return {int(r[0]): int(r[1]) for r in rows}


def pg_vector_search(
    conn: Conn,
    *,
    store_ids: Sequence[str],
    total_chunks: int,
    files: Sequence[int] | None,
    model: str,
    dims: int,
    query: NDArray[np.float32],
    limit: int,
) -> list[tuple[int, float]]:
    """(chunk seq, cosine similarity) best first, by pgvector.

    Large stores go through the HNSW index (approximate; candidates of other stores are filtered out
    after the index scan, so ``ef_search`` is raised well past ``limit``); small ones, or a search
    narrowed to some files, by an exact scan of the store's rows, which is then both faster and exact.
    If the index scan comes back short, the exact scan runs instead.
    """
    if not store_ids or (files is not None and not files):
        return []
    vec = _pg_vector(query)
    # dims is spelled out, not bound: the planner must see it to use the partial HNSW index.
    where = f"vector_store_id IN ({_marks(len(store_ids))}) AND model = ? AND dims = {int(dims)}"
    params: list[Any] = [*store_ids, model]
    if files is not None:
        where += " AND vsf_seq = ANY(?)"
        params.append(list(files))
    if files is None and total_chunks > HNSW_MIN_CHUNKS and has_hnsw(conn, dims):
        ef = min(1000, max(100, 4 * limit))
        conn.fetchall("SELECT set_config('hnsw.ef_search', ?, false)", (str(ef),))
        rows = conn.fetchall(
            f"SELECT seq, 1 - ((embedding::vector({dims})) <=> ?::vector({dims})) FROM vector_store_chunks "
            f"WHERE {where} ORDER BY (embedding::vector({dims})) <=> ?::vector({dims}) LIMIT ?",
            [vec, *params, vec, limit],
        )
        if len(rows) >= min(limit, total_chunks):
            return [(int(r[0]), float(r[1])) for r in rows]
    rows = conn.fetchall(
        f"SELECT seq, 1 - (embedding <=> ?::vector) FROM vector_store_chunks WHERE {where} "
        "ORDER BY embedding <=> ?::vector LIMIT ?",
        [vec, *params, vec, limit],
    )
    return [(int(r[0]), float(r[1])) for r in rows]


def has_hnsw(conn: Conn, dims: int) -> bool:
    return (
        conn.fetchone("SELECT 1 FROM pg_indexes WHERE indexname = ?", (f"vector_store_chunks_hnsw_{dims}",)) is not None
    )


def ensure_hnsw(conn: Conn, dims: int) -> None:
    """PostgreSQL: an HNSW index for vectors of this size (pgvector indexes need a fixed dimension)."""
    if conn.dialect != "postgres" or dims > 2000:
        return
    # Call it in a transaction that has not written chunks (CREATE INDEX waits for every open insert).
    # Two callers at once (two ingestion slots finishing their first files) would each hold the table's
    # share lock and then wait for the other: one at a time (the lock lasts until commit), and once the
    # index exists nobody takes the table's share lock again.
    conn.fetchval(f"SELECT pg_advisory_xact_lock({HNSW_LOCK}, {int(dims)})")
    if conn.fetchval("SELECT to_regclass(?)", (f"vector_store_chunks_hnsw_{dims}",)) is not None:
        return
    conn.execute(
        f"CREATE INDEX IF NOT EXISTS vector_store_chunks_hnsw_{dims} ON vector_store_chunks USING hnsw "
        f"((embedding::vector({dims})) vector_cosine_ops) WHERE dims = {dims}"
    )


def pg_similarities(
    conn: Conn, *, chunks: Sequence[int], model: str, dims: int, query: NDArray[np.float32]
) -> dict[int, float]:
    """PostgreSQL: cosine similarity of the query to these chunks (those with a vector of the model)."""
    if not chunks:
        return {}
    rows = conn.fetchall(
        f"SELECT seq, 1 - (embedding <=> ?::vector) FROM vector_store_chunks WHERE seq = ANY(?) AND model = ? "
        f"AND dims = {int(dims)}",
        (_pg_vector(query), list(chunks), model),
    )
    return {int(r[0]): float(r[1]) for r in rows}


def load_vectors(conn: Conn, vsf_seq: int, model: str) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """SQLite: one file's chunk seqs and vectors (for the in-process index)."""
    rows = conn.fetchall(
        "SELECT seq, embedding FROM vector_store_chunks WHERE vsf_seq = ? AND model = ? ORDER BY seq",
        (vsf_seq, model),
    )
    seqs = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    if not rows:
        return seqs, np.zeros((0, 0), np.float32)
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
    return seqs, matrix.astype(np.float32, copy=False)
