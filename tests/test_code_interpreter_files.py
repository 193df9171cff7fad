"""Moving files in and out of /mnt/data as root without trusting its contents, on a real filesystem.

The sandbox controls that folder, so anything the server does there must survive symlinks, FIFOs and
folders planted under the names it uses. (The attack suite does the same from inside a sandbox; these
tests pin each case down directly.)
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from assistantd.tools.code_interpreter import files as fs
from assistantd.tools.code_interpreter import seccomp
from assistantd.tools.code_interpreter.uids import UidPool


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.csv", "report.csv"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\data.xlsx", "data.xlsx"),
        ("bad\x00name\n.txt", "badname.txt"),
        ("..", "file-x"),
        ("", "file-x"),
        ("é" * 150, "é" * 100),  # 200 bytes at most
    ],
)
def test_safe_name(filename: str, expected: str) -> None:
    assert fs.safe_name(filename, "file-x") == expected


def test_scan_sees_regular_files_only(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("bb")
    (tmp_path / ".hidden").write_text("h")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "m.pyc").write_bytes(b"x")
    (tmp_path / "link.txt").symlink_to("/etc/hostname")
    (tmp_path / "dirlink").symlink_to("/etc")
    os.mkfifo(tmp_path / "fifo")
    found = fs.scan(tmp_path, limit=100)
    assert sorted(found) == ["a.txt", "sub/b.txt"]
    assert found["sub/b.txt"].size == 2
    assert len(fs.scan(tmp_path, limit=1)) == 1


def test_changed_lists_new_and_modified_files(tmp_path: Path) -> None:
    (tmp_path / "same").write_text("1")
    (tmp_path / "edited").write_text("1")
    before = fs.scan(tmp_path, 100)
    (tmp_path / "edited").write_text("22")
    (tmp_path / "new").write_text("3")
    assert fs.changed(before, fs.scan(tmp_path, 100)) == ["edited", "new"]


def test_open_regular_opens_regular_files_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "d").mkdir(parents=True)
    (root / "d" / "ok.txt").write_text("fine")
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    (root / "leaf-link.txt").symlink_to(secret)
    (root / "dir-link").symlink_to(tmp_path)  # reach secret.txt through a linked folder
    os.mkfifo(root / "fifo.csv")  # opening this for reading would block forever

    fd = fs.open_regular(root, "d/ok.txt")
    assert fd is not None
    try:
        assert os.read(fd, 100) == b"fine"
    finally:
        os.close(fd)
    for name in ("leaf-link.txt", "dir-link/secret.txt", "fifo.csv", "../secret.txt", "d", "missing"):
        assert fs.open_regular(root, name) is None, name


def test_copy_in_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("original")
    (root / "input.csv").symlink_to(victim)
    source = tmp_path / "upload"
    source.write_text("uploaded")
    fs.copy_in(root, "input.csv", source, uid=os.getuid())
    assert victim.read_text() == "original"
    assert not (root / "input.csv").is_symlink()
    assert (root / "input.csv").read_text() == "uploaded"
    assert [p.name for p in root.iterdir()] == ["input.csv"]  # no temporary file left behind


def test_copy_in_will_not_replace_a_folder(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "inside").write_text("x")
    source = tmp_path / "upload"
    source.write_text("u")
    with pytest.raises(FileExistsError):
        fs.copy_in(tmp_path, "taken", source, uid=os.getuid())
    assert (tmp_path / "taken" / "inside").read_text() == "x"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_adopt_moves_and_chowns_without_following_links(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "sub").mkdir(parents=True)
    new.mkdir()
    (old / "sub" / "f.txt").write_text("f")
    outside = tmp_path / "outside.txt"
    outside.write_text("o")
    (old / "link").symlink_to(outside)
    with open(old / "sparse.bin", "wb") as fh:
        fh.seek(200 << 20)
        fh.write(b"end")
    os.mkfifo(old / "pipe")
    fs.adopt(old, new, uid=201_234)
    assert sorted(p.name for p in new.iterdir()) == ["link", "sparse.bin", "sub"]  # no FIFO
    assert (new / "sub" / "f.txt").read_text() == "f"
    assert os.readlink(new / "link") == str(outside)
    sparse = (new / "sparse.bin").stat()
    assert sparse.st_size == (200 << 20) + 3 and sparse.st_blocks * 512 < 1 << 20  # holes stayed holes
    with open(new / "sparse.bin", "rb") as fh:
        fh.seek(200 << 20)
        assert fh.read() == b"end"
    assert (new / "sub" / "f.txt").stat().st_uid == 201_234
    assert (new / "sub").stat().st_uid == 201_234
    assert (new / "link").lstat().st_uid == 201_234
    assert outside.stat().st_uid == 0  # the link's target kept its owner


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_seccomp_program_is_well_formed(machine: str) -> None:
    program = seccomp.build_filter(machine)
    assert len(program) % 8 == 0
    insns = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    for index, (code, jt, jf, _k) in enumerate(insns):
        if code & 0x07 == 0x05:  # a jump: both targets inside the program
            assert index + 1 + max(jt, jf) < len(insns)
    # Every path ends in a return; the last instruction kills (foreign architectures jump there).
    assert insns[-1] == (0x06, 0, 0, 0x80000000)


@pytest.mark.skipif(os.geteuid() != 0, reason="running a process as another uid needs root")
def test_a_uid_still_running_a_process_is_not_leased_even_if_unlocked(tmp_path: Path) -> None:
    # A sandbox left behind by a server that died without taking it along holds no lock, but its uid
    # must not go to a new sandbox (it would share the process limit and own the new files' peers).
    base = 230_000 + os.getpid() % 10_000
    leftover = subprocess.Popen(
        [shutil.which("setpriv") or "setpriv", f"--reuid={base}", f"--regid={base}", "--clear-groups", "sleep", "60"]
    )
    try:
        deadline = time.monotonic() + 10
        while os.stat(f"/proc/{leftover.pid}").st_uid != base:  # setpriv switches right after it starts
            assert time.monotonic() < deadline, "setpriv never switched uid"
        pool = UidPool(base, 2, lock_dir=tmp_path)
        lease = pool.acquire()
        assert lease.uid == base + 1
        UidPool.release(lease)
    finally:
        leftover.kill()
        leftover.wait()
    assert UidPool(base, 2, lock_dir=tmp_path).acquire().uid == base
