"""One file from bytes to indexable chunks: parse, chunk, embed. Blocking; run it in a worker thread."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from assistantd.tools.file_search.chunk import ChunkPlan, Tokenizer, document_context, plan_chunks
from assistantd.tools.file_search.embed import Embedder
from assistantd.tools.file_search.parse import parse

EMBED_BATCH = 16  # texts per embedder call; the stop flag is checked between calls
PROGRESS_SECONDS = 30.0  # a file still embedding after this long logs its progress this often

log = logging.getLogger("assistantd.ingest")


class Stopped(Exception):
    """The file was cancelled, detached or deleted while it was being processed."""


@dataclass(frozen=True)
class Processed:
    segments: list[str]  # the parsed text (pages, slides...), for /content
    chunks: list[str]
    vectors: NDArray[np.float32] | None
    model: str | None
    usage_bytes: int


def process(
    path: Path,
    filename: str,
    *,
    max_tokens: int,
    overlap: int,
    tokenizer: Tokenizer,
    embedder: Embedder | None,
    stop: threading.Event | None = None,
) -> Processed:
    """Raises ``ParseError`` (the file's fault), ``EmbeddingError`` (the model's) or ``Stopped``."""
    document = parse(path, filename)
    context = document_context(document.text, filename, tokenizer)
    window = embedder.window if embedder is not None and embedder.window else 254
    window -= len(tokenizer.spans(context)) + 1  # the context rides along in every window
    plan = plan_chunks(document.text, tokenizer, max_tokens=max_tokens, overlap=overlap, window_tokens=window)
    texts = [plan.chunk_text(c) for c in plan.chunks]
    vectors = None
    if embedder is not None and texts:
        vectors = embed_plan(plan, texts, embedder, stop, context=context, label=filename)
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    usage = text_bytes + (int(vectors.nbytes) if vectors is not None else 0)
    return Processed(
        document.segments, texts, vectors, embedder.name if vectors is not None and embedder else None, usage
    )


def embed_plan(
    plan: ChunkPlan,
    texts: list[str],
    embedder: Embedder,
    stop: threading.Event | None = None,
    *,
    context: str = "",
    label: str = "",
) -> NDArray[np.float32]:
    """One vector per chunk. A windowed model embeds each window once and averages a chunk's windows
    (weighted by their tokens); a model that reads whole chunks gets the chunk texts.

    ``context`` (the document's title, see ``chunk.document_context``) is put in front of every text the
    model reads, so a window deep inside a page still says what page it is from; the stored chunk text
    and the keyword index are unchanged."""
    lead = f"{context}\n" if context else ""
    if not embedder.window:
        return _embed_all([lead + t for t in texts], embedder, stop, label)
    windows = _embed_all([lead + plan.window_text(w) for w in plan.windows], embedder, stop, label)
    weights = np.asarray([w.tokens for w in plan.windows], dtype=np.float32)
    out = np.zeros((len(plan.chunks), windows.shape[1]), np.float32)
    for i, chunk in enumerate(plan.chunks):
        ids = list(chunk.windows)
        out[i] = (windows[ids] * weights[ids, None]).sum(0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32)


def _embed_all(
    texts: list[str], embedder: Embedder, stop: threading.Event | None, label: str = ""
) -> NDArray[np.float32]:
    """Embedded in batches; a large file logs how far it has got every ``PROGRESS_SECONDS``."""
    parts = []
    started = last = time.monotonic()
    for start in range(0, len(texts), EMBED_BATCH):
        if stop is not None and stop.is_set():
            raise Stopped()
        parts.append(embedder.embed(texts[start : start + EMBED_BATCH]))
        moment = time.monotonic()
        if moment - last >= PROGRESS_SECONDS:
            last = moment
            done = min(len(texts), start + EMBED_BATCH)
            log.info("embedding file=%s texts=%d/%d seconds=%.0f", label or "?", done, len(texts), moment - started)
    return np.concatenate(parts).astype(np.float32, copy=False)
