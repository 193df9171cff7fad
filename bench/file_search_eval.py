"""File search judged from outside: real corpora, user questions, only the public search endpoint.

Each corpus is a set of pages that a Debian package installs under /usr/share/doc (see
``bench/file_search_eval/*.json``: the package, the exact file list, and the questions). The script
starts a real ``assistantd serve`` on a free port (SQLite in a data dir, or a database on a throwaway
PostgreSQL from ``pgserver``), uploads the pages through ``POST /v1/files``, adds them to one vector
store as a file batch, waits for it, and asks every question through
``POST /v1/vector_stores/{id}/search`` (top 20). Nothing is read from inside the server.

Each question carries its gold file(s), the passage of the page the answer rests on, a kind
(``lookup``: names the function, option or keyword; ``paraphrase``: says what the user wants in other
words, sharing no rare word with the answer; ``how-to``: a task; ``numeric``: asks for a number or
limit) and a split (``dev`` to tune on, ``test`` to confirm). Reported per split and kind:

- recall@5 / recall@20: a gold file among the first 5 / 20 results;
- MRR: 1 / rank of the first gold file's result (0 past 20);
- passage@20: the answer passage (whitespace and case folded) inside one of the 20 results' text.

Ingested stores are kept under bench/results/file_search_eval/<backend>/<corpus>-<label>/ and reused
(``--fresh`` ingests again); ``--label`` names a configuration of the server under test (e.g. after a
chunking change, which needs a new ingestion). Ingestion is reported as seconds and word pieces per
second (the corpus' text counted with the embedding model's tokenizer).

    apt-get install -y sqlite3-doc git-doc
    python bench/file_search_eval.py                           # both corpora, SQLite, ranker auto
    python bench/file_search_eval.py --backend postgres --corpora git
    python bench/file_search_eval.py --rankers none,auto --split dev
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CORPORA = HERE / "file_search_eval"
RESULTS = HERE / "results" / "file_search_eval"
KINDS = ("lookup", "paraphrase", "how-to", "numeric")


def load_corpus(name: str, folder: Path | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(((folder or CORPORA) / f"{name}.json").read_text())
    spec["name"] = name
    return spec


def fold(text: str) -> str:
    return " ".join(text.split()).lower()


# --- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
        self.server = pgserver.get_server(root / "pgdata", cleanup_mode="stop")

    def database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.server.get_uri(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
        return str(self.server.get_uri(database=name))

    def drop(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.server.get_uri(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self.server.cleanup()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serve(data_dir: Path, database_url: str, workers: int, extra: list[str]) -> Iterator[tuple[str, int]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        sys.executable, "-m", "assistantd", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(data_dir), "--code-interpreter-pool-size", "0", "--ingest-workers", str(workers),
    ]  # fmt: skip
    if database_url:
        args += ["--database-url", database_url]
    args += extra
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANTD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    log = (data_dir / "server.log").open("ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                sys.exit(f"the server exited; see {data_dir / 'server.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                sys.exit("the server did not become healthy")
            time.sleep(0.2)
        yield url + "/v1", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# --- ingestion -----------------------------------------------------------------------------------


def count_tokens(paths: list[Path]) -> int:
    sys.path.insert(0, str(REPO))
    from assistantd.tools.file_search.embed import chunk_tokenizer
    from assistantd.tools.file_search.parse import parse

    tok = chunk_tokenizer()
    return sum(len(tok.spans(parse(p, p.name).text)) for p in paths)


def ingest(
    http: httpx.Client, corpus: dict[str, Any], chunking: dict[str, Any] | None, server_pid: int
) -> dict[str, Any]:
    root = Path(corpus["root"])
    paths = [root / f for f in corpus["files"]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"missing corpus files (apt-get install -y {corpus['package']}): {missing[:3]}")
    file_ids = []
    for p in paths:
        r = http.post("/files", data={"purpose": "assistants"}, files={"file": (p.name, p.read_bytes(), "text/html")})
        r.raise_for_status()
        file_ids.append(r.json()["id"])
    store = http.post("/vector_stores", json={"name": corpus["name"]}).json()
    body: dict[str, Any] = {"file_ids": file_ids}
    if chunking:
        body["chunking_strategy"] = chunking
    # The model alone is timed warm (raw_throughput), so ingestion is too: one search on the empty store
    # makes the server load its model (1.2 s for int8) before the clock starts.
    http.post(f"/vector_stores/{store['id']}/search", json={"query": "warm up"}).raise_for_status()
    cpu = cpu_seconds(server_pid)
    started = time.perf_counter()
    batch = http.post(f"/vector_stores/{store['id']}/file_batches", json=body).json()
    last = 0.0
    while batch["status"] == "in_progress":
        time.sleep(0.2)  # the end is known to 0.2 s (a 15 s ingestion timed to 1 s was off by up to 7%)
        batch = http.get(f"/vector_stores/{store['id']}/file_batches/{batch['id']}").json()
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            c = batch["file_counts"]
            print(f"  {corpus['name']}: {c['completed']}/{c['total']} files, {time.perf_counter() - started:.0f} s",
                  flush=True)  # fmt: skip
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(server_pid) - cpu
    return {
        "cpu_seconds": cpu,
        "store_id": store["id"],
        "files": len(paths),
        "failed": batch["file_counts"]["failed"],
        "seconds": seconds,
        "tokens": count_tokens(paths),
    }


def raw_throughput(corpus: dict[str, Any], threads: int, windows: int, runtime: str) -> tuple[float, float]:
    """Word pieces per second the bundled model embeds on its own: the windows ingestion would give it
    (the corpus' first ``windows`` windows of the 800/400 grid), in ``threads`` threads at once, as the
    ingestion workers call it. The ceiling ingestion is measured against: (word pieces per second of wall
    time, word pieces per CPU second). On a shared machine the second is the steadier figure."""
    sys.path.insert(0, str(REPO))
    from concurrent.futures import ThreadPoolExecutor

    from assistantd.tools.file_search.chunk import plan_chunks
    from assistantd.tools.file_search.embed import LocalEmbedder, chunk_tokenizer, local_model_dir
    from assistantd.tools.file_search.parse import parse

    model_dir = local_model_dir()
    if model_dir is None:
        sys.exit("the local embedding model is not installed")
    embedder = LocalEmbedder(model_dir, runtime or "onnxruntime")
    tok = chunk_tokenizer()
    texts: list[str] = []
    pieces = 0
    for name in corpus["files"]:
        p = Path(corpus["root"]) / name
        plan = plan_chunks(parse(p, name).text, tok, max_tokens=800, overlap=400, window_tokens=254)
        for w in plan.windows:
            texts.append(plan.window_text(w))
            pieces += w.tokens
        if len(texts) >= windows:
            break
    per = [texts[i::threads] for i in range(threads)]
    embedder.embed(texts[:4])  # warm up
    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda part: [embedder.embed(part[i : i + 16]) for i in range(0, len(part), 16)], per))
    return pieces / (time.perf_counter() - started), pieces / (time.process_time() - cpu)


# --- judging -------------------------------------------------------------------------------------


def judge(results: list[dict[str, Any]], q: dict[str, Any]) -> dict[str, float]:
    gold = set(q["files"])
    first = next((i for i, r in enumerate(results) if r["filename"] in gold), None)
    passage = fold(q["passage"])
    found = any(passage in fold(" ".join(c["text"] for c in r["content"])) for r in results)
    return {
        "recall@5": float(first is not None and first < 5),
        "recall@20": float(first is not None and first < 20),
        "mrr": 1.0 / (first + 1) if first is not None else 0.0,
        "passage@20": float(found),
    }


def search(http: httpx.Client, store_id: str, q: str, ranker: str) -> tuple[list[dict[str, Any]], float]:
    body = {"query": q, "max_num_results": 20, "ranking_options": {"ranker": ranker}}
    started = time.perf_counter()
    r = http.post(f"/vector_stores/{store_id}/search", json=body)
    ms = (time.perf_counter() - started) * 1000
    r.raise_for_status()
    return r.json()["data"], ms


def table(rows: list[tuple[str, list[dict[str, float]]]]) -> str:
    out = ["| questions | n | recall@5 | recall@20 | MRR | passage@20 |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, got in rows:
        if not got:
            continue
        m = {k: statistics.mean(g[k] for g in got) for k in got[0]}
        out.append(
            f"| {name} | {len(got)} | {m['recall@5']:.3f} | {m['recall@20']:.3f} | {m['mrr']:.3f} | "
            f"{m['passage@20']:.3f} |"
        )
    return "\n".join(out)


def check_passages(corpus: dict[str, Any]) -> None:
    """Every answer passage must be in (one of) its gold page(s)' text, as the server parses it."""
    sys.path.insert(0, str(REPO))
    from assistantd.tools.file_search.parse import parse

    root = Path(corpus["root"])
    texts: dict[str, str] = {}
    bad = []
    for q in corpus["questions"]:
        for f in q["files"]:
            if f not in corpus["files"]:
                bad.append(f"{q['id']}: gold file {f} is not in the corpus")
        for f in q["files"]:
            if f not in texts:
                texts[f] = fold(parse(root / f, f).text) if (root / f).is_file() else ""
        if not any(fold(q["passage"]) in texts[f] for f in q["files"]):
            bad.append(f"{q['id']}: passage not in its gold page(s): {q['passage']!r}")
        if q["kind"] not in KINDS or q["split"] not in ("dev", "test"):
            bad.append(f"{q['id']}: bad kind or split")
    if bad:
        sys.exit("\n".join(bad))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", default="sqlite,git")
    p.add_argument("--questions", type=Path, default=CORPORA, help="the folder of the corpus files")
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--label", default="default", help="names the ingested store (a server configuration)")
    p.add_argument("--rankers", default="auto", help="comma-separated ranking_options.ranker values")
    p.add_argument("--split", choices=("dev", "test", "all"), default="all")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--check", action="store_true", help="only check the question files against the corpora")
    p.add_argument("--misses", action="store_true", help="list the questions whose gold file is not in the top 5")
    p.add_argument("--server-arg", action="append", default=[], help="extra `assistantd serve` flag")
    p.add_argument(
        "--runtime", default="", help="local_embedding_runtime of the server and of the model-alone timing"
    )
    p.add_argument("--chunking", default="", help="a chunking_strategy as JSON for the batch")
    p.add_argument("--max-files", type=int, default=0, help="ingest only a corpus' first N files (speed runs)")
    p.add_argument(
        "--raw-windows", type=int, default=0, help="after ingesting, time the model alone on this many windows"
    )
    args = p.parse_args()
    if args.runtime:
        args.server_arg.append(f"--local-embedding-runtime={args.runtime}")

    corpora = [load_corpus(n, args.questions) for n in args.corpora.split(",")]
    if args.max_files:
        for c in corpora:
            c["files"] = c["files"][: args.max_files]
            c["questions"] = [q for q in c["questions"] if set(q["files"]) <= set(c["files"])]
    for c in corpora:
        check_passages(c)
    n = sum(len(c["questions"]) for c in corpora)
    print(f"{n} questions checked against their pages")
    if args.check:
        return
    rankers = args.rankers.split(",")
    root = RESULTS / args.backend
    root.mkdir(parents=True, exist_ok=True)
    pg = PgServer(root) if args.backend == "postgres" else None
    all_rows: dict[str, list[tuple[dict[str, Any], dict[str, float]]]] = {r: [] for r in rankers}
    latencies: list[float] = []
    ingestion: list[str] = []
    try:
        for corpus in corpora:
            label = f"{corpus['name']}-{args.label}"
            data_dir = root / label
            if args.fresh:
                shutil.rmtree(data_dir, ignore_errors=True)
                if pg:
                    pg.drop(f"eval_{label}".replace("-", "_"))
            url = pg.database(f"eval_{label}".replace("-", "_")) if pg else ""
            with (
                serve(data_dir, url, args.workers, args.server_arg) as (base, server_pid),
                httpx.Client(
                    base_url=base, timeout=300, headers={"Authorization": "Bearer eval", "OpenAI-Beta": "assistants=v2"}
                ) as http,
            ):
                state_path = data_dir / "ingested.json"
                if state_path.exists():
                    state = json.loads(state_path.read_text())
                else:
                    print(f"ingesting {corpus['name']} ({len(corpus['files'])} files)...", flush=True)
                    state = ingest(http, corpus, json.loads(args.chunking) if args.chunking else None, server_pid)
                    if args.raw_windows:
                        state["raw"], state["raw_cpu"] = raw_throughput(
                            corpus, args.workers, args.raw_windows, args.runtime
                        )
                    state_path.write_text(json.dumps(state))
                rate = state["tokens"] / state["seconds"]
                raw, raw_cpu = state.get("raw"), state.get("raw_cpu")
                cpu_rate = state["tokens"] / state["cpu_seconds"] if state.get("cpu_seconds") else None
                ingestion.append(
                    f"| {corpus['name']} | {state['files']} | {state['failed']} | {state['tokens']:,} | "
                    f"{state['seconds']:.0f} | {rate:.0f} | "
                    + (f"{raw:.0f} | {rate / raw:.2f} | " if raw else "- | - | ")
                    + (f"{cpu_rate:.0f} | " if cpu_rate else "- | ")
                    + (f"{raw_cpu:.0f} | {cpu_rate / raw_cpu:.2f} |" if raw_cpu and cpu_rate else "- | - |")
                )
                search(http, state["store_id"], "warm up", "auto")
                for q in corpus["questions"]:
                    if args.split != "all" and q["split"] != args.split:
                        continue
                    for ranker in rankers:
                        results, ms = search(http, state["store_id"], q["q"], ranker)
                        latencies.append(ms)
                        m = judge(results, q)
                        all_rows[ranker].append(({**q, "corpus": corpus["name"]}, m))
                        if args.misses and m["recall@5"] == 0:
                            top = [r["filename"] for r in results[:5]]
                            print(f"  miss [{ranker}] {q['id']} ({q['kind']}): {q['q']!r} want {q['files']} got {top}")
    finally:
        if pg:
            pg.close()
    print()
    print(f"## Ingestion ({args.backend}, label {args.label}, {args.workers} workers)")
    print()
    print(
        "| corpus | files | failed | word pieces | seconds | pieces/s | model alone, pieces/s | ratio "
        "| pieces per CPU s | model alone, per CPU s | ratio |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(ingestion))
    for ranker, rows in all_rows.items():
        print()
        print(f"## Retrieval ({args.backend}, label {args.label}, ranker {ranker}, split {args.split})")
        print()
        groups: list[tuple[str, list[dict[str, float]]]] = [("all", [m for _, m in rows])]
        for split in ("dev", "test"):
            groups.append((split, [m for q, m in rows if q["split"] == split]))
        for kind in KINDS:
            groups.append((kind, [m for q, m in rows if q["kind"] == kind]))
        for corpus in corpora:
            groups.append((corpus["name"], [m for q, m in rows if q["corpus"] == corpus["name"]]))
        if args.split == "all":
            for kind in KINDS:
                groups.append((f"test, {kind}", [m for q, m in rows if q["split"] == "test" and q["kind"] == kind]))
        print(table(groups))
    if latencies:
        latencies.sort()
        print()
        print(f"search over HTTP: p50 {latencies[len(latencies) // 2]:.1f} ms, "
              f"p90 {latencies[int(len(latencies) * 0.9)]:.1f} ms ({len(latencies)} searches)")  # fmt: skip


if __name__ == "__main__":
    main()
