"""Shared by tests/test_code_interpreter_*.py: a real CodeInterpreter on an event loop of its own.

The interpreter lives for a whole test module on a background thread's loop (its kernels, sockets and
asyncio objects belong to that loop), and tests call it synchronously through ``Harness.run``. Sandboxes
are started by that thread, which outlives them, so bwrap's --die-with-parent never fires early.

Where the host cannot sandbox (not root, no bubblewrap) the tests skip locally but fail in CI
(``CI`` set), so a CI machine that lost bubblewrap cannot pass by skipping.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from assistantd.tools.code_interpreter import CodeInterpreter, Execution, InputFile, SandboxConfig
from assistantd.tools.code_interpreter.interpreter import Saver

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="code-interpreter-tests", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 180.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class MemorySaver:
    """Where the tests' executions save images and files: bytes by id, kept in memory (they are small)."""

    def __init__(self) -> None:
        self.saved: dict[str, tuple[str, bytes]] = {}

    async def __call__(self, name: str, chunks: AsyncIterator[bytes]) -> str:
        data = b"".join([chunk async for chunk in chunks])
        file_id = f"saved-{len(self.saved)}"
        self.saved[file_id] = (name, data)
        return file_id


@dataclass
class Harness:
    ci: CodeInterpreter
    loop: LoopThread
    root: Path  # the fake server data dir (work_root is inside it)
    saver: MemorySaver = field(default_factory=MemorySaver)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coro)

    def execute(
        self,
        key: str,
        code: str,
        *,
        files: tuple[InputFile, ...] = (),
        timeout: float | None = None,
        save: Saver | None = None,
    ) -> Execution:
        return self.run(self.ci.execute(key, code, save=save or self.saver, files=files, timeout=timeout))

    def saved(self, file_id: str) -> bytes:
        return self.saver.saved[file_id][1]

    def ok(self, key: str, code: str, **kwargs: Any) -> str:
        """Execute code that must succeed; return its logs."""
        result = self.execute(key, code, **kwargs)
        assert result.error is None, result.logs
        return result.logs


def config(root: Path, **overrides: Any) -> SandboxConfig:
    """Small limits, so the attacks hit them fast, and no heavy preload competing for the 2 CI cores."""
    values: dict[str, Any] = {
        "work_root": root / "code-interpreter",
        "protect": (root,),
        "pool_size": 1,
        "timeout_seconds": 30.0,
        "cpu_seconds": 4,
        "memory_mb": 512,
        "max_processes": 64,
        "max_file_mb": 8,
        "max_output_bytes": 4096,
        "tmp_mb": 64,
        "disk_mb": 64,
        "max_saved_mb": 32,
        "preload": ("colorsys",),
        "interrupt_grace_seconds": 1.0,
    }
    values.update(overrides)
    return SandboxConfig(**values)


def require_sandbox(ci: CodeInterpreter) -> None:
    if ci.available and ci.sandboxed:
        return
    message = f"no code interpreter sandbox on this host: {ci.unavailable_reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def harness(tmp_root: Path, **overrides: Any) -> Iterator[Harness]:
    loop = LoopThread()
    ci = CodeInterpreter(config(tmp_root, **overrides))
    try:
        loop.run(ci.start())
        require_sandbox(ci)
        yield Harness(ci, loop, tmp_root)
    finally:
        loop.run(ci.stop())
        loop.close()


def host_pids_of_uid(uid: int) -> list[int]:
    """Processes on the host running as ``uid`` (to prove a sandbox left nothing behind)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            found.append(int(entry))
                        break
        except OSError:
            continue
    return found
