"""File bytes in PostgreSQL: upload and download MB/s and peak server RSS for one large file.

Two parts, one run of the script:

1. **Through the server.** One ``assistantd serve`` per backend (the data folder on SQLite, the
   ``blobs``/``blob_chunks`` tables on PostgreSQL): ``POST /v1/files`` of a ``--mb`` MB file of random
   bytes streamed from disk (multipart, as the SDK sends it), then ``GET /v1/files/{id}/content`` read
   as a stream and hashed. MB/s of each, and the server's peak RSS (``VmHWM``, reset before each) against
   its RSS before: the difference is what the transfer held in memory.
2. **The layout choice.** In this process, the same bytes written and read back through
   ``PostgresBlobStore`` (1 MiB ``bytea`` rows, 4 per transaction) and through PostgreSQL large objects
   (``lo_create``/``lowrite``/``loread`` in 1 MiB calls, one transaction), MB/s each.

PostgreSQL comes from the ``pgserver`` package (a throwaway server, default settings: fsync on). Nothing
is pinned; on a shared machine rerun when the figures look off.

    python bench/blob_store_bench.py              # 512 MB, about 3 minutes
    python bench/blob_store_bench.py --mb 64

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run_bench as rb  # noqa: E402 - the process helpers of the streamed-runs bench

MIB = 1024 * 1024


def random_file(path: Path, mb: int) -> str:
    h = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(mb):
            block = os.urandom(MIB)
            h.update(block)
            fh.write(block)
    return h.hexdigest()


@contextlib.contextmanager
def server(root: Path, backend: str, database_url: str) -> Iterator[Any]:
    port = rb.free_port()
    cmd = [
        sys.executable, "-m", "assistantd", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(root / f"data-{backend}"), "--max-upload-bytes", str(4 * 1024 * MIB),
        "--max-body-bytes", str(4 * 1024 * MIB), "--ingest-workers", "0",
    ]  # fmt: skip
    if database_url:
        cmd += ["--database-url", database_url]
    proc = rb.spawn(cmd, "", root / f"server-{backend}.log", port)
    proc.port = port  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        rb.stop(proc)


def through_server(proc: Any, backend: str, path: Path, digest: str, mb: int) -> list[dict[str, Any]]:
    pid, base = proc.pid, f"http://127.0.0.1:{proc.port}/v1"
    rows = []
    with httpx.Client(base_url=base, headers={"Authorization": "Bearer sk-bench"}, timeout=600) as http:
        rb.reset_peak_rss(pid)
        before = rb.status_kb(pid, "VmRSS")
        t0 = time.perf_counter()
        with path.open("rb") as fh:
            r = http.post("/files", files={"file": ("big.bin", fh)}, data={"purpose": "assistants"})
        wall = time.perf_counter() - t0
        r.raise_for_status()
        file_id = r.json()["id"]
        rows.append(_row(backend, "upload", mb, wall, before, rb.status_kb(pid, "VmHWM")))

        rb.reset_peak_rss(pid)
        before = rb.status_kb(pid, "VmRSS")
        h = hashlib.sha256()
        t0 = time.perf_counter()
        with http.stream("GET", f"/files/{file_id}/content") as resp:
            resp.raise_for_status()
            for chunk in resp.iter_bytes(MIB):
                h.update(chunk)
        wall = time.perf_counter() - t0
        assert h.hexdigest() == digest, "downloaded bytes differ"
        rows.append(_row(backend, "download", mb, wall, before, rb.status_kb(pid, "VmHWM")))
        http.delete(f"/files/{file_id}").raise_for_status()
    return rows


def _row(backend: str, what: str, mb: int, wall: float, rss_kb: int, peak_kb: int) -> dict[str, Any]:
    return {
        "backend": backend,
        "case": what,
        "mb_s": mb / wall,
        "seconds": wall,
        "rss_mb": rss_kb / 1024,
        "peak_mb": peak_kb / 1024,
        "held_mb": (peak_kb - rss_kb) / 1024,
    }


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(MIB):
            yield block


async def layouts(database_url: str, path: Path, digest: str, mb: int, spool: Path) -> list[dict[str, Any]]:
    import psycopg

    from assistantd.store import open_database
    from assistantd.store.blobs import PostgresBlobStore

    rows = []
    db = open_database(database_url, pool_size=4)
    try:
        store = PostgresBlobStore(db, spool)
        t0 = time.perf_counter()
        await store.put("bench", _file_chunks(path), max_bytes=2**62)
        rows.append({"layout": "bytea rows (chosen)", "case": "write", "mb_s": mb / (time.perf_counter() - t0)})
        h = hashlib.sha256()
        t0 = time.perf_counter()
        async for chunk in await store.read("bench"):
            h.update(chunk)
        rows.append({"layout": "bytea rows (chosen)", "case": "read", "mb_s": mb / (time.perf_counter() - t0)})
        assert h.hexdigest() == digest
        await store.delete("bench")
    finally:
        await db.close()

    def large_object() -> None:
        with psycopg.connect(database_url) as conn:
            t0 = time.perf_counter()
            with conn.transaction():
                oid = conn.execute("SELECT lo_create(0)").fetchone()[0]  # type: ignore[index]
                fd = conn.execute("SELECT lo_open(%s, 131072)", (oid,)).fetchone()[0]  # type: ignore[index]
                with path.open("rb") as fh:
                    while block := fh.read(MIB):
                        conn.execute("SELECT lowrite(%s, %s)", (fd, block))
            rows.append({"layout": "large object", "case": "write", "mb_s": mb / (time.perf_counter() - t0)})
            h = hashlib.sha256()
            t0 = time.perf_counter()
            with conn.transaction():
                fd = conn.execute("SELECT lo_open(%s, 262144)", (oid,)).fetchone()[0]  # type: ignore[index]
                while True:
                    block = conn.execute("SELECT loread(%s, %s)", (fd, MIB), binary=True).fetchone()[0]  # type: ignore[index]
                    if not block:
                        break
                    h.update(block)
            rows.append({"layout": "large object", "case": "read", "mb_s": mb / (time.perf_counter() - t0)})
            assert h.hexdigest() == digest
            with conn.transaction():
                conn.execute("SELECT lo_unlink(%s)", (oid,))

    await asyncio.to_thread(large_object)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=int, default=512, help="file size in MiB")
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--no-layouts", dest="layouts", action="store_false", help="skip the in-process layout part")
    args = p.parse_args()
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory(prefix="blob-bench-") as tmp:
        root = Path(tmp)
        path = root / "big.bin"
        digest = random_file(path, args.mb)
        pg = rb.Postgres(root, None) if "postgres" in backends else None
        rows: list[dict[str, Any]] = []
        layout_rows: list[dict[str, Any]] = []
        try:
            for backend in backends:
                url = ""
                if backend == "postgres":
                    assert pg is not None
                    url = _new_database(pg.uri, "bench_http")
                with server(root, backend, url) as proc:
                    rows += through_server(proc, backend, path, digest, args.mb)
            if pg is not None and args.layouts:
                layout_rows = asyncio.run(
                    layouts(_new_database(pg.uri, "bench_layout"), path, digest, args.mb, root / "spool")
                )
        finally:
            if pg is not None:
                pg.stop()
    print(f"\n{args.mb} MiB file, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print("| backend | case | MB/s | seconds | server RSS before MB | peak MB | held MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['backend']} | {r['case']} | {r['mb_s']:.0f} | {r['seconds']:.1f} | {r['rss_mb']:.0f} | "
            f"{r['peak_mb']:.0f} | {r['held_mb']:.0f} |"
        )
    if layout_rows:
        print("\n| PostgreSQL layout (in process) | case | MB/s |")
        print("| --- | --- | ---: |")
        for r in layout_rows:
            print(f"| {r['layout']} | {r['case']} | {r['mb_s']:.0f} |")


def _new_database(uri: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return urlunsplit(urlsplit(uri)._replace(path="/" + name))


if __name__ == "__main__":
    main()
