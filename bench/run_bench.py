"""Streamed runs through one assistantd process: overhead over a direct call, and 200/1,000 at once.

Against the scripted OpenAI-compatible upstream (``assistantd.llm.scripted``) with a fixed time to first
token and per-token delay, for each backend (SQLite, PostgreSQL) this measures, in one run of the script:

1. **Overhead.** ``--runs`` sequential streamed runs (``POST /v1/threads/{id}/runs`` with ``stream: true``,
   each on a fresh thread created beforehand), interleaved with the same chat request sent straight to
   the upstream (a streamed chat completion, the body assistantd itself sends). Time to the first text
   (first ``thread.message.delta`` vs first chunk with content) and total time (to the end of the
   response), p50 and p99, and what assistantd adds. Both sides use the same raw asyncio HTTP/1.1
   client (keep-alive, chunked SSE parsed incrementally, every event JSON-decoded and the text checked),
   so the client costs the same on both. A few runs through the official SDK (``runs.stream`` and
   ``chat.completions.create(stream=True)``) are shown for reference.
2. **Concurrency.** For each ``--concurrency`` level, that many threads are created first, that many
   connections opened, then every run is started at once, each streamed on its own connection: errors,
   p50/p99 time to first delta and total, wall time, peak RSS of the server process (``VmHWM``, reset
   before each level through ``/proc/PID/clear_refs``) and its CPU time. The same number of direct
   streams to the upstream is measured beside it, as the floor this machine can do.

The server (and PostgreSQL) run on CPU 0; the upstream and this client on the other CPUs (``--no-pin``
to turn that off). Every case also reports how much of the server's CPU other programs took meanwhile,
since on a shared machine that, more than anything in assistantd, decides the latencies. It prints one
table and is a measurement, never a pass/fail test.

    python bench/run_bench.py                                  # both backends, about 6 minutes
    python bench/run_bench.py --backends sqlite --concurrency 200 --runs 10
    python bench/run_bench.py --server-source /path/to/old/checkout --json before.json
    python bench/run_bench.py --json after.json --baseline before.json
    python bench/run_bench.py --backends sqlite --concurrency 1000 --profile /tmp/spy.svg

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KEY = "sk-bench"  # with no keys configured the server accepts any key on loopback
OVERHEAD_MODEL = "bench-overhead"  # answered by the upstream's default (--ttft-ms/--delay-ms/--tokens)
LOAD_MODEL = "bench-load"  # answered by turns queued through /_script (--load-*)
PROMPT = "Say something."
UPSTREAM_KEEPALIVE_S = 5  # uvicorn's default timeout_keep_alive, which the scripted upstream keeps
# Histograms of the server's /metrics the load rows summarize.
LOOP_LAG = "assistantd_event_loop_lag_seconds"
RUN_WAIT = "assistantd_run_model_wait_seconds"
MODEL_TTFT = "assistantd_model_time_to_first_token_seconds"

# ------------------------------------------------------------------------------------ raw HTTP client


class HTTPError(Exception):
    pass


class Conn:
    """One keep-alive HTTP/1.1 connection: the smallest client that can read a chunked SSE stream."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Conn:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        return self

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str]]:
        """Send a request and read the response head; the body is then read with ``chunks()``."""
        if self.writer is None or self.reader is None or self.reader.at_eof():
            self.close()  # never opened, or the server closed it while idle (keep-alive timeout)
            await self.open()
        assert self.reader is not None and self.writer is not None
        data = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream, application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        self.writer.write(head + data)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        self._headers = headers
        return status, headers

    async def chunks(self) -> AsyncIterator[bytes]:
        assert self.reader is not None
        headers = self._headers
        if "content-length" in headers:
            n = int(headers["content-length"])
            if n:
                yield await self.reader.readexactly(n)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line = await self.reader.readuntil(b"\r\n")
                size = int(line.split(b";", 1)[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                data = await self.reader.readexactly(size + 2)
                yield data[:-2]
        else:
            while data := await self.reader.read(65536):
                yield data
            self.close()
            return
        if headers.get("connection", "").lower() == "close":
            self.close()

    async def json(self, method: str, path: str, body: Any = None) -> Any:
        status, _ = await self.request(method, path, body)
        raw = b"".join([c async for c in self.chunks()])
        if status != 200:
            raise HTTPError(f"{method} {path} answered {status}: {raw[:300]!r}")
        return orjson.loads(raw)


@dataclass
class Stream:
    ok: bool = False
    error: str = ""
    head: float = float("nan")  # seconds from sending the request to the response's head
    ttft: float = float("nan")  # seconds from sending the request to the first text
    total: float = float("nan")  # seconds from sending the request to the end of the response
    deltas: int = 0


async def stream(conn: Conn, path: str, body: dict[str, Any], expected: str, *, run: bool) -> Stream:
    """POST a streamed request and follow it to its end. ``run``: assistantd events, else chat chunks."""
    out = Stream()
    text: list[str] = []
    end = ""
    t0 = time.perf_counter()
    try:
        status, _ = await conn.request("POST", path, body)
        out.head = time.perf_counter() - t0
        if status != 200:
            raw = b"".join([c async for c in conn.chunks()])
            out.error = f"HTTP {status}: {raw[:200]!r}"
            return out
        buf = b""
        async for chunk in conn.chunks():
            buf += chunk
            while (i := buf.find(b"\n\n")) >= 0:
                block, buf = buf[:i], buf[i + 2 :]
                name, data = "", b""
                for line in block.split(b"\n"):
                    if line.startswith(b"event:"):
                        name = line[6:].strip().decode()
                    elif line.startswith(b"data:"):
                        data = line[5:].strip()
                if not data:
                    continue  # a comment (keep-alive)
                if run:
                    if name == "thread.message.delta":
                        piece = orjson.loads(data)["delta"]["content"][0]["text"]["value"]
                    else:
                        if (name.startswith("thread.run.") and name.count(".") == 2) or name == "error":
                            end = name
                            if name in ("thread.run.failed", "error"):
                                doc = orjson.loads(data)
                                failure = doc.get("last_error") or doc.get("error") or {}
                                end += f" ({failure.get('code')}: {str(failure.get('message'))[:160]})"
                        continue
                else:
                    if data == b"[DONE]":
                        end = "[DONE]"
                        continue
                    choices = orjson.loads(data).get("choices") or []
                    piece = (choices[0].get("delta") or {}).get("content") if choices else None
                    if not piece:
                        continue
                if not text:
                    out.ttft = time.perf_counter() - t0
                text.append(piece)
                out.deltas += 1
        out.total = time.perf_counter() - t0
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        conn.close()
        out.error = f"{type(exc).__name__}: {exc}"
        return out
    got = "".join(text)
    if end not in ("thread.run.completed", "[DONE]"):
        out.error = f"stream ended with {end or 'nothing'}"
    elif got != expected:
        out.error = f"wrong text ({len(got)} chars, expected {len(expected)})"
    else:
        out.ok = True
    return out


def run_body(assistant_id: str) -> dict[str, Any]:
    return {"assistant_id": assistant_id, "stream": True}


def chat_body(model: str) -> dict[str, Any]:
    # What assistantd sends upstream for a run on a one-message thread (see llm/openai_compat.py).
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 1.0,
        "top_p": 1.0,
    }


def expected_text(tokens: int) -> str:
    return " ".join(f"w{i}" for i in range(tokens))


# ------------------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}; log:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise SystemExit(f"{proc.args!r} did not listen in {timeout:.0f}s; log:\n{log.read_text()}")


def spawn(cmd: list[str], cpus: str, log: Path, port: int, source: Path = REPO) -> subprocess.Popen[bytes]:
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]  # taskset execs, so the pid is the program's
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    wait_port(port, proc, log)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """CPU time of a process (all threads), or of one of its threads."""
    try:
        stat = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+: writing 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def busy_seconds(cpus: set[int]) -> float:
    """Non-idle time of the given CPUs, from /proc/stat (user+nice+system+irq+softirq+steal)."""
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(x) for x in values]
            total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Env:
    """The processes of one backend's measurement, and where they run."""

    server: subprocess.Popen[bytes]
    upstream: subprocess.Popen[bytes]
    server_cpus: set[int]  # empty when not pinned
    pg: Postgres | None

    @property
    def server_port(self) -> int:
        return int(self.server.port)  # type: ignore[attr-defined]

    @property
    def upstream_port(self) -> int:
        return int(self.upstream.port)  # type: ignore[attr-defined]


class Meter:
    """CPU seconds used during a measurement by the server, PostgreSQL, the upstream, this client, and
    anything else on the server's CPU (other work on the machine that competed with the server)."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.t0 = time.perf_counter()
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float, float, float, float]:
        env = self.env
        db = sum(cpu_seconds(p) for p in env.pg.pids()) if env.pg else 0.0
        busy = busy_seconds(env.server_cpus) if env.server_cpus else 0.0
        pid = env.server.pid
        main = cpu_seconds(pid, thread=pid)  # the event loop's thread; the rest is the database threads
        return cpu_seconds(pid), db, cpu_seconds(env.upstream.pid), time.process_time(), busy, main

    def done(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        srv, db, up, client, busy, main = (b - a for a, b in zip(self.start, self._sample(), strict=True))
        out: dict[str, Any] = {
            "server_cpu_s": srv,
            "server_loop_cpu_s": main,
            "db_cpu_s": db if self.env.pg else None,
            "upstream_cpu_s": up,
            "client_cpu_s": client,
            "others_pct": None,
        }
        if self.env.server_cpus:
            # PostgreSQL is pinned to the server's CPUs, so it is ours, not other work.
            others = busy - srv - db
            out["others_pct"] = max(0.0, others / wall / len(self.env.server_cpus) * 100)
        return out


class Postgres:
    """A throwaway PostgreSQL from the ``pgserver`` package, its processes pinned to ``cpus``."""

    def __init__(self, root: Path, cpus: set[int] | None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

        self.server = pgserver.get_server(root / "pgdata", cleanup_mode="stop")
        self.uri = self.server.get_uri()
        self.postmaster = int(self.server.get_pid() or 0)
        if cpus and self.postmaster:
            # Backends forked later inherit the postmaster's affinity.
            for pid in [self.postmaster, *children_of(self.postmaster)]:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(pid, cpus)

    def pids(self) -> list[int]:
        return [self.postmaster, *children_of(self.postmaster)] if self.postmaster else []

    def stop(self) -> None:
        self.server.cleanup()


def children_of(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def upstream(root: Path, args: argparse.Namespace, cpus: str) -> Iterator[subprocess.Popen[bytes]]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "assistantd.llm.scripted", "--port", str(port),
        "--ttft-ms", str(args.ttft_ms), "--delay-ms", str(args.delay_ms), "--tokens", str(args.tokens),
    ]  # fmt: skip
    proc = spawn(cmd, cpus, root / "upstream.log", port)
    proc.port = port  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        stop(proc)


def _serve_has_flag(source: Path, flag: str) -> bool:
    """Whether the server under test (maybe an older checkout) knows ``flag``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))}
    shown = subprocess.run(
        [sys.executable, "-m", "assistantd", "serve", "--help"], capture_output=True, text=True, env=env, check=False
    )
    return flag in shown.stdout


@contextlib.contextmanager
def assistantd(
    root: Path, backend: str, upstream_port: int, cpus: str, database_url: str, args: argparse.Namespace
) -> Iterator[subprocess.Popen[bytes]]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "assistantd", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(root / f"data-{backend}"), "--upstream-base-url", f"http://127.0.0.1:{upstream_port}/v1",
        "--log-level", args.log_level,
    ]  # fmt: skip
    if database_url:
        cmd += ["--database-url", database_url]
    source = Path(args.server_source).resolve() if args.server_source else REPO
    if _serve_has_flag(source, "--max-connections-per-client"):
        cmd += ["--max-connections-per-client", "0"]  # every stream of the burst comes from this one address
    proc = spawn(cmd, cpus, root / f"server-{backend}.log", port, source)
    proc.port = port  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        stop(proc)


def start_profile(args: argparse.Namespace, backend: str, pid: int) -> subprocess.Popen[bytes] | None:
    # py-spy from PATH, or installed beside this interpreter (a venv's bin/ need not be on PATH)
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not args.profile or not spy:
        return None
    path = Path(args.profile)
    out = path.with_name(f"{path.stem}-{backend}{path.suffix}")
    kind = "raw" if path.suffix == ".txt" else "flamegraph"
    cmd = [spy, "record", "--pid", str(pid), "--rate", str(args.profile_rate), "--format", kind, "--output", str(out)]
    cmd += ["--threads", "--nonblocking"] if args.profile_threads else ["--nonblocking"]
    if args.profile_gil:
        cmd.append("--gil")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the burst starts
    return proc


# ---------------------------------------------------------------------------------------- measuring


def pct(values: list[float], p: float) -> float:
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


@dataclass
class Row:
    backend: str
    # "direct", "assistantd", "sdk direct", "sdk assistantd", "load direct", "load passthrough", "load assistantd"
    case: str
    streams: int
    concurrency: int
    errors: int
    ttft_p50: float  # ms
    ttft_p99: float
    total_p50: float
    total_p99: float
    wall: float | None = None  # s, for the concurrent cases
    peak_rss_mb: float | None = None
    server_cpu_s: float | None = None  # CPU time of the server process (all threads) during the case
    others_pct: float | None = None  # share of the server's CPU taken by other programs meanwhile
    first_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def row(backend: str, case: str, results: list[Stream], concurrency: int, **kw: Any) -> Row:
    errs = [r for r in results if not r.ok]
    out = Row(
        backend=backend,
        case=case,
        streams=len(results),
        concurrency=concurrency,
        errors=len(errs),
        ttft_p50=pct([r.ttft for r in results if r.ok], 50) * 1000,
        ttft_p99=pct([r.ttft for r in results if r.ok], 99) * 1000,
        total_p50=pct([r.total for r in results if r.ok], 50) * 1000,
        total_p99=pct([r.total for r in results if r.ok], 99) * 1000,
        first_error=errs[0].error if errs else "",
        **kw,
    )
    # When the response's head came (for a run: once it was created): what of the first text's wait
    # was before it, and what after.
    out.extra["head_p50"] = pct([r.head for r in results if r.ok], 50) * 1000
    out.extra["head_p99"] = pct([r.head for r in results if r.ok], 99) * 1000
    return out


async def new_threads(port: int, n: int, workers: int = 16) -> list[str]:
    ids: list[str] = []
    body = {"messages": [{"role": "user", "content": PROMPT}]}

    async def worker(count: int) -> None:
        conn = await Conn(port).open()
        try:
            for _ in range(count):
                ids.append((await conn.json("POST", "/v1/threads", body))["id"])
        finally:
            conn.close()

    share = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    await asyncio.gather(*(worker(c) for c in share if c))
    return ids


async def overhead(args: argparse.Namespace, backend: str, env: Env) -> list[Row]:
    server_port, upstream_port = env.server_port, env.upstream_port
    api = await Conn(server_port).open()
    assistant = await api.json("POST", "/v1/assistants", {"model": OVERHEAD_MODEL, "name": "bench"})
    warm = 3
    threads = await new_threads(server_port, args.runs + warm + 2 * args.sdk_runs + 2)
    direct_conn, run_conn = await Conn(upstream_port).open(), await Conn(server_port).open()
    expected = expected_text(args.tokens)
    direct: list[Stream] = []
    runs: list[Stream] = []

    async def one_direct() -> Stream:
        return await stream(direct_conn, "/v1/chat/completions", chat_body(OVERHEAD_MODEL), expected, run=False)

    async def one_run() -> Stream:
        tid = threads.pop()
        return await stream(run_conn, f"/v1/threads/{tid}/runs", run_body(assistant["id"]), expected, run=True)

    for _ in range(warm):
        await one_direct()
        await one_run()
    meter = Meter(env)
    for i in range(args.runs):
        # Alternate which goes first so that neither side always follows the other.
        if i % 2:
            direct.append(await one_direct())
            runs.append(await one_run())
        else:
            runs.append(await one_run())
            direct.append(await one_direct())
    cpu = meter.done()
    for c in (api, direct_conn, run_conn):
        c.close()
    pairs = [(r, d) for r, d in zip(runs, direct, strict=True) if r.ok and d.ok]
    cpu["paired_ttft_added_ms_p50"] = pct([(r.ttft - d.ttft) * 1000 for r, d in pairs], 50)
    cpu["paired_total_ratio_p50"] = pct([r.total / d.total for r, d in pairs], 50)
    rows = [
        row(backend, "direct", direct, 1, others_pct=cpu["others_pct"]),
        row(backend, "assistantd", runs, 1, server_cpu_s=cpu["server_cpu_s"], others_pct=cpu["others_pct"], extra=cpu),
    ]
    if args.sdk_runs:
        rows += await sdk_reference(args, backend, server_port, upstream_port, assistant["id"], threads, expected)
    return rows


async def sdk_reference(
    args: argparse.Namespace,
    backend: str,
    server_port: int,
    upstream_port: int,
    assistant_id: str,
    threads: list[str],
    expected: str,
) -> list[Row]:
    """The official SDK's stream helpers, for reference: what an application sees."""
    try:
        import openai
    except ImportError:
        return []
    ours = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{server_port}/v1", api_key=KEY, max_retries=0)
    theirs = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{upstream_port}/v1", api_key=KEY, max_retries=0)
    direct: list[Stream] = []
    runs: list[Stream] = []

    async def via_runs_stream() -> Stream:
        out, text = Stream(), list[str]()
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the Assistants API is marked deprecated in the SDK
                manager = ours.beta.threads.runs.stream(thread_id=threads.pop(), assistant_id=assistant_id)
            async with manager as events:
                async for event in events:
                    if event.event == "thread.message.delta":
                        if not text:
                            out.ttft = time.perf_counter() - t0
                        blocks: list[Any] = list(event.data.delta.content or [])
                        text.append(blocks[0].text.value if blocks else "")
                    elif event.event.startswith("thread.run.") and event.event.count(".") == 2:
                        out.error = "" if event.event == "thread.run.completed" else event.event
            out.total = time.perf_counter() - t0
            out.ok = not out.error and "".join(text) == expected
        except Exception as exc:
            out.error = f"{type(exc).__name__}: {exc}"
        return out

    async def via_chat_stream() -> Stream:
        out, text = Stream(), list[str]()
        t0 = time.perf_counter()
        try:
            chunks = await theirs.chat.completions.create(
                model=OVERHEAD_MODEL,
                messages=[{"role": "user", "content": PROMPT}],
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    if not text:
                        out.ttft = time.perf_counter() - t0
                    text.append(chunk.choices[0].delta.content)
            out.total = time.perf_counter() - t0
            out.ok = "".join(text) == expected
        except Exception as exc:
            out.error = f"{type(exc).__name__}: {exc}"
        return out

    await via_chat_stream()
    await via_runs_stream()
    for _ in range(args.sdk_runs):
        direct.append(await via_chat_stream())
        runs.append(await via_runs_stream())
    await ours.close()
    await theirs.close()
    return [row(backend, "sdk direct", direct, 1), row(backend, "sdk assistantd", runs, 1)]


async def server_metrics(port: int) -> str:
    conn = await Conn(port).open()
    try:
        status, _ = await conn.request("GET", "/metrics")
        text = b"".join([c async for c in conn.chunks()]).decode()
    finally:
        conn.close()
    return text if status == 200 else ""


def gc_pauses(text: str) -> dict[str, tuple[float, float]] | None:
    """The server's garbage collector passes so far, by generation: (count, seconds), from its /metrics;
    None for a tree without ``assistantd_gc_pause_seconds``."""
    if "assistantd_gc_pause_seconds" not in text:
        return None
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        for part, i in (("_count", 0), ("_sum", 1)):
            head = f"assistantd_gc_pause_seconds{part}{{"
            if line.startswith(head):
                generation = line.split('generation="', 1)[1].split('"', 1)[0]
                out.setdefault(generation, [0.0, 0.0])[i] = float(line.rsplit(" ", 1)[1])
    return {g: (v[0], v[1]) for g, v in out.items()}


def histogram_buckets(text: str, name: str) -> dict[float, float] | None:
    """A histogram of the server's /metrics (the event loop's lag, the runs' wait for their model call, the
    model's time to first token), as cumulative counts by bucket bound (seconds), summed over its labels;
    None for a tree without it."""
    head = f"{name}_bucket{{"
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(head):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            key = float("inf") if bound == "+Inf" else float(bound)
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out or None


def bucket_summary(before: dict[float, float], after: dict[float, float]) -> str:
    """Samples taken between two scrapes, with the bucket bounds their median, 99th percentile and
    largest fall under."""
    during = {b: after[b] - before.get(b, 0.0) for b in sorted(after)}
    total = during.get(float("inf"), 0.0)
    if not total:
        return "no samples"

    def under(q: float) -> str:
        bound = next(b for b, c in during.items() if c >= q * total)
        if bound == float("inf"):
            return f"> {max(b for b in during if b != bound):g} s"
        return f"<= {bound * 1000:g} ms"

    return f"{total:.0f} samples, p50 {under(0.5)}, p99 {under(0.99)}, largest {under(1.0)}"


async def concurrent(args: argparse.Namespace, backend: str, env: Env, n: int) -> list[Row]:
    server_port, upstream_port = env.server_port, env.upstream_port
    tokens = args.load_tokens
    turn = {
        "chunks": [(" " if i else "") + f"w{i}" for i in range(tokens)],
        "ttft_ms": args.load_ttft_ms,
        "delay_ms": args.load_delay_ms,
    }
    expected = expected_text(tokens)
    control = await Conn(upstream_port).open()
    api = await Conn(server_port).open()
    assistant = await api.json("POST", "/v1/assistants", {"model": LOAD_MODEL, "name": "bench load"})
    api.close()

    async def burst(port: int, path_body: list[tuple[str, dict[str, Any]]], run: bool) -> tuple[list[Stream], float]:
        # Both sides script their turns the same way; assistantd's go through it to the upstream.
        await control.json("POST", "/_script", {"model": LOAD_MODEL, "turns": [turn] * len(path_body)})
        conns: list[Conn] = []
        sem = asyncio.Semaphore(128)

        async def opened() -> Conn:
            async with sem:
                return await Conn(port).open()

        conns = list(await asyncio.gather(*(opened() for _ in path_body)))
        gate = asyncio.Event()

        async def one(conn: Conn, path: str, body: dict[str, Any]) -> Stream:
            await gate.wait()
            try:
                async with asyncio.timeout(args.stream_timeout):
                    return await stream(conn, path, body, expected, run=run)
            except TimeoutError:
                return Stream(error=f"no end within {args.stream_timeout:g}s")
            finally:
                conn.close()

        tasks = [asyncio.create_task(one(c, p, b)) for c, (p, b) in zip(conns, path_body, strict=True)]
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        gate.set()
        results = list(await asyncio.gather(*tasks))
        return results, time.perf_counter() - t0

    rows = []
    chat = [("/v1/chat/completions", chat_body(LOAD_MODEL))] * n

    async def through_server(case: str, path_body: list[tuple[str, dict[str, Any]]], run: bool) -> Row:
        if args.warm_upstream:
            # An unmeasured pass-through burst just before: the server's upstream pool then holds n open
            # connections (for 5 s), as under steady load, instead of opening them during the burst.
            await burst(server_port, chat, run=False)
        pid = env.server.pid
        reset = reset_peak_rss(pid)
        rss0 = status_kb(pid, "VmRSS")
        spy = start_profile(args, f"{backend}-{case.split()[-1]}", pid) if n == max(args.concurrency) else None
        scraped = await server_metrics(server_port)
        gc_before, lag_before = gc_pauses(scraped), histogram_buckets(scraped, LOOP_LAG)
        wait_before, model_before = histogram_buckets(scraped, RUN_WAIT), histogram_buckets(scraped, MODEL_TTFT)
        meter = Meter(env)
        results, wall = await burst(server_port, path_body, run=run)
        cpu = meter.done()
        if spy is not None:
            stop(spy)
        scraped = await server_metrics(server_port)
        gc_after, lag_after = gc_pauses(scraped), histogram_buckets(scraped, LOOP_LAG)
        if lag_before is not None and lag_after is not None:
            cpu["loop_lag"] = bucket_summary(lag_before, lag_after)
        wait_after, model_after = histogram_buckets(scraped, RUN_WAIT), histogram_buckets(scraped, MODEL_TTFT)
        if run and wait_after is not None:
            cpu["model_wait"] = bucket_summary(wait_before or {}, wait_after)
        if run and model_after is not None:
            cpu["model_ttft"] = bucket_summary(model_before or {}, model_after)
        if gc_before is not None and gc_after is not None:
            # Passes and seconds during the burst (the scrape between them is a few ms of its own).
            cpu["gc"] = {
                g: (c - gc_before.get(g, (0, 0))[0], t - gc_before.get(g, (0, 0))[1]) for g, (c, t) in gc_after.items()
            }
        return row(
            backend,
            case,
            results,
            n,
            wall=wall,
            peak_rss_mb=status_kb(pid, "VmHWM") / 1024,
            server_cpu_s=cpu["server_cpu_s"],
            others_pct=cpu["others_pct"],
            extra={**cpu, "rss_before_mb": rss0 / 1024, "peak_reset": reset},
        )

    # Each round is a direct burst and, right after it, the same burst through the server: on a shared
    # machine both vary from one minute to the next, so a ratio is only taken within a round.
    for i in range(args.repeat):
        threads = await new_threads(server_port, n) if "runs" in args.target else []  # a run's thread is new
        meter = Meter(env)
        direct, wall = await burst(upstream_port, chat, run=False)
        cpu = meter.done()
        cpu["round"] = i + 1
        rows.append(row(backend, "load direct", direct, n, wall=wall, others_pct=cpu["others_pct"], extra=cpu))
        if "passthrough" in args.target:
            # The floor of the stack: the same chat request through the server's own pass-through (same HTTP
            # server and upstream client, no run engine, no database).
            rows.append(await through_server("load passthrough", chat, run=False))
            rows[-1].extra["round"] = i + 1
        if "runs" in args.target:
            if "passthrough" in args.target and not args.warm_upstream:
                # The pass-through burst left the server a pool of open upstream connections; the runs would
                # start on them warm. The upstream closes idle ones after 5 s (uvicorn's keep-alive timeout),
                # so both bursts start cold.
                await asyncio.sleep(UPSTREAM_KEEPALIVE_S + 1)
            body = run_body(assistant["id"])
            paths = [(f"/v1/threads/{t}/runs", body) for t in threads]
            rows.append(await through_server("load assistantd", paths, True))
            rows[-1].extra["round"] = i + 1
    control.close()
    return rows


# -------------------------------------------------------------------------------------------- output


def fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None or v != v else format(v, spec)


def cpu_per_stream_ms(r: Row | dict[str, Any]) -> float | None:
    get = r.get if isinstance(r, dict) else lambda k: getattr(r, k)
    cpu, n = get("server_cpu_s"), get("streams")
    return None if cpu is None or not n else cpu / n * 1000


def print_table(rows: list[Row], baseline: dict[tuple[str, str, int], dict[str, Any]]) -> None:
    head = (
        f"{'backend':<8} {'case':<16} {'conc':>5} {'n':>5} {'err':>4} {'ttft p50':>9} {'ttft p99':>9} "
        f"{'total p50':>9} {'total p99':>9} {'wall s':>7} {'peak RSS':>8} {'srv cpu':>7} {'ms/run':>6} {'others':>6}"
    )
    if baseline:
        head += f" | {'was ttft50':>10} {'tot50':>7} {'wall':>6} {'RSS':>5} {'ms/run':>6}"
    print(head)
    print("-" * len(head))
    last = None
    for r in rows:
        group = (r.backend, r.concurrency > 1)
        if last is not None and group != last:
            print()
        last = group
        line = (
            f"{r.backend:<8} {r.case:<16} {r.concurrency:>5} {r.streams:>5} {r.errors:>4} {fmt(r.ttft_p50):>9} "
            f"{fmt(r.ttft_p99):>9} {fmt(r.total_p50):>9} {fmt(r.total_p99):>9} {fmt(r.wall, '.2f'):>7} "
            f"{fmt(r.peak_rss_mb, '.0f') + (' MB' if r.peak_rss_mb else ''):>8} "
            f"{fmt(r.server_cpu_s, '.1f') + ('s' if r.server_cpu_s is not None else ''):>7} "
            f"{fmt(cpu_per_stream_ms(r), '.2f'):>6} "
            f"{fmt(r.others_pct, '.0f') + ('%' if r.others_pct is not None else ''):>6}"
        )
        if baseline:
            b = baseline.get((r.backend, r.case, r.concurrency))
            if b:
                line += (
                    f" | {fmt(b['ttft_p50']):>10} {fmt(b['total_p50'], '.0f'):>7} {fmt(b.get('wall'), '.2f'):>6} "
                    f"{fmt(b.get('peak_rss_mb'), '.0f'):>5} {fmt(cpu_per_stream_ms(b), '.2f'):>6}"
                )
        print(line)
    print(
        "\nttft: request sent to first text (thread.message.delta / first chunk with content); total: to the end "
        "of the response;\nsrv cpu: CPU time of the server process during the case (all threads), ms/run: the "
        "same per stream; others: share of\nthe server's CPU that other programs on the machine used meanwhile "
        "(high values make every latency here worse)."
    )
    errors = [r for r in rows if r.first_error]
    for r in errors:
        print(f"  {r.backend} {r.case} x{r.concurrency}: {r.errors} errors, first: {r.first_error}")


def print_overhead(rows: list[Row], args: argparse.Namespace) -> None:
    by = {(r.backend, r.case, r.concurrency): r for r in rows}
    lines = []
    for backend in args.backends:
        for prefix in ("", "sdk "):
            d, a = by.get((backend, prefix + "direct", 1)), by.get((backend, prefix + "assistantd", 1))
            if not d or not a:
                continue
            lines.append(
                f"  {backend:<8} {(prefix or 'raw ') + 'client':<10} added to first text: p50 "
                f"{a.ttft_p50 - d.ttft_p50:+6.1f} ms, p99 {a.ttft_p99 - d.ttft_p99:+6.1f} ms (target p50 <= 10 ms); "
                f"total: p50 {a.total_p50 / d.total_p50:5.3f}x, p99 {a.total_p99 / d.total_p99:5.3f}x "
                f"(target <= 1.05x)"
            )
            if "paired_ttft_added_ms_p50" in a.extra:
                lines.append(
                    f"  {'':<8} {'':<10} median of the {args.runs} back-to-back pairs: first text "
                    f"{a.extra['paired_ttft_added_ms_p50']:+.1f} ms, total {a.extra['paired_total_ratio_p50']:.3f}x"
                )
        for n in args.concurrency:
            rounds: dict[str, list[Row]] = {}
            for r in rows:
                if r.backend == backend and r.concurrency == n and r.case.startswith("load "):
                    rounds.setdefault(r.case, []).append(r)
            for case, what in (("load passthrough", "pass-through"), ("load assistantd", "runs")):
                ratios = []
                for d, a in zip(rounds.get("load direct", []), rounds.get(case, []), strict=False):
                    ratio = a.ttft_p50 / d.ttft_p50 if d.ttft_p50 == d.ttft_p50 else float("nan")
                    ratios.append((ratio, a, d))
                    lines += _load_lines(backend, n, what, a, d, ratio, args)
                if len(ratios) > 1:
                    lines.append(_rounds_line(backend, n, what, ratios))
    if lines:
        print("\nMeasured in this run (information, not pass/fail):")
        print("\n".join(lines))


def _rounds_line(backend: str, n: int, what: str, ratios: list[tuple[float, Row, Row]]) -> str:
    """The median of the rounds' ratios (and of their figures), with every round's ratio in order."""
    each = ", ".join(f"{r:.2f}x" for r, _, _ in ratios)
    cpu = [c for _, a, _ in ratios if (c := cpu_per_stream_ms(a)) is not None]
    return (
        f"  {backend:<8} {n:>5} concurrent {what}, median of {len(ratios)} rounds: first text p50 "
        f"{statistics.median(r for r, _, _ in ratios):.2f}x direct (rounds in order: {each}); "
        f"{statistics.median(a.ttft_p50 for _, a, _ in ratios):.1f} ms against "
        f"{statistics.median(d.ttft_p50 for _, _, d in ratios):.1f} ms; "
        f"{statistics.median(cpu) if cpu else float('nan'):.2f} ms server CPU per stream"
    )


def _load_lines(backend: str, n: int, what: str, a: Row, d: Row, ratio: float, args: argparse.Namespace) -> list[str]:
    lines = []
    label = f", round {a.extra['round']}" if args.repeat > 1 and "round" in a.extra else ""
    lines.append(
        f"  {backend:<8} {n:>5} concurrent {what}{label}: {a.errors} errors (target 0), "
        f"first text p50 {fmt(a.ttft_p50)} ms = {fmt(ratio, '.2f')}x direct "
        f"({fmt(d.ttft_p50 if d else None)} ms), p99 {fmt(a.ttft_p99)} ms "
        f"(ideal {args.load_ttft_ms:g} ms), {fmt(cpu_per_stream_ms(a), '.2f')} ms server CPU per "
        f"stream ({fmt(a.extra.get('server_loop_cpu_s', 0) / a.streams * 1000, '.2f')} in the event "
        f"loop's thread), peak RSS {fmt(a.peak_rss_mb, '.0f')} MB; response head p50 "
        f"{fmt(a.extra.get('head_p50'))} ms, p99 {fmt(a.extra.get('head_p99'))} ms"
    )
    if a.extra.get("gc"):
        passes = ", ".join(f"gen {g}: {c:.0f} in {t * 1000:.0f} ms" for g, (c, t) in sorted(a.extra["gc"].items()))
        lines.append(f"  {'':<8} {'':>5} garbage collector passes during the burst: {passes}")
    if a.extra.get("loop_lag"):
        lines.append(f"  {'':<8} {'':>5} event loop lag during the burst: {a.extra['loop_lag']}")
    if a.extra.get("model_wait"):
        lines.append(
            f"  {'':<8} {'':>5} the runs' wait from their create to their model call going out "
            f"(the server's side): {a.extra['model_wait']}"
        )
    if a.extra.get("model_ttft"):
        lines.append(
            f"  {'':<8} {'':>5} ... then from the call to its first token reaching the run "
            f"(the upstream's TTFT and the server's reading): {a.extra['model_ttft']}"
        )
    return lines


# ---------------------------------------------------------------------------------------------- main


async def bench_backend(
    args: argparse.Namespace, root: Path, backend: str, up: subprocess.Popen[bytes], server_cpus: str
) -> list[Row]:
    pg = None
    url = ""
    cpus = {int(c) for c in server_cpus.split(",")} if server_cpus else set()
    if backend == "postgres":
        pg = Postgres(root, cpus or None)
        url = pg.uri
    try:
        with assistantd(root, backend, up.port, server_cpus, url, args) as server:  # type: ignore[attr-defined]
            env = Env(server=server, upstream=up, server_cpus=cpus, pg=pg)
            rows = await overhead(args, backend, env)
            for n in args.concurrency:
                rows += await concurrent(args, backend, env, n)
            return rows
    finally:
        if pg is not None:
            pg.stop()


async def amain(args: argparse.Namespace) -> list[Row]:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = client_cpus = ""
    if args.pin and len(cpus) >= 2:
        server_cpus = str(cpus[0])
        client_cpus = ",".join(str(c) for c in cpus[1:])
        os.sched_setaffinity(0, {int(c) for c in client_cpus.split(",")})
    root = Path(tempfile.mkdtemp(prefix="assistantd-run-bench-"))
    print(
        f"# server{' + PostgreSQL' if 'postgres' in args.backends else ''} on CPU {server_cpus or 'any'}; "
        f"upstream + client on CPU {client_cpus or 'any'}; logs in {root}",
        file=sys.stderr,
    )
    rows: list[Row] = []
    try:
        with upstream(root, args, client_cpus) as up:
            for backend in args.backends:
                print(f"# {backend} ...", file=sys.stderr)
                rows += await bench_backend(args, root, backend, up, server_cpus)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    p.add_argument("--runs", type=int, default=30, help="sequential runs per side for the overhead")
    p.add_argument("--ttft-ms", type=float, default=200.0, help="upstream time to first token (overhead)")
    p.add_argument("--delay-ms", type=float, default=5.0, help="upstream delay between tokens (overhead)")
    p.add_argument("--tokens", type=int, default=100, help="tokens per answer (overhead)")
    p.add_argument("--sdk-runs", type=int, default=3, help="runs through the official SDK, for reference")
    p.add_argument("--concurrency", default="200,1000", help="comma-separated concurrent stream counts")
    p.add_argument("--load-ttft-ms", type=float, default=200.0, help="upstream time to first token (load)")
    p.add_argument("--load-delay-ms", type=float, default=50.0, help="upstream delay between tokens (load)")
    p.add_argument("--load-tokens", type=int, default=100, help="tokens per answer (load)")
    p.add_argument(
        "--target",
        default="runs",
        help="comma-separated, what the concurrent streams go through on the server: runs (streamed runs), "
        "passthrough (the same chat request as the direct burst, through POST /v1/chat/completions)",
    )
    p.add_argument(
        "--warm-upstream",
        action="store_true",
        help="before each burst through the server, an unmeasured pass-through burst of as many streams, so "
        "the server's upstream connections are open (as under steady load) rather than opened during the burst",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds at each load level, each a direct burst and the same burst through the server right after; "
        "with more than one, the median of the rounds' ratios is printed too",
    )
    p.add_argument("--stream-timeout", type=float, default=300.0, help="seconds before a stream is an error")
    p.add_argument("--log-level", default="info", help="the server's log level (its default is info)")
    p.add_argument(
        "--server-source",
        default="",
        help="run the server from this checkout (a dir holding assistantd/), e.g. a baseline; default: this repo",
    )
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server and client to CPUs")
    p.add_argument("--keep", action="store_true", help="keep the temporary dir (logs, databases)")
    p.add_argument(
        "--profile",
        default="",
        help="record the server with py-spy during the largest load level, "
        "into this file (.svg flame graph, or .txt for collapsed stacks)",
    )
    p.add_argument("--profile-threads", action="store_true", help="py-spy: one stack tree per thread")
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy: samples a second")
    p.add_argument(
        "--profile-gil",
        action="store_true",
        help="py-spy: only samples of the thread holding the GIL (what limits one process on one core)",
    )
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--baseline", help="--json file(s) from earlier runs (comma-separated), shown beside this one")
    args = p.parse_args()
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.target = [t.strip() for t in args.target.split(",") if t.strip()]
    if not args.target or set(args.target) - {"runs", "passthrough"}:
        p.error("--target takes runs, passthrough or both")

    # 1,000 streams need 2,000+ descriptors here (client sockets) and as many in the server.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # inherited by the servers we start

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    rows = runner(amain(args))

    baseline: dict[tuple[str, str, int], dict[str, Any]] = {}
    for path in filter(None, (args.baseline or "").split(",")):
        for r in json.loads(Path(path).read_text())["rows"]:
            baseline[(r["backend"], r["case"], r["concurrency"])] = r
    print(
        f"\nstreamed runs: overhead {args.runs} sequential runs per side, upstream ttft {args.ttft_ms:g} ms, "
        f"{args.delay_ms:g} ms/token, {args.tokens} tokens; load upstream ttft {args.load_ttft_ms:g} ms, "
        f"{args.load_delay_ms:g} ms/token, {args.load_tokens} tokens. Times in ms unless marked.\n"
    )
    print_table(rows, baseline)
    print_overhead(rows, args)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": {k: v for k, v in vars(args).items()}, "rows": [asdict(r) for r in rows]}, indent=1)
        )


if __name__ == "__main__":
    main()
