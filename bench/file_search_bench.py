"""File search: retrieval quality on a real corpus, ingestion throughput, and search latency at scale.

The corpus is the Python 3.11 library reference that Debian ships as HTML (317 pages, 36 MB of HTML,
6 MB of text). Install it once with

    sudo apt-get install python3-doc        # puts it under /usr/share/doc/python3.11/html/library

(or point ``--corpus`` at any folder of documents). ``bench/file_search_questions.json`` holds 60
questions written from those pages, each with the page(s) that answer it. The script drives the real
services in process (no HTTP): it uploads every page, adds them to a vector store as one file batch
and waits for ingestion, then

1. **Quality.** For each question, the top 20 results of keyword-only, vector-only and hybrid search
   (the API's default): recall@5 and recall@20 (a page that answers it is among the first 5 / 20 results)
   and MRR (1 / rank of the first such result, 0 past 20).
2. **Ingestion.** Wall time from the batch's creation to its last file completed: HTML MB/s, text
   MB/s and chunks/s, with ``--workers`` ingestion workers.
3. **Latency.** Stores of ``--scales`` chunks (default 10k and 100k; 1M with ``--scales 1000000``),
   made by copying the corpus' chunks (text as is, vectors with a little noise so none repeats), then
   hybrid search for the 60 questions, end to end as a run's file_search tool calls it (query embedding
   included): p50 and p99 over ``--rounds`` passes.

    python bench/file_search_bench.py                          # SQLite, quality + ingestion + 10k/100k
    python bench/file_search_bench.py --backend postgres       # the same on a throwaway PostgreSQL
    python bench/file_search_bench.py --skip-latency --workers 2

Ingested corpora are kept under bench/results/ (per backend) and reused by later runs unless --fresh.
It prints tables and is a measurement, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from assistantd.app import build_services  # noqa: E402
from assistantd.protocol.vector_stores import CreateFileBatch, CreateVectorStore  # noqa: E402
from assistantd.service.registry import Services  # noqa: E402
from assistantd.settings import load_settings  # noqa: E402
from assistantd.store import chunks as chunk_rows  # noqa: E402
from assistantd.store import ingest_queue  # noqa: E402
from assistantd.store import vector_stores as vrows  # noqa: E402
from assistantd.store.base import Conn  # noqa: E402
from assistantd.tools.file_search.rank import fuse_rrf  # noqa: E402

PROJECT = "bench"
DEFAULT_CORPUS = Path("/usr/share/doc/python3.11/html/library")
QUESTIONS = HERE / "file_search_questions.json"
RESULTS = HERE / "results" / "file_search"
AUTO_CHUNKS = {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}
MODES = {"keyword": ("keyword",), "vector": ("vector",), "hybrid": ("keyword", "vector")}


# --- set-up --------------------------------------------------------------------------------------


class Backend:
    """A data dir (and for PostgreSQL a database on a throwaway server) that outlives one run."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self._pg: Any = None

    def database_url(self, label: str) -> str:
        if self.name == "sqlite":
            return ""
        import psycopg

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
        if self._pg is None:
            self._pg = pgserver.get_server(self.root / "pgdata", cleanup_mode="stop")  # data kept for reuse
        name = f"bench_{label}"
        with psycopg.connect(self._pg.get_uri(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return str(self._pg.get_uri(database=name))

    def drop(self, label: str) -> None:
        if self.name == "sqlite" or self._pg is None:
            shutil.rmtree(self.root / label, ignore_errors=True)
            return
        import psycopg

        with psycopg.connect(self._pg.get_uri(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "bench_{label}" WITH (FORCE)')
        shutil.rmtree(self.root / label, ignore_errors=True)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.cleanup()


async def open_services(backend: Backend, label: str, workers: int) -> tuple[Services, AsyncExitStack]:
    settings = load_settings(
        overrides={
            "data_dir": str(backend.root / label),
            "database_url": backend.database_url(label),
            "ingest_workers": workers,
        },
        environ={},
    )
    services = build_services(settings)
    stack = AsyncExitStack()
    await services.vector_stores.start()
    stack.push_async_callback(services.db.close)
    stack.push_async_callback(services.vector_stores.stop)
    return services, stack


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def ingest(services: Services, corpus: Path) -> dict[str, Any]:
    paths = sorted(p for p in corpus.iterdir() if p.is_file())  # noqa: ASYNC240 - a benchmark's set-up
    file_ids = []
    html_bytes = 0
    for path in paths:
        data = path.read_bytes()
        html_bytes += len(data)
        obj = await services.files.upload(PROJECT, filename=path.name, purpose="assistants", chunks=_chunks(data))
        file_ids.append(obj["id"])
    vs = services.vector_stores
    store = await vs.create(PROJECT, CreateVectorStore(name="corpus"))
    started = time.perf_counter()
    batch = await vs.create_batch(PROJECT, store["id"], CreateFileBatch(file_ids=file_ids))
    last_print = 0.0
    while True:
        batch = await vs.retrieve_batch(PROJECT, store["id"], batch["id"])
        counts = batch["file_counts"]
        if counts["in_progress"] == 0:
            break
        if time.perf_counter() - last_print > 30:
            last_print = time.perf_counter()
            print(f"  ingesting: {counts['completed']}/{counts['total']} files done", flush=True)
        await vs.ingestor.changed(2.0)
    seconds = time.perf_counter() - started

    def totals(conn: Conn) -> tuple[int, int]:
        chunks = conn.fetchval("SELECT count(*) FROM vector_store_chunks WHERE vector_store_id = ?", (store["id"],))
        text = conn.fetchval(
            "SELECT coalesce(sum(length(content)), 0) FROM vector_store_files WHERE vector_store_id = ?", (store["id"],)
        )
        return int(chunks), int(text)

    chunks, text_chars = await services.db.read(totals)
    return {
        "store_id": store["id"],
        "files": len(paths),
        "failed": counts["failed"],
        "html_mb": html_bytes / 1e6,
        "text_mb": text_chars / 1e6,
        "chunks": chunks,
        "seconds": seconds,
    }


# --- quality -------------------------------------------------------------------------------------


def score(ranked_files: list[str], expected: list[str]) -> tuple[float, float, float]:
    first = next((i for i, name in enumerate(ranked_files) if name in expected), None)
    r5 = 1.0 if first is not None and first < 5 else 0.0
    r20 = 1.0 if first is not None and first < 20 else 0.0
    mrr = 1.0 / (first + 1) if first is not None else 0.0
    return r5, r20, mrr


async def evaluate(services: Services, store_id: str, questions: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    vs = services.vector_stores
    rows: dict[str, list[tuple[float, float, float]]] = {m: [] for m in [*MODES, "hybrid, RRF (for comparison)"]}
    vectors = await vs.searcher.embed_queries([q["q"] for q in questions])
    for i, q in enumerate(questions):
        for mode, modes in MODES.items():
            hits = await vs.search(PROJECT, [store_id], [q["q"]], max_num_results=20, modes=modes)
            rows[mode].append(score([h.filename for h in hits], q["expected"]))
        # Reciprocal rank fusion of the same two candidate lists, instead of the score combination.
        one = None if vectors is None else vectors[i : i + 1]
        found = await services.db.read(
            lambda c, q=q, one=one: vs.searcher.candidates(c, PROJECT, [store_id], [q["q"]], one, None)
        )
        assert found is not None
        cand = found.queries[0]
        by_cosine = sorted((cand.vector or {}).items(), key=lambda item: -item[1])
        fused = fuse_rrf([[s for s, _ in cand.keyword], [s for s, _ in by_cosine]])[:20]
        texts = await services.db.read(lambda c, fused=fused: chunk_rows.chunk_texts(c, [r.chunk for r in fused]))
        filenames = [found.files[texts[r.chunk][0]].filename for r in fused if r.chunk in texts]
        rows["hybrid, RRF (for comparison)"].append(score(filenames, q["expected"]))
    return {
        mode: {
            "recall@5": statistics.mean(r[0] for r in got),
            "recall@20": statistics.mean(r[1] for r in got),
            "mrr": statistics.mean(r[2] for r in got),
        }
        for mode, got in rows.items()
    }


# --- latency -------------------------------------------------------------------------------------


async def build_scaled(services: Services, source: Services, source_store: str, n: int) -> str:
    """A store of ``n`` chunks: the corpus' chunks over and over, vectors jittered so none repeats."""

    def load(conn: Conn) -> tuple[list[str], np.ndarray]:
        rows = conn.fetchall(
            "SELECT text, embedding FROM vector_store_chunks WHERE vector_store_id = ? ORDER BY seq", (source_store,)
        )
        texts = [r[0] for r in rows]
        if conn.dialect == "sqlite":
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        else:
            vecs = np.asarray([json.loads(r[1]) for r in rows], dtype=np.float32)
        return texts, vecs

    texts, vecs = await source.db.read(load)
    store = await services.vector_stores.create(PROJECT, CreateVectorStore(name=f"scale-{n}"))
    rng = np.random.default_rng(7)
    model = services.vector_stores.embedder.name if services.vector_stores.embedder else None
    per_file = 2000
    made = 0
    file_no = 0
    while made < n:
        count = min(per_file, n - made)
        idx = np.arange(made, made + count) % len(texts)
        noise = rng.normal(0, 0.02, (count, vecs.shape[1])).astype(np.float32)
        block = vecs[idx] + noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        chunk_texts = [texts[i] for i in idx]
        file_id = f"file-scale{n}x{file_no:06d}"
        file_no += 1

        def tx(
            conn: Conn, file_id: str = file_id, chunk_texts: list[str] = chunk_texts, block: np.ndarray = block
        ) -> None:
            row = vrows.get_store(conn, PROJECT, store["id"])
            assert row is not None
            obj = {
                "id": file_id, "object": "vector_store.file", "usage_bytes": 0, "created_at": 0,
                "vector_store_id": store["id"], "status": "in_progress", "last_error": None,
                "chunking_strategy": {"type": "static", "static": AUTO_CHUNKS},
                "attributes": {},
            }  # fmt: skip
            vrows.insert_file(conn, PROJECT, obj, filename=f"{file_id}.txt", batch_id=None)
            seq = int(conn.fetchval("SELECT seq FROM vector_store_files WHERE id = ?", (file_id,)))
            chunk_rows.insert_chunks(
                conn, store_id=store["id"], store_seq=row.seq, vsf_seq=seq, file_id=file_id, texts=chunk_texts,
                model=model, vectors=block,
            )  # fmt: skip
            gen = vrows.bump(conn, store["id"], len(chunk_texts))
            ingest_queue.finish(conn, seq, {**obj, "status": "completed"}, content=None, index_gen=gen)

        await services.db.write(tx)
        made += count
    if services.db.dialect == "postgres":
        dims = int(vecs.shape[1])

        def index(conn: Conn) -> None:
            # A bulk load (as from a restore) builds the HNSW index once at the end, in memory, rather than
            # growing it row by row as ingestion does: at 1M chunks that is minutes instead of hours. The
            # memory covers the graph of 1M 384-float vectors (about 2 GB).
            conn.execute("SET LOCAL maintenance_work_mem = '3GB'")
            conn.execute("SET LOCAL max_parallel_maintenance_workers = 1")
            chunk_rows.ensure_vector_index(conn, dims)
            # What autovacuum does within a minute of such a load: statistics for the planner (and for the
            # search's list of common words).
            conn.execute("ANALYZE vector_store_chunks")

        await services.db.write(index)
    return str(store["id"])


async def latency(
    services: Services, store_id: str, questions: list[dict[str, Any]], rounds: int, ranker: str = "auto"
) -> dict[str, float]:
    vs = services.vector_stores
    await vs.searcher.search(PROJECT, [store_id], ["warm up the caches"], max_num_results=20, ranker=ranker)
    total, search_only = [], []
    for _ in range(rounds):
        for q in questions:
            started = time.perf_counter()
            await vs.searcher.search(PROJECT, [store_id], [q["q"]], max_num_results=20, ranker=ranker)
            total.append((time.perf_counter() - started) * 1000)
    vectors = await vs.searcher.embed_queries([q["q"] for q in questions])
    for _ in range(rounds):
        for i, q in enumerate(questions):
            one = None if vectors is None else vectors[i : i + 1]
            started = time.perf_counter()
            await services.db.read(
                lambda conn, q=q, one=one: vs.searcher._search_tx(
                    conn, PROJECT, [store_id], [q["q"]], one, 20, 0.0, None, ("keyword", "vector"), ranker
                )
            )
            search_only.append((time.perf_counter() - started) * 1000)
    return {
        "p50": float(np.percentile(total, 50)),
        "p99": float(np.percentile(total, 99)),
        "index_p50": float(np.percentile(search_only, 50)),
        "index_p99": float(np.percentile(search_only, 99)),
    }


# --- main ----------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    questions = json.loads(QUESTIONS.read_text())["questions"]
    root = args.results / args.backend
    if args.fresh:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    backend = Backend(args.backend, root)
    state_path = root / "corpus.json"
    try:
        services, stack = await open_services(backend, "corpus", args.workers)
        async with stack:
            if state_path.exists():
                state = json.loads(state_path.read_text())
                print(f"reusing the ingested corpus ({state['chunks']} chunks); --fresh to ingest again")
            else:
                if not args.corpus.is_dir():
                    sys.exit(f"no corpus at {args.corpus}: sudo apt-get install python3-doc, or pass --corpus DIR")
                print(f"ingesting {args.corpus} with {args.workers} worker(s)...", flush=True)
                state = await ingest(services, args.corpus)
                state_path.write_text(json.dumps(state))
            print()
            print(f"## Ingestion ({args.backend}, {args.workers} worker(s))")
            print()
            print("| files | failed | HTML MB | text MB | chunks | seconds | HTML MB/s | text MB/s | chunks/s |")
            print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            s = state
            print(
                f"| {s['files']} | {s['failed']} | {s['html_mb']:.1f} | {s['text_mb']:.2f} | {s['chunks']} | "
                f"{s['seconds']:.0f} | {s['html_mb'] / s['seconds']:.3f} | {s['text_mb'] / s['seconds']:.4f} | "
                f"{s['chunks'] / s['seconds']:.1f} |"
            )
            if not args.skip_quality:
                quality = await evaluate(services, state["store_id"], questions)
                print()
                print(f"## Retrieval quality ({len(questions)} questions, {args.backend})")
                print()
                print("| mode | recall@5 | recall@20 | MRR |")
                print("| --- | ---: | ---: | ---: |")
                for mode, m in quality.items():
                    print(f"| {mode} | {m['recall@5']:.3f} | {m['recall@20']:.3f} | {m['mrr']:.3f} |")
            if not args.skip_latency:
                print()
                print(f"## Search latency, hybrid, top 20 ({args.backend}, {args.rounds} x {len(questions)} queries)")
                print()
                print("| chunks | ranker | build s | p50 ms | p99 ms | without query embedding: p50 ms | p99 ms |")
                print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
                for n in args.scales:
                    label = f"scale{n}"
                    backend.drop(label)
                    scaled, scaled_stack = await open_services(backend, label, 1)
                    async with scaled_stack:
                        started = time.perf_counter()
                        store_id = await build_scaled(scaled, services, state["store_id"], n)
                        built = time.perf_counter() - started
                        for ranker in args.rankers.split(","):
                            lat = await latency(scaled, store_id, questions, args.rounds, ranker)
                            print(
                                f"| {n:,} | {ranker} | {built:.0f} | {lat['p50']:.1f} | {lat['p99']:.1f} | "
                                f"{lat['index_p50']:.1f} | {lat['index_p99']:.1f} |",
                                flush=True,
                            )
                    if not args.keep:
                        backend.drop(label)
    finally:
        backend.close()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--workers", type=int, default=2, help="ingestion workers")
    p.add_argument("--scales", type=lambda v: [int(x) for x in v.split(",")], default=[10_000, 100_000])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rankers", default="auto", help="comma-separated ranking_options.ranker values to time")
    p.add_argument("--results", type=Path, default=RESULTS, help="where ingested corpora are kept")
    p.add_argument("--fresh", action="store_true", help="ingest the corpus again")
    p.add_argument("--keep", action="store_true", help="keep the scaled stores")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    return p.parse_args()


if __name__ == "__main__":
    tempfile.tempdir = tempfile.gettempdir()
    asyncio.run(main(parse_args()))
