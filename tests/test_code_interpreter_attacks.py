"""Attacks on the code interpreter sandbox: every one of them must fail, every time.

Each test runs hostile code in a real sandbox and checks both sides: what the code saw (an error, an
empty result) and that the host and the other sessions are untouched afterwards. The limits of the
shared fixture are small (see code_interpreter_support.config) so the attacks hit them quickly.
"""

from __future__ import annotations

import ast
import contextlib
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from code_interpreter_support import Harness, harness, host_pids_of_uid

import assistantd
from assistantd.tools.code_interpreter import InputFile


@pytest.fixture(scope="module")
def ci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    yield from harness(tmp_path_factory.mktemp("ci-attacks"))


def probe(ci: Harness, key: str, code: str) -> object:
    """Run code whose last line prints a Python literal, and return that value."""
    logs = ci.ok(key, code)
    return ast.literal_eval(logs.strip().splitlines()[-1])


def assert_healthy(ci: Harness) -> None:
    """After an attack: the host can still start processes and a fresh session still computes."""
    assert subprocess.run(["true"], check=False).returncode == 0
    assert ci.ok(f"a:healthy-{secrets.token_hex(3)}", "print(sum(range(10)))") == "45\n"


ERRORS_AS_NAMES = """
import errno
def attempt(fn):
    try:
        fn()
        return "SUCCEEDED"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, type(exc).__name__)
"""


# --- network ---------------------------------------------------------------------------------------


def test_no_network_at_all(ci: Harness) -> None:
    # Listeners on the host's loopback (TCP) and in its abstract unix namespace: unreachable from inside.
    tcp = socket.create_server(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX)
    name = f"assistantd-test-{secrets.token_hex(4)}"
    abstract.bind("\0" + name)
    abstract.listen()
    try:
        port = tcp.getsockname()[1]
        code = ERRORS_AS_NAMES + (
            "import socket\n"
            "def tcp(host, port):\n"
            "    socket.create_connection((host, port), timeout=3).close()\n"
            "def unix():\n"
            "    s = socket.socket(socket.AF_UNIX)\n"
            f"    s.connect('\\0{name}')\n"
            "def dns():\n"
            "    try:\n"
            "        socket.getaddrinfo('pypi.org', 443)\n"
            "    except socket.gaierror as exc:\n"
            "        raise OSError(errno.ENOENT, str(exc)) from None\n"
            "print([attempt(lambda: tcp('1.1.1.1', 80)), attempt(lambda: tcp('127.0.0.1', "
            f"{port})), attempt(unix), attempt(dns), [n for _, n in socket.if_nameindex()]])"
        )
        public, loopback, unix, dns, interfaces = probe(ci, "a:net", code)  # type: ignore[misc]
        assert public in {"ENETUNREACH", "EHOSTUNREACH"}
        assert loopback == "ECONNREFUSED"  # its own, empty loopback
        assert unix == "ECONNREFUSED"
        assert dns == "ENOENT"
        assert interfaces == ["lo"]  # listed through route netlink, which seccomp lets through for libzmq
    finally:
        tcp.close()
        abstract.close()


def test_seccomp_denies_socket_families_and_dangerous_kernel_apis(ci: Harness) -> None:
    import platform

    # From <asm/unistd.h>, written out here so the test does not trust the filter's own table.
    numbers = {
        "x86_64": {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "userfaultfd": 323,
                   "personality": 135, "ptrace": 101, "bpf": 321, "perf_event_open": 298, "keyctl": 250,
                   "process_vm_readv": 310},
        "aarch64": {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "userfaultfd": 282,
                    "personality": 92, "ptrace": 117, "bpf": 280, "perf_event_open": 241, "keyctl": 219,
                    "process_vm_readv": 270},
    }[platform.machine()]  # fmt: skip
    code = ERRORS_AS_NAMES + (
        "import ctypes, socket\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.syscall.restype = ctypes.c_long\n"
        "def call(nr, *args):\n"
        "    def go():\n"
        "        if libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args]) == -1:\n"
        "            raise OSError(ctypes.get_errno(), str(nr))\n"
        "    return go\n"
        f"nr = {numbers!r}\n"
        "params = ctypes.create_string_buffer(120)\n"
        "families = {n: getattr(socket, n) for n in ('AF_VSOCK', 'AF_PACKET',"
        " 'AF_ALG', 'AF_BLUETOOTH') if hasattr(socket, n)}\n"
        "out = {n: attempt(lambda f=f: socket.socket(f, socket.SOCK_DGRAM if f == socket.AF_NETLINK else"
        " socket.SOCK_STREAM if f != socket.AF_PACKET else socket.SOCK_RAW).close()) for n, f in families.items()}\n"
        "out['socketpair_vsock'] = attempt(lambda: socket.socketpair(families['AF_VSOCK']))\n"
        "out['netlink_route'] = attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close())\n"
        "for proto, name in ((9, 'audit'), (12, 'netfilter'), (4, 'sock_diag'), (15, 'kobject_uevent')):\n"
        "    out[f'netlink_{name}'] = attempt(lambda p=proto: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, p))\n"
        "out['inet'] = attempt(lambda: socket.socket(socket.AF_INET).close())\n"
        "out['unix'] = attempt(lambda: socket.socket(socket.AF_UNIX).close())\n"
        "out['unix_pair'] = attempt(lambda: [s.close() for s in socket.socketpair()])\n"
        "out['io_uring_setup'] = attempt(call(nr['io_uring_setup'], 4, ctypes.addressof(params)))\n"
        "out['io_uring_enter'] = attempt(call(nr['io_uring_enter'], 0, 0, 0, 0, 0, 0))\n"
        "out['io_uring_register'] = attempt(call(nr['io_uring_register'], 0, 0, 0, 0))\n"
        "out['userfaultfd'] = attempt(call(nr['userfaultfd'], 1))\n"  # UFFD_USER_MODE_ONLY: allowed unprivileged
        "out['personality_no_aslr'] = attempt(call(nr['personality'], 0x0040000))\n"
        "out['personality_query'] = attempt(call(nr['personality'], 0xFFFFFFFF))\n"
        "out['ptrace'] = attempt(call(nr['ptrace'], 0, 0, 0, 0))\n"  # PTRACE_TRACEME
        "out['bpf'] = attempt(call(nr['bpf'], 0, 0, 0))\n"
        "out['perf_event_open'] = attempt(call(nr['perf_event_open'], 0, 0, -1, -1, 0))\n"
        "out['keyctl'] = attempt(call(nr['keyctl'], 0, -3, 0))\n"  # KEYCTL_GET_KEYRING_ID of the session keyring
        "out['process_vm_readv'] = attempt(call(nr['process_vm_readv'], 1, 0, 0, 0, 0, 0))\n"
        "print(out)"
    )
    out = probe(ci, "a:seccomp", code)
    assert isinstance(out, dict)
    assert out.pop("unix") == "SUCCEEDED" and out.pop("unix_pair") == "SUCCEEDED"
    # ipykernel needs these; the network namespace has nothing but a loopback.
    assert (out.pop("inet"), out.pop("netlink_route")) == ("SUCCEEDED", "SUCCEEDED")
    assert out.pop("personality_query") == "SUCCEEDED"  # reading the persona is fine (glibc and Python do)
    assert "AF_VSOCK" in out and "io_uring_setup" in out
    assert out == dict.fromkeys(out, "EPERM"), out
    assert_healthy(ci)


# --- reading the host ------------------------------------------------------------------------------


def test_host_files_are_invisible(ci: Harness) -> None:
    database = ci.root / "assistantd.db"
    database.write_text("SECRET DATABASE")
    ci.ok("a:victim", "open('/mnt/data/victim-secret.txt', 'w').write('SECRET OF ANOTHER SESSION')")
    victim = ci.ci._sessions["a:victim"].sandbox  # the other session's folder, by its host path
    assert victim is not None
    other_session_file = victim.data_dir / "victim-secret.txt"
    secrets_on_host = [
        database,
        ci.root,
        other_session_file,
        victim.dir,
        ci.ci.config.work_root,
        Path("/etc/shadow"),
        Path(assistantd.__file__).parent,  # the server's own source
        Path.home() / ".bashrc",
        Path("/home"),
        Path("/var/lib"),
    ]
    secrets_on_host = [p for p in secrets_on_host if p.exists()]
    assert database in secrets_on_host and other_session_file in secrets_on_host
    code = ERRORS_AS_NAMES + (
        "import os\n"
        "def read(p):\n"
        "    if os.path.isdir(p):\n"
        "        os.listdir(p)\n"
        "    else:\n"
        "        open(p, 'rb').read()\n"
        f"print([attempt(lambda p=p: read(p)) for p in {[str(p) for p in secrets_on_host]!r}])"
    )
    results = probe(ci, "a:reader", code)
    assert results == ["ENOENT"] * len(secrets_on_host), list(zip(secrets_on_host, results, strict=True))  # type: ignore[arg-type]


def test_host_paths_the_venv_and_kernel_internals_are_out_of_view(ci: Harness) -> None:
    # Host paths that bind mounts used to name in /proc/self/mountinfo: the data dir, the sandbox folders
    # (passwd, kernel.json), the server's source (kernel_main.py), and the venv itself.
    named = [str(ci.root), str(ci.ci.config.work_root), str(Path(assistantd.__file__).parent)]
    if sys.prefix != sys.base_prefix:
        named.append(sys.prefix)
    masked = ("kallsyms", "modules", "keys", "timer_list", "cmdline", "iomem", "sched_debug")
    code = ERRORS_AS_NAMES + (
        "import os, sys\n"
        "mountinfo = open('/proc/self/mountinfo').read()\n"
        f"proc = {{n: attempt(lambda n=n: open(f'/proc/{{n}}', 'rb').read(64)) for n in {masked!r}"
        " if os.path.exists(f'/proc/{n}')}\n"
        f"print([[n for n in {named!r} if n in mountinfo], sys.prefix, sorted(os.listdir(sys.prefix)),"
        f" os.path.exists({sys.prefix!r}), proc])"
    )
    seen, prefix, listing, host_venv_seen, proc = probe(ci, "a:paths", code)  # type: ignore[misc]
    assert seen == []
    if sys.prefix != sys.base_prefix:  # the server runs from a venv: the kernel sees only its packages
        assert (prefix, listing, host_venv_seen) == ("/opt/venv", ["bin", "lib", "pyvenv.cfg"], False)
    assert "kallsyms" in proc and set(proc.values()) <= {"EACCES", "ENOENT"}, proc


def test_host_processes_are_invisible(ci: Harness) -> None:
    code = ERRORS_AS_NAMES + (
        "import os\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "argv0 = [open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0')[0].decode() for p in pids]\n"
        "print([pids, os.getpid(), [os.path.basename(a) for a in argv0],"
        " attempt(lambda: open('/proc/1/environ').read()), attempt(lambda: open('/proc/1/mem', 'rb').read(1))])"
    )
    pids, me, names, environ, mem = probe(ci, "a:procs", code)  # type: ignore[misc]
    # A pid namespace of its own: its init (bwrap, root, off limits) and the kernel, nothing of the host.
    assert (pids, me) == ([1, 2], 2)
    assert names[0] == "bwrap" and names[1].startswith("python")
    assert (environ, mem) == ("EACCES", "EACCES")


# --- writing the host ------------------------------------------------------------------------------


def test_nothing_outside_mnt_data_is_writable(ci: Harness) -> None:
    marker = f"assistantd-escape-{secrets.token_hex(4)}"
    targets = ["/", "/usr", "/usr/local/bin", "/etc", "/opt/assistantd", "/root", "/mnt", sys.prefix, sys.base_prefix]
    targets += ["/opt/venv", "/opt/venv/lib"]
    code = ERRORS_AS_NAMES + (
        "import os\n"
        "def write(d):\n"
        f"    open(os.path.join(d, '{marker}'), 'w').write('x')\n"
        f"results = [attempt(lambda d=d: write(d)) for d in {targets!r}]\n"
        "results.append(attempt(lambda: open('/opt/assistantd/kernel_main.py', 'a').write('#')))\n"
        "results.append(attempt(lambda: open('/proc/sys/kernel/hostname', 'w').write('x')))\n"
        f"open('/tmp/{marker}', 'w').write('private scratch space')\n"
        "print(results)"
    )
    results = probe(ci, "a:writer", code)
    assert isinstance(results, list) and len(results) == len(targets) + 2
    assert all(r in {"EROFS", "EACCES", "ENOENT"} for r in results), results  # ENOENT: the venv's host path
    for d in [*targets, "/tmp"]:
        assert not (Path(d) / marker).exists()  # nothing reached the host, not even the sandbox's /tmp


def test_remounting_read_write_is_refused(ci: Harness) -> None:
    code = ERRORS_AS_NAMES + (
        "import ctypes, subprocess\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "MS_REMOUNT, MS_BIND = 32, 4096\n"
        "def remount(path, flags):\n"
        "    if libc.mount(None, path.encode(), None, flags, None) != 0:\n"
        "        raise OSError(ctypes.get_errno(), path)\n"
        "cli = subprocess.run(['mount', '-o', 'remount,rw', '/usr'], capture_output=True)\n"
        "print([attempt(lambda: remount('/usr', MS_REMOUNT | MS_BIND)), attempt(lambda: remount('/', MS_REMOUNT)),"
        " attempt(lambda: remount('/mnt/data', MS_REMOUNT)), cli.returncode != 0,"
        " attempt(lambda: open('/usr/assistantd-after-remount', 'w'))])"
    )
    assert probe(ci, "a:remount", code) == ["EPERM", "EPERM", "EPERM", True, "EROFS"]


# --- privileges ------------------------------------------------------------------------------------


def test_privileges_cannot_be_gained(ci: Harness) -> None:
    code = ERRORS_AS_NAMES + (
        "import ctypes, os, subprocess\n"
        "lines = open('/proc/self/status').read().splitlines()\n"
        "status = dict(line.split(':\\t', 1) for line in lines if ':\\t' in line)\n"
        "caps = [int(status[k], 16) for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb')]\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def new_user_namespace():\n"
        "    if libc.unshare(0x10000000) != 0:\n"
        "        raise OSError(ctypes.get_errno(), 'unshare')\n"
        "unshare = subprocess.run(['unshare', '-r', 'id', '-u'], capture_output=True)\n"
        "su = subprocess.run(['su', '-c', 'id -u', 'root'], capture_output=True, stdin=subprocess.DEVNULL)\n"
        "print([caps, status['NoNewPrivs'].strip(), status['Seccomp'].strip(),"
        " attempt(lambda: os.setuid(0)), attempt(lambda: os.setgid(0)), attempt(lambda: os.setgroups([0])),"
        " attempt(lambda: os.chown('/mnt/data', 0, 0)), attempt(new_user_namespace),"
        " unshare.returncode != 0, su.returncode != 0, os.getuid() != 0])"
    )
    caps, nnp, seccomp, *rest = probe(ci, "a:privs", code)  # type: ignore[misc]
    assert caps == [0, 0, 0, 0, 0]
    assert (nnp, seccomp) == ("1", "2")  # no_new_privs: setuid binaries and file caps stay inert
    assert rest == ["EPERM", "EPERM", "EPERM", "EPERM", "EPERM", True, True, True]


# --- resource exhaustion ---------------------------------------------------------------------------


def test_fork_bomb_is_contained(ci: Harness) -> None:
    # Children that stay alive: forking stops at the process limit, well short of the host's.
    counted = ERRORS_AS_NAMES + (
        "import os, signal\n"
        "children = 0\n"
        "try:\n"
        "    while children < 10_000:\n"
        "        if os.fork() == 0:\n"
        "            signal.pause()\n"
        "            os._exit(0)\n"
        "        children += 1\n"
        "    outcome = 'unlimited'\n"
        "except OSError as exc:\n"
        "    outcome = errno.errorcode[exc.errno]\n"
        "print([children, outcome])"
    )
    children, outcome = probe(ci, "a:forks", counted)  # type: ignore[misc]
    assert outcome == "EAGAIN" and 0 < children < 64
    ci.run(ci.ci.close_session("a:forks"))
    uid = int(ci.ok("a:bomb", "import os; print(os.getuid())"))
    # The classic bomb: every child forks too, forever. It spins against the limit until the timeout
    # kills the whole pid namespace.
    result = ci.execute(
        "a:bomb", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", timeout=3
    )
    # Whichever limit strikes first, the wall clock or the CPU allowance (dozens of spinning processes
    # use it up fast), the whole sandbox goes.
    assert result.error in {"timeout", "crashed"}
    assert "longer than 3 s" in result.logs or "CPU time limit" in result.logs
    assert host_pids_of_uid(uid) == []
    assert ci.ok("a:bomb", "print('back')") == "back\n"
    assert_healthy(ci)


def test_memory_bomb_is_contained(tmp_path: Path) -> None:
    # A sandbox of its own whose CPU allowance cannot strike first: filling 512 MB is ~130,000 page faults,
    # 0.6 s of CPU on a warm machine but past the shared fixture's 4 s on a fresh VM whose memory the
    # hypervisor has not yet backed (seen once in CI), and then the CPU limit rightly ends it instead.
    gen = harness(tmp_path, pool_size=0, cpu_seconds=120, timeout_seconds=120.0)
    ci = next(gen)
    try:
        # b"x" * n writes every byte, so the pages are really used (a bare bytearray(n) would stay virtual).
        result = ci.execute("a:memory", "hog = []\nwhile True:\n    hog.append(b'x' * (32 << 20))")
        assert result.error == "crashed"
        assert "out of memory (the limit is 512 MB)" in result.logs
        code = ERRORS_AS_NAMES + (
            "def fill():\n"  # files under the file size limit, together past the 64 MB disk
            "    for i in range(40):\n"
            "        with open(f'/tmp/fill{i}', 'wb') as fh:\n"
            "            fh.write(b'0' * (4 << 20))\n"
            "print([attempt(fill)])"
        )
        filled = ci.ok("a:memory", code)
        assert filled.splitlines()[0] == "['ENOSPC']"  # /tmp is size-capped too (it shares the session's disk)
        assert_healthy(ci)
    finally:
        gen.close()


def _disk_usage(root: Path) -> int:
    """Bytes really allocated under ``root`` (sparse holes not counted), not following links, leaving out
    the server's read-only view of its venv (host.py mounts it there)."""
    total = 0
    for _dirpath, dirs, names, dfd in os.fwalk(root, follow_symlinks=False):
        if "venv-site" in dirs:
            dirs.remove("venv-site")
        for name in names:
            with contextlib.suppress(OSError):
                total += os.stat(name, dir_fd=dfd, follow_symlinks=False).st_blocks * 512
    return total


def test_disk_quota_covers_mnt_data_and_tmp_hidden_files_included(ci: Harness) -> None:
    quota = ci.ci.config.disk_mb << 20
    code = ERRORS_AS_NAMES + (
        "def fill(d):\n"  # hidden files, each under the file size limit, together far past the quota
        "    for i in range(100):\n"
        "        with open(f'{d}/.hidden-{i}', 'wb') as fh:\n"
        "            fh.write(b'0' * (4 << 20))\n"
        "print([attempt(lambda: fill('/mnt/data')), attempt(lambda: fill('/tmp'))])"
    )
    result = ci.execute("a:disk", code)
    assert result.logs.splitlines()[0] == "['ENOSPC', 'ENOSPC']"
    assert "[/mnt/data and /tmp are full: together they hold 64 MB" in result.logs
    sandbox = ci.ci._sessions["a:disk"].sandbox
    assert sandbox is not None
    assert _disk_usage(sandbox.dir) <= quota + (1 << 20)  # what the host holds for the session
    # Uncaught, the error and the note reach the tool output; deleting files makes room again.
    full = ci.execute("a:disk", "open('/mnt/data/one-more.bin', 'wb').write(b'1' * (4 << 20))")
    assert full.error is not None and full.error.startswith("OSError: [Errno 28] No space left on device")
    assert "Delete files to make room.]" in full.logs
    freed = (
        "import glob, os\nfor p in glob.glob('/mnt/data/.hidden-*') + glob.glob('/tmp/.hidden-*'):\n    os.remove(p)"
    )
    ci.ok("a:disk", freed + "\nopen('/mnt/data/fits.bin', 'wb').write(b'1' * (4 << 20))")
    assert_healthy(ci)


def test_infinite_loops_end_at_the_timeout(ci: Harness) -> None:
    plain = ci.execute("a:loop", "while True:\n    pass", timeout=2)
    assert plain.error == "timeout"
    uid = int(ci.ok("a:loop", "import os; print(os.getuid())"))
    deaf = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    stubborn = ci.execute("a:loop", deaf, timeout=2)
    assert stubborn.error == "timeout"
    assert host_pids_of_uid(uid) == []  # killed, not just interrupted
    assert ci.ok("a:loop", "print('alive')") == "alive\n"


def test_a_gigabyte_of_output(ci: Harness) -> None:
    limit = ci.ci.config.max_output_bytes
    for code in (
        "chunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    print(chunk)",
        "import os\nchunk = b'y' * (1 << 20)\nfor _ in range(1024):\n    os.write(1, chunk)",  # below Python
        "import sys\nfor _ in range(1 << 18):\n    sys.stderr.write('z' * 4096)",
    ):
        result = ci.execute("a:output", code)
        assert result.error is None, result.logs[-300:]
        assert "[output truncated" in result.logs
        assert len(result.logs.encode()) < limit + 200
    rss = ci.ok("a:output", "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])")
    assert int(rss) < 300_000  # kB: none of it was kept in the kernel either
    assert_healthy(ci)


def test_killing_the_parent_or_everything_hurts_only_the_session(ci: Harness) -> None:
    uid = int(ci.ok("a:killer", "import os; print(os.getuid())"))
    # A host process running as the very same uid, outside the sandbox: kill(-1) must not reach it.
    canary = subprocess.Popen(
        [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sleep", "600"]
    )
    try:
        code = ERRORS_AS_NAMES + (
            "import os, signal\n"
            "print([os.getppid(), attempt(lambda: os.kill(os.getppid(), signal.SIGKILL)),"
            " attempt(lambda: os.kill(1, signal.SIGKILL))])"
        )
        assert probe(ci, "a:killer", code) == [1, "EPERM", "EPERM"]
        # "Every process I may signal": in its own pid namespace that is nobody but itself.
        everyone = ci.execute("a:killer", "import os, signal\nos.kill(-1, signal.SIGKILL)")
        assert everyone.error == "ProcessLookupError: [Errno 3] No such process"
        assert canary.poll() is None  # still running
        suicide = ci.execute("a:killer", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        assert suicide.error == "crashed" and "killed (SIGKILL)" in suicide.logs
        assert canary.poll() is None
        assert ci.ok("a:killer", "print('fresh')") == "fresh\n"
        assert_healthy(ci)
    finally:
        canary.kill()
        canary.wait()


# --- files as a way out ----------------------------------------------------------------------------


def test_links_and_fifos_in_mnt_data_never_leak_host_files(ci: Harness, tmp_path: Path) -> None:
    host_secret = tmp_path / "host-secret.txt"
    host_secret.write_text("HOST SECRET")
    code = ERRORS_AS_NAMES + (
        "import os\n"
        "os.symlink('/etc/shadow', 'shadow.txt')\n"
        f"os.symlink({str(host_secret)!r}, 'secret.txt')\n"
        "os.symlink('/', 'root-link')\n"
        "os.mkfifo('pipe.csv')\n"
        "print([attempt(lambda: os.link('/usr/bin/env', 'env-hardlink'))])"
    )
    result = ci.execute("a:links", code)
    assert result.error is None, result.logs
    assert ast.literal_eval(result.logs.strip()) == ["EXDEV"]
    # The server, reading /mnt/data as root, followed none of them (and did not hang on the FIFO).
    assert result.files == []


def test_a_planted_symlink_does_not_redirect_an_upload(ci: Harness, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    ci.ok("a:plant", f"import os\nos.symlink({str(victim)!r}, 'report.csv')")
    upload = tmp_path / "upload.csv"
    upload.write_text("a,b\n1,2\n")
    paths = ci.run(ci.ci.add_files("a:plant", [InputFile("file-r", "report.csv", upload)]))
    assert victim.read_text() == "original"
    assert ci.ok("a:plant", f"print(open({paths['file-r']!r}).read())") == "a,b\n1,2\n\n"


def test_the_sandbox_dies_with_the_server(tmp_path: Path) -> None:
    """A server killed with SIGKILL (no clean-up code runs) leaves no sandboxed process behind."""
    script = (
        "import asyncio, os, sys\n"
        "sys.path[:0] = [sys.argv[2]]\n"
        "from code_interpreter_support import MemorySaver, config\n"
        "from assistantd.tools.code_interpreter import CodeInterpreter\n"
        "from pathlib import Path\n"
        "async def main():\n"
        "    ci = CodeInterpreter(config(Path(sys.argv[1]), pool_size=0))\n"
        "    await ci.start()\n"
        '    code = \'import os, subprocess; subprocess.Popen(["sleep", "600"]); print(os.getuid())\'\n'
        "    r = await ci.execute('k', code, save=MemorySaver())\n"
        "    print(r.logs.strip(), flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    uid = int(proc.stdout.strip())
    # bwrap's --die-with-parent has the kernel send SIGKILL to the jail as the server dies.
    # A pidfd becomes readable when its process exits: wait for that event, not for a guessed delay.
    for pid in host_pids_of_uid(uid):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            assert select.select([fd], [], [], 30)[0] == [fd], f"sandboxed process {pid} survived its server"
        finally:
            os.close(fd)
    # Its sandboxes' disks (tmpfs mounts) outlive it; the next server on the same folder sweeps them.
    assert _mounts_under(tmp_path) != []
    gen = harness(tmp_path, pool_size=0)
    next(gen)
    gen.close()
    assert _mounts_under(tmp_path) == []


def _mounts_under(root: Path) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p.startswith(str(root))]


# --- the kernel protocol as a way in ---------------------------------------------------------------

FORGE = """
k = get_ipython().kernel
parent = k.get_parent()
def send(kind, content, parent=parent):
    k.session.send(k.iopub_socket, kind, content=content, parent=parent)
"""


def test_forged_kernel_messages_do_not_confuse_the_server(ci: Harness) -> None:
    # The sandboxed code holds the kernel's signing key, so it can send any message it likes.
    code = FORGE + (
        'send(\'stream\', b\'["not", "a", "dict"]\')\n'  # bytes: sent as given, past the Session's checks
        "send('display_data', {'data': {'image/png': '!!! not base64 !!!'}})\n"
        "send('display_data', {'data': ['nope']})\n"
        "send('stream', b'not json at all')\n"
        "send('error', {'ename': 'Fake', 'traceback': 'not a list'})\n"
        "send('status', {'execution_state': 'idle'}, parent={'msg_id': ['odd']})\n"
        "print('done')"
    )
    result = ci.execute("a:forge", code)
    assert result.images == []
    # Malformed messages are dropped; a well-formed forged error is the code's own to report.
    assert (result.logs, result.error) == ("done\nFake\n", "Fake")
    assert ci.ok("a:forge", "print('still fine')") == "still fine\n"


def test_output_sent_around_the_kernel_cap_is_cut_off(ci: Harness) -> None:
    code = (
        FORGE + "chunk = 'x' * (1 << 20)\nfor _ in range(400):\n    send('stream', {'name': 'stdout', 'text': chunk})"
    )
    result = ci.execute("a:flood", code)
    assert result.error == "crashed"
    assert "bytes of output]" in result.logs
    assert len(result.logs.encode()) < ci.ci.config.max_output_bytes + 500
    assert ci.ok("a:flood", "print('fresh')") == "fresh\n"


# --- outputs as a way to exhaust the server --------------------------------------------------------


SHOW_PNG = (
    "import base64, os\n"
    "from IPython.display import publish_display_data\n"
    "def show(body):\n"  # a fake PNG: the signature, then anything
    "    publish_display_data({'image/png': base64.b64encode(b'\\x89PNG\\r\\n\\x1a\\n' + body).decode()})\n"
)


class _RssPeak:
    """The peak resident size of this process (where the interpreter runs) while in the block, sampled by
    a thread; the interpreter's event loop runs on another thread, so sampling never waits for it."""

    def __init__(self) -> None:
        self.peak = 0
        self._done = threading.Event()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> _RssPeak:
        self.base = self.now()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, self.now())

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


class _DiskSaver:
    """Saves like the blob store: chunk by chunk to a file, never the whole thing in memory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sizes: dict[str, int] = {}

    async def __call__(self, name: str, chunks: Any) -> str:
        file_id = f"out-{len(self.sizes)}"
        size = 0
        with open(self.folder / file_id, "wb") as fh:  # noqa: ASYNC230 - local disk, as LocalBlobStore's thread does
            async for chunk in chunks:
                fh.write(chunk)
                size += len(chunk)
        self.sizes[file_id] = size
        return file_id


def test_twenty_huge_images_do_not_grow_the_server(tmp_path: Path) -> None:
    # CPU for the cell's own work (20 x 23 MB of random bytes, base64-encoded) on a loaded 2-core machine.
    gen = harness(tmp_path, pool_size=0, max_image_mb=24, max_saved_mb=600, cpu_seconds=60, timeout_seconds=120.0)
    h = next(gen)
    try:
        saver = _DiskSaver(tmp_path)
        code = (
            "import base64, os\n"
            "from IPython.display import publish_display_data\n"
            "for i in range(20):\n"  # fake PNGs of 23 MB (random, so nothing compresses them on the way)
            "    png = b'\\x89PNG\\r\\n\\x1a\\n' + os.urandom(23 << 20)\n"
            "    publish_display_data({'image/png': base64.b64encode(png).decode()})\n"
            "    del png\n"
            "print('shown')"
        )
        h.ok("a:pngs", "print('warm')", save=saver)
        with _RssPeak() as rss:
            result = h.execute("a:pngs", code, save=saver)
        assert result.error is None, result.logs
        assert len(result.images) == 20 and all(saver.sizes[i] == (23 << 20) + 8 for i in result.images)
        # Each image goes to the saver as it arrives; before, all 20 (460 MB decoded, 620 MB as base64) were
        # held until the end. What remains is the images in flight (libzmq reads ahead while one is saved)
        # and allocator slack: 150-185 MB measured.
        # When the machine is busy the saver falls behind and libzmq holds more of them (251 MB seen once
        # under CI load, 429 MB with a benchmark running beside the suite). Holding all 20 as before costs at
        # least their 620 MB of base64, so the bar sits below that and above the noise seen.
        assert rss.peak - rss.base < 560 << 20, f"grew by {(rss.peak - rss.base) >> 20} MB"
    finally:
        gen.close()


def test_output_bytes_per_execution_are_capped_and_sparse_files_never_become_host_copies(tmp_path: Path) -> None:
    # The default CPU allowance: six 20 MB images (random bytes, base64, the kernel's message) fault in
    # several hundred MB, which on a fresh VM can take longer than the shared fixture's 4 s of CPU.
    gen = harness(tmp_path, pool_size=0, max_file_mb=256, max_saved_mb=100, max_image_mb=21, cpu_seconds=60)
    h = next(gen)
    try:
        saver = _DiskSaver(tmp_path)
        code = (
            "with open('/mnt/data/sparse.bin', 'wb') as fh:\n"  # 200 MB that take no room on the disk
            "    fh.truncate(200 << 20)\n"
            "open('/mnt/data/small.txt', 'w').write('kept')\n"
        )
        result = h.execute("a:sparse", code, save=saver)
        assert result.error is None, result.logs
        assert [f.name for f in result.files] == ["small.txt"]
        assert "/mnt/data/sparse.bin was not saved: its 200.0 MB are more than the 100.0 MB left" in result.logs
        sandbox = h.ci._sessions["a:sparse"].sandbox
        assert sandbox is not None
        # Nothing on the host grew: no copy of it anywhere under the instance folder or the saver's.
        assert _disk_usage(h.ci.config.work_root) < 1 << 20
        assert sum(saver.sizes.values()) == 4
        # Images count against the same budget as files.
        images = h.execute(
            "a:sparse",
            SHOW_PNG + "for i in range(6):\n    show(os.urandom(20 << 20))",
            save=saver,
        )
        assert len(images.images) == 4 and images.logs.count("an image was not saved") == 2
        # Past the per-image cap, an image is dropped with a note, before it is even decoded.
        big = h.execute("a:sparse", SHOW_PNG + "show(bytes(22 << 20))", save=saver)
        assert big.images == [] and "[an image of 22.0 MB was not kept: images are limited to 21 MB]" in big.logs
    finally:
        gen.close()
