"""Moving bytes in and out of a sandbox's /mnt/data without trusting what the sandbox put there.

The server touches these folders as root, while sandboxed code (and any background process it left
running) may have filled them with symlinks to /etc/shadow, FIFOs that block forever, or directories
swapped for links mid-walk. So every operation here works on directory file descriptors with
``O_NOFOLLOW``: a symlink is never followed, only regular files are read, and a file is written by
creating a fresh temporary name and renaming it into place (a rename replaces a planted symlink instead
of writing through it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Scratch files nobody asked for: hidden files (editor, cache and checkpoint folders) and bytecode.
_SKIP_DIRS = {"__pycache__"}


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    inode: int


def safe_name(filename: str, fallback: str) -> str:
    """A single path component for an uploaded file: no folders, no control characters, no dot names."""
    name = re.split(r"[\\/]", filename)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    while len(name.encode()) > 200:
        name = name[:-1]
    if name in {"", ".", ".."}:
        name = fallback
    return name


def scan(root: Path, limit: int) -> dict[str, FileState]:
    """Regular files under ``root`` (relative path -> state), not following links; at most ``limit``."""
    found: dict[str, FileState] = {}
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError:
        return found
    try:
        _scan_dir(fd, "", found, limit, depth=0)
    finally:
        os.close(fd)
    return found


def _scan_dir(fd: int, prefix: str, found: dict[str, FileState], limit: int, depth: int) -> None:
    if depth > 32:
        return
    with contextlib.suppress(OSError), os.scandir(fd) as entries:
        for entry in entries:
            if len(found) >= limit:
                return
            if entry.name.startswith("."):
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                found[prefix + entry.name] = FileState(st.st_size, st.st_mtime_ns, st.st_ino)
            elif stat.S_ISDIR(st.st_mode) and entry.name not in _SKIP_DIRS:
                try:
                    sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    _scan_dir(sub, prefix + entry.name + "/", found, limit, depth + 1)
                finally:
                    os.close(sub)


def changed(before: dict[str, FileState], after: dict[str, FileState]) -> list[str]:
    return sorted(name for name, state in after.items() if before.get(name) != state)


def open_regular(root: Path, relpath: str) -> int | None:
    """A read-only fd of the regular file ``root/relpath``, or None if it is not one (a link anywhere on the
    way, a FIFO, a device, gone). The caller closes it."""
    parts = relpath.split("/")
    if any(p in {"", ".", ".."} for p in parts):
        return None
    dir_fd = -1
    try:
        dir_fd = os.open(root, _DIR_FLAGS)
        for part in parts[:-1]:
            sub = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = sub
        src = os.open(parts[-1], _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(src).st_mode):
        os.close(src)
        return None
    os.set_blocking(src, True)
    return src


def copy_in(root: Path, name: str, source: Path, uid: int) -> None:
    """Put ``source`` at ``root/name``, owned by ``uid``, replacing whatever entry had that name."""
    dir_fd = os.open(root, _DIR_FLAGS)
    tmp = f".incoming-{secrets.token_hex(8)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        try:
            with open(source, "rb") as fin, open(fd, "wb", closefd=False) as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            os.fchown(fd, uid, uid)
        finally:
            os.close(fd)
        try:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in {errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST}:  # a folder holds the name
                raise FileExistsError(name) from None
            raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        os.close(dir_fd)


def exists(root: Path, name: str) -> bool:
    try:
        dir_fd = os.open(root, _DIR_FLAGS)
    except OSError:
        return False
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except OSError:
        return False
    finally:
        os.close(dir_fd)


def adopt(old_root: Path, new_root: Path, uid: int) -> None:
    """Move everything from a dead sandbox's folder into a new one and give it to the new uid.

    Each sandbox has a disk of its own (mounts.py), so "move" is a copy: regular files by their data
    (holes stay holes, so a sparse file costs the new disk what it cost the old one), folders, and
    symlinks recreated as links (never followed); FIFOs and devices stay behind. What does not fit is
    dropped. Called before any code runs in the new sandbox and after every process of the old one is
    gone, so nothing races with the walk.
    """
    old_fd = os.open(old_root, _DIR_FLAGS)
    new_fd = os.open(new_root, _DIR_FLAGS)
    try:
        _copy_tree(old_fd, new_fd, uid, depth=0)
    finally:
        os.close(old_fd)
        os.close(new_fd)


def _copy_tree(src_dir: int, dst_dir: int, uid: int, depth: int) -> None:
    if depth > 32:
        return
    for name in os.listdir(src_dir):
        with contextlib.suppress(OSError):
            st = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(name, 0o755, dir_fd=dst_dir)
                os.chown(name, uid, uid, dir_fd=dst_dir, follow_symlinks=False)
                sub_src = os.open(name, _DIR_FLAGS, dir_fd=src_dir)
                try:
                    sub_dst = os.open(name, _DIR_FLAGS, dir_fd=dst_dir)
                    try:
                        _copy_tree(sub_src, sub_dst, uid, depth + 1)
                    finally:
                        os.close(sub_dst)
                finally:
                    os.close(sub_src)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=src_dir), name, dir_fd=dst_dir)
                os.chown(name, uid, uid, dir_fd=dst_dir, follow_symlinks=False)
            elif stat.S_ISREG(st.st_mode):
                src = os.open(name, _READ_FLAGS, dir_fd=src_dir)
                try:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                    dst = os.open(name, flags, stat.S_IMODE(st.st_mode) & 0o777, dir_fd=dst_dir)
                    try:
                        os.fchown(dst, uid, uid)
                        copy_sparse(src, dst, st.st_size)
                    finally:
                        os.close(dst)
                finally:
                    os.close(src)


def copy_sparse(src: int, dst: int, size: int) -> None:
    """Copy ``size`` bytes of file ``src`` to ``dst`` by their data segments: holes are skipped, not written."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            raise
        end = min(os.lseek(src, start, os.SEEK_HOLE), size)
        os.lseek(src, start, os.SEEK_SET)
        os.lseek(dst, start, os.SEEK_SET)
        while start < end:
            chunk = os.read(src, min(1 << 20, end - start))
            if not chunk:
                end = start
                break
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst, view) :]
            start += len(chunk)
        offset = end if end > offset else size
    os.ftruncate(dst, size)
