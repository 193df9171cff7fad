"""The scripted Chat Completions server as a subprocess on a free port, for in-process tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """The scripted server's root URL (its API is under ``/v1``)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "assistantd.llm.scripted", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/v1/models", timeout=1)
            break
        except httpx.TransportError:
            try:
                proc.wait(timeout=0.05)
                raise RuntimeError("scripted upstream exited") from None
            except subprocess.TimeoutExpired:
                continue
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def script(url: str, model: str, *turns: dict) -> None:
    httpx.post(f"{url}/_script", json={"model": model, "turns": list(turns)}).raise_for_status()


def sent(url: str, model: str) -> list[dict]:
    return httpx.get(f"{url}/_requests", params={"model": model}).json()
