"""A small seccomp filter for the sandbox: no new user namespaces, no kernel keyrings.

Why: the sandboxed code runs as an unprivileged uid with no capabilities, but an unprivileged process
may still create a *user namespace* and become "root" inside it (``unshare -r``). That cannot undo our
mounts (they are locked in a less privileged namespace), yet it opens the large kernel attack surface
that most local privilege escalations go through. Blocking it is what Docker, Flatpak and bubblewrap's
own ``--disable-userns`` do; bwrap's option needs ``--unshare-user``, which we cannot use (we drop to a
real host uid instead), so we hand bwrap a classic BPF program of our own with ``--seccomp FD``.

The program, for x86-64 and aarch64 (other architectures get no filter, and the caller says so):

* a syscall from a foreign ABI (i386 or x32 on x86-64) kills the process, so numbers cannot be aliased;
* ``clone``/``unshare`` with ``CLONE_NEWUSER`` fail with EPERM;
* ``clone3`` fails with ENOSYS: its flags live in memory that seccomp cannot read, and glibc falls back
  to ``clone`` on ENOSYS (the same trick Docker's default profile uses);
* ``keyctl``/``add_key``/``request_key`` fail with EPERM (keyrings are not namespaced);
* everything else is allowed: resource limits, not syscall filtering, are what bound the code.
"""

from __future__ import annotations

import errno
import platform
import struct
from dataclasses import dataclass

# <linux/filter.h> and <linux/seccomp.h>
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARG0_LOW = 16  # args[0] of struct seccomp_data; the low 32 bits first on little-endian
CLONE_NEWUSER = 0x10000000


@dataclass(frozen=True)
class _Arch:
    audit: int
    clone: int
    unshare: int
    clone3: int
    keyrings: tuple[int, ...]
    x32_bit: int = 0  # x86-64 marks x32 syscalls with this bit in the number


_ARCHES = {
    "x86_64": _Arch(0xC000003E, clone=56, unshare=272, clone3=435, keyrings=(248, 249, 250), x32_bit=0x40000000),
    "aarch64": _Arch(0xC00000B7, clone=220, unshare=97, clone3=435, keyrings=(217, 218, 219)),
}


def supported() -> bool:
    return platform.machine() in _ARCHES


def build_filter(machine: str | None = None) -> bytes:
    """The BPF program (an array of ``struct sock_filter``) that bwrap's ``--seccomp`` reads."""
    arch = _ARCHES[machine or platform.machine()]
    # Assembled with symbolic jump targets; BPF jumps are forward offsets counted from the next insn.
    prog: list[tuple[int, str | int, str | int, int]] = []

    def insn(code: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        prog.append((code, jt, jf, k))

    insn(_LD_W_ABS, _OFF_ARCH)
    insn(_JEQ_K, arch.audit, 0, "kill")
    insn(_LD_W_ABS, _OFF_NR)
    if arch.x32_bit:
        insn(_JGE_K, arch.x32_bit, "kill", 0)
    insn(_JEQ_K, arch.clone3, "enosys", 0)
    insn(_JEQ_K, arch.clone, "flags", 0)
    insn(_JEQ_K, arch.unshare, "flags", 0)
    for nr in arch.keyrings:
        insn(_JEQ_K, nr, "eperm", 0)
    labels: dict[str, int] = {}
    insn(_RET_K, _RET_ALLOW)
    labels["flags"] = len(prog)
    insn(_LD_W_ABS, _OFF_ARG0_LOW)
    insn(_JSET_K, CLONE_NEWUSER, "eperm", 0)
    insn(_RET_K, _RET_ALLOW)
    labels["eperm"] = len(prog)
    insn(_RET_K, _RET_ERRNO | errno.EPERM)
    labels["enosys"] = len(prog)
    insn(_RET_K, _RET_ERRNO | errno.ENOSYS)
    labels["kill"] = len(prog)
    insn(_RET_K, _RET_KILL_PROCESS)

    out = bytearray()
    for index, (code, jt, jf, k) in enumerate(prog):
        out += struct.pack("=HBBI", code, _offset(jt, index, labels), _offset(jf, index, labels), k)
    return bytes(out)


def _offset(target: str | int, index: int, labels: dict[str, int]) -> int:
    if isinstance(target, int):
        return target
    offset = labels[target] - index - 1
    if not 0 <= offset <= 255:
        raise ValueError(f"seccomp jump to {target} out of range")
    return offset
