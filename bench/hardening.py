"""Replay every attack of issue 9 against a running assistantd and print what each one cost the others.

For each attack this starts (or reuses) one ``assistantd serve`` on a fresh data dir, with the scripted
upstream (``assistantd.llm.scripted``) for ordinary models and a small misbehaving upstream of its own
(models ``fault-*``) for the upstream faults, keeps a background client doing cheap API calls
(``GET /v1/assistants?limit=1``) the whole time, and prints per attack:

- the server's peak RSS (``VmRSS`` sampled from /proc every 50 ms) and that of its whole process tree
  (sandboxes, workers), and the server's CPU seconds during the attack;
- the background client's p50/p99 latency and its failed calls during the attack;
- whether the attack was contained (the expected error or status, in bounded time), and what was seen;

next to the same figures over a window with no attack. Hostile files are built here, in memory; none is
shipped. Each attack is bounded (seconds to tens of seconds); a server whose RSS passes ``--rss-limit-mb``
is killed (the attack then counts as not contained) and the next attack gets a fresh one, as does any
attack that was not contained, so one failure does not spill into the next figures. The whole run takes
about 6-10 minutes. It is a measurement, never a pass/fail test: on a branch where a defence is missing
the attack shows as NOT contained, and the script goes on.

    python bench/hardening.py                      # every attack
    python bench/hardening.py --only slowloris,deep_json
    python bench/hardening.py --server-arg=--code-interpreter-memory-mb=512 --json out.json

Needs bubblewrap for the code interpreter attacks (they report the sandbox error otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY = sys.executable
KEY = "sk-bench-hardening"  # a keyless loopback server accepts any key
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


# --- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class Upstream:
    """The scripted Chat Completions server, in its own process."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log = (workdir / "scripted.log").open("ab")
        self.proc = subprocess.Popen(
            [PY, "-m", "assistantd.llm.scripted", "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=server_env(),
        )  # fmt: skip
        self.http = httpx.Client(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if self.http.get(f"{self.url}/_requests", params={"model": "-"}).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("the scripted upstream did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, model: str, *turns: dict[str, Any]) -> None:
        self.http.post(f"{self.url}/_script", json={"model": model, "turns": list(turns)}).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()


class FaultUpstream:
    """An OpenAI-compatible endpoint that misbehaves as real ones do, chosen by model name:

    ``fault-trickle`` a token a second, forever; ``fault-comments`` only SSE comments, forever;
    ``fault-html`` a 200 that is an HTML page; ``fault-json`` a 200 of plain JSON, not a stream;
    ``fault-nodone`` one chunk, then the end, without ``[DONE]`` or a finish_reason.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="fault-upstream")
        self.thread.start()
        self.ready.wait(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self.ready.set()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(server.serve_forever())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            found = re.search(rb"(?i)content-length:\s*(\d+)", head)
            length = int(found.group(1)) if found else 0
            body = json.loads(await reader.readexactly(length)) if length else {}
            if head.startswith(b"GET"):
                await self._send(writer, "200 OK", "application/json", b'{"object":"list","data":[]}')
                return
            model = str(body.get("model", ""))
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": {"content": "tick "}, "finish_reason": None}]}  # fmt: skip
            data = b"data: " + json.dumps(chunk).encode() + b"\n\n"
            if model == "fault-html":
                await self._send(writer, "200 OK", "text/html", b"<html><body>502 Bad Gateway</body></html>")
            elif model == "fault-json":
                await self._send(writer, "200 OK", "application/json", b'{"status": "ok"}')
            elif model == "fault-nodone":
                await self._send(writer, "200 OK", "text/event-stream", data)
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                )
                piece = data if model == "fault-trickle" else b": keep-alive\n\n"
                for _ in range(600):  # ten minutes at most, past any bench window
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
                    await asyncio.sleep(1.0)
        except Exception:
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: str, ctype: str, body: bytes) -> None:
        writer.write(
            f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n".encode() + body
        )
        await writer.drain()


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANTD_") and k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Server:
    """``assistantd serve`` on a fresh data dir, with both upstreams configured."""

    def __init__(self, workdir: Path, upstream: Upstream, faults: FaultUpstream, extra: list[str]) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="srv-", dir=workdir))
        self.port = free_port()
        config = self.workdir / "assistantd.toml"
        config.write_text(
            f'[[upstreams]]\nname = "faults"\nbase_url = "{faults.base_url}"\nmodels = ["fault-*"]\n\n'
            f'[[upstreams]]\nname = "scripted"\nbase_url = "{upstream.url}/v1"\nmodels = ["*"]\n'
        )
        self.log_path = self.workdir / "server.log"
        self.args = list(extra)
        args = [PY, "-m", "assistantd", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.workdir / "data"), "--config", str(config),
                "--code-interpreter-pool-size", "0", "--upstream-timeout", "30", *extra]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=server_env())  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"assistantd did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                for pid in reversed(descendants(self.proc.pid)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        for pid in reversed(descendants(self.proc.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()


# --- measuring ----------------------------------------------------------------------------------


class Monitor:
    """Background client latencies and server memory/CPU samples, with timestamps."""

    def __init__(self, rss_limit_mb: float) -> None:
        self.rss_limit_mb = rss_limit_mb
        self.server: Server | None = None
        self.latencies: list[tuple[float, float, bool]] = []  # (start, seconds, ok)
        self.samples: list[tuple[float, float, float]] = []  # (time, server RSS, tree RSS)
        self.killed_at: float | None = None
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, daemon=True, name="bg-client"),
            threading.Thread(target=self._sampler, daemon=True, name="sampler"),
        ]
        for t in self._threads:
            t.start()

    def _client(self) -> None:
        http = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {KEY}"})
        while not self._stop.is_set():
            server = self.server
            if server is None or not server.alive():
                time.sleep(0.05)
                continue
            start = time.monotonic()
            ok = False
            with contextlib.suppress(httpx.HTTPError):
                ok = http.get(f"{server.url}/v1/assistants", params={"limit": 1}).status_code == 200
            self.latencies.append((start, time.monotonic() - start, ok))
            time.sleep(0.02)  # about 40 calls a second: a steady, light neighbour

    def _sampler(self) -> None:
        tick = 0
        tree: list[int] = []
        while not self._stop.wait(0.05):
            server = self.server
            if server is None or not server.alive():
                continue
            if tick % 10 == 0:
                tree = descendants(server.proc.pid)  # the tree changes slowly; walking /proc is not free
            tick += 1
            own = rss_mb(server.proc.pid)
            total = sum(rss_mb(p) for p in tree)
            self.samples.append((time.monotonic(), own, total))
            if own > self.rss_limit_mb and self.killed_at is None:
                self.killed_at = own
                server.kill()

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Row:
    attack: str
    contained: bool | None
    detail: str
    seconds: float = 0.0
    rss_mb: float = 0.0
    tree_mb: float = 0.0
    cpu_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    calls: int = 0
    failed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def window_figures(mon: Monitor, t0: float, t1: float) -> dict[str, Any]:
    lat = [(s, ok) for start, s, ok in list(mon.latencies) if t0 <= start <= t1]
    secs = sorted(s for s, _ in lat)
    samples = list(mon.samples)
    mem = [(own, tree) for t, own, tree in samples if t0 <= t <= t1]
    if not mem:
        mem = [(own, tree) for t, own, tree in samples if t <= t1][-1:]  # a window shorter than a sample

    def pct(q: float) -> float:
        if not secs:
            return 0.0
        return secs[min(len(secs) - 1, int(q * len(secs)))] * 1000

    return {
        "p50_ms": statistics.median(secs) * 1000 if secs else 0.0,
        "p99_ms": pct(0.99),
        "calls": len(lat),
        "failed": sum(1 for _, ok in lat if not ok),
        "rss_mb": max((m[0] for m in mem), default=0.0),
        "tree_mb": max((m[1] for m in mem), default=0.0),
    }


# --- hostile inputs, built here -----------------------------------------------------------------


def zip_bomb_docx(unpacked_mb: int) -> bytes:
    """A valid .docx whose word/document.xml unpacks to ``unpacked_mb`` MB of paragraphs."""
    import docx  # python-docx, a dependency of the server

    buf = io.BytesIO()
    docx.Document().save(buf)
    source = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    para = b"<w:p><w:r><w:t>" + b"bomb " * 40 + b"</w:t></w:r></w:p>"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for item in source.infolist():
            if item.filename != "word/document.xml":
                zf.writestr(item, source.read(item))
                continue
            original = source.read(item)
            head, _, tail = original.partition(b"<w:body>")
            with zf.open(item.filename, "w", force_zip64=True) as fh:
                fh.write(head + b"<w:body>")
                block = para * 4096
                for _ in range(unpacked_mb * 2**20 // len(block)):
                    fh.write(block)
                fh.write(b"</w:body>" + tail.split(b"</w:body>", 1)[-1])
    return out.getvalue()


def many_shapes_pptx(shapes: int) -> bytes:
    """A .pptx with one slide holding ``shapes`` text boxes (the XML repeated, not built shape by shape)."""
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[6])
    slide.shapes.add_textbox(Inches(1), Inches(1), Inches(2), Inches(1)).text_frame.text = "shape"
    buf = io.BytesIO()
    prs.save(buf)
    source = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "ppt/slides/slide1.xml":
                match = re.search(rb"<p:sp>.*?</p:sp>", data, re.S)
                assert match is not None
                sp = match.group(0)
                copies = b"".join(
                    re.sub(rb'id="\d+"', b'id="%d"' % (i + 10), sp, count=1) for i in range(shapes)
                )
                data = data.replace(sp, copies)
            zf.writestr(item, data)
    return out.getvalue()


def ten_million_line_csv(lines: int) -> bytes:
    return b"id,v\n" + b"1,2\n" * lines


def quadratic_html(size: int) -> bytes:
    # No '>' anywhere: Python's html.parser rescans the unfinished tag from each '<', quadratically.
    return b"<a" * (size // 2)


def nested_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


# --- the attacks --------------------------------------------------------------------------------


@dataclass
class Ctx:
    server: Server
    upstream: Upstream
    faults: FaultUpstream
    http: httpx.Client
    workdir: Path
    help_text: str

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self.http.request(method, f"{self.server.url}/v1{path}", **kw)
        except httpx.TransportError:
            if method != "GET":
                raise
            # A keep-alive connection the server closed as we reused it (likelier while it is starved).
            return self.http.request(method, f"{self.server.url}/v1{path}", **kw)


Attack = Callable[[Ctx], tuple[bool, str]]
ATTACKS: dict[str, tuple[str, Attack]] = {}
# Attacks measured on a server of their own, started with these extra `serve` arguments.
OWN_SERVER: dict[str, list[str]] = {}


def attack(
    name: str, title: str, *, repeat_for: float = 0.0, server_args: list[str] | None = None
) -> Callable[[Attack], Attack]:
    """Register an attack; a quick one is repeated for ``repeat_for`` seconds, so the figures beside it
    describe a sustained attack (contained only if every repetition was). With ``server_args`` it runs,
    and is measured, on a fresh server started with them."""

    def register(fn: Attack) -> Attack:
        def sustained(ctx: Ctx) -> tuple[bool, str]:
            end = time.monotonic() + repeat_for
            count, all_ok, detail = 0, True, ""
            while True:
                ok, detail = fn(ctx)
                count, all_ok = count + 1, all_ok and ok
                if time.monotonic() >= end or not all_ok:
                    break
            return all_ok, detail + (f" (x{count})" if count > 1 else "")

        ATTACKS[name] = (title, sustained if repeat_for else fn)
        if server_args is not None:
            OWN_SERVER[name] = server_args
        return fn

    return register


BYSTANDER_SECONDS = 10.0


def _ingest(ctx: Ctx, name: str, data: bytes, window: float) -> tuple[bool, str]:
    up = ctx.api("POST", "/files", files={"file": (name, data)}, data={"purpose": "assistants"}, timeout=120)
    if up.status_code != 200:
        return up.status_code in (400, 413), f"upload refused: {up.status_code} {up.text[:120]}"
    file_id = up.json()["id"]
    store = ctx.api("POST", "/vector_stores", json={"name": "hostile", "file_ids": [file_id]}).json()
    # Another client's tiny file, submitted right after: it must not wait behind the hostile one.
    tiny = ctx.api("POST", "/files", files={"file": ("tiny.txt", b"twelve bytes")}, data={"purpose": "assistants"})
    other = ctx.api("POST", "/vector_stores", json={"name": "bystander", "file_ids": [tiny.json()["id"]]}).json()
    started = time.monotonic()
    tiny_done: float | None = None
    status, error = "in_progress", None
    while time.monotonic() - started < window and ctx.server.alive():
        if tiny_done is None:
            o = ctx.api("GET", f"/vector_stores/{other['id']}/files/{tiny.json()['id']}")
            if o.status_code == 200 and o.json()["status"] != "in_progress":
                tiny_done = time.monotonic() - started
        r = ctx.api("GET", f"/vector_stores/{store['id']}/files/{file_id}")
        if r.status_code == 200:
            status, error = r.json()["status"], r.json().get("last_error")
            if status != "in_progress" and tiny_done is not None:
                break
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    tiny_note = f"bystander file ready in {tiny_done:.1f} s" if tiny_done is not None else "bystander file not ready"
    # The bystander must not wait behind the hostile file (a few seconds of its own work at most).
    unhindered = tiny_done is not None and tiny_done < BYSTANDER_SECONDS
    if status == "failed":
        code = (error or {}).get("code")
        message = (error or {}).get("message", "")[:90]
        return code == "invalid_file" and unhindered, f"failed ({code}: {message}) in {elapsed:.1f} s; {tiny_note}"
    if status == "completed":
        return unhindered, f"completed in {elapsed:.1f} s; {tiny_note}"
    return False, f"still {status} after {elapsed:.0f} s; {tiny_note}"


@attack("zip_bomb_docx", "zip-bomb .docx (200 MB document.xml)")
def _zip_bomb(ctx: Ctx) -> tuple[bool, str]:
    data = zip_bomb_docx(200)
    return _ingest(ctx, "bomb.docx", data, window=45)


@attack("pptx_100k_shapes", "pptx with 100k shapes")
def _pptx(ctx: Ctx) -> tuple[bool, str]:
    return _ingest(ctx, "shapes.pptx", many_shapes_pptx(100_000), window=45)


@attack("csv_10m_lines", "CSV of 10M short lines")
def _csv(ctx: Ctx) -> tuple[bool, str]:
    return _ingest(ctx, "lines.csv", ten_million_line_csv(10_000_000), window=45)


# On a keyword-only server: the parser is what this attack held for minutes. With the local model on, the
# 250k one-character tokens this markup keeps as text are then embedded like any 250k-token file (about a
# minute of one core on this machine, off the bystanders' path), which is the cost of a file that size,
# bounded by ingest_max_chars and ingest_workers, and not what this attack is about.
@attack("quadratic_html", "250 KB of '<a<a<a' HTML (keyword-only server)", server_args=["--no-local-embeddings"])
def _html(ctx: Ctx) -> tuple[bool, str]:
    return _ingest(ctx, "slow.html", quadratic_html(250_000), window=40)


@attack("slowloris", "20 connections trickling header bytes (20 s)")
def _slowloris(ctx: Ctx) -> tuple[bool, str]:
    socks = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", ctx.server.port), timeout=5)
        s.sendall(b"GET /v1/assistants HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        socks.append(s)
    cut, answers = 0, set()
    end = time.monotonic() + 20
    while time.monotonic() < end and socks:
        for s in list(socks):
            try:
                s.sendall(b"a" * 512)  # 25 KB/s per connection, never a whole head
            except OSError:
                cut += 1
                socks.remove(s)
                with contextlib.suppress(OSError):
                    s.settimeout(0.5)
                    head = s.recv(64)
                    if head:
                        answers.add(head.split(b"\r\n")[0].decode(errors="replace"))
                s.close()
        time.sleep(0.02)
    for s in socks:
        s.close()
    return cut == 20, f"{cut}/20 connections cut by the server ({', '.join(sorted(answers)) or 'no answer read'})"


@attack("deep_json", "tools[].function.parameters nested 300 deep, repeated 5 s", repeat_for=5)
def _deep_json(ctx: Ctx) -> tuple[bool, str]:
    fn = {"name": "f", "parameters": nested_schema(300)}
    r = ctx.api("POST", "/assistants", json={"model": "m", "tools": [{"type": "function", "function": fn}]})
    rf = {"type": "json_schema", "json_schema": {"name": "s", "schema": nested_schema(300)}}
    r2 = ctx.api("POST", "/assistants", json={"model": "m", "response_format": rf})
    return (r.status_code, r2.status_code) == (400, 400), f"tools: {r.status_code}, response_format: {r2.status_code}"


@attack("oversized_url", "100 KB request URL, 64 KB of headers, bad framing; repeated 5 s", repeat_for=5)
def _oversized(ctx: Ctx) -> tuple[bool, str]:
    statuses = []
    for raw in (
        b"GET /v1/assistants?q=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /v1/assistants HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 65536 + b"\r\n\r\n",
        b"GET /v1/assistants HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", ctx.server.port), timeout=10) as s:
            with contextlib.suppress(OSError):
                s.sendall(raw)
            out = b""
            with contextlib.suppress(OSError):
                while chunk := s.recv(65536):
                    out += chunk
        status = out.split(b"\r\n", 1)[0].decode(errors="replace")
        is_envelope = b'{"error":' in out
        statuses.append(f"{status[9:12] or 'closed'}{'' if is_envelope else ' (not JSON)'}")
    ok = all(s[:3] in ("414", "431", "400") and "not JSON" not in s for s in statuses)
    return ok, "URL / headers / framing: " + ", ".join(statuses)


@attack("open_mode_forgery", "open mode: text/plain POST, foreign Host, foreign Origin; 5 s", repeat_for=5)
def _forgery(ctx: Ctx) -> tuple[bool, str]:
    before = len(ctx.api("GET", "/assistants", params={"limit": 100}).json()["data"])
    plain = httpx.post(f"{ctx.server.url}/v1/assistants", content=b'{"model": "m"}',
                       headers={"Content-Type": "text/plain"}, timeout=10)  # fmt: skip
    host = httpx.get(f"{ctx.server.url}/v1/assistants", headers={"Host": "rebind.evil.example"}, timeout=10)
    origin = httpx.post(f"{ctx.server.url}/v1/assistants", json={"model": "m"},
                        headers={"Origin": "https://evil.example"}, timeout=10)  # fmt: skip
    after = len(ctx.api("GET", "/assistants", params={"limit": 100}).json()["data"])
    ok = plain.status_code >= 400 and host.status_code >= 400 and origin.status_code >= 400 and after == before
    seen = f"text/plain {plain.status_code}, Host {host.status_code}, Origin {origin.status_code}"
    return ok, f"{seen}; created {after - before}"


@attack("revoke_last_key", "create then revoke the only key (separate server)")
def _revoke(ctx: Ctx) -> tuple[bool, str]:
    box = Server(ctx.workdir, ctx.upstream, ctx.faults, [])
    try:
        storage = ["--data-dir", str(box.data_dir)]
        made = subprocess.run([PY, "-m", "assistantd", "keys", "create", "--project", "p", *storage],
                              capture_output=True, text=True, env=server_env(), timeout=60)  # fmt: skip
        key_id = re.search(r"id:\s+(\S+)", made.stdout)
        if key_id is None:
            return False, f"keys create failed: {made.stderr[-200:]}"
        subprocess.run([PY, "-m", "assistantd", "keys", "revoke", key_id.group(1), *storage],
                       capture_output=True, env=server_env(), timeout=60, check=True)  # fmt: skip
        statuses = []
        for _ in range(3):  # up to the old 5 s key cache, and past it
            keyless = {"Authorization": "Bearer anything"}
            statuses.append(httpx.post(f"{box.url}/v1/assistants", json={"model": "m"}, headers=keyless).status_code)
            time.sleep(3)
        return all(s == 401 for s in statuses), f"keyless after revoking the last key: {statuses}"
    finally:
        box.stop()


def _run_code(ctx: Ctx, code: str, window: float) -> tuple[str, str, float]:
    """A run whose scripted model asks code_interpreter to run ``code``: (status, logs or error, seconds)."""
    model = f"ci-{uuid.uuid4().hex[:8]}"
    ctx.upstream.script(
        model,
        {"tool_calls": [{"name": "code_interpreter", "arguments": json.dumps({"code": code})}]},
        {"text": "done"},
    )
    asst = ctx.api("POST", "/assistants", json={"model": model, "tools": [{"type": "code_interpreter"}]}).json()
    thread = ctx.api("POST", "/threads", json={"messages": [{"role": "user", "content": "go"}]}).json()
    run = ctx.api("POST", f"/threads/{thread['id']}/runs", json={"assistant_id": asst["id"]}).json()
    started = time.monotonic()
    status = run.get("status", "?")
    while time.monotonic() - started < window and ctx.server.alive():
        run = ctx.api("GET", f"/threads/{thread['id']}/runs/{run['id']}").json()
        status = run["status"]
        if status not in ("queued", "in_progress"):
            break
        time.sleep(0.5)
    steps = ctx.api("GET", f"/threads/{thread['id']}/runs/{run['id']}/steps").json().get("data", [])
    logs = []
    for step in steps:
        for call in step["step_details"].get("tool_calls", []) or []:
            for out in call.get("code_interpreter", {}).get("outputs", []):
                logs.append(out.get("logs") or f"<{out.get('type')}>")
    text = " | ".join(logs) or json.dumps(run.get("last_error"))
    return status, " ".join(text.split()), time.monotonic() - started


@attack("ci_disk_fill", "code interpreter: 1.6 GB into hidden files in /mnt/data")
def _disk_fill(ctx: Ctx) -> tuple[bool, str]:
    # Eight 200 MB files: a per-file size cap alone does not stop this, a per-session quota does.
    code = (
        "n = 0\nblock = b'x' * 2**20\n"
        "try:\n    for i in range(8):\n        with open(f'/mnt/data/.hidden{i}', 'wb') as f:\n"
        "            for _ in range(200):\n                f.write(block); n += 1\n"
        "    print(f'wrote {n} MB')\nexcept OSError as e:\n    print(f'stopped at {n} MB: {e}')\n"
    )
    status, logs, secs = _run_code(ctx, code, window=90)
    wrote = re.search(r"(wrote|stopped at) (\d+) MB", logs)
    mb = int(wrote.group(2)) if wrote else -1
    return 0 <= mb < 1500, f"run {status} in {secs:.0f} s: {logs[:120]}"


@attack("ci_sparse_file", "code interpreter: a 200 MB sparse file as output")
def _sparse(ctx: Ctx) -> tuple[bool, str]:
    before = _tree_bytes(ctx.server.data_dir)
    code = "f = open('/mnt/data/sparse.bin', 'wb'); f.truncate(200 * 2**20); f.close(); print('made')"
    status, logs, secs = _run_code(ctx, code, window=60)
    grown = (_tree_bytes(ctx.server.data_dir) - before) / 2**20
    # The user gets the file they made, by its content (200 MB of zeros, within the per-execution output
    # cap): one copy in the blob store. Contained when no second dense copy is made on the host.
    return grown < 250, f"run {status} in {secs:.0f} s; data dir grew {grown:.0f} MB (one copy: 200): {logs[:80]}"


@attack("ci_fake_pngs", "code interpreter: 20 fake 23 MB PNG outputs")
def _pngs(ctx: Ctx) -> tuple[bool, str]:
    code = (
        "import os\nfrom IPython.display import Image, display\n"
        "for i in range(20):\n"
        "    display(Image(data=b'\\x89PNG\\r\\n\\x1a\\n' + os.urandom(23 * 2**20), format='png'))\n"
        "print('displayed')\n"
    )
    base = rss_mb(ctx.server.proc.pid)
    t0 = time.monotonic()
    status, logs, secs = _run_code(ctx, code, window=90)
    samples = MONITOR.samples if MONITOR is not None else []
    peak = max((own for t, own, _ in list(samples) if t >= t0), default=base)
    # Each image is handed on (or dropped) as it comes, so what the server holds is what is in flight, not
    # the run's 20 images (460 MB, 620 MB as base64, which the server used to keep to the end): one ~31 MB
    # message as libzmq's frame and as the JSON text jupyter_client decodes, the next one read ahead, and
    # allocator slack, 120-220 MB measured on this machine; the same bound as tests/test_code_interpreter_attacks.
    return peak - base < 250, f"run {status} in {secs:.0f} s; server RSS +{peak - base:.0f} MB: {logs[:80]}"


@attack("ci_vsock", "code interpreter: socket(AF_VSOCK), io_uring, personality")
def _vsock(ctx: Ctx) -> tuple[bool, str]:
    code = (
        "import socket, ctypes\nres = []\n"
        "try:\n    socket.socket(40, socket.SOCK_STREAM); res.append('vsock OPEN')\n"
        "except OSError as e:\n    res.append(f'vsock denied ({e.errno})')\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "r = libc.syscall(425, 8, ctypes.create_string_buffer(120))\n"
        "res.append('io_uring OPEN' if r >= 0 else f'io_uring denied ({ctypes.get_errno()})')\n"
        "r = libc.personality(0xffffffff)\nr2 = libc.personality(0x0040000)\n"
        "res.append('personality OPEN' if r2 >= 0 else f'personality denied ({ctypes.get_errno()})')\n"
        "print('; '.join(res))\n"
    )
    status, logs, _ = _run_code(ctx, code, window=60)
    return "OPEN" not in logs and "denied" in logs, f"run {status}: {logs[:160]}"


@attack("ci_memory_sessions", "code interpreter: 3 sessions holding 700 MB each at once")
def _memory(ctx: Ctx) -> tuple[bool, str]:
    code = "import numpy as np\nhog = np.ones(700 * 2**20 // 8)\nprint('holding', hog.nbytes // 2**20, 'MB')\n"
    t0 = time.monotonic()
    results: list[tuple[str, str, float]] = []
    threads = [threading.Thread(target=lambda: results.append(_run_code(ctx, code, window=90))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    t1 = time.monotonic()
    holding = sum(1 for _, logs, _ in results if "holding" in logs)
    budget = _budget_mb(ctx)
    # What every sandbox together held at once: the process tree less the server itself.
    samples = MONITOR.samples if MONITOR is not None else []
    together = max((tree - own for t, own, tree in list(samples) if t0 <= t <= t1), default=0.0)
    refused = sum(1 for _, logs, _ in results if "memory budget" in logs)
    notes = "; ".join(f"{s}: {logs[:50]}" for s, logs, _ in results)
    # Contained when a global budget queued or refused (with its own error) what did not fit, so the
    # sandboxes never held more than the budget at once; each run either held its memory in turn or was told.
    ok = budget is not None and together < budget and holding + refused == 3
    at_once = f"sandboxes at once {together:.0f} MB (budget {budget} MB)"
    return ok, f"{holding}/3 held 700 MB in turn, {refused} refused; {at_once}; {notes}"


def _budget_mb(ctx: Ctx) -> int | None:
    flag = _flag_value(ctx.help_text, r"--code-interpreter-[a-z-]*(budget|total)[a-z-]*")
    if flag is None or flag not in ctx.server.args:
        return None
    return int(ctx.server.args[ctx.server.args.index(flag) + 1])


def _flag_value(help_text: str, pattern: str) -> str | None:
    match = re.search(pattern, help_text)
    return match.group(0) if match else None


def _tree_bytes(path: Path) -> int:
    """Bytes on disk under ``path``, leaving out the code interpreter's sessions (their disks are tmpfs
    mounts, which come and go with sessions; what counts is what reached the server's own storage)."""
    total = 0
    for root, dirs, files in os.walk(path):
        if root == str(path):
            dirs[:] = [d for d in dirs if d != "code-interpreter"]
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


def _upstream_fault(ctx: Ctx, model: str, window: float) -> tuple[bool, str]:
    asst = ctx.api("POST", "/assistants", json={"model": model}).json()
    thread = ctx.api("POST", "/threads", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    run = ctx.api("POST", f"/threads/{thread['id']}/runs", json={"assistant_id": asst["id"]}).json()
    started = time.monotonic()
    while time.monotonic() - started < window:
        run = ctx.api("GET", f"/threads/{thread['id']}/runs/{run['id']}").json()
        if run["status"] not in ("queued", "in_progress"):
            break
        time.sleep(0.5)
    err = run.get("last_error") or {}
    took = time.monotonic() - started
    detail = f"run {run['status']} after {took:.0f} s, last_error={err.get('code')}: {str(err.get('message'))[:80]}"
    return run["status"] == "failed" and err.get("code") == "server_error", detail


@attack("upstream_trickle", "upstream trickles a token a second (20 s window)")
def _trickle(ctx: Ctx) -> tuple[bool, str]:
    return _upstream_fault(ctx, "fault-trickle", window=20)


@attack("upstream_comments", "upstream sends only SSE comments (20 s window)")
def _comments(ctx: Ctx) -> tuple[bool, str]:
    return _upstream_fault(ctx, "fault-comments", window=20)


@attack("upstream_html_200", "upstream answers 200 with an HTML page")
def _html200(ctx: Ctx) -> tuple[bool, str]:
    return _upstream_fault(ctx, "fault-html", window=15)


@attack("upstream_json_200", "upstream answers 200 with plain JSON, not a stream")
def _json200(ctx: Ctx) -> tuple[bool, str]:
    return _upstream_fault(ctx, "fault-json", window=15)


@attack("upstream_no_done", "upstream stream ends without [DONE] or finish_reason")
def _nodone(ctx: Ctx) -> tuple[bool, str]:
    return _upstream_fault(ctx, "fault-nodone", window=15)


MONITOR: Monitor | None = None


# --- driver -------------------------------------------------------------------------------------


def server_extra_args(help_text: str, given: list[str]) -> list[str]:
    """Bench-sized values for limits other branches add, found by name in `serve --help` (absent: skipped)."""
    extra = list(given)
    wanted = {
        r"--upstream-[a-z-]*(total|deadline)[a-z-]*": "10",  # a whole model call, not just the gap between bytes
        r"--code-interpreter-[a-z-]*(budget|total)[a-z-]*": "1500",  # MB across sessions
    }
    for pattern, value in wanted.items():
        flag = _flag_value(help_text, pattern)
        if flag and not any(a.startswith(flag) for a in extra):
            extra += [flag, value]
    return extra


def measure(name: str, title: str, fn: Attack, ctx: Ctx, mon: Monitor) -> Row:
    mon.killed_at = None
    cpu0 = cpu_seconds(ctx.server.proc.pid)
    t0 = time.monotonic()
    try:
        contained, detail = fn(ctx)
    except Exception as exc:  # one attack's surprise must not stop the others
        contained, detail = False, f"bench error: {type(exc).__name__}: {str(exc)[:160]}"
    t1 = time.monotonic()
    if mon.killed_at is not None:
        contained, detail = False, f"server killed by the bench at {mon.killed_at:.0f} MB RSS; {detail}"
    elif not ctx.server.alive():
        contained, detail = False, f"server died; {detail}"
    figures = window_figures(mon, t0, t1)
    return Row(name, contained, detail, seconds=t1 - t0, cpu_s=cpu_seconds(ctx.server.proc.pid) - cpu0, **figures)


def baseline(ctx: Ctx, mon: Monitor, seconds: float) -> Row:
    cpu0 = cpu_seconds(ctx.server.proc.pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    t1 = time.monotonic()
    return Row("(no attack)", None, f"background client only, {seconds:.0f} s", seconds=t1 - t0,
               cpu_s=cpu_seconds(ctx.server.proc.pid) - cpu0, **window_figures(mon, t0, t1))  # fmt: skip


def print_table(rows: list[Row], titles: dict[str, str]) -> None:
    print()
    print(f"{'attack':<20} {'contained':<10} {'secs':>5} {'RSS MB':>7} {'tree MB':>8} {'CPU s':>6} "
          f"{'p50 ms':>7} {'p99 ms':>8} {'calls':>6} {'fail':>5}  detail")  # fmt: skip
    for r in rows:
        flag = "-" if r.contained is None else ("yes" if r.contained else "NO")
        print(f"{r.attack:<20} {flag:<10} {r.seconds:5.0f} {r.rss_mb:7.0f} {r.tree_mb:8.0f} {r.cpu_s:6.1f} "
              f"{r.p50_ms:7.1f} {r.p99_ms:8.1f} {r.calls:6d} {r.failed:5d}  {r.detail}")  # fmt: skip
    print()
    for r in rows:
        if r.attack in titles:
            print(f"  {r.attack}: {titles[r.attack]}")


def main() -> int:
    global MONITOR
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated attack names (default: all): " + ", ".join(ATTACKS))
    p.add_argument("--baseline-seconds", type=float, default=8.0)
    p.add_argument("--rss-limit-mb", type=float, default=2500.0, help="kill the server past this RSS")
    p.add_argument("--server-arg", action="append", default=[], help="an extra `serve` argument (repeatable)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        p.error(f"unknown attacks: {unknown}")

    help_text = subprocess.run([PY, "-m", "assistantd", "serve", "--help"], capture_output=True, text=True,
                               env=server_env(), timeout=60).stdout  # fmt: skip
    extra = server_extra_args(help_text, [a for arg in args.server_arg for a in arg.split("=", 1)])
    workdir = Path(tempfile.mkdtemp(prefix="assistantd-hardening-"))
    upstream = Upstream(workdir)
    faults = FaultUpstream()
    mon = MONITOR = Monitor(args.rss_limit_mb)
    http = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {KEY}"})
    server = Server(workdir, upstream, faults, extra)
    mon.server = server
    rows: list[Row] = []
    print(f"server args: {' '.join(extra) or '(defaults)'}; workdir {workdir}", flush=True)
    try:
        ctx = Ctx(server, upstream, faults, http, workdir, help_text)
        rows.append(baseline(ctx, mon, args.baseline_seconds))
        print(f"  baseline: p50 {rows[-1].p50_ms:.1f} ms, p99 {rows[-1].p99_ms:.1f} ms", flush=True)
        for name in names:
            title, fn = ATTACKS[name]
            print(f"  {name}: {title} ...", flush=True)
            if name in OWN_SERVER:
                # Measured on a server of its own (its settings differ); the shared one is left as it was.
                mon.server = None
                own = ctx.server = Server(workdir, upstream, faults, extra + OWN_SERVER[name])
                mon.server = own
                time.sleep(2)  # the bystander's first calls to a fresh server are not the attack's doing
                try:
                    row = measure(name, title, fn, ctx, mon)
                finally:
                    mon.server = None
                    if own.alive() and not row.contained:
                        own.kill()
                    own.stop()
                    ctx.server = mon.server = server
                rows.append(row)
                print(f"    contained={row.contained} {row.detail}", flush=True)
                continue
            row = measure(name, title, fn, ctx, mon)
            rows.append(row)
            print(f"    contained={row.contained} {row.detail}", flush=True)
            if not row.contained or not server.alive():
                # A fresh server, so what this attack left running cannot skew the next figures.
                mon.server = None
                if server.alive():
                    server.kill()
                server.stop()
                server = Server(workdir, upstream, faults, extra)
                ctx.server = server
                mon.server = server
    finally:
        mon.stop()
        mon.server = None
        server.stop()
        upstream.stop()
        http.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows, {n: ATTACKS[n][0] for n in names})
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
