"""Each sandbox's disk: a size-capped tmpfs the server mounts, holding both /mnt/data and /tmp.

Why a filesystem of its own: a byte budget checked by the host would be checked too late (a cell writes
gigabytes between two checks), and RLIMIT_FSIZE caps one file, not many or hidden ones. A tmpfs with
``size=`` refuses the write that would pass it (ENOSPC), whatever the file, and ``nr_inodes=`` bounds
the number of files. It lives in memory, not on the host's disk: pages the sandbox writes are charged
to its memory cgroup (so /mnt/data and /tmp share the sandbox's memory limit too), and a sparse file
costs only the pages it really has.

Layout on the host: ``<sandbox dir>/fs`` is the mount point; in it ``data`` (bound to /mnt/data, owned
by the sandbox uid) and ``tmp`` (bound to /tmp, mode 1777). The mount is made by the server in its own
mount namespace and detached (``MNT_DETACH``) when the sandbox folder is removed, or when a later server
sweeps the folders of one that died.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
from pathlib import Path

_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MNT_DETACH = 0x2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def mount_tmpfs(target: Path, size_bytes: int, inodes: int) -> None:
    options = f"size={size_bytes},nr_inodes={inodes},mode=0755".encode()
    if _libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot mount the sandbox's tmpfs at {target}: {os.strerror(err)}")


def mount_readonly_view(target: Path, source: Path, empty: Path) -> None:
    """Show ``source`` read-only at ``target`` through an overlay that names it by file descriptor.

    A bind mount would do, except that /proc/self/mountinfo in the sandbox shows a bind's source path
    (here: the server's venv). An overlay's root is its own, and its options show the layers as given:
    ``/proc/self/fd/N`` says nothing. A read-only overlay needs two lower layers, hence ``empty``.
    """
    src = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    blank = os.open(empty, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        options = f"lowerdir=/proc/self/fd/{src}:/proc/self/fd/{blank}".encode()
        if _libc.mount(b"none", os.fsencode(target), b"overlay", _MS_RDONLY | _MS_NOSUID | _MS_NODEV, options) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot mount an overlay of {source} at {target}: {os.strerror(err)}")
    finally:
        os.close(src)
        os.close(blank)


def unmount(target: Path) -> None:
    """Detach the mount at ``target``; nothing if there is none."""
    if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in {22, 2}:  # EINVAL: not a mount point; ENOENT: gone
            raise OSError(err, f"cannot unmount {target}: {os.strerror(err)}")


def unmount_under(root: Path) -> None:
    """Detach every mount at or below ``root`` (a dead server's sandbox folders), deepest first."""
    prefix = str(root.resolve())
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4:
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                if point == prefix or point.startswith(prefix + "/"):
                    found.append(point)
    for point in sorted(found, key=len, reverse=True):
        with contextlib.suppress(OSError):
            unmount(Path(point))


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
