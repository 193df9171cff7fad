"""Host uids for sandboxes: one unprivileged uid per sandbox, leased exclusively across the machine.

Why one uid per sandbox: RLIMIT_NPROC counts the processes of a *real uid* across the whole host, so a
fork bomb is contained per session only if no two sessions share a uid; and files one session writes
are owned by a uid no other session runs as.

Why a lock file per uid: several assistantd processes may run on one machine (replicas, test servers),
each with its own sandboxes. ``flock`` on ``/run/assistantd/uids/<uid>.lock`` makes a lease exclusive
machine-wide and is released by the kernel when its holder dies, so a crashed server leaks nothing.

Uids with a passwd entry, and uids inside /etc/subuid or /etc/subgid ranges (rootless containers map
their users there), are never used.
"""

from __future__ import annotations

import fcntl
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LOCK_DIR = Path("/run/assistantd/uids")


@dataclass
class UidLease:
    uid: int
    fd: int


class UidPool:
    def __init__(self, base: int, count: int, lock_dir: Path = DEFAULT_LOCK_DIR) -> None:
        if base < 1000 or count < 1:
            raise ValueError("sandbox uids must be a range of unprivileged uids")
        self.base = base
        self.count = count
        self.lock_dir = lock_dir
        self._cursor = 0
        self._excluded = _subordinate_ranges()

    def acquire(self) -> UidLease:
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        busy = _running_uids()
        # Round-robin rather than lowest-free, so a uid just released is not handed out again at once.
        for step in range(self.count):
            uid = self.base + (self._cursor + step) % self.count
            if self._unusable(uid):
                continue
            fd = os.open(self.lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if uid in busy:
                os.close(fd)  # unlocked, yet something still runs as it (a sandbox whose server died oddly)
                continue
            self._cursor = (uid - self.base + 1) % self.count
            return UidLease(uid, fd)
        raise RuntimeError(f"all {self.count} sandbox uids from {self.base} are in use")

    @staticmethod
    def release(lease: UidLease) -> None:
        if lease.fd >= 0:
            os.close(lease.fd)  # closing drops the flock
            lease.fd = -1

    def _unusable(self, uid: int) -> bool:
        if any(lo <= uid < hi for lo, hi in self._excluded):
            return True
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return False
        return True


def _running_uids() -> set[int]:
    """The uids that own a process on this host (``/proc/<pid>`` belongs to the process's uid)."""
    found: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit():
            try:
                found.add(os.stat(f"/proc/{entry}").st_uid)
            except OSError:
                continue
    return found


def _subordinate_ranges() -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for name in ("/etc/subuid", "/etc/subgid"):
        try:
            text = Path(name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                start = int(parts[1])
                ranges.append((start, start + int(parts[2])))
    return ranges
