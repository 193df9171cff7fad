"""Split text into overlapping chunks of tokens, and plan the windows the embedding model reads.

A "token" here is a word piece of the embedding model's own tokenizer (BERT's, with 30522 pieces),
counted on the original text through its character offsets. It is close to, but not the same as, the
tokens of OpenAI's tokenizer that the API's ``max_chunk_size_tokens`` was defined with; without the
model's tokenizer, words and punctuation marks count as tokens.

The model reads at most 256 pieces, fewer than a chunk holds (800 by default), so a chunk's vector is the
mean of the vectors of the windows that make it up. Chunks overlap (by 400 of 800 tokens by default), so
the windows are laid on one grid that both chunk edges fall on: with ``auto``, 200-token windows, four per
chunk, each shared by two chunks. Every token then goes through the model once, not twice. When the chunk
size and step share no usable grid (an odd static setting), each chunk gets windows of its own.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

AUTO_MAX_TOKENS = 800
AUTO_OVERLAP_TOKENS = 400
MIN_GRID = 48  # below this, windows on a shared grid would be too short to embed well
MAX_WORD_SHIFT = 16  # how far a chunk edge may move back to avoid splitting a word


class Tokenizer(Protocol):
    def spans(self, text: str) -> list[tuple[int, int, bool]]:
        """(start, end, starts_a_word) character spans of the tokens of ``text``, in order."""
        ...


class WordPieceTokenizer:
    """The embedding model's tokenizer (``tokenizer.json``), used only for its offsets."""

    def __init__(self, tokenizer_json: Path) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self._tok = HFTokenizer.from_file(str(tokenizer_json))
        self._tok.no_truncation()
        self._tok.no_padding()

    def spans(self, text: str) -> list[tuple[int, int, bool]]:
        enc = self._tok.encode(text, add_special_tokens=False)
        return [(s, e, not t.startswith("##")) for (s, e), t in zip(enc.offsets, enc.tokens, strict=True)]


_WORDS = re.compile(r"\w+|[^\w\s]")


class RegexTokenizer:
    """Words and punctuation marks: the fallback when the model's tokenizer is not installed."""

    def spans(self, text: str) -> list[tuple[int, int, bool]]:
        return [(m.start(), m.end(), True) for m in _WORDS.finditer(text)]


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # character offsets into the text
    end: int
    tokens: int
    windows: tuple[int, ...]  # indexes into ChunkPlan.windows


@dataclass(frozen=True)
class Window:
    start: int
    end: int
    tokens: int


@dataclass(frozen=True)
class ChunkPlan:
    text: str
    chunks: list[Chunk]
    windows: list[Window]

    def chunk_text(self, chunk: Chunk) -> str:
        return self.text[chunk.start : chunk.end]

    def window_text(self, window: Window) -> str:
        return self.text[window.start : window.end]


def plan_chunks(
    text: str, tokenizer: Tokenizer, *, max_tokens: int, overlap: int, window_tokens: int = 254
) -> ChunkPlan:
    """Chunks of at most ``max_tokens`` tokens, each starting ``max_tokens - overlap`` after the last."""
    if not 0 <= overlap <= max_tokens // 2:
        raise ValueError("overlap must be between 0 and half the chunk size")
    spans = tokenizer.spans(text)
    n = len(spans)
    if n == 0:
        return ChunkPlan(text, [], [])
    step = max_tokens - overlap
    unit = _grid_unit(max_tokens, step, window_tokens)
    if unit is not None:
        return _plan_on_grid(text, spans, max_tokens, step, unit)
    return _plan_each(text, spans, max_tokens, step, window_tokens)


def _grid_unit(size: int, step: int, window: int) -> int | None:
    unit = math.gcd(size, step)
    while unit > window - MAX_WORD_SHIFT:  # a window may grow by a word shift
        unit //= _smallest_factor(unit)
    return unit if unit >= MIN_GRID else None


def _smallest_factor(n: int) -> int:
    for f in range(2, math.isqrt(n) + 1):
        if n % f == 0:
            return f
    return n


def _word_edge(spans: list[tuple[int, int, bool]], i: int, floor: int) -> int:
    """Move token index ``i`` back to the start of its word (not past ``floor``, nor too far)."""
    j = i
    while j > floor + 1 and j > i - MAX_WORD_SHIFT and not spans[j][2]:
        j -= 1
    return j if spans[j][2] else i


def _plan_on_grid(text: str, spans: list[tuple[int, int, bool]], size: int, step: int, unit: int) -> ChunkPlan:
    n = len(spans)
    edges = [0]
    while edges[-1] + unit < n:
        edges.append(_word_edge(spans, edges[-1] + unit, edges[-1]))
    edges.append(n)
    windows = [Window(spans[a][0], spans[b - 1][1], b - a) for a, b in itertools.pairwise(edges)]
    per_chunk, per_step = size // unit, step // unit
    chunks: list[Chunk] = []
    first = 0
    while True:
        last = min(first + per_chunk, len(windows))
        a, b = edges[first], edges[last]
        chunks.append(Chunk(len(chunks), spans[a][0], spans[b - 1][1], b - a, tuple(range(first, last))))
        if last >= len(windows):
            break
        first += per_step
    return ChunkPlan(text, chunks, windows)


def _plan_each(text: str, spans: list[tuple[int, int, bool]], size: int, step: int, window_tokens: int) -> ChunkPlan:
    n = len(spans)
    chunks: list[Chunk] = []
    windows: list[Window] = []
    start = 0
    while True:
        end = min(start + size, n)
        if end < n:
            end = _word_edge(spans, end, start)
        count = math.ceil((end - start) / window_tokens)
        ids = []
        for k in range(count):
            a = start + (end - start) * k // count
            b = start + (end - start) * (k + 1) // count
            ids.append(len(windows))
            windows.append(Window(spans[a][0], spans[b - 1][1], b - a))
        chunks.append(Chunk(len(chunks), spans[start][0], spans[end - 1][1], end - start, tuple(ids)))
        if end >= n:
            break
        start = max(start + 1, end - (size - step))
    return ChunkPlan(text, chunks, windows)
