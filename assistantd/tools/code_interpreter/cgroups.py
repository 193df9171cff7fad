"""cgroup v1 groups for sandboxes: the memory limit, the process count limit, CPU accounting.

Layout: under this server process's own group in each hierarchy, one group for the server
(``assistantd-<pid>``), and in it one group per sandbox. Nesting under our own group keeps whatever
limits the server itself runs under (a systemd unit, a container) in force for the sandboxes too.

* memory: ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``, so swap is no way around it).
  The OOM killer then picks inside the group only; the private /tmp is tmpfs, charged here as well.
* pids: ``pids.max`` counts every process and thread in the sandbox, whatever its uid, and complements
  RLIMIT_NPROC (which counts per uid): together a fork bomb stops at the limit and nothing else on the
  host notices.
* cpuacct: no limit, only ``cpuacct.usage``, the CPU time of everything in the sandbox, which the
  sandbox's CPU watchdog compares with the per-execution allowance.

A process enters its group before ``bwrap`` runs (a tiny ``sh`` writes ``$$`` to ``cgroup.procs`` and
then execs), so there is no window in which sandboxed code runs outside it.

Only cgroup v1 is handled (what our hosts run). Without a writable memory controller the sandbox falls
back to RLIMIT_AS; without pids, to RLIMIT_NPROC alone; without cpuacct, CPU is counted for the kernel
process only. ``CgroupHost.notes`` says which applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpuacct")


@dataclass
class SandboxCgroup:
    dirs: dict[str, Path]  # controller -> this sandbox's group

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.dirs.values():
            with contextlib.suppress(OSError):
                found.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return sorted(found)

    def cpu_seconds(self) -> float | None:
        """CPU time used by every process that ever ran in the group, or None without cpuacct."""
        acct = self.dirs.get("cpuacct")
        if acct is None:
            return None
        try:
            return int((acct / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None

    def oom_killed(self) -> bool:
        """Whether the OOM killer struck in this group (or, on old kernels, the limit was ever hit)."""
        mem = self.dirs.get("memory")
        if mem is None:
            return False
        with contextlib.suppress(OSError):
            match = re.search(r"^oom_kill (\d+)$", (mem / "memory.oom_control").read_text(), re.M)
            if match:
                return int(match.group(1)) > 0
            return int((mem / "memory.failcnt").read_text()) > 0
        return False

    async def remove(self) -> None:
        """Kill whatever is left in the group and remove it."""
        for attempt in range(200):
            leftover = self.pids()
            for pid in leftover:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            busy = False
            for d in self.dirs.values():
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    busy = True
            if not busy:
                return
            # Killed processes leave the group only once the kernel has reaped them: a few ms.
            await asyncio.sleep(0.005 if attempt < 20 else 0.05)


@dataclass
class CgroupHost:
    """This server's group in each usable controller, and the factory for sandbox groups."""

    roots: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def open(cls) -> CgroupHost:
        host = cls()
        mounts = _v1_mounts()
        own = _own_groups()
        name = f"assistantd-{os.getpid()}"
        for controller in CONTROLLERS:
            mount = mounts.get(controller)
            if mount is None or controller not in own:
                host.notes.append(f"no cgroup v1 {controller} controller")
                continue
            mountpoint, mount_root = mount
            rel = own[controller]
            if mount_root != "/" and rel.startswith(mount_root):
                rel = rel[len(mount_root) :]
            parent = Path(mountpoint) / rel.lstrip("/")
            _sweep_stale(parent)
            root = parent / name
            try:
                root.mkdir(exist_ok=True)
            except OSError as exc:
                host.notes.append(f"cannot create a {controller} cgroup in {parent}: {exc.strerror}")
                continue
            host.roots[controller] = root
        return host

    @property
    def memory(self) -> bool:
        return "memory" in self.roots

    @property
    def pids(self) -> bool:
        return "pids" in self.roots

    def create(self, name: str, *, memory_bytes: int, max_pids: int) -> SandboxCgroup:
        group = SandboxCgroup({})
        try:
            for controller, root in self.roots.items():
                d = root / name
                d.mkdir()
                group.dirs[controller] = d
                if controller == "memory":
                    (d / "memory.limit_in_bytes").write_text(str(memory_bytes))
                    memsw = d / "memory.memsw.limit_in_bytes"
                    if memsw.exists():
                        memsw.write_text(str(memory_bytes))
                elif controller == "pids":
                    (d / "pids.max").write_text(str(max_pids))
        except OSError:
            for d in group.dirs.values():
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise
        return group

    def close(self) -> None:
        for root in self.roots.values():
            with contextlib.suppress(OSError):
                root.rmdir()
        self.roots.clear()


def _v1_mounts() -> dict[str, tuple[str, str]]:
    """controller -> (mount point, root of the mount) for cgroup v1 hierarchies."""
    found: dict[str, tuple[str, str]] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        pre, _, post = line.partition(" - ")
        fields = pre.split()
        rest = post.split()
        if len(fields) < 5 or len(rest) < 3 or rest[0] != "cgroup":
            continue
        options = set(rest[2].split(","))
        for controller in CONTROLLERS:
            if controller in options and controller not in found:
                found[controller] = (_unescape(fields[4]), _unescape(fields[3]))
    return found


def _own_groups() -> dict[str, str]:
    groups: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return groups
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                if controller:
                    groups[controller] = parts[2]
    return groups


def _sweep_stale(parent: Path) -> None:
    """Remove groups left by assistantd processes that died (their sandboxes died with them)."""
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            match = re.fullmatch(r"assistantd-(\d+)", entry.name)
            if not match or not entry.is_dir() or Path(f"/proc/{match.group(1)}").exists():
                continue
            with contextlib.suppress(OSError):
                for child in entry.iterdir():
                    if child.is_dir():
                        with contextlib.suppress(OSError):
                            child.rmdir()
                entry.rmdir()


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)
