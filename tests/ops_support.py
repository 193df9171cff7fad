"""Real processes for the operator-facing tests: the scripted model and ``assistantd serve`` as subprocesses.

Both are started the way README tells a user to (``python -m assistantd.llm.scripted``, ``assistantd
serve``), on free ports, with ``ASSISTANTD_*`` and ``OPENAI_*`` from the caller's environment removed so
only what a test passes reaches them.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

PYTHON = os.environ.get("ASSISTANTD_SERVER_PYTHON") or sys.executable
START_SECONDS = 60.0


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ASSISTANTD_") and k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")
    }
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> Proc:
    with log.open("ab") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return Proc(proc, log)


def _wait_for(proc: Proc, ready: re.Pattern[str] | None, health: str | None) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.proc.returncode}:\n{proc.output()}")
        if ready is not None:
            match = ready.search(proc.output())
            if match:
                proc.url = match.group(1)
                return
        if health is not None:
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"process did not become ready:\n{proc.output()}")


@contextmanager
def scripted_model(workdir: Path) -> Iterator[Proc]:
    """The bundled scripted model on a free port; ``url`` is the base URL it printed (…/v1)."""
    proc = _spawn([PYTHON, "-m", "assistantd.llm.scripted", "--port", "0"], workdir / "scripted.log", clean_env())
    try:
        _wait_for(proc, re.compile(r"listening on (http://\S+/v1)"), None)
        yield proc
    finally:
        proc.stop()


@contextmanager
def assistantd_serve(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """``assistantd serve`` on a free port with its data in ``workdir/data``; ``url`` is http://host:port."""
    port = free_port()
    argv = [PYTHON, "-m", "assistantd", "serve", "--port", str(port), "--data-dir", str(workdir / "data"), *args]
    proc = _spawn(argv, workdir / "server.log", env if env is not None else clean_env())
    proc.url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(proc, None, proc.url + "/health")
        yield proc
    finally:
        proc.stop()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "assistantd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else clean_env(),
        stdin=subprocess.DEVNULL,
    )
