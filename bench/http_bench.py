"""HTTP throughput and latency of one assistantd process, driven by wrk.

For each backend (SQLite, PostgreSQL) this starts a fresh ``assistantd serve`` on a free port with a
fresh data dir, seeds it over HTTP, then runs every (operation x concurrency) cell with wrk: a short
warm-up whose numbers are thrown away, then the measured run. It prints one table, plus the ratios
that compare cells measured in the same run. It is a measurement, never a pass/fail test.

The load generator is wrk (C, one thread) so that the client is not the bottleneck on a small machine;
the server (and PostgreSQL) and wrk are pinned to different CPUs with ``taskset``.

    python bench/http_bench.py                          # everything, 6 s per cell
    python bench/http_bench.py --duration 3 --backends sqlite --clients 16
    python bench/http_bench.py --json after.json --baseline before.json

See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LUA = HERE / "requests.lua"
KEY = "sk-bench"  # with no keys configured the server accepts any key on loopback
MESSAGE_TEXT = "Hello! This is a benchmark message of modest length, about as long as a short question."
OPERATIONS = ("create-message", "list-messages", "retrieve-assistant")
BACKENDS = ("sqlite", "postgres")


@dataclass
class Cell:
    backend: str
    operation: str
    clients: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int
    server_cpu: float  # percent of one CPU used by the assistantd process during the run
    server_us_per_request: float  # assistantd CPU time per request: steadier than rps on a busy host
    db_cpu: float | None  # percent of one CPU used by PostgreSQL processes (None for SQLite)
    other_cpu: float | None  # percent of the server's CPUs used by anything else (None if unpinned)


# ---------------------------------------------------------------------------------------------- HTTP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {KEY}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; log:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"server did not become ready in {timeout:.0f}s; log:\n{log.read_text()}")


# ------------------------------------------------------------------------------------------ processes


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the given processes (those that have exited count as 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def busy_seconds(cpus: set[int]) -> float:
    """Non-idle time of the given CPUs, from /proc/stat (user+nice+system+irq+softirq+steal)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(x) for x in values]
            total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # skip idle (3) and iowait (4)
    return total / tick


def children_of(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                pids.append(int(entry.name))
    return pids


def parse_cpus(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            cpus.update(range(int(lo), int(hi) + 1))
        elif part:
            cpus.add(int(part))
    return cpus


class Postgres:
    """A throwaway PostgreSQL from the ``pgserver`` package, its processes pinned to ``cpus``."""

    def __init__(self, root: Path, cpus: set[int] | None) -> None:
        import pgserver  # imported here so a SQLite-only run does not need it

        self.server = pgserver.get_server(root / "pgdata", cleanup_mode="stop")
        self.uri = self.server.get_uri()
        self.postmaster = int(self.server.get_pid() or 0)
        self.cpus = cpus
        self.pin()

    def pids(self) -> list[int]:
        return [self.postmaster, *children_of(self.postmaster)]

    def pin(self) -> None:
        # Backends forked later inherit the postmaster's affinity; pin the ones already running too.
        if self.cpus:
            for pid in self.pids():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(pid, self.cpus)

    def stop(self) -> None:
        self.server.cleanup()


class Server:
    def __init__(self, backend: str, root: Path, cpus: str, database_url: str = "", source: Path = REPO) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = root / f"server-{backend}.log"
        cmd = [
            sys.executable, "-m", "assistantd", "serve",
            "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(root / f"data-{backend}"),
        ]  # fmt: skip
        if database_url:
            cmd += ["--database-url", database_url]
        if cpus:
            cmd = ["taskset", "-c", cpus, *cmd]  # taskset execs, so the pid is the server's
        env = {**os.environ, "ASSISTANTD_LOG_LEVEL": "warning", "ASSISTANTD_ACCESS_LOG": "false"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
        wait_ready(self.base, self.proc, self.log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------------------- seeding


@dataclass
class Seed:
    create_paths: Path  # POST targets: /v1/threads/{id}/messages over many threads
    list_paths: Path  # GET /v1/threads/{id}/messages?limit=20 on one thread of ~100 messages
    retrieve_paths: Path  # GET /v1/assistants/{id} over a few assistants


def seed(base: str, root: Path, backend: str, *, write_threads: int, list_messages: int, assistants: int) -> Seed:
    asst_ids = [
        call(base, "POST", "/v1/assistants", {
            "model": "gpt-4o", "name": f"bench {i}", "instructions": "You are a benchmark.",
            "tools": [{"type": "code_interpreter"}], "metadata": {"bench": "yes"},
        })["id"]
        for i in range(assistants)
    ]  # fmt: skip
    thread_ids = [call(base, "POST", "/v1/threads", {})["id"] for _ in range(write_threads)]
    list_thread = call(base, "POST", "/v1/threads", {})["id"]
    for i in range(list_messages):
        call(base, "POST", f"/v1/threads/{list_thread}/messages", {"role": "user", "content": f"#{i} {MESSAGE_TEXT}"})

    def write(name: str, paths: list[str]) -> Path:
        path = root / f"{backend}-{name}.paths"
        path.write_text("\n".join(paths) + "\n")
        return path

    return Seed(
        create_paths=write("create", [f"/v1/threads/{t}/messages" for t in thread_ids]),
        list_paths=write("list", [f"/v1/threads/{list_thread}/messages?limit=20"]),
        retrieve_paths=write("retrieve", [f"/v1/assistants/{a}" for a in asst_ids]),
    )


# ----------------------------------------------------------------------------------------------- wrk


def run_wrk(
    base: str, method: str, paths: Path, body: str, clients: int, seconds: int, cpus: str, timeout: float
) -> dict[str, Any]:
    cmd = [
        "wrk", "-t1", f"-c{clients}", f"-d{max(1, seconds)}s", f"--timeout={timeout:g}s",
        "--latency", "-s", str(LUA), base, "--", method, str(paths), body,
    ]  # fmt: skip
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return dict(json.loads(line.removeprefix("BENCH_RESULT ")))
    raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")


def measure(
    args: argparse.Namespace,
    backend: str,
    server: Server,
    pg: Postgres | None,
    operation: str,
    clients: int,
    seeded: Seed,
) -> Cell:
    if operation == "create-message":
        method, paths, body = "POST", seeded.create_paths, json.dumps({"role": "user", "content": MESSAGE_TEXT})
    elif operation == "list-messages":
        method, paths, body = "GET", seeded.list_paths, ""
    else:
        method, paths, body = "GET", seeded.retrieve_paths, ""
    if args.warmup > 0:
        run_wrk(server.base, method, paths, body, clients, args.warmup, args.wrk_cpus, args.timeout)
    runs = [
        measure_once(args, backend, server, pg, operation, clients, method, paths, body)
        for _ in range(max(1, args.repeat))
    ]
    return max(runs, key=lambda c: c.rps)  # best of N: the run least disturbed by other load


def measure_once(
    args: argparse.Namespace,
    backend: str,
    server: Server,
    pg: Postgres | None,
    operation: str,
    clients: int,
    method: str,
    paths: Path,
    body: str,
) -> Cell:
    if pg is not None:
        pg.pin()  # connections the pool opened during the warm-up
    db_pids = pg.pids() if pg is not None else []
    server_cpus = parse_cpus(args.server_cpus) if args.server_cpus else set()
    srv0, db0, busy0 = cpu_seconds([server.proc.pid]), cpu_seconds(db_pids), busy_seconds(server_cpus)
    t0 = time.monotonic()
    r = run_wrk(server.base, method, paths, body, clients, args.duration, args.wrk_cpus, args.timeout)
    wall = time.monotonic() - t0
    srv_seconds = cpu_seconds([server.proc.pid]) - srv0
    srv_cpu = srv_seconds / wall * 100
    db_cpu = (cpu_seconds(db_pids) - db0) / wall * 100 if pg is not None else None
    other_cpu = None
    if server_cpus:
        busy = (busy_seconds(server_cpus) - busy0) / wall * 100
        # PostgreSQL only counts against the server's CPUs when it is pinned to the same ones.
        same = pg is not None and bool(args.db_cpus) and parse_cpus(args.db_cpus) <= server_cpus
        other_cpu = max(0.0, busy - srv_cpu - ((db_cpu or 0.0) if same else 0.0))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return Cell(
        backend=backend,
        operation=operation,
        clients=clients,
        rps=r["requests"] / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1000,
        p90_ms=r["p90_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        requests=r["requests"],
        errors=errors,
        server_cpu=srv_cpu,
        server_us_per_request=srv_seconds / max(1, r["requests"]) * 1e6,
        db_cpu=db_cpu,
        other_cpu=other_cpu,
    )


# -------------------------------------------------------------------------------------------- output


def print_table(cells: list[Cell], baseline: dict[tuple[str, str, int], dict[str, Any]]) -> None:
    head = f"{'backend':<9} {'operation':<19} {'clients':>7} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} "
    head += f"{'errors':>6} {'srv cpu':>7} {'us/req':>6} {'db cpu':>6} {'other':>6}"
    if baseline:
        head += f" {'rps/base':>8} {'p99/base':>8}"
    print(head)
    print("-" * len(head))
    last = None
    for c in cells:
        if last is not None and (c.backend, c.operation) != last:
            print()
        last = (c.backend, c.operation)
        db = "-" if c.db_cpu is None else f"{c.db_cpu:.0f}%"
        other = "-" if c.other_cpu is None else f"{c.other_cpu:.0f}%"
        line = (
            f"{c.backend:<9} {c.operation:<19} {c.clients:>7} {c.rps:>9.0f} {c.p50_ms:>8.2f} {c.p99_ms:>8.2f} "
            f"{c.errors:>6} {c.server_cpu:>6.0f}% {c.server_us_per_request:>6.0f} {db:>6} {other:>6}"
        )
        b = baseline.get((c.backend, c.operation, c.clients))
        if baseline:
            if b:
                line += f" {c.rps / b['rps']:>7.2f}x {c.p99_ms / b['p99_ms']:>7.2f}x"
            else:
                line += f" {'-':>8} {'-':>8}"
        print(line)


def print_ratios(cells: list[Cell]) -> None:
    by = {(c.backend, c.operation, c.clients): c for c in cells}
    lines = []
    for c in cells:
        if c.backend != "postgres":
            continue
        s = by.get(("sqlite", c.operation, c.clients))
        if s and s.rps:
            lines.append(
                f"  {c.operation:<19} {c.clients:>3} clients: postgres/sqlite rps {c.rps / s.rps:5.2f}x, "
                f"p99 {c.p99_ms / s.p99_ms:5.2f}x"
            )
    if lines:
        print("\nRatios measured in this run:")
        print("\n".join(lines))


def print_targets(cells: list[Cell]) -> None:
    """The issue's targets for the embedded default, as information (a benchmark never fails)."""
    by = {(c.backend, c.operation, c.clients): c for c in cells}
    targets = [("retrieve-assistant", 2000.0), ("create-message", 1000.0)]
    lines = []
    for op, rps in targets:
        c = by.get(("sqlite", op, 16))
        if c is None:
            continue
        met = c.rps >= rps and c.p99_ms < 50
        lines.append(
            f"  sqlite {op:<19} at 16 clients: {c.rps:6.0f} rps (target >= {rps:.0f}), p99 {c.p99_ms:5.1f} ms "
            f"(target < 50): {'met' if met else 'NOT met'}"
        )
    if lines:
        print("\nIssue targets (information only):")
        print("\n".join(lines))


def describe_setup(args: argparse.Namespace) -> str:
    srv = f"CPU {args.server_cpus}" if args.server_cpus else "unpinned"
    wrk = f"CPU {args.wrk_cpus}" if args.wrk_cpus else "unpinned"
    dbc = f"CPU {args.db_cpus}" if args.db_cpus else "unpinned"
    return (
        f"machine: {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()}\n"
        f"pinning (taskset): assistantd on {srv}; PostgreSQL on {dbc}; wrk (1 thread) on {wrk}\n"
        f"each cell: {args.warmup:g}s warm-up (discarded) then {args.duration:g}s measured"
        f"{f', best of {args.repeat}' if args.repeat > 1 else ''}; wrk timeout {args.timeout:g}s; "
        f"one server process per backend, fresh data dir\n"
        f"source: {args.source.resolve()}"
    )


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=6, help="measured whole seconds per cell (default 6)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up whole seconds per cell, discarded (default 1)")
    p.add_argument("--clients", default="1,16,64", help="comma-separated concurrent connections")
    p.add_argument("--backends", default=",".join(BACKENDS), help="sqlite, postgres or both")
    p.add_argument("--operations", default=",".join(OPERATIONS), help="which operations to run")
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for assistantd ('' = unpinned)")
    p.add_argument("--db-cpus", default="0", help="taskset CPU list for PostgreSQL ('' = unpinned)")
    p.add_argument("--wrk-cpus", default="1", help="taskset CPU list for wrk ('' = unpinned)")
    p.add_argument("--timeout", type=float, default=5.0, help="wrk per-request timeout in seconds")
    p.add_argument("--repeat", type=int, default=1, help="measured runs per cell; the best (highest rps) is kept")
    p.add_argument("--source", type=Path, default=REPO, help="checkout whose assistantd/ is benchmarked")
    p.add_argument("--write-threads", type=int, default=64, help="threads that create-message spreads over")
    p.add_argument("--list-size", type=int, default=100, help="messages in the list-messages thread")
    p.add_argument("--assistants", type=int, default=8, help="assistants that retrieve spreads over")
    p.add_argument("--json", type=Path, help="also write the cells to this JSON file")
    p.add_argument("--baseline", type=Path, help="a --json file from an earlier run to compare against")
    p.add_argument("--keep", action="store_true", help="keep the tmp dir (server logs, data)")
    args = p.parse_args(argv)

    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get update && apt-get install -y wrk", file=sys.stderr)
        return 2
    ncpu = os.cpu_count() or 1
    for spec in (args.server_cpus, args.db_cpus, args.wrk_cpus):
        if spec and max(parse_cpus(spec)) >= ncpu:
            print(f"CPU list {spec!r} names a CPU this machine lacks ({ncpu} CPUs)", file=sys.stderr)
            return 2
    if shutil.which("taskset") is None and (args.server_cpus or args.wrk_cpus):
        print("taskset not found: install util-linux or pass empty --server-cpus/--wrk-cpus", file=sys.stderr)
        return 2
    clients = [int(c) for c in args.clients.split(",") if c]
    backends = [b for b in args.backends.split(",") if b]
    operations = [o for o in args.operations.split(",") if o]
    for b in backends:
        if b not in BACKENDS:
            p.error(f"unknown backend {b!r}")
    for o in operations:
        if o not in OPERATIONS:
            p.error(f"unknown operation {o!r}")
    baseline: dict[tuple[str, str, int], dict[str, Any]] = {}
    if args.baseline:
        for c in json.loads(args.baseline.read_text())["cells"]:
            baseline[(c["backend"], c["operation"], c["clients"])] = c

    print(describe_setup(args), flush=True)
    root = Path(tempfile.mkdtemp(prefix="assistantd-bench-"))
    cells: list[Cell] = []
    try:
        for backend in backends:
            for cell in run_backend(args, backend, root, clients, operations):
                cells.append(cell)
                print(
                    f"  {cell.backend} {cell.operation} c={cell.clients}: {cell.rps:.0f} rps, "
                    f"p50 {cell.p50_ms:.2f} ms, p99 {cell.p99_ms:.2f} ms, errors {cell.errors}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print_table(cells, baseline)
    print_ratios(cells)
    print_targets(cells)
    if args.json:
        args.json.write_text(json.dumps({"setup": describe_setup(args), "cells": [asdict(c) for c in cells]}, indent=1))
    return 0


def run_backend(
    args: argparse.Namespace, backend: str, root: Path, clients: list[int], operations: list[str]
) -> Iterator[Cell]:
    pg = None
    server = None
    try:
        url = ""
        if backend == "postgres":
            pg = Postgres(root, parse_cpus(args.db_cpus) if args.db_cpus else None)
            url = pg.uri
        server = Server(backend, root, args.server_cpus, url, source=args.source.resolve())
        print(f"[{backend}] server on {server.base}, seeding...", file=sys.stderr, flush=True)
        seeded = seed(
            server.base,
            root,
            backend,
            write_threads=args.write_threads,
            list_messages=args.list_size,
            assistants=args.assistants,
        )
        for operation in operations:
            for n in clients:
                yield measure(args, backend, server, pg, operation, n, seeded)
    finally:
        if server is not None:
            server.stop()
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    raise SystemExit(main())
