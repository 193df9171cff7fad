"""One file from bytes to indexable chunks: parse and chunk (in a reader process), embed. Blocking; run it
in a worker thread."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from assistantd.tools.file_search.chunk import ChunkPlan
from assistantd.tools.file_search.embed import Embedder
from assistantd.tools.file_search.worker import ReaderPool, Stopped

__all__ = ["EMBED_BATCH", "Processed", "Stopped", "embed_plan", "process"]

EMBED_BATCH = 16  # texts per embedder call; the stop flag is checked between calls
PROGRESS_SECONDS = 30.0  # a file still embedding after this long logs its progress this often

log = logging.getLogger("assistantd.ingest")


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
    readers: ReaderPool,
    embedder: Embedder | None,
    stop: threading.Event,
) -> Processed:
    """Raises ``ParseError`` (the file's fault), ``EmbeddingError`` (the model's) or ``Stopped``.

    Parsing and chunking happen in a reader process (see ``worker``); embedding happens here.
    """
    window = embedder.window if embedder is not None and embedder.window else 254
    planned = readers.read(path, filename, max_tokens=max_tokens, overlap=overlap, window=window, stop=stop)
    plan = planned.plan
    texts = [plan.chunk_text(c) for c in plan.chunks]
    vectors = None
    if embedder is not None and texts:
        vectors = embed_plan(plan, texts, embedder, stop, label=filename)
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    usage = text_bytes + (int(vectors.nbytes) if vectors is not None else 0)
    return Processed(
        planned.segments, texts, vectors, embedder.name if vectors is not None and embedder else None, usage
    )


def embed_plan(
    plan: ChunkPlan,
    texts: list[str],
    embedder: Embedder,
    stop: threading.Event | None = None,
    *,
    label: str = "",
) -> NDArray[np.float32]:
    """One vector per chunk. A windowed model embeds each window once and averages a chunk's windows
    (weighted by their tokens); a model that reads whole chunks gets the chunk texts. ``label`` names the
    file in progress lines.

    Putting the document's title in front of every window (contextual embedding) was measured on the
    evaluation corpora (bench/file_search_eval.py, bench/README.md) and left out: it did not improve the
    dev split's recall@5 or MRR."""
    if not embedder.window:
        return _embed_all(texts, embedder, stop, label)
    windows = _embed_all([plan.window_text(w) for w in plan.windows], embedder, stop, label)
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
    """Embedded in batches, ``embedder.threads`` of them at once (the local model holds numpy's BLAS to
    one thread, so one large file would otherwise keep one core busy); the stop flag is checked before
    each batch starts. A large file logs how far it has got every ``PROGRESS_SECONDS``."""
    batches = [texts[i : i + EMBED_BATCH] for i in range(0, len(texts), EMBED_BATCH)]
    parts: list[NDArray[np.float32]] = []
    started = last = time.monotonic()
    done = 0
    pool = _pool(embedder.threads) if embedder.threads > 1 and len(batches) > 1 else None
    pending: deque[Future[NDArray[np.float32]]] = deque()
    try:
        for batch in batches:
            if stop is not None and stop.is_set():
                raise Stopped()
            if pool is None:
                parts.append(embedder.embed(batch))
            else:
                pending.append(pool.submit(embedder.embed, batch))
                if len(pending) < embedder.threads:
                    continue
                parts.append(pending.popleft().result())
            done += len(parts[-1])
            moment = time.monotonic()
            if moment - last >= PROGRESS_SECONDS:
                last = moment
                log.info("embedding file=%s texts=%d/%d seconds=%.0f", label or "?", done, len(texts), moment - started)
        while pending:
            parts.append(pending.popleft().result())
    finally:
        for future in pending:
            future.cancel()
    return np.concatenate(parts).astype(np.float32, copy=False)


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """One pool per process (shared by every file being ingested), so threads stay bounded."""
    with _pools_lock:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="embed")
        return _pools[threads]
