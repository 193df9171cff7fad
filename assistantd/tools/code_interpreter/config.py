"""The code interpreter's knobs, and the one function that derives them from the server's Settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from assistantd.settings import Settings


@dataclass(frozen=True)
class SandboxConfig:
    work_root: Path  # session folders live here (root-only); must not be visible to sandboxes
    pool_size: int = 2  # sandboxes started ahead of need, kernel up, not yet bound to a session
    idle_seconds: float = 3600.0  # a session unused this long is closed (variables and files gone)
    timeout_seconds: float = 60.0  # wall time per execution before it is interrupted, then killed
    # CPU time the whole sandbox may use per execution, and between two executions (a background spinner):
    # a watchdog on its cgroup's cpuacct; RLIMIT_CPU of 10x this caps each process's whole life.
    cpu_seconds: int = 60
    memory_mb: int = 1024  # per sandbox, everything in it (cgroup memory limit, else RLIMIT_AS)
    max_processes: int = 128  # processes *and threads* per sandbox (RLIMIT_NPROC and pids.max)
    max_file_mb: int = 256  # largest file the code may write (RLIMIT_FSIZE)
    # /mnt/data and /tmp together, hidden files included: a tmpfs of this size per sandbox (mounts.py)
    disk_mb: int = 512
    max_output_bytes: int = 32768  # logs returned per execution; the rest is dropped with a note
    max_image_mb: int = 16  # largest image kept per execution
    max_saved_mb: int = 256  # images and files saved per execution, together
    memory_budget_mb: int = 0  # memory all sandboxes together may reserve (memory_mb each); 0: unbounded
    memory_wait_seconds: float = 30.0  # how long a new session waits for that budget
    max_sessions: int = 64  # live sessions; past this the least recently used idle one is closed
    allow_unsandboxed: bool = False  # run code WITHOUT isolation when no sandbox is available
    python: str = ""  # the Python the kernel runs (needs ipykernel); empty: the server's own
    # Paths no sandbox may ever see (the data dir, the database): a Python prefix that contains one of
    # them makes the sandbox unavailable rather than mounting it.
    protect: tuple[Path, ...] = ()
    # Below: not settings, for tests and unusual hosts.
    preload: tuple[str, ...] = ("numpy", "pandas", "matplotlib.pyplot")  # imported in pooled kernels
    tmp_mb: int = 256  # the sandbox's /dev/shm (tmpfs, charged to its memory limit)
    uid_base: int = 200_000
    uid_count: int = 50_000
    bwrap: str = "bwrap"
    interrupt_grace_seconds: float = 2.0  # after an interrupt, how long the cell gets to stop
    start_timeout_seconds: float = 60.0  # a kernel not ready by then counts as failed to start
    max_output_files: int = 50  # files reported per execution
    max_images: int = 20  # images reported per execution


def sandbox_config_from_settings(settings: Settings) -> SandboxConfig:
    protect = [settings.data_path]
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        protect.append(Path(url.removeprefix("sqlite:///")).expanduser().resolve().parent)
    return SandboxConfig(
        work_root=settings.data_path / "code-interpreter",
        pool_size=settings.code_interpreter_pool_size,
        idle_seconds=float(settings.code_interpreter_idle_seconds),
        timeout_seconds=settings.code_interpreter_timeout,
        cpu_seconds=settings.code_interpreter_cpu_seconds,
        memory_mb=settings.code_interpreter_memory_mb,
        max_processes=settings.code_interpreter_max_processes,
        max_file_mb=settings.code_interpreter_max_file_mb,
        disk_mb=settings.code_interpreter_disk_mb,
        max_output_bytes=settings.code_interpreter_max_output_bytes,
        max_image_mb=settings.code_interpreter_max_image_mb,
        max_saved_mb=settings.code_interpreter_max_output_mb,
        memory_budget_mb=memory_budget_mb(
            settings.code_interpreter_memory_budget_mb, settings.code_interpreter_memory_mb
        ),
        memory_wait_seconds=settings.code_interpreter_memory_wait_seconds,
        max_sessions=settings.code_interpreter_max_sessions,
        allow_unsandboxed=settings.code_interpreter_allow_unsandboxed,
        python=settings.code_interpreter_python,
        protect=tuple(protect),
    )


def memory_budget_mb(setting: int, each_mb: int) -> int:
    """The budget across sandboxes (0 in SandboxConfig: none). Unset (0), it is half of the host's memory,
    so the default server cannot promise its 64 sessions far more memory than the host has; never less than
    one sandbox, so a small host still runs code. Negative: no budget, as asked."""
    if setting < 0:
        return 0
    if setting > 0:
        return setting
    host_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    return max(host_mb // 2, each_mb)
