"""A file's opening: its first chunk (the page's title, name line and first paragraphs), which the
``auto`` ranker compares with the question (``tools/file_search/rank.py``, ``lead``)."""

from __future__ import annotations

from collections.abc import Sequence

from assistantd.store.base import Conn


def first_chunks(conn: Conn, file_seqs: Sequence[int]) -> dict[int, int]:
    """{file seq: seq of its first chunk} for those of the files (vector store file rows) that have one."""
    if not file_seqs:
        return {}
    marks = ", ".join("?" for _ in file_seqs)
    rows = conn.fetchall(
        f"SELECT vsf_seq, MIN(seq) FROM vector_store_chunks WHERE vsf_seq IN ({marks}) AND chunk_index = 0 "
        "GROUP BY vsf_seq",
        list(file_seqs),
    )
    return {int(r[0]): int(r[1]) for r in rows}
