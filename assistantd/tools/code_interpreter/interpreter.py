"""Sessions and the pool: one stateful sandbox per session key, ready-made sandboxes for new keys.

A session (one per thread: ``"<project>:<thread_id>"``) owns at most one live sandbox. Its variables live
in that sandbox's kernel; its files live in the sandbox's /mnt/data folder. When the sandbox has to go
(a timeout, a crash, the kernel dying between executions), the session keeps the folder: the next
execution starts a fresh sandbox (variables gone) and moves the files into it, and its logs say so. Only
an idle expiry, ``close_session`` or ``stop`` delete a session's files.

The pool holds ``pool_size`` sandboxes whose kernel is already up with the usual imports done, so a
new thread's first execution costs a round trip instead of a kernel start. It refills in the
background, one sandbox at a time, so refilling never takes more than one core from running sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import files as fs
from . import mounts
from .config import SandboxConfig
from .host import SandboxHost
from .sandbox import Sandbox, SandboxStartError

log = logging.getLogger("assistantd.code_interpreter")
SCAN_LIMIT = 10_000  # files looked at under /mnt/data per execution
_KEPT = "variables are lost, files in /mnt/data are kept."


@dataclass(frozen=True)
class InputFile:
    """A user file to appear in /mnt/data."""

    file_id: str
    filename: str
    path: Path  # where the bytes are on the host (read, never changed)


@dataclass
class OutputFile:
    name: str  # path relative to /mnt/data, e.g. "chart.png" or "out/report.csv"
    path: Path  # a private copy, readable until the next execute() of the same session (or stop())


@dataclass
class Execution:
    logs: str  # stdout, stderr, results and the traceback in order; capped with a note
    images: list[bytes]  # PNGs displayed during the execution (matplotlib figures, display())
    files: list[OutputFile]  # files under /mnt/data created or changed by this execution
    error: str | None  # None; "ExcType: message" for a code error; "timeout" or "crashed"


def session_key(project: str, thread_id: str) -> str:
    """The session of a thread: its variables and /mnt/data live as long as the thread (or its idle time)."""
    return f"{project}:{thread_id}"


class CodeInterpreterError(Exception):
    """A failure to run code at all; the message is meant for the model and the run's last_error."""


class SandboxUnavailable(CodeInterpreterError):
    pass


class TooManySessions(CodeInterpreterError):
    pass


@dataclass(eq=False)
class _Session:
    key: str
    token: str = field(default_factory=lambda: secrets.token_hex(6))
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sandbox: Sandbox | None = None
    orphan: Sandbox | None = None  # a dead sandbox whose folder still holds this session's files
    files: dict[str, str] = field(default_factory=dict)  # file_id -> name in /mnt/data
    notice: str = ""  # said at the start of the next execution's logs
    last_used: float = field(default_factory=time.monotonic)
    outputs: Path | None = None
    executions: int = 0


class CodeInterpreter:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._host = SandboxHost(config)
        self._sessions: dict[str, _Session] = {}
        self._pool: list[Sandbox] = []
        self._pool_changed = asyncio.Condition()
        self._refill = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._context: Any = None
        self._started = False
        self._stopping = False

    @property
    def available(self) -> bool:
        return self._host.available

    @property
    def unavailable_reason(self) -> str | None:
        return None if self._host.available else self._host.reason

    @property
    def sandboxed(self) -> bool:
        """False only when code_interpreter_allow_unsandboxed let code run without isolation."""
        return self._host.mode == "sandbox"

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the host, then start the pool in the background. Never raises for an unusable host:
        ``available`` and ``unavailable_reason`` say what is wrong."""
        if self._started:
            return
        self._started = True
        try:
            import jupyter_client  # noqa: F401
            import zmq  # noqa: F401

            from .kernel import new_context
        except ImportError as exc:
            self._host.mode, self._host.reason = "unavailable", f"{exc} (pip install 'assistantd[code-interpreter]')"
            return
        await self._host.prepare()
        if not self.available:
            log.warning("code interpreter unavailable: %s", self._host.reason)
            return
        self._context = new_context()
        self._tasks.append(asyncio.create_task(self._refill_loop(), name="code-interpreter-pool"))
        self._tasks.append(asyncio.create_task(self._reap_loop(), name="code-interpreter-reaper"))
        self._refill.set()

    async def stop(self) -> None:
        """Kill every sandbox and delete every session folder."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        doomed: list[Sandbox] = list(self._pool)
        self._pool.clear()
        for session in self._sessions.values():
            doomed += [sb for sb in (session.sandbox, session.orphan) if sb is not None]
        self._sessions.clear()
        await asyncio.gather(*(sb.destroy() for sb in doomed), return_exceptions=True)
        self._host.close()
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None

    async def wait_for_pool(self) -> None:
        """Return once the pool is full (for benchmarks and tests; the server never needs to wait)."""
        async with self._pool_changed:
            await self._pool_changed.wait_for(lambda: len(self._pool) >= self.config.pool_size or self._stopping)

    @property
    def pool_ready(self) -> int:
        return len(self._pool)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    # --- executing ------------------------------------------------------------------------------

    async def execute(
        self,
        session_key: str,
        code: str,
        *,
        files: Sequence[InputFile] = (),
        timeout: float | None = None,  # noqa: ASYNC109 - seconds of wall time for this cell, not a cancel scope
    ) -> Execution:
        """Run ``code`` in the session's kernel. Code errors, timeouts and crashes are results (see
        ``Execution.error``); only "cannot run code at all" raises a ``CodeInterpreterError``."""
        session = await self._session(session_key)
        async with session.lock:
            sandbox = await self._ensure_sandbox(session)
            if files:
                await self._add_files(session, sandbox, files)
            self._drop_outputs(session)
            data_dir = sandbox.data_dir
            before = await asyncio.to_thread(fs.scan, data_dir, SCAN_LIMIT)
            wall = timeout if timeout is not None else self.config.timeout_seconds
            result = await sandbox.run(code, wall_seconds=wall)
            logs = session.notice + result.logs
            session.notice = ""
            if result.error in {"timeout", "crashed"}:
                if result.error == "timeout":
                    why = f"the execution took longer than {wall:g} s and was stopped"
                else:
                    why = f"the sandbox crashed: {sandbox.crash_reason()}"
                logs += f"[{why}. The session restarts fresh on next use: {_KEPT}]\n"
                await self._retire(session)
            if await asyncio.to_thread(self._disk_full, sandbox, result.logs):
                logs += (
                    f"[/mnt/data and /tmp are full: together they hold {self.config.disk_mb} MB, hidden files "
                    "included. Delete files to make room.]\n"
                )
            after = await asyncio.to_thread(fs.scan, data_dir, SCAN_LIMIT)
            outputs, more = await self._collect_outputs(session, data_dir, fs.changed(before, after))
            if more:
                logs += f"[{more} more changed files in /mnt/data are not listed]\n"
            session.last_used = time.monotonic()
            session.executions += 1
            return Execution(logs=logs, images=result.images, files=outputs, error=result.error)

    async def add_files(self, session_key: str, files: Sequence[InputFile]) -> dict[str, str]:
        """Copy files into the session's /mnt/data (once per file_id); returns file_id -> path inside."""
        session = await self._session(session_key)
        async with session.lock:
            sandbox = await self._ensure_sandbox(session)
            await self._add_files(session, sandbox, files)
            session.last_used = time.monotonic()
            return {f.file_id: f"/mnt/data/{session.files[f.file_id]}" for f in files if f.file_id in session.files}

    async def close_session(self, session_key: str) -> None:
        """End a session now (e.g. its thread was deleted): kernel, files and all."""
        session = self._sessions.pop(session_key, None)
        if session is not None:
            async with session.lock:
                await self._destroy_session(session)

    async def close_thread(self, project: str, thread_id: str) -> None:
        """The thread is deleted: its session goes at once (an idle expiry would keep it for an hour)."""
        await self.close_session(session_key(project, thread_id))

    async def expire_idle(self, now: float | None = None) -> int:
        """Close sessions idle for ``idle_seconds`` (as of ``now``, a ``time.monotonic()`` value)."""
        now = time.monotonic() if now is None else now
        expired = [
            s for s in self._sessions.values() if not s.lock.locked() and now - s.last_used >= self.config.idle_seconds
        ]
        for session in expired:
            if self._sessions.get(session.key) is session:
                del self._sessions[session.key]
                await self._destroy_session(session)
        return len(expired)

    # --- sessions -------------------------------------------------------------------------------

    async def _session(self, key: str) -> _Session:
        if not self.available:
            raise SandboxUnavailable(f"the code interpreter is unavailable: {self.unavailable_reason}")
        if not self._started or self._stopping or self._context is None:
            raise CodeInterpreterError("the code interpreter is not running")
        session = self._sessions.get(key)
        if session is not None:
            session.last_used = time.monotonic()
            return session
        session = self._sessions[key] = _Session(key)
        while len(self._sessions) > self.config.max_sessions:
            idle = [s for s in self._sessions.values() if s is not session and not s.lock.locked()]
            if not idle:
                del self._sessions[key]
                raise TooManySessions(
                    f"all {self.config.max_sessions} code interpreter sessions are busy; try again shortly"
                )
            victim = min(idle, key=lambda s: s.last_used)
            del self._sessions[victim.key]
            async with victim.lock:
                await self._destroy_session(victim)
        return session

    async def _ensure_sandbox(self, session: _Session) -> Sandbox:
        if session.sandbox is not None and session.sandbox.alive:
            return session.sandbox
        if session.sandbox is not None:  # died between executions (e.g. a background process was OOM-killed)
            session.notice = (
                f"[the previous sandbox of this session ended: {session.sandbox.crash_reason()}. "
                "Variables are lost; files in /mnt/data are kept.]\n"
            )
            await self._retire(session)
        try:
            sandbox = await self._take()
        except SandboxStartError as exc:
            raise CodeInterpreterError(str(exc)) from exc
        if session.orphan is not None:
            # Nothing has run in the new sandbox yet and the old one's processes are all dead, so the move
            # and chown cannot race with sandboxed code.
            await asyncio.to_thread(fs.adopt, session.orphan.data_dir, sandbox.data_dir, sandbox.uid)
            await session.orphan.destroy()
            session.orphan = None
        session.sandbox = sandbox
        return sandbox

    async def _retire(self, session: _Session) -> None:
        """Kill the session's sandbox but keep its folder for the next one."""
        sandbox, session.sandbox = session.sandbox, None
        if sandbox is None:
            return
        await sandbox.kill()
        if session.orphan is None:
            session.orphan = sandbox
        else:  # the files already moved on from an older one
            await asyncio.to_thread(fs.adopt, sandbox.data_dir, session.orphan.data_dir, session.orphan.uid)
            await sandbox.destroy()

    async def _destroy_session(self, session: _Session) -> None:
        self._drop_outputs(session)
        for sandbox in (session.sandbox, session.orphan):
            if sandbox is not None:
                await sandbox.destroy()
        session.sandbox = session.orphan = None

    async def _add_files(self, session: _Session, sandbox: Sandbox, files: Sequence[InputFile]) -> None:
        for f in files:
            if f.file_id in session.files:
                continue
            name = fs.safe_name(f.filename, f.file_id)
            taken = set(session.files.values())
            if name in taken or await asyncio.to_thread(fs.exists, sandbox.data_dir, name):
                stem, ext = os.path.splitext(name)
                name = f"{stem}-{f.file_id}{ext}"
            try:
                await asyncio.to_thread(fs.copy_in, sandbox.data_dir, name, f.path, sandbox.uid)
            except FileExistsError:
                raise CodeInterpreterError(f"cannot put {f.filename} in /mnt/data: a folder has that name") from None
            except OSError as exc:
                raise CodeInterpreterError(f"cannot put {f.filename} in /mnt/data: {exc.strerror}") from None
            session.files[f.file_id] = name

    def _disk_full(self, sandbox: Sandbox, logs: str) -> bool:
        if "[Errno 28]" in logs:  # ENOSPC, as Python words it
            return True
        if self._host.mode != "sandbox":
            return False
        try:
            return mounts.free_bytes(sandbox.disk_dir) < min(1 << 20, (self.config.disk_mb << 20) // 100)
        except OSError:
            return False

    # --- outputs --------------------------------------------------------------------------------

    async def _collect_outputs(
        self, session: _Session, data_dir: Path, names: list[str]
    ) -> tuple[list[OutputFile], int]:
        if not names:
            return [], 0
        assert self._host.instance_dir is not None
        keep, more = names[: self.config.max_output_files], max(0, len(names) - self.config.max_output_files)
        folder = self._host.instance_dir / "outputs" / f"{session.token}-{session.executions}"
        session.outputs = folder
        limit = self.config.max_file_mb << 20
        copied: list[OutputFile] = []
        for name in keep:
            dest = folder / name
            if await asyncio.to_thread(fs.copy_out, data_dir, name, dest, limit):
                copied.append(OutputFile(name=name, path=dest))
        return copied, more

    @staticmethod
    def _drop_outputs(session: _Session) -> None:
        if session.outputs is not None:
            shutil.rmtree(session.outputs, ignore_errors=True)
            session.outputs = None

    # --- pool -----------------------------------------------------------------------------------

    async def _take(self) -> Sandbox:
        while self._pool:
            sandbox = self._pool.pop(0)
            self._refill.set()
            if sandbox.alive:
                return sandbox
            await sandbox.destroy()
        # Cold start: no preload, so the cell's own imports are the only ones paid for.
        return await Sandbox.start(self._host, self._context)

    async def _refill_loop(self) -> None:
        failures = 0
        while not self._stopping:
            await self._refill.wait()
            self._refill.clear()
            while len(self._pool) < self.config.pool_size and not self._stopping:
                try:
                    sandbox = await Sandbox.start(self._host, self._context, preload=self.config.preload)
                except SandboxStartError as exc:
                    failures += 1
                    log.warning("code interpreter pool: %s", exc)
                    await asyncio.sleep(min(60.0, 0.5 * 2**failures))
                    continue
                failures = 0
                self._pool.append(sandbox)
                async with self._pool_changed:
                    self._pool_changed.notify_all()

    async def _reap_loop(self) -> None:
        interval = max(1.0, min(60.0, self.config.idle_seconds / 4))
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await self.expire_idle()
            except Exception:
                log.exception("code interpreter: expiring idle sessions failed")
