"""Runs end to end: the scripted upstream as a subprocess, servers pointed at it, and polling helpers.

The scripted upstream (``python -m assistantd.llm.scripted``) is the only double: a real HTTP server
speaking Chat Completions. Each test scripts its own model name, so tests never share a script.
Timing is made deterministic with the script's ``hold`` (the model stops after its first chunk until
``/_release``) and by polling with deadlines; nothing waits a fixed time.

Like ``remote.py``, nothing here imports ``assistantd``: these files also run under an old SDK venv.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest

from .remote import (
    KEY_A,
    PROJECT_A,
    SERVER_PYTHON,
    STARTUP_SECONDS,
    RemoteServer,
    ServerFailed,
    _free_port,
    make_client,
)

T = TypeVar("T")

DEADLINE = 30.0  # the most any awaited condition may take before the test fails
POLL = 0.02  # pause between two reads of a condition being polled
TERMINAL = ("completed", "failed", "cancelled", "expired", "incomplete")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE) -> T:
    """Call ``probe`` until it returns something truthy, or fail after ``timeout`` saying ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(POLL)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last seen: {last!r})")


# --- the scripted upstream ------------------------------------------------------------------------


class ScriptedUpstream:
    """``python -m assistantd.llm.scripted`` on a free port, with its control endpoints as methods."""

    def __init__(self, workdir: Path) -> None:
        self.log_path = workdir / "scripted.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.http = httpx.Client(timeout=10.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> None:
        for _attempt in range(3):
            self.port = _free_port()
            args = [SERVER_PYTHON, "-m", "assistantd.llm.scripted", "--host", "127.0.0.1", "--port", str(self.port)]
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if self._answers():
                return
            if "address already in use" not in self.log_path.read_text(errors="replace").lower():
                break
        raise ServerFailed(f"the scripted upstream did not start:\n{self.log_path.read_text(errors='replace')}")

    def _answers(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            try:
                if self.http.get(f"{self.url}/_requests", params={"model": "-"}).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            try:
                self.proc.wait(timeout=0.05)  # the pause between polls, and the check that it is alive
                return False
            except subprocess.TimeoutExpired:
                continue
        self.stop()
        return False

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def script(self, model: str, *turns: dict[str, Any]) -> None:
        """Queue turns for ``model``: each model call takes the next one."""
        r = self.http.post(f"{self.url}/_script", json={"model": model, "turns": list(turns)})
        r.raise_for_status()

    def requests(self, model: str) -> list[dict[str, Any]]:
        """The Chat Completions request bodies ``model`` received, oldest first."""
        r = self.http.get(f"{self.url}/_requests", params={"model": model})
        r.raise_for_status()
        return list(r.json())

    def wait_requests(self, model: str, count: int) -> list[dict[str, Any]]:
        return wait_for(
            f"{count} model request(s) for {model}",
            lambda: ((seen := self.requests(model)) and len(seen) >= count and seen) or None,
        )

    def release(self, model: str) -> None:
        """Let a turn held with ``hold`` go on (a release sent before the hold is kept for it)."""
        self.http.post(f"{self.url}/_release", params={"model": model}).raise_for_status()


# --- servers --------------------------------------------------------------------------------------


def server_flags(upstream: ScriptedUpstream | None, *more: str) -> list[str]:
    flags = ["--upstream-base-url", upstream.base_url] if upstream is not None else []
    return [*flags, *more]


def check_clean_exit(server: RemoteServer, code: int | None) -> None:
    """The same bar as the harness's own servers: a clean shutdown and no unhandled error logged."""
    log = server.log_text()
    if code not in (0, -signal.SIGTERM) or "Application shutdown complete" not in log:
        raise ServerFailed(f"assistantd ({server.name}) did not shut down cleanly ({code}).\n{server.log_tail()}")
    if "unhandled error" in log or "Traceback" in log:
        raise ServerFailed(f"assistantd ({server.name}) logged an unhandled error.\n{server.log_tail()}")


def serve(
    name: str, workdir: Path, *, database_url: str = "", extra_args: list[str], api_keys: str | None = None
) -> Iterator[RemoteServer]:
    """Start a server, yield it, stop it and check it exited cleanly. ``api_keys`` defaults to project A's
    key; ``""`` starts it with no key at all (open mode on loopback)."""
    keys = f"{KEY_A}:{PROJECT_A}" if api_keys is None else api_keys
    server = RemoteServer(name, workdir, database_url=database_url, api_keys=keys, extra_args=extra_args)
    server.start()
    try:
        yield server
    finally:
        code = server.stop()
    check_clean_exit(server, code)


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedUpstream]:
    scripted = ScriptedUpstream(tmp_path_factory.mktemp("scripted"))
    scripted.start()
    try:
        yield scripted
    finally:
        scripted.stop()


def serve_on_backend(
    name: str,
    backend: str,
    upstream: ScriptedUpstream,
    tmp: pytest.TempPathFactory,
    postgres: Callable[[], str],
    *flags: str,
) -> Iterator[RemoteServer]:
    """A server on this test's backend whose every model is served by the scripted upstream."""
    yield from serve(
        f"{name}[{backend}]",
        tmp.mktemp(f"{name}-{backend}"),
        database_url=postgres() if backend == "postgres" else "",
        extra_args=server_flags(upstream, *flags),
    )  # fmt: skip


@pytest.fixture(scope="session")
def runs_server(
    backend: str,
    upstream: ScriptedUpstream,
    tmp_path_factory: pytest.TempPathFactory,
    postgres: Callable[[], str],
) -> Iterator[RemoteServer]:
    yield from serve_on_backend("runs", backend, upstream, tmp_path_factory, postgres)


@pytest.fixture(scope="session")
def expiry_server(
    backend: str,
    upstream: ScriptedUpstream,
    tmp_path_factory: pytest.TempPathFactory,
    postgres: Callable[[], str],
) -> Iterator[RemoteServer]:
    """Runs expire one second after creation, looked for five times a second."""
    yield from serve_on_backend(
        "expiry", backend, upstream, tmp_path_factory, postgres,
        "--run-expiry-seconds", "1", "--reap-interval-seconds", "0.2",
    )  # fmt: skip


@pytest.fixture
def rclient(runs_server: RemoteServer) -> Iterator[openai.OpenAI]:
    with make_client(runs_server, KEY_A) as c:
        yield c


# --- run helpers ----------------------------------------------------------------------------------


def new_model() -> str:
    """A model name of this test's own, so its script is not shared."""
    return f"scripted-{uuid.uuid4().hex[:12]}"


FUNCTION_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "CheckOutOfStock",
            "description": "List the products that are running out of stock.",
            "parameters": {"type": "object", "properties": {}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "CheckDailyRevenue",
            "description": "The revenue and profit of one day.",
            "parameters": {
                "type": "object",
                "properties": {"date": {"type": "string", "description": "YYYY-MM-DD"}},
                "required": ["date"],
            },
        },
    },
]


def make_assistant(client: openai.OpenAI, model: str, **kwargs: Any) -> Any:
    return client.beta.assistants.create(model=model, **kwargs)


def wait_status(client: openai.OpenAI, thread_id: str, run_id: str, *statuses: str) -> Any:
    """Poll the run until its status is one of ``statuses`` (default: any terminal one)."""
    wanted = statuses or TERMINAL

    def probe() -> Any:
        run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        return run if run.status in wanted else None

    return wait_for(f"run {run_id} to be {'/'.join(wanted)}", probe)


def assert_unlocked(client: openai.OpenAI, thread_id: str) -> None:
    """The thread takes messages again (it would refuse them while a run were active)."""
    m = client.beta.threads.messages.create(thread_id, role="user", content="still there?")
    assert m.thread_id == thread_id


def sse(server: RemoteServer, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """POST ``body`` and read the whole SSE answer as (event, data) pairs, data parsed unless ``[DONE]``."""
    events: list[tuple[str, Any]] = []
    headers = {"Authorization": f"Bearer {KEY_A}", "OpenAI-Beta": "assistants=v2"}
    with (
        httpx.Client(base_url=server.base_url, timeout=DEADLINE) as http,
        http.stream("POST", path, json=body, headers=headers) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name, data = "", []
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if name or data:
                    joined = "\n".join(data)
                    events.append((name, joined if joined == "[DONE]" else json.loads(joined)))
                name, data = "", []
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
    return events
