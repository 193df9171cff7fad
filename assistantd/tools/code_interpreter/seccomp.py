"""The sandbox's seccomp filter: no new user namespaces, no network families, no rarely needed kernel APIs.

Why: the sandboxed code runs as an unprivileged uid with no capabilities, but an unprivileged process
may still create a *user namespace* and become "root" inside it (``unshare -r``). That cannot undo our
mounts (they are locked in a less privileged namespace), yet it opens the large kernel attack surface
that most local privilege escalations go through. Blocking it is what Docker, Flatpak and bubblewrap's
own ``--disable-userns`` do; bwrap's option needs ``--unshare-user``, which we cannot use (we drop to a
real host uid instead), so we hand bwrap a classic BPF program of our own with ``--seccomp FD``.

The program, for x86-64 and aarch64 (other architectures get no sandbox at all, and the host says so):

* a syscall from a foreign ABI (i386 or x32 on x86-64) kills the process, so numbers cannot be aliased;
* ``clone``/``unshare`` with ``CLONE_NEWUSER`` fail with EPERM;
* ``clone3`` fails with ENOSYS: its flags live in memory that seccomp cannot read, and glibc falls back
  to ``clone`` on ENOSYS (the same trick Docker's default profile uses);
* ``socket``/``socketpair`` work for ``AF_UNIX``, ``AF_INET``, ``AF_INET6`` and route netlink only
  (EPERM otherwise): the kernel talks to the server over unix sockets (ZMQ ``ipc``), and ipykernel
  binds its pipe for forked subprocesses' output to tcp://127.0.0.1, which libzmq resolves by first
  listing interfaces (``getifaddrs``: a ``NETLINK_ROUTE`` socket) and aborts when either is refused.
  Both reach nothing but the sandbox's own loopback in its empty network namespace. Every other family
  is a way out of that namespace or into a kernel subsystem: ``AF_VSOCK`` reaches the hypervisor;
  netfilter, audit and the other netlink protocols, packet, crypto (``AF_ALG``) and bluetooth sockets
  reach kernel code;
* ``personality`` only reads the persona (``0xffffffff``) or sets the default one (``PER_LINUX``):
  switching off address randomisation or enabling READ_IMPLIES_EXEC is EPERM;
* a list of kernel APIs no notebook needs and exploits love fails with EPERM (``DENIED`` below):
  io_uring, userfaultfd, BPF, perf events, keyrings, ptrace and cross-process memory access, kernel
  modules, kexec, the kernel log, mounting (also the new mount API) and namespace switching;
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
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
NETLINK_ROUTE = 0
_OFF_ARG2_LOW = 32
PERSONALITY_QUERY = 0xFFFFFFFF
PER_LINUX = 0
# Denied with EPERM, by name (the numbers per architecture are below).
DENIED = (
    "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "bpf", "perf_event_open",
    "keyctl", "add_key", "request_key", "ptrace", "process_vm_readv", "process_vm_writev",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "syslog",
    "mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "setns", "open_by_handle_at", "fanotify_init", "swapon", "swapoff", "reboot", "acct",
)  # fmt: skip
# Numbers newer syscalls share on every architecture (the unified table since Linux 5.1).
_COMMON = {
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435,
    "mount_setattr": 442,
}  # fmt: skip


@dataclass(frozen=True)
class _Arch:
    audit: int
    numbers: dict[str, int]  # from <asm/unistd.h> of the architecture
    x32_bit: int = 0  # x86-64 marks x32 syscalls with this bit in the number

    def nr(self, name: str) -> int:
        return self.numbers.get(name, _COMMON.get(name, -1))


_ARCHES = {
    "x86_64": _Arch(
        0xC000003E,
        {
            "clone": 56, "unshare": 272, "socket": 41, "socketpair": 53, "personality": 135,
            "keyctl": 250, "add_key": 248, "request_key": 249, "userfaultfd": 323, "bpf": 321,
            "perf_event_open": 298, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
            "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
            "delete_module": 176, "syslog": 103, "mount": 165, "umount2": 166, "pivot_root": 155,
            "setns": 308, "open_by_handle_at": 304, "fanotify_init": 300, "swapon": 167, "swapoff": 168,
            "reboot": 169, "acct": 163,
        },
        x32_bit=0x40000000,
    ),
    "aarch64": _Arch(
        0xC00000B7,
        {
            "clone": 220, "unshare": 97, "socket": 198, "socketpair": 199, "personality": 92,
            "keyctl": 219, "add_key": 217, "request_key": 218, "userfaultfd": 282, "bpf": 280,
            "perf_event_open": 241, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
            "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
            "delete_module": 106, "syslog": 116, "mount": 40, "umount2": 39, "pivot_root": 41,
            "setns": 268, "open_by_handle_at": 265, "fanotify_init": 262, "swapon": 224, "swapoff": 225,
            "reboot": 142, "acct": 89,
        },
    ),
}  # fmt: skip


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
    insn(_JEQ_K, arch.nr("clone3"), "enosys", 0)
    insn(_JEQ_K, arch.nr("clone"), "flags", 0)
    insn(_JEQ_K, arch.nr("unshare"), "flags", 0)
    insn(_JEQ_K, arch.nr("socket"), "family", 0)
    insn(_JEQ_K, arch.nr("socketpair"), "family", 0)
    insn(_JEQ_K, arch.nr("personality"), "persona", 0)
    for name in DENIED:
        insn(_JEQ_K, arch.nr(name), "eperm", 0)
    labels: dict[str, int] = {}
    insn(_RET_K, _RET_ALLOW)
    labels["flags"] = len(prog)
    insn(_LD_W_ABS, _OFF_ARG0_LOW)
    insn(_JSET_K, CLONE_NEWUSER, "eperm", 0)
    insn(_RET_K, _RET_ALLOW)
    labels["family"] = len(prog)
    insn(_LD_W_ABS, _OFF_ARG0_LOW)
    insn(_JEQ_K, AF_UNIX, 3, 0)  # to the allow below
    insn(_JEQ_K, AF_INET, 2, 0)
    insn(_JEQ_K, AF_INET6, 1, 0)
    insn(_JEQ_K, AF_NETLINK, "netlink", "eperm")
    insn(_RET_K, _RET_ALLOW)
    labels["netlink"] = len(prog)
    insn(_LD_W_ABS, _OFF_ARG2_LOW)  # the protocol
    insn(_JEQ_K, NETLINK_ROUTE, 0, "eperm")
    insn(_RET_K, _RET_ALLOW)
    labels["persona"] = len(prog)
    insn(_LD_W_ABS, _OFF_ARG0_LOW)
    insn(_JEQ_K, PERSONALITY_QUERY, 1, 0)  # to the allow two down
    insn(_JEQ_K, PER_LINUX, 0, "eperm")
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
    if labels[target] <= index:  # classic BPF only jumps forward
        raise ValueError(f"seccomp jump back to {target}")
    offset = labels[target] - index - 1
    if not 0 <= offset <= 255:
        raise ValueError(f"seccomp jump to {target} out of range")
    return offset
