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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
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


# Where images and files an execution produces go, as they come: (file name, its bytes in chunks) -> the
# id it was saved under. The tool saves to the blob store; nothing is held in memory or copied on the host.
Saver = Callable[[str, AsyncIterator[bytes]], Awaitable[str]]


@dataclass
class OutputFile:
    name: str  # path relative to /mnt/data, e.g. "chart.png" or "out/report.csv"
    file_id: str  # what the Saver returned


@dataclass
class Execution:
    logs: str  # stdout, stderr, results and the traceback in order; capped with a note
    images: list[str]  # ids (from the Saver) of the PNGs displayed (matplotlib figures, display())
    files: list[OutputFile]  # files under /mnt/data created or changed by this execution, as saved
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


class MemoryBudgetExhausted(CodeInterpreterError):
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
    executions: int = 0


class CodeInterpreter:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._host = SandboxHost(config)
        self._sessions: dict[str, _Session] = {}
        self._pool: list[Sandbox] = []
        self._pool_changed = asyncio.Condition()
        self._refill = asyncio.Event()
        # Set whenever memory may have become available: a sandbox gave its reservation back, or a session
        # went idle (and so may be closed to make room).
        self._room = asyncio.Event()
        self._room_waiters = 0
        self._host.budget.on_give = self._memory_freed
        self._tasks: list[asyncio.Task[None]] = []
        self._context: Any = None
        self._started = False
        self._starting: asyncio.Future[None] | None = None
        self._stopping = False

    def _memory_freed(self) -> None:
        self._room.set()
        self._refill.set()

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
        ``available`` and ``unavailable_reason`` say what is wrong.

        With no pool the tool calls this on first use, so several runs may call it at once: they all wait
        for the one start (shielded, so a caller cancelled meanwhile cannot leave it half done); returning
        early while another call was still preparing the host made those runs fail with "not running"."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        self._started = True
        try:
            import jupyter_client  # noqa: F401
            import zmq  # noqa: F401

            from .kernel import message_limit, new_context
        except ImportError as exc:
            hint = "pip install '.[code-interpreter]' in an assistantd checkout"
            self._host.mode, self._host.reason = "unavailable", f"{exc} ({hint})"
            return
        await self._host.prepare()
        if not self.available:
            log.warning("code interpreter unavailable: %s", self._host.reason)
            return
        self._context = new_context(message_limit(self.config.max_image_mb << 20))
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
        save: Saver,
        files: Sequence[InputFile] = (),
        timeout: float | None = None,  # noqa: ASYNC109 - seconds of wall time for this cell, not a cancel scope
    ) -> Execution:
        """Run ``code`` in the session's kernel. Code errors, timeouts and crashes are results (see
        ``Execution.error``); only "cannot run code at all" raises a ``CodeInterpreterError``.

        Images and changed files are handed to ``save`` one at a time while the execution runs (images)
        or right after it (files), within ``max_image_mb`` per image and ``max_saved_mb`` for all of
        them together; what does not fit is named in the logs instead."""
        session = await self._session(session_key)
        try:
            async with session.lock:
                return await self._execute(session, code, save, files, wall_seconds=timeout)
        finally:
            self._room.set()  # the session is idle again: a session waiting for memory may close it

    async def _execute(
        self, session: _Session, code: str, save: Saver, files: Sequence[InputFile], *, wall_seconds: float | None
    ) -> Execution:
        sandbox = await self._ensure_sandbox(session)
        if files:
            await self._add_files(session, sandbox, files)
        data_dir = sandbox.data_dir
        before = await asyncio.to_thread(fs.scan, data_dir, SCAN_LIMIT)
        wall = wall_seconds if wall_seconds is not None else self.config.timeout_seconds
        outputs = _Outputs(save, self.config.max_saved_mb << 20)
        result = await sandbox.run(code, wall_seconds=wall, on_image=outputs.image)
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
        more = await self._save_files(outputs, data_dir, fs.changed(before, after))
        logs += "".join(f"[{note}]\n" for note in outputs.notes)
        if more:
            logs += f"[{more} more changed files in /mnt/data are not listed]\n"
        session.last_used = time.monotonic()
        session.executions += 1
        return Execution(logs=logs, images=outputs.images, files=outputs.files, error=result.error)

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

    async def _save_files(self, outputs: _Outputs, data_dir: Path, names: list[str]) -> int:
        """Stream each changed file (up to ``max_output_files``) from the sandbox's disk to the saver;
        returns how many were left unlisted."""
        keep, more = names[: self.config.max_output_files], max(0, len(names) - self.config.max_output_files)
        limit = self.config.max_file_mb << 20
        for name in keep:
            fd = await asyncio.to_thread(fs.open_regular, data_dir, name)
            if fd is None:  # not a regular file any more (a link, a FIFO, gone)
                continue
            try:
                # Sized once: a background process still appending cannot make us read more (the reader
                # stops at this size), and a sparse file counts at its full size, as the user would get it.
                size = os.fstat(fd).st_size
                if size > limit:
                    outputs.notes.append(f"/mnt/data/{name} was not saved: it is over {self.config.max_file_mb} MB")
                    continue
                if not outputs.take(size):
                    outputs.notes.append(outputs.over(f"/mnt/data/{name}", size))
                    continue
                file_id = await outputs.save(PurePosixPath(name).name, _read_fd(fd, size))
                outputs.files.append(OutputFile(name=name, file_id=file_id))
            finally:
                os.close(fd)
        return more

    # --- pool -----------------------------------------------------------------------------------

    async def _take(self) -> Sandbox:
        while self._pool:
            sandbox = self._pool.pop(0)
            self._refill.set()
            if sandbox.alive:
                return sandbox
            await sandbox.destroy()
        await self._reserve()
        # Cold start: no preload, so the cell's own imports are the only ones paid for.
        return await Sandbox.start(self._host, self._context, reserved=True)

    async def _reserve(self) -> None:
        """Reserve a sandbox's memory in the budget: at once if it fits, else by closing the least recently
        used idle session, else by waiting (``memory_wait_seconds``) for either; then a clear error."""
        budget = self._host.budget
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.memory_wait_seconds
        self._room_waiters += 1
        try:
            while not budget.take():
                if self._pool:  # pooled sandboxes hold memory nobody uses yet
                    await self._pool.pop().destroy()
                    continue
                idle = [s for s in self._sessions.values() if not s.lock.locked() and (s.sandbox or s.orphan)]
                if idle:
                    victim = min(idle, key=lambda s: s.last_used)
                    if self._sessions.get(victim.key) is victim:
                        del self._sessions[victim.key]
                    async with victim.lock:
                        await self._destroy_session(victim)
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise MemoryBudgetExhausted(
                        f"the code interpreter's memory budget ({budget.total_mb} MB for all sessions together, "
                        f"{self.config.memory_mb} MB each) is taken by sessions that are all busy; try again shortly"
                    )
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._room.wait()
        finally:
            self._room_waiters -= 1

    async def _refill_loop(self) -> None:
        failures = 0
        while not self._stopping:
            await self._refill.wait()
            self._refill.clear()
            while len(self._pool) < self.config.pool_size and not self._stopping:
                # The pool only uses memory nobody waits for; once a session gives some back, it refills.
                if self._room_waiters or not self._host.budget.take():
                    break
                try:
                    sandbox = await Sandbox.start(self._host, self._context, preload=self.config.preload, reserved=True)
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


class _Outputs:
    """What one execution saved, within its byte budget."""

    def __init__(self, save: Saver, budget: int) -> None:
        self.save = save
        self.budget = budget
        self.left = budget
        self.images: list[str] = []
        self.files: list[OutputFile] = []
        self.notes: list[str] = []

    def take(self, size: int) -> bool:
        if size > self.left:
            return False
        self.left -= size
        return True

    def over(self, what: str, size: int) -> str:
        return (
            f"{what} was not saved: its {_mb(size)} are more than the {_mb(self.left)} left of this execution's "
            f"{_mb(self.budget)} for images and files"
        )

    async def image(self, png: bytes) -> None:
        if not self.take(len(png)):
            self.notes.append(self.over("an image", len(png)))
            return
        self.images.append(await self.save(f"image-{len(self.images)}.png", _one(png)))


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f} MB"


async def _one(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 1 << 20):
        yield data[start : start + (1 << 20)]


async def _read_fd(fd: int, size: int) -> AsyncIterator[bytes]:
    """At most ``size`` bytes of ``fd`` from its start, 1 MB at a time, read off the event loop."""
    offset = 0
    while offset < size:
        chunk = await asyncio.to_thread(os.pread, fd, min(1 << 20, size - offset), offset)
        if not chunk:
            return
        offset += len(chunk)
        yield chunk
