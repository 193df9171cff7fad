"""The server under test as a subprocess, and the SDK clients that talk to it.

Modelled on vLLM's ``RemoteOpenAIServer``. The server runs under ``ASSISTANTD_SERVER_PYTHON`` (default: the
interpreter running the tests), so these same test files also run from a venv that holds only an older
``openai`` SDK and no assistantd: ``scripts/test`` points that variable at the main venv's python.
Nothing here imports ``assistantd``: the tests see the server exactly as an SDK user does.
"""

from __future__ import annotations

import inspect
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

SERVER_PYTHON = os.environ.get("ASSISTANTD_SERVER_PYTHON") or sys.executable
STARTUP_SECONDS = 60.0
SHUTDOWN_SECONDS = 20.0

KEY_A, PROJECT_A = "sk-e2e-alpha-0123456789abcdef", "proj-alpha"
KEY_B, PROJECT_B = "sk-e2e-beta-0123456789abcdef", "proj-beta"

BACKENDS = ["sqlite", "postgres"]
# Limits the main e2e server runs with (the defaults are 16 MiB and 512 MiB), so tests can cross them.
MAX_BODY_BYTES = 1024 * 1024
MAX_UPLOAD_BYTES = 8 * 1024 * 1024

running: list[RemoteServer] = []


class ServerFailed(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RemoteServer:
    """One ``assistantd serve`` subprocess; its output goes to a log file shown when something fails."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        database_url: str = "",
        api_keys: str = "",
        extra_args: list[str] | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.database_url = database_url
        self.api_keys = api_keys
        self.extra_args = list(extra_args or [])  # more `serve` flags, e.g. --upstream-base-url
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def storage_args(self) -> list[str]:
        """The flags naming this server's storage, shared with the ``assistantd keys`` CLI."""
        args = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        return args

    def start(self) -> None:
        # Another process can take the free port between our probe and the server's bind: try again.
        for _attempt in range(3):
            self.port = _free_port()
            args = [
                SERVER_PYTHON, "-m", "assistantd", "serve",
                "--host", "127.0.0.1", "--port", str(self.port), *self.storage_args(),
            ]  # fmt: skip
            if self.api_keys:
                args += ["--api-keys", self.api_keys]
            # No pre-started sandboxes unless a test asks (a later flag wins): most servers never run code.
            args += ["--code-interpreter-pool-size", "0", *self.extra_args]
            with self.log_path.open("ab") as log:
                log.write(f"$ {shlex.join(args)}\n".encode())
                log.flush()
                # ASSISTANTD_* from the caller's environment must not change what we test.
                # Nor may OPENAI_API_KEY route runs to the real OpenAI: the scripted upstream is the only model.
                env = {
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith("ASSISTANTD_") and k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")
                }
                self.proc = subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            if self._wait_healthy():
                running.append(self)
                return
            if "address already in use" not in self.log_tail().lower():
                break
        raise ServerFailed(f"assistantd ({self.name}) did not become healthy.\n{self.log_tail()}")

    def _wait_healthy(self) -> bool:
        """Poll GET /health until it answers 200, the process exits, or the deadline passes."""
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                try:
                    if http.get(f"{self.url}/health").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                try:
                    # Doubles as the pause between polls and as the check that the server is alive.
                    self.proc.wait(timeout=0.05)
                    return False
                except subprocess.TimeoutExpired:
                    continue
        self.stop()
        return False

    def stop(self) -> int | None:
        """Ask the server to shut down (SIGTERM) and return its exit code; kill it if it hangs."""
        if self in running:
            running.remove(self)
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=SHUTDOWN_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise ServerFailed(
                f"assistantd ({self.name}) ignored SIGTERM for {SHUTDOWN_SECONDS}s.\n{self.log_tail()}"
            ) from None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 200) -> str:
        text = self.log_text().splitlines()
        return "\n".join(text[-lines:])

    def keys_cli(self, *args: str) -> str:
        """Run ``assistantd keys ARGS`` on this server's database (as an operator would); return stdout."""
        command = [SERVER_PYTHON, "-m", "assistantd", "keys", *args, *self.storage_args()]
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise ServerFailed(f"`{shlex.join(command)}` failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def create_key(self, project: str) -> CreatedKey:
        """Make a key for ``project`` with ``assistantd keys create``."""
        printed = dict(
            (label.strip(), value.strip())
            for label, _, value in (
                line.partition(":") for line in self.keys_cli("create", "--project", project).splitlines()
            )
        )
        if not printed.get("id") or not printed.get("key"):
            raise ServerFailed(f"`assistantd keys create` printed no id and key: {printed}")
        return CreatedKey(id=printed["id"], key=printed["key"], project=project)


@dataclass(frozen=True)
class CreatedKey:
    id: str
    key: str
    project: str


def check_clean_exit(server: RemoteServer, code: int | None) -> None:
    """After SIGTERM: a graceful shutdown, and no unhandled error in the whole log.

    uvicorn re-raises SIGTERM once it has shut down cleanly, so -SIGTERM is a normal exit. A 500 reaches a
    test as InternalServerError, but one the SDK swallowed (or that no test looked at) must not pass
    unnoticed either.
    """
    log = server.log_text()
    if code not in (0, -signal.SIGTERM) or "Application shutdown complete" not in log:
        raise ServerFailed(f"assistantd ({server.name}) did not shut down cleanly ({code}).\n{server.log_tail()}")
    if "unhandled error" in log or "Traceback" in log:
        raise ServerFailed(f"assistantd ({server.name}) logged an unhandled error.\n{server.log_tail()}")


def make_client(server: RemoteServer, key: str) -> openai.OpenAI:
    # No retries: a failure must show on the first request, not be papered over by the SDK.
    return openai.OpenAI(
        base_url=server.base_url, api_key=key, max_retries=0, timeout=30.0, _strict_response_validation=True
    )


def make_async_client(server: RemoteServer, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=server.base_url, api_key=key, max_retries=0, timeout=30.0, _strict_response_validation=True
    )


# The SDK marks the Assistants API deprecated (3.x warns on every call; 1.x of mid-2024 does not).
# pytest turns warnings into errors, so every e2e module ignores exactly these two messages.
E2E_MARKS = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]


def accepts(method: Callable[..., Any], param: str) -> bool:
    """Whether this SDK version's method takes ``param`` (e.g. ``files.list`` paging came after 1.40)."""
    return param in inspect.signature(method).parameters


def pages_with_data(first_page: Any) -> list[Any]:
    """Every page the SDK's auto-pagination visits, less the empty one older SDKs end on.

    SDKs of mid-2024 ignore ``has_more`` and stop only at an empty page; newer ones stop when ``has_more``
    is false. Callers assert ``has_more`` on the pages returned, so a wrong flag still fails.
    """
    pages = list(first_page.iter_pages())
    if len(pages) > 1 and not pages[-1].data:
        pages.pop()
    return pages
