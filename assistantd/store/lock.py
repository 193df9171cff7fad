"""An exclusive lock on a SQLite database, so only one server process serves it.

SQLite itself would let a second ``assistantd serve`` open the same file; both would then claim and
reap the same runs and fail each other's live work. ``flock`` on a file beside the database is held
for the life of the process and released by the kernel however it ends (even SIGKILL), so a stale
lock file never blocks a restart. The file holds the holder's pid, for the error message only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirLocked(RuntimeError):
    """Another live process serves this database."""


class DataDirLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"another assistantd process (pid {holder}) is already serving the database beside "
                f"{self.path}; stop it first, or give this one its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def sqlite_lock_path(database_url: str) -> Path | None:
    """The lock file of a SQLite database URL (None for other databases or an in-memory one)."""
    if not database_url.startswith("sqlite:"):
        return None
    path = database_url.removeprefix("sqlite:").removeprefix("//")
    if path in ("", ":memory:"):
        return None
    return Path(path).expanduser().resolve().with_name(Path(path).name + ".lock")
