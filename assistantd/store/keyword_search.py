"""Keyword search over chunk text: FTS5's BM25 on SQLite, ``ts_rank`` over a ``tsvector`` on PostgreSQL.

Both rank the same way from the caller's side (``keyword_search``): any of the query's words may match,
inside the stores searched (and the files allowed), with relevance saturated into [0, 1). Ranking costs per
matching chunk, so a query ranks at most a budget of matches, keeping its rarest words; how common each
word is comes from counting its matches, or on PostgreSQL from the planner's lexeme statistics
(``LexemeShares``). How the chunks are indexed is in ``store.chunks``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from assistantd.store.base import Conn, marks
from assistantd.store.chunks import chunk_files

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
# PostgreSQL's lexeme statistics change only with ANALYZE: re-read at most this often.
LEXEME_SHARES_TTL_SECONDS = 60.0


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
    estimated from the planner's statistics instead (``lexeme_shares``, see ``LexemeShares``).
    """
    if not words or not store_seqs or (files is not None and not files):
        return []
    budget = min(ceiling, max(common_min, int(common_share * chunks)))
    if conn.dialect == "sqlite":
        return _fts5_search(conn, store_seqs, files, words, limit, budget)
    return _tsvector_search(conn, store_seqs, files, words, limit, budget, chunks, lexeme_shares)


def _fts5_search(
    conn: Conn, store_seqs: dict[str, int], files: Sequence[int] | None, words: Sequence[str], limit: int, budget: int
) -> list[tuple[int, float]]:
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
        owner = chunk_files(conn, [seq for seq, _ in found])
        allowed = set(files)
        found = [hit for hit in found if owner.get(hit[0]) in allowed][:limit]
    return found


def _tsvector_search(
    conn: Conn,
    store_seqs: dict[str, int],
    files: Sequence[int] | None,
    words: Sequence[str],
    limit: int,
    budget: int,
    chunks: int,
    lexeme_shares: Mapping[str, float] | None,
) -> list[tuple[int, float]]:
    params: list[Any] = [*store_seqs]
    where = f"c.vector_store_id IN ({marks(len(store_seqs))})"
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


class LexemeShares:
    """PostgreSQL's ``pg_lexeme_shares`` for ``keyword_search``, kept between searches and re-read at most
    every ``ttl`` seconds. None on SQLite, which counts every word's matches instead."""

    def __init__(self, ttl: float = LEXEME_SHARES_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._read: tuple[float, dict[str, float]] | None = None

    def get(self, conn: Conn) -> dict[str, float] | None:
        if conn.dialect != "postgres":
            return None
        moment = time.monotonic()
        if self._read is None or moment - self._read[0] > self.ttl:
            self._read = (moment, pg_lexeme_shares(conn))
        return self._read[1]
