"""Query handling and ranking: keyword terms, query rewriting, attribute filters, and score fusion.

Fusion. Each query yields a keyword list (BM25 on SQLite's FTS5, ts_rank on PostgreSQL) and a vector list
(cosine similarity). Every candidate of either list is scored ``0.8 * cosine + 0.2 * keyword``: the cosine
clamped to [0, 1], the keyword relevance saturated into [0, 1) by the store as ``s / (s + K)``, K being
the median best-match score of that backend on the benchmark questions. The score is thus absolute: an
off-topic chunk scores low whatever else is in the store, so ``score_threshold`` means the same in every
search. On the benchmark (bench/file_search_bench.py, 100 questions) this beat vector-only and
keyword-only search on both backends, and reciprocal rank fusion of the same lists, whose scores (a share
of the best possible rank sum) say nothing about relevance; it was flat for K within 2x and for weights
from 0.7 to 0.85. With several queries a chunk keeps its best score.

Reranking, by ``ranking_options.ranker``: ``none`` keeps the fused order; ``default-2024-11-15`` runs
``spread`` alone (one place per file in the first 5); ``auto`` (the default, and what a run's file_search
tool uses) runs ``lead``, then ``spread`` over the first ``LEAD_SPREAD_HEAD`` (10) places. Both work on
the best ``RERANK_DEPTH`` fused chunks (service/vector_search.py).

``spread``. The fused list puts a page first as often as its chunks score well, so one page that shares
the question's everyday words can fill the first places and push the page that answers down. ``spread``
lets each file take at most one of the first ``SPREAD_HEAD`` places; a file's further chunks follow them,
in score order. On the dev split of bench/file_search_eval.py (81 questions, two Debian manuals, SQLite
backend) this raised recall@5 0.901 -> 0.914 and MRR 0.771 -> 0.785 with recall@20 and passage@20
unchanged, and on its test split recall@5 0.912 -> 0.988, MRR 0.793 -> 0.812 (PostgreSQL: 0.938 ->
0.975, 0.756 -> 0.776). Tried and not kept (dev): decaying each further chunk of a file by 0.8-0.95 per
chunk (pushes answer passages out of the top 20), one chunk per file in the first 10 or 3, two in the
first 5.

``lead`` (before ``spread`` in ``auto``). A chunk also counts by how well its file's opening matches the
question: ``score + 0.4 * score of the file's first chunk`` (the page's title, name line and first
paragraphs; that chunk scored as any other, cosine and keywords). A page whose body shares the question's
words but whose subject is something else falls behind the page about it. On the dev split of the
308-question set (157 questions, SQLite), against ``spread`` alone: recall@5 0.860 -> 0.879, MRR 0.687
-> 0.710, paraphrase MRR 0.588 -> 0.634, lookup MRR 0.974 (unchanged), recall@20 0.930 and passage@20
0.911 unchanged; flat for weights 0.3-0.6. The cosine of the first chunk alone (weight 0.3) gave a
higher MRR (0.717) but lost lookups (MRR 0.974 -> 0.947: a page that names the function in its body fell
behind a neighbour about the same subject), so the opening is scored with its keywords. Tried on the same
split and not kept (bench/file_search_rerank_lab.py): the page title embedded apart, the mean of all of
a file's chunks, the mean of its best 1-3 chunks or candidates (at most +0.01 MRR, or worse), adding
files whose opening matches but no chunk was a candidate (no change), a Rocchio expansion of the query
vector by its top 1-5 chunks (-0.02 to +0.00 MRR), question words ("how do I") stripped before embedding
(-0.001), a higher vector weight when no keyword matches well (worse), the store's mean vector taken off
both sides (worse), and a 7-feature linear model fitted on dev (no better than ``lead`` across corpora).
After ``lead``, one place per file in the first 10 instead of 5 raised dev recall@20 0.930 -> 0.949, MRR
0.710 -> 0.716 and passage@20 0.911 -> 0.917 (without ``lead`` it had cost passage@20); 15 or 20 places
cost passage@20 (lab: 0.904, 0.815).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


RRF_K = 60
VECTOR_WEIGHT = 0.8
SPREAD_HEAD = 5  # the first places where a file may appear once (see the module notes)
LEAD_SPREAD_HEAD = 10  # the same after ``lead`` (``ranker: auto``; module notes)
LEAD_WEIGHT = 0.4  # how much a file's opening (its first chunk) counts in ``ranker: auto`` (module notes)
RANKERS = ("none", "default-2024-11-15", "auto")  # what each does: the module notes

# English function words: left out of keyword queries (they match everything and rank nothing).
STOPWORDS = _word_set(
    """
    a about above after again against all am an and any are aren as at be because been before being below
    between both but by can cannot could couldn did didn do does doesn doing don down during each few for
    from further had hadn has hasn have haven having he her here hers herself him himself his how i if in
    into is isn it its itself just let me more most mustn my myself no nor not of off on once only or other
    ought our ours ourselves out over own same shan she should shouldn so some such than that the their
    theirs them themselves then there these they this those through to too under until up very was wasn
    we were weren what when where which while who whom why will with won would wouldn you your yours
    yourself yourselves s t ll re ve d m
    """
)
# Words that frame a question rather than say what it is about (dropped by rewrite_query).
FILLER = _word_set(
    """
    please tell explain describe show find give know want need like could would help search look
    information info anything something documents document file files question questions answer say says
    """
)

_WORD = re.compile(r"\w+", re.UNICODE)


def terms(query: str) -> list[str]:
    """The query's distinct words, lower-cased, stopwords out (all of them kept if that leaves none)."""
    words = [w.lower() for w in _WORD.findall(query)]
    kept = [w for w in words if w not in STOPWORDS]
    out: list[str] = []
    for w in kept or words:
        if w not in out:
            out.append(w)
    return out[:64]


def rewrite(query: str) -> str:
    """A keyword form of a natural-language question ("What is the return policy?" -> "return policy")."""
    words = [w for w in _WORD.findall(query) if w.lower() not in STOPWORDS and w.lower() not in FILLER]
    return " ".join(words) or query.strip()


# --- attribute filters ---------------------------------------------------------------------------


def matches(flt: Mapping[str, Any] | None, attributes: Mapping[str, Any] | None) -> bool:
    """Does a file with these attributes pass the (already validated) filter?

    A comparison on a key the file lacks is false, except ``ne`` and ``nin``, which hold. Numbers compare
    as numbers; ``gt``/``gte``/``lt``/``lte`` also compare two strings (lexically, which orders ISO dates)
    and are false across types. Booleans equal only booleans.
    """
    if flt is None:
        return True
    kind = flt["type"]
    if kind in ("and", "or"):
        results = (matches(f, attributes) for f in flt["filters"])
        return all(results) if kind == "and" else any(results)
    attrs = attributes or {}
    key, value = flt["key"], flt["value"]
    if key not in attrs:
        return kind in ("ne", "nin")
    have = attrs[key]
    if kind == "eq":
        return _equal(have, value)
    if kind == "ne":
        return not _equal(have, value)
    if kind == "in":
        return any(_equal(have, v) for v in value)
    if kind == "nin":
        return not any(_equal(have, v) for v in value)
    if not _comparable(have, value):
        return False
    if kind == "gt":
        return bool(have > value)
    if kind == "gte":
        return bool(have >= value)
    if kind == "lt":
        return bool(have < value)
    if kind == "lte":
        return bool(have <= value)
    raise ValueError(f"unknown filter type {kind!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


def _comparable(a: Any, b: Any) -> bool:
    return (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))


# --- fusion --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranked:
    chunk: int  # the chunk's row id
    score: float  # in [0, 1]


def combine(
    keyword: Sequence[tuple[int, float]],
    vector: Mapping[int, float] | None,
    *,
    vector_weight: float = VECTOR_WEIGHT,
) -> dict[int, float]:
    """Scores of one query's candidates: ``w * cosine + (1 - w) * keyword``, each part in [0, 1].

    ``keyword`` is the keyword list with its relevance already in [0, 1) (the store saturates BM25 or
    ts_rank), ``vector`` the cosine similarity of every candidate (of both lists) to the query; None
    when search runs on keywords alone, in which case the keyword relevance is the score.
    """
    if vector is None:
        return dict(keyword)
    kw = dict(keyword)
    out: dict[int, float] = {}
    for chunk in {*kw, *vector}:
        cosine = max(0.0, min(1.0, vector.get(chunk, 0.0)))
        out[chunk] = vector_weight * cosine + (1.0 - vector_weight) * kw.get(chunk, 0.0)
    return out


def rank(per_query: Iterable[Mapping[int, float]]) -> list[Ranked]:
    """Chunks best first: a chunk's score is its best over the queries."""
    best: dict[int, float] = {}
    for scores in per_query:
        for chunk, score in scores.items():
            if score > best.get(chunk, -1.0):
                best[chunk] = score
    ordered = sorted(best.items(), key=lambda item: (-item[1], item[0]))
    return [Ranked(chunk, round(min(1.0, max(0.0, score)), 6)) for chunk, score in ordered]


def fuse_rrf(lists: Iterable[Sequence[int]], *, n_lists: int | None = None, k: int = RRF_K) -> list[Ranked]:
    """Reciprocal rank fusion of ranked lists, best first, normalised by the best possible sum (first in
    every list) so scores lie in [0, 1]. Kept for comparison in the benchmark (see the module notes)."""
    lists = list(lists)
    total = n_lists if n_lists is not None else len(lists)
    if total == 0:
        return []
    scores: dict[int, float] = {}
    for ranked in lists:
        for position, chunk in enumerate(ranked, start=1):
            scores[chunk] = scores.get(chunk, 0.0) + 1.0 / (k + position)
    top = total / (k + 1)
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [Ranked(chunk, min(1.0, s / top)) for chunk, s in ordered]


def lead(ranked: Sequence[Ranked], opening: Mapping[int, float], weight: float = LEAD_WEIGHT) -> list[Ranked]:
    """Reorder a best-first list by ``score + weight * score of the chunk's file's first chunk``
    (``opening``: chunk -> that score, clamped to [0, 1]; a chunk it does not name gets no bonus).
    The scores shown stay the fused ones made non-increasing down the list (each at most the one before
    it), so they keep their absolute meaning and a ``score_threshold`` already applied still holds."""
    keyed = sorted(
        enumerate(ranked),
        key=lambda item: (-(item[1].score + weight * max(0.0, min(1.0, opening.get(item[1].chunk, 0.0)))), item[0]),
    )
    out: list[Ranked] = []
    ceiling = 1.0
    for _, r in keyed:
        ceiling = min(ceiling, r.score)
        out.append(Ranked(r.chunk, ceiling))
    return out


def spread(ranked: Sequence[Ranked], file_of: Mapping[int, int], head: int = SPREAD_HEAD) -> list[Ranked]:
    """Rerank a best-first list so each file takes at most one of the first ``head`` places: the best
    chunk of each of the best files, then everything else in its order. Chunks ``file_of`` does not name
    (deleted, or of a file not searchable) are left out. Scores stay non-increasing down the list: a
    chunk that gave up its place to another file's chunk scores at most as much as the last of the head.
    """
    first: list[Ranked] = []
    later: list[Ranked] = []
    taken: set[int] = set()
    for r in ranked:
        f = file_of.get(r.chunk)
        if f is None:
            continue
        if len(first) < head and f not in taken:
            taken.add(f)
            first.append(r)
        else:
            later.append(r)
    if not first:
        return later
    floor = first[-1].score
    return first + [Ranked(r.chunk, min(r.score, floor)) for r in later]
