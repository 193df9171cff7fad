"""One sandbox: a bubblewrap jail with a running kernel, its folder, uid and cgroups, from start to kill.

A sandbox is not tied to a session: the pool starts them ahead of need and a session adopts one. The
kernel inside is told apart from the jail's processes by position: the outer ``bwrap`` (our child)
forks the jail's init (pid 1 of the new pid namespace), whose only child is ``prlimit`` -> ``setpriv``
-> python (each execs the next, so they share one pid). Killing the init tears the whole pid namespace
down, every descendant included, which is how a fork bomb or a runaway background process ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cgroups import SandboxCgroup
from .host import KERNEL_IPC, SandboxHost, cpu_lifetime_limit
from .kernel import CellResult, ImageSink, KernelConnection
from .uids import UidLease, UidPool

if TYPE_CHECKING:
    import zmq.asyncio

log = logging.getLogger("assistantd.code_interpreter")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class SandboxStartError(RuntimeError):
    pass


class Sandbox:
    def __init__(self, host: SandboxHost, context: zmq.asyncio.Context) -> None:
        self.host = host
        self.context = context
        self.id = secrets.token_hex(6)
        self.dir: Path = Path()
        self.lease: UidLease | None = None
        self.cgroup: SandboxCgroup | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.exited: asyncio.Future[Any] | None = None
        self.kernel_pid = 0
        self.init_pid = 0
        self.conn: KernelConnection | None = None
        self.output_tail: deque[bytes] = deque(maxlen=64)
        self._drain: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._running = False
        self._cpu_mark = 0.0
        self.cpu_exceeded = False
        self._killed = False
        self._reserved = False  # holds memory_mb of the host's budget until killed

    @property
    def data_dir(self) -> Path:
        return self.dir / "fs" / "data"

    @property
    def disk_dir(self) -> Path:
        """The sandbox's disk (/mnt/data and /tmp together), for its free space."""
        return self.dir / "fs"

    @property
    def uid(self) -> int:
        return self.lease.uid if self.lease else os.getuid()

    @property
    def alive(self) -> bool:
        return self.exited is not None and not self.exited.done() and not self._killed

    # --- start ----------------------------------------------------------------------------------

    @classmethod
    async def start(
        cls, host: SandboxHost, context: zmq.asyncio.Context, *, preload: tuple[str, ...] = (), reserved: bool = False
    ) -> Sandbox:
        """Start a sandbox; ``reserved``: the caller took its memory from ``host.budget``, and the sandbox
        gives it back when it is killed (or fails to start)."""
        sandbox = cls(host, context)
        sandbox._reserved = reserved
        try:
            async with asyncio.timeout(host.config.start_timeout_seconds):  # cancel-safe, unlike 3.11's wait_for
                await sandbox._start(preload)
        except BaseException as exc:
            tail = sandbox.diagnostics()
            await sandbox.destroy()
            if isinstance(exc, asyncio.CancelledError):
                raise
            detail = f": {tail}" if tail else ""
            raise SandboxStartError(f"the code interpreter sandbox failed to start ({exc!r}){detail}") from exc
        return sandbox

    async def _start(self, preload: tuple[str, ...]) -> None:
        host = self.host
        if host.mode == "sandbox":
            assert host.uids is not None
            self.lease = host.uids.acquire()
        self.dir = host.new_sandbox_dir(self.uid)
        if host.mode == "sandbox":
            self.cgroup = host.create_cgroup(self.dir)
        spec = host.launch_spec(self.dir, self.uid, self.cgroup)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                env=spec.env,
                cwd=spec.cwd,
                pass_fds=spec.pass_fds,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Out of the server's session: a Ctrl-C at the server's terminal must not interrupt kernels.
                start_new_session=True,
            )
        finally:
            for fd in spec.pass_fds:
                os.close(fd)
        self.exited = asyncio.ensure_future(self.proc.wait())
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        while line and line != b"READY\n":
            self.output_tail.append(line)
            line = await self.proc.stdout.readline()
        if not line:
            await self.exited
            raise SandboxStartError(f"the kernel exited with status {self.proc.returncode}")
        self._drain = asyncio.ensure_future(self._drain_output())
        if host.mode == "sandbox":
            self.init_pid = _only_child(self.proc.pid)
            self.kernel_pid = _only_child(self.init_pid)
            ipc = f"/proc/{self.init_pid}/root{KERNEL_IPC}"
            info = _read_json(self.dir / "fs" / "meta" / "kernel.json")
        else:
            self.kernel_pid = self.proc.pid
            info = _read_json(self.dir / "kernel.json")
            ipc = info["ip"]
        info["ip"] = ipc
        self._cpu_mark = self.cpu_used()
        self._watch = asyncio.ensure_future(self._watch_cpu())
        self.conn = KernelConnection(self.context, info)
        await self.conn.wait_ready(self.exited, self.host.config.start_timeout_seconds)
        if preload:
            # Imported while the sandbox waits in the pool, so the first cell of a session does not pay.
            names = ", ".join(preload)
            code = f"try:\n    import {names}\nexcept Exception:\n    pass\n"
            await self.run(code, wall_seconds=self.host.config.start_timeout_seconds, silent=True)

    async def _drain_output(self) -> None:
        """Keep the sandbox's stdout pipe empty (a full pipe would block its writer) and its tail for diagnostics."""
        assert self.proc is not None and self.proc.stdout is not None
        with contextlib.suppress(Exception):
            while chunk := await self.proc.stdout.read(4096):
                self.output_tail.append(chunk)

    def diagnostics(self) -> str:
        return b"".join(self.output_tail).decode(errors="replace").strip()[-800:]

    # --- run ------------------------------------------------------------------------------------

    async def run(
        self, code: str, *, wall_seconds: float, on_image: ImageSink | None = None, silent: bool = False
    ) -> CellResult:
        assert self.conn is not None and self.exited is not None
        cfg = self.host.config
        self._running = True
        self._cpu_mark = self.cpu_used()
        try:
            return await self.conn.run(
                code,
                wall_seconds=wall_seconds,
                died=self.exited,
                limit=cfg.max_output_bytes,
                max_images=cfg.max_images,
                max_image_bytes=cfg.max_image_mb << 20,
                on_image=on_image,
                grace=cfg.interrupt_grace_seconds,
                silent=silent,
            )
        finally:
            self._running = False
            self._cpu_mark = self.cpu_used()

    def cpu_used(self) -> float:
        """CPU seconds used so far by the whole sandbox (its cgroup), else by the kernel and its reaped children."""
        if self.cgroup is not None:
            used = self.cgroup.cpu_seconds()
            if used is not None:
                return used
        try:
            with open(f"/proc/{self.kernel_pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            return sum(int(x) for x in fields[11:15]) / _CLK_TCK  # utime, stime, cutime, cstime
        except (OSError, IndexError, ValueError):
            return 0.0

    async def _watch_cpu(self) -> None:
        """Kill the sandbox once it uses more than ``cpu_seconds`` of CPU during one execution, or between
        two executions (a background process left spinning). Polled: checking takes microseconds, and a
        few hundred milliseconds of overshoot do not matter for a limit measured in seconds."""
        limit = self.host.config.cpu_seconds
        while self.alive:
            await asyncio.sleep(0.1 if self._running else 1.0)
            if self.cpu_used() - self._cpu_mark > limit:
                self.cpu_exceeded = True
                self._signal_all(signal.SIGKILL)
                return

    def _signal_all(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.init_pid:  # the pid namespace's init: the kernel takes every process in it along
                os.kill(self.init_pid, sig)
            elif self.proc is not None and self.proc.returncode is None:
                os.killpg(self.proc.pid, sig)

    def crash_reason(self) -> str:
        cfg = self.host.config
        if self.cpu_exceeded:
            return f"it used more than its CPU time limit ({cfg.cpu_seconds} s)"
        if self.cgroup is not None and self.cgroup.oom_killed():
            return f"it ran out of memory (the limit is {cfg.memory_mb} MB)"
        code = self.proc.returncode if self.proc is not None else None
        if code is None:
            return "the kernel stopped answering"
        # bwrap reports a child killed by a signal as 128 + the signal; a plain subprocess as -signal.
        sig = code - 128 if code > 128 else -code if code < 0 else 0
        if sig == signal.SIGXCPU:
            return f"a process used more than its lifetime CPU limit ({cpu_lifetime_limit(cfg)} s)"
        if sig:
            with contextlib.suppress(ValueError):
                return f"the Python process was killed ({signal.Signals(sig).name})"
        return f"the Python process exited with status {code}"

    # --- end ------------------------------------------------------------------------------------

    async def kill(self) -> None:
        """Stop every process of the sandbox and give back its uid and cgroups; the folder stays."""
        self._killed = True
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self._signal_all(signal.SIGKILL)
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        if self.exited is not None:
            await asyncio.shield(self.exited)
        if self._drain is not None:
            # The pipe ends when the last sandbox process is gone; unsandboxed, a process that left our
            # process group could hold it open, so do not wait for it forever.
            await asyncio.wait({self._drain}, timeout=2.0)
        for task in (self._drain, self._watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._drain = self._watch = None
        if self.proc is not None:
            # Its stdout pipe closes itself only once read to its end: a sandbox that failed to start (never
            # drained) or whose drain was given up above would keep the descriptor until the collector
            # found it, which may be long after (observability/collector.py freezes what bursts make).
            transport = getattr(self.proc, "_transport", None)
            if transport is not None:
                transport.close()
        if self.cgroup is not None:
            await self.cgroup.remove()
            self.cgroup = None
        if self.lease is not None:
            # Only now: every process that ran as this uid is gone, so the next holder inherits nothing.
            UidPool.release(self.lease)
            self.lease = None
        if self._reserved:  # its memory is free again (what stays on its disk is bounded by disk_mb)
            self._reserved = False
            self.host.budget.give()
        ipc_note = self.dir / "ipc"
        if ipc_note.is_file():
            shutil.rmtree(ipc_note.read_text(), ignore_errors=True)
            ipc_note.unlink()

    async def destroy(self) -> None:
        await self.kill()
        if self.dir != Path():
            await asyncio.to_thread(self.host.remove_sandbox_dir, self.dir)


def _only_child(pid: int) -> int:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
        children = fh.read().split()
    if len(children) != 1:
        raise SandboxStartError(f"expected one child of {pid}, found {children}")
    return int(children[0])


def _read_json(path: Path) -> dict[str, Any]:
    import json

    with open(path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data
