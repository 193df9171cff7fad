"""Scale-out: streamed runs per second and time to first token with one replica vs several on one PostgreSQL.

For each replica count in ``--replicas`` (default 1 and 3), on a fresh database of one throwaway
PostgreSQL (``pgserver``) and one scripted upstream (``assistantd.llm.scripted``, the same for every
count), ``N`` ``assistantd serve`` processes each with its own data dir are started. Then ``--runs``
streamed runs (``POST /v1/threads/{id}/runs`` with ``stream: true``, each on a thread created
beforehand on the replica that runs it) are driven by ``--concurrency`` closed-loop clients spread
round-robin over the replicas, each on its own keep-alive connection. Reported: completed runs per
second over the wall time, time to the first ``thread.message.delta`` (TTFT) and to the end of the
stream, p50/p99, errors (HTTP errors, broken streams, a run not ``completed``, wrong text), and the CPU
seconds the replicas and PostgreSQL used.

Nothing is pinned: every process shares the machine's CPUs, so with more replicas than cores this
measures how the work spreads, not added capacity. The load average is printed beside the table.

``--takeover N`` measures instead how long runs outlive a replica killed outright: three replicas
(``--run-lease-seconds``, ``--reap-interval-seconds``), ``N`` runs created on the first, each held by
the upstream after its first words; then SIGKILL of that replica and the time from the kill to the
first and to the last of those runs ``completed`` on the survivors (polled every 50 ms), with a check
that each was resumed once (``2 N`` model calls in all).

    python bench/scaleout_bench.py                       # 1 and 3 replicas, about 2 minutes
    python bench/scaleout_bench.py --replicas 1,2,3 --runs 600 --concurrency 60
    python bench/scaleout_bench.py --takeover 50         # kill -9 to the last taken-over run done

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run_bench as rb  # noqa: E402 - the raw SSE client and process helpers of the streamed-runs bench

MODEL = "bench-scaleout"  # answered by the upstream's default turn (--ttft-ms, --delay-ms, --tokens)


def _new_database(uri: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return urlunsplit(urlsplit(uri)._replace(path="/" + name))


def _serve(root: Path, i: int, database_url: str, upstream_port: int, *more: str) -> Any:
    root.mkdir(parents=True, exist_ok=True)
    port = rb.free_port()
    cmd = [
        sys.executable, "-m", "assistantd", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(root / f"replica-{i}"), "--database-url", database_url,
        "--upstream-base-url", f"http://127.0.0.1:{upstream_port}/v1", "--log-level", "warning",
        "--code-interpreter-pool-size", "0", *more,
    ]  # fmt: skip
    proc = rb.spawn(cmd, "", root / f"replica-{i}.log", port)
    proc.port = port  # type: ignore[attr-defined]
    return proc


async def _drive(ports: list[int], runs: int, concurrency: int, expected: str) -> tuple[list[rb.Stream], float]:
    api = await rb.Conn(ports[0]).open()
    assistant = await api.json("POST", "/v1/assistants", {"model": MODEL, "name": "bench scale-out"})
    api.close()
    # Each client works on one replica; its threads are created there (any replica could: one database).
    clients = [ports[c % len(ports)] for c in range(concurrency)]
    share = [runs // concurrency + (1 if c < runs % concurrency else 0) for c in range(concurrency)]
    per_port: dict[int, int] = {}
    for port, n in zip(clients, share, strict=True):
        per_port[port] = per_port.get(port, 0) + n
    threads = {port: await rb.new_threads(port, n) for port, n in per_port.items()}
    body = rb.run_body(assistant["id"])
    results: list[rb.Stream] = []

    async def client(port: int, n: int) -> None:
        conn = await rb.Conn(port).open()
        try:
            for _ in range(n):
                thread = threads[port].pop()
                try:
                    async with asyncio.timeout(120):
                        out = await rb.stream(conn, f"/v1/threads/{thread}/runs", body, expected, run=True)
                except TimeoutError:
                    out = rb.Stream(error="no end within 120 s")
                results.append(out)
                if not out.ok:  # the connection may be broken: start a fresh one
                    conn.close()
                    conn = await rb.Conn(port).open()
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(port, n) for port, n in zip(clients, share, strict=True) if n))
    return results, time.perf_counter() - t0


def _takeover(root: Path, pg: Any, upstream_port: int, n: int, lease: float, reap: float) -> dict[str, Any]:
    """Kill -9 a replica executing ``n`` runs (held mid-answer); seconds from the kill to them all done."""
    import httpx

    model = "bench-takeover"
    up = httpx.Client(base_url=f"http://127.0.0.1:{upstream_port}", timeout=30)
    held = {"chunks": ["Cut", " by", " the", " kill"], "hold": True}
    up.post("/_script", json={"model": model, "turns": [held] * n + [{"text": "finished elsewhere."}] * n})
    url = _new_database(pg.uri, "scaleout_takeover")
    flags = ("--run-lease-seconds", str(lease), "--reap-interval-seconds", str(reap), "--stream-save-seconds", "0.2")
    servers = [_serve(root / "takeover", i, url, upstream_port, *flags) for i in range(3)]
    auth = {"Authorization": "Bearer bench"}
    try:
        first, survivor = (
            httpx.Client(base_url=f"http://127.0.0.1:{s.port}", headers=auth, timeout=60) for s in servers[:2]
        )
        assistant = first.post("/v1/assistants", json={"model": model}).json()["id"]
        runs = []
        for _ in range(n):
            created = first.post("/v1/threads/runs", json={"assistant_id": assistant}).json()
            runs.append((created["thread_id"], created["id"]))
        deadline = time.monotonic() + 120
        while len(up.get("/_requests", params={"model": model}).json()) < n:
            if time.monotonic() > deadline:
                raise SystemExit("the runs never reached the upstream")
            time.sleep(0.05)
        servers[0].kill()
        servers[0].wait()
        killed = time.perf_counter()
        done: dict[str, float] = {}
        statuses: dict[str, str] = {}
        while len(done) < n:
            if time.perf_counter() - killed > 300:
                raise SystemExit(f"runs still active 300 s after the kill: {n - len(done)}")
            for thread_id, run_id in runs:
                if run_id in done:
                    continue
                status = survivor.get(f"/v1/threads/{thread_id}/runs/{run_id}").json()["status"]
                if status not in ("queued", "in_progress", "cancelling"):
                    done[run_id], statuses[run_id] = time.perf_counter() - killed, status
            time.sleep(0.05)
        calls = len(up.get("/_requests", params={"model": model}).json())
        first.close()
        survivor.close()
    finally:
        up.post("/_release", params={"model": model})
        up.close()
        for s in servers[1:]:
            rb.stop(s)
    return {
        "runs": n,
        "completed": sum(1 for s in statuses.values() if s == "completed"),
        "first": min(done.values()),
        "last": max(done.values()),
        "calls": calls,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", default="1,3", help="comma-separated replica counts")
    p.add_argument("--runs", type=int, default=300, help="streamed runs per replica count")
    p.add_argument("--concurrency", type=int, default=30, help="closed-loop clients, spread over the replicas")
    p.add_argument("--ttft-ms", type=float, default=100.0, help="upstream time to first token")
    p.add_argument("--delay-ms", type=float, default=10.0, help="upstream delay between tokens")
    p.add_argument("--tokens", type=int, default=20, help="tokens per answer")
    p.add_argument("--keep", action="store_true", help="keep the temporary dir (logs)")
    p.add_argument("--takeover", type=int, default=0, help="instead: kill -9 a replica executing this many runs")
    p.add_argument("--run-lease-seconds", type=float, default=30.0, help="for --takeover (the server default)")
    p.add_argument("--reap-interval-seconds", type=float, default=5.0, help="for --takeover (the server default)")
    args = p.parse_args()
    if args.takeover:
        _main_takeover(args)
        return
    counts = [int(n) for n in args.replicas.split(",")]
    expected = rb.expected_text(args.tokens)
    root = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    rows = []
    pg = rb.Postgres(root, None)
    try:
        up_args = argparse.Namespace(ttft_ms=args.ttft_ms, delay_ms=args.delay_ms, tokens=args.tokens)
        with rb.upstream(root, up_args, "") as upstream:
            for n in counts:
                url = _new_database(pg.uri, f"scaleout_{n}")
                servers = []
                try:
                    for i in range(n):
                        servers.append(_serve(root / f"n{n}", i, url, upstream.port))  # type: ignore[attr-defined]
                    cpu0 = [rb.cpu_seconds(s.pid) for s in servers], sum(rb.cpu_seconds(q) for q in pg.pids())
                    load0 = os.getloadavg()[0]
                    results, wall = asyncio.run(
                        _drive([s.port for s in servers], args.runs, args.concurrency, expected)
                    )
                    srv_cpu = sum(rb.cpu_seconds(s.pid) - c for s, c in zip(servers, cpu0[0], strict=True))
                    db_cpu = sum(rb.cpu_seconds(q) for q in pg.pids()) - cpu0[1]
                finally:
                    for s in servers:
                        rb.stop(s)
                ok = [r for r in results if r.ok]
                errors = sorted({r.error for r in results if not r.ok})
                rows.append(
                    {
                        "replicas": n,
                        "runs": len(results),
                        "errors": len(results) - len(ok),
                        "runs_s": len(ok) / wall,
                        "ttft_p50": rb.pct([r.ttft for r in ok], 50) * 1000,
                        "ttft_p99": rb.pct([r.ttft for r in ok], 99) * 1000,
                        "total_p50": rb.pct([r.total for r in ok], 50) * 1000,
                        "total_p99": rb.pct([r.total for r in ok], 99) * 1000,
                        "srv_cpu": srv_cpu,
                        "db_cpu": db_cpu,
                        "load": (load0 + os.getloadavg()[0]) / 2,
                        "error_kinds": errors[:3],
                    }
                )
    finally:
        pg.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{args.runs} streamed runs per row, {args.concurrency} closed-loop clients; upstream {args.ttft_ms:g} ms "
        f"to first token, {args.tokens} tokens {args.delay_ms:g} ms apart; {os.cpu_count()} CPUs, nothing pinned\n"
    )
    print("| replicas | runs | errors | runs/s | TTFT p50 ms | TTFT p99 ms | total p50 ms | total p99 ms "
          "| replicas cpu s | db cpu s | load avg |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['replicas']} | {r['runs']} | {r['errors']} | {r['runs_s']:.1f} | {r['ttft_p50']:.0f} | "
            f"{r['ttft_p99']:.0f} | {r['total_p50']:.0f} | {r['total_p99']:.0f} | {r['srv_cpu']:.1f} | "
            f"{r['db_cpu']:.1f} | {r['load']:.1f} |"
        )
        if r["error_kinds"]:
            print(f"  errors: {r['error_kinds']}")


def _main_takeover(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="takeover-bench-"))
    pg = rb.Postgres(root, None)
    try:
        up_args = argparse.Namespace(ttft_ms=0, delay_ms=0, tokens=0)
        with rb.upstream(root, up_args, "") as upstream:
            port = upstream.port  # type: ignore[attr-defined]
            r = _takeover(root, pg, port, args.takeover, args.run_lease_seconds, args.reap_interval_seconds)
    finally:
        pg.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    print(
        f"\nkill -9 of 1 of 3 replicas executing {r['runs']} runs (each held after its first words); "
        f"run_lease_seconds {args.run_lease_seconds:g}, reap_interval_seconds {args.reap_interval_seconds:g}; "
        f"{os.cpu_count()} CPUs\n"
    )
    print("| runs | completed | model calls | kill to first done s | kill to last done s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {r['runs']} | {r['completed']} | {r['calls']} | {r['first']:.2f} | {r['last']:.2f} |")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
