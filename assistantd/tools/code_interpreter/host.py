"""What the host offers the sandboxes, checked once, and the exact command that builds one.

``SandboxHost`` answers "can we sandbox here, and if not, why not" (root, bubblewrap, util-linux's
``setpriv``/``prlimit``, a Python with ipykernel, cgroups), owns the per-process pieces every sandbox
shares (the uid pool, the cgroup parent, the seccomp program, the instance folder) and turns one
sandbox's parameters into an argv.

The command, outermost first (every piece is there for a reason given next to it below):

    sh -c 'echo $$ > <memory cgroup.procs>; echo $$ > <pids cgroup.procs>; exec "$@"'   # enter cgroups
    bwrap --unshare-pid --unshare-net --unshare-ipc --unshare-uts --unshare-cgroup-try
          --die-with-parent --new-session --hostname sandbox
          --ro-bind /usr /usr  (+ /bin /lib /lib64 /sbin as on the host)  --ro-bind-try /etc/<a few files>
          --ro-bind <base Python prefixes>  (a venv: its site-packages at /opt/venv, see venv_view)
          --ro-bind <disk>/meta/{kernel_main.py, kernel.json, passwd, group}  (copies on the sandbox's disk)
          --proc /proc --ro-bind /dev/null /proc/<kallsyms, keys, ...> --dev /dev
          --bind <disk>/tmp /tmp --tmpfs /dev/shm (size-capped)
          --bind <disk>/data /mnt/data --remount-ro /     # <disk>: the sandbox's tmpfs, see mounts.py
          --cap-drop ALL --cap-add CAP_SETUID --cap-add CAP_SETGID --cap-add CAP_SETPCAP
          --seccomp <fd> --
    prlimit --nproc --fsize --cpu (a lifetime backstop) --nofile --core=0 [--as without a memory cgroup] --
    setpriv --reuid U --regid U --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs --
    python /opt/assistantd/kernel_main.py /opt/assistantd/kernel.json <max output>

bwrap runs as root (no user namespace: that would map the sandbox back to root), so it keeps only the
three capabilities setpriv needs to become uid U; the uid change then clears the rest, and setpriv
empties the inheritable and bounding sets and sets no_new_privs, so nothing (setuid binaries, file
capabilities) can win a privilege back. A process with no capabilities in the initial user namespace
cannot remount anything, so the read-only binds stay read-only.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import mounts, seccomp
from .budget import MemoryBudget
from .cgroups import CgroupHost, SandboxCgroup
from .config import SandboxConfig
from .uids import UidPool

log = logging.getLogger("assistantd.code_interpreter")
_INSTANCE = re.compile(r".+-\d+-[0-9a-f]{6}")  # <hostname>-<pid>-<random>, see _open_instance

KERNEL_MAIN = Path(__file__).with_name("kernel_main.py")
INSTALL_HINT = "pip install '.[code-interpreter]' in an assistantd checkout"
# Inside the sandbox.
OPT = "/opt/assistantd"
KERNEL_IPC = "/tmp/.kernel/kernel"  # the kernel's unix sockets, in its private /tmp
# /etc files a Python stack reads; nothing secret, and everything else of /etc stays out.
ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "timezone",
    "fonts",
    "mime.types",
    "ssl",
    "os-release",
    "debian_version",
)
# Shown inside the sandbox instead of the server's venv (see SandboxHost.venv_view).
VENV = "/opt/venv"
# Kernel internals /proc shows every process: symbols and addresses, modules, keys, timers, the boot line.
PROC_MASKED = (
    "kallsyms", "modules", "keys", "key-users", "timer_list", "sched_debug", "iomem", "ioports", "kcore",
    "vmallocinfo", "config.gz", "cmdline", "sysrq-trigger", "kpageflags", "kpagecount", "kpagecgroup",
    "latency_stats", "slabinfo", "pagetypeinfo", "lockdep", "softirqs",
)  # fmt: skip
# The sandbox's /proc is a fresh mount of the same kernel's procfs: it has what the host's has.
_PROC_PRESENT = tuple(name for name in PROC_MASKED if os.path.exists(f"/proc/{name}"))
PYTHON_PROBE = r"""
import importlib.util, json, os, site, sys
wanted = ["numpy", "pandas", "scipy", "matplotlib", "sympy", "sklearn", "openpyxl"]
print(json.dumps({
    "prefixes": sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}),
    "base_prefixes": sorted({sys.base_prefix, sys.base_exec_prefix}),
    "venv": sys.prefix != sys.base_prefix,
    "site": site.getsitepackages(),
    "base_executable": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
    "pyver": "%d.%d" % sys.version_info[:2],
    "version": sys.version.split()[0],
    "ipykernel": all(importlib.util.find_spec(m) for m in ("ipykernel", "matplotlib_inline")),
    "missing": [m for m in wanted if importlib.util.find_spec(m) is None],
}))
"""


@dataclass
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    pass_fds: tuple[int, ...]
    ipc_host_path: str | None  # where the host reaches the kernel's sockets, if known before start


@dataclass
class SandboxHost:
    config: SandboxConfig
    mode: str = "unavailable"  # "sandbox", "unsandboxed" or "unavailable"
    reason: str | None = None
    python: str = ""
    python_prefixes: list[str] = field(default_factory=list)
    # A venv's site-packages, its base Python and "X.Y": the sandbox sees that venv as VENV, with nothing
    # of it but its packages (no scripts, no config, none of its host path in sys.prefix).
    venv_view: tuple[str, str, str] | None = None
    missing_packages: list[str] = field(default_factory=list)
    instance_dir: Path | None = None
    uids: UidPool | None = None
    cgroups: CgroupHost | None = None
    limit_notes: list[str] = field(default_factory=list)
    _seccomp_path: Path | None = None
    _lock_fd: int = -1
    _tools: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.budget = MemoryBudget(self.config.memory_budget_mb, self.config.memory_mb)
        # Absolute, so the sandbox's PATH can start with its folder.
        self.python = shutil.which(self.config.python) or self.config.python if self.config.python else sys.executable
        problem = self._static_problem()
        if problem is None:
            self.mode = "sandbox"
        elif self.config.allow_unsandboxed:
            self.mode, self.reason = "unsandboxed", problem
        else:
            self.reason = problem

    @property
    def available(self) -> bool:
        return self.mode != "unavailable"

    def _static_problem(self) -> str | None:
        if sys.platform != "linux":
            return "the code interpreter sandbox needs Linux (bubblewrap and namespaces)"
        if os.geteuid() != 0:
            return (
                "the code interpreter sandbox needs the server to run as root: it runs each session as its own "
                "unprivileged uid, with cgroup limits"
            )
        for tool, package in ((self.config.bwrap, "bubblewrap"), ("setpriv", "util-linux"), ("prlimit", "util-linux")):
            path = shutil.which(tool)
            if path is None:
                return f"{tool} is not installed (apt-get install {package})"
            self._tools[tool] = path
        if not seccomp.supported():
            return f"no seccomp filter for this architecture ({os.uname().machine})"
        return None

    # --- start-up -------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Check the Python, claim an instance folder, sweep stale ones, open cgroups; may set reason."""
        if not self.available:
            return
        try:
            await self._probe_python()
            await asyncio.to_thread(self._open_instance)
            if self.mode == "sandbox":
                self.uids = UidPool(self.config.uid_base, self.config.uid_count)
                self.cgroups = CgroupHost.open()
                self.limit_notes = list(self.cgroups.notes)
                if not self.cgroups.memory:
                    self.limit_notes.append("memory limited with RLIMIT_AS instead of a cgroup")
                assert self.instance_dir is not None
                self._seccomp_path = self.instance_dir / "seccomp.bpf"
                self._seccomp_path.write_bytes(seccomp.build_filter())
                self._hide_venv_path()
                await self._probe_sandbox()
        except _Unavailable as exc:
            self._fail(str(exc))
        if self.mode == "unsandboxed":
            log.warning(
                "!!! code interpreter: RUNNING CODE WITHOUT A SANDBOX (code_interpreter_allow_unsandboxed is set; "
                "%s). Model-written code can read and change everything this server can. !!!",
                self.reason,
            )
        elif self.limit_notes:
            log.warning("code interpreter: %s", "; ".join(self.limit_notes))

    def _hide_venv_path(self) -> None:
        """Bind the venv's site-packages from an overlay view of it, so mountinfo does not name it."""
        if self.venv_view is None or self.instance_dir is None:
            return
        site, base_python, pyver = self.venv_view
        view, empty = self.instance_dir / "venv-site", self.instance_dir / "empty"
        view.mkdir()
        empty.mkdir()
        try:
            mounts.mount_readonly_view(view, Path(site), empty)
        except OSError as exc:
            self.limit_notes.append(f"the venv's path shows in the sandbox's mountinfo ({exc.strerror})")
            return
        self.venv_view = (str(view), base_python, pyver)

    def _fail(self, reason: str) -> None:
        if self.config.allow_unsandboxed and self.mode == "sandbox" and "ipykernel" not in reason:
            self.mode, self.reason = "unsandboxed", reason
            return
        self.mode, self.reason = "unavailable", reason

    async def _probe_python(self) -> None:
        if shutil.which(self.python) is None and not os.access(self.python, os.X_OK):
            raise _Unavailable(f"the code interpreter's Python {self.python} does not exist")
        proc = await asyncio.create_subprocess_exec(
            self.python, "-I", "-c", PYTHON_PROBE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise _Unavailable(f"the code interpreter's Python {self.python} failed: {err.decode()[-300:]}")
        info = json.loads(out)
        if not info["ipykernel"]:
            raise _Unavailable(f"the code interpreter's Python {self.python} lacks ipykernel ({INSTALL_HINT})")
        self.missing_packages = info["missing"]
        if self.missing_packages:
            log.warning(
                "code interpreter: %s is missing %s (%s)", self.python, ", ".join(self.missing_packages), INSTALL_HINT
            )
        prefixes, self.venv_view = _python_mounts(info)
        self.python_prefixes = _mount_roots(prefixes)
        sites = [self.venv_view[0]] if self.venv_view else []
        _check_no_overlap([*self.python_prefixes, *sites], (self.config.work_root, *self.config.protect))

    def _open_instance(self) -> None:
        """A folder for this process's sandboxes, held by a lock; folders whose holder died are removed."""
        root = Path(self.config.work_root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        for entry in root.iterdir():
            # Only folders this code made (name and lock file), so a work_root pointed at a folder with
            # other things in it never loses them.
            if not _INSTANCE.fullmatch(entry.name) or entry.is_symlink() or not (entry / ".lock").is_file():
                continue
            fd = _try_lock(entry / ".lock")
            if fd is not None:  # nobody holds it: its server is gone
                mounts.unmount_under(entry)  # its sandboxes' disks first, or rmtree would empty them in place
                shutil.rmtree(entry, ignore_errors=True)
                os.close(fd)
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.instance_dir = root / name
        self.instance_dir.mkdir(mode=0o700)
        fd = _try_lock(self.instance_dir / ".lock")
        assert fd is not None
        self._lock_fd = fd

    async def _probe_sandbox(self) -> None:
        """Run the real sandbox command once with a trivial program, so a host where namespaces or the uid
        switch do not work says so at start-up instead of at the first execution."""
        assert self.instance_dir is not None and self.uids is not None
        lease = self.uids.acquire()
        probe_dir = self.instance_dir / "probe"
        try:
            try:
                self.make_sandbox_dir(probe_dir, lease.uid)
            except OSError as exc:
                raise _Unavailable(f"the sandbox's disk cannot be made: {exc}") from None
            command = [self.sandbox_python, "-I", "-c", "import ipykernel"]
            spec = self.launch_spec(probe_dir, lease.uid, None, command=command)
            proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                env=spec.env,
                pass_fds=spec.pass_fds,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            for fd in spec.pass_fds:
                os.close(fd)
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise _Unavailable(f"the sandbox does not start on this host: {out.decode(errors='replace')[-400:]}")
        finally:
            UidPool.release(lease)
            self.remove_sandbox_dir(probe_dir)

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.close()
        if self.instance_dir is not None:
            mounts.unmount_under(self.instance_dir)
            shutil.rmtree(self.instance_dir, ignore_errors=True)
            self.instance_dir = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # --- one sandbox ----------------------------------------------------------------------------

    def new_sandbox_dir(self, uid: int) -> Path:
        assert self.instance_dir is not None
        path = self.instance_dir / f"sb-{secrets.token_hex(6)}"
        try:
            self.make_sandbox_dir(path, uid)
        except BaseException:
            self.remove_sandbox_dir(path)
            raise
        return path

    def make_sandbox_dir(self, path: Path, uid: int) -> None:
        """The folder of one sandbox, with its disk (a tmpfs when sandboxed) holding data/ and tmp/."""
        disk = path / "fs"
        disk.mkdir(parents=True, mode=0o755)
        if self.mode == "sandbox":
            cfg = self.config
            mounts.mount_tmpfs(disk, cfg.disk_mb << 20, inodes=max(1024, cfg.disk_mb * 64))
        (disk / "data").mkdir(mode=0o700)
        (disk / "tmp").mkdir()
        os.chmod(disk / "tmp", 0o1777)
        if uid != os.getuid():
            os.chown(disk / "data", uid, uid)

    @staticmethod
    def remove_sandbox_dir(path: Path) -> None:
        mounts.unmount(path / "fs")
        shutil.rmtree(path, ignore_errors=True)

    def create_cgroup(self, sandbox_dir: Path) -> SandboxCgroup | None:
        if self.cgroups is None or not self.cgroups.roots:
            return None
        return self.cgroups.create(
            f"{self.instance_dir.name if self.instance_dir else 'x'}-{sandbox_dir.name}",
            memory_bytes=self.config.memory_mb << 20,
            max_pids=self.config.max_processes,
        )

    @property
    def sandbox_python(self) -> str:
        """The kernel's Python as the sandbox sees it."""
        return f"{VENV}/bin/python" if self.mode == "sandbox" and self.venv_view else self.python

    def kernel_command(self, connection_file: str) -> list[str]:
        kernel_main = f"{OPT}/kernel_main.py" if self.mode == "sandbox" else str(KERNEL_MAIN)
        return [self.sandbox_python, "-I", kernel_main, connection_file, str(self.config.max_output_bytes)]

    def launch_spec(
        self,
        sandbox_dir: Path,
        uid: int,
        cgroup: SandboxCgroup | None,
        *,
        command: list[str] | None = None,
    ) -> LaunchSpec:
        """The argv that starts the sandbox of ``sandbox_dir`` as ``uid``. Opens fds the caller must
        close in the parent once the process is started (``pass_fds``)."""
        if self.mode == "unsandboxed":
            return self._unsandboxed_spec(sandbox_dir)
        cfg = self.config
        # On the sandbox's own disk, so mountinfo inside names no host path of ours (only "/meta/...").
        meta = sandbox_dir / "fs" / "meta"
        meta.mkdir(mode=0o755, exist_ok=True)
        shutil.copyfile(KERNEL_MAIN, meta / "kernel_main.py")
        (meta / "passwd").write_text(f"root:x:0:0:root:/root:/bin/sh\nsandbox:x:{uid}:{uid}:sandbox:/tmp:/bin/sh\n")
        (meta / "group").write_text(f"root:x:0:\nsandbox:x:{uid}:\n")
        (meta / "kernel.json").write_text(json.dumps(self.connection_info(secrets.token_hex(32), KERNEL_IPC)))
        os.chmod(meta / "kernel.json", 0o644)  # the key only guards sockets in the sandbox's own /tmp

        args: list[str] = [
            self._tools[cfg.bwrap],
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host_path = Path("/") / top
            if host_path.is_symlink():
                args += ["--symlink", os.readlink(host_path), f"/{top}"]
            elif host_path.is_dir():
                args += ["--ro-bind", str(host_path), f"/{top}"]
        made: set[str] = set()

        def mkdirs(path: str) -> None:
            # bwrap creates missing parents 0700 (root-only); our uid must be able to walk through them.
            parts = Path(path).parts[1:]
            for i in range(1, len(parts) + 1):
                d = "/" + "/".join(parts[:i])
                if d not in made and d not in {"/usr", "/bin", "/lib", "/lib64", "/sbin"}:
                    made.add(d)
                    args.extend(["--perms", "0755", "--dir", d])

        mkdirs("/etc")
        for name in ETC_FILES:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        args += ["--ro-bind", str(meta / "passwd"), "/etc/passwd", "--ro-bind", str(meta / "group"), "/etc/group"]
        scratch = ("/tmp/", "/dev/shm/")  # covered by the private tmpfs mounts below: bound after them
        for prefix in self.python_prefixes:
            if not prefix.startswith(("/usr/", *scratch)):
                mkdirs(str(Path(prefix).parent))
                args += ["--ro-bind", prefix, prefix]
        mkdirs(OPT)
        if self.venv_view is not None:
            site_packages, base_python, pyver = self.venv_view
            (meta / "pyvenv.cfg").write_text(
                f"home = {os.path.dirname(base_python)}\ninclude-system-site-packages = false\nversion = {pyver}\n"
            )
            mkdirs(f"{VENV}/lib/python{pyver}/site-packages")
            mkdirs(f"{VENV}/bin")
            args += ["--ro-bind", site_packages, f"{VENV}/lib/python{pyver}/site-packages"]
            args += ["--ro-bind", str(meta / "pyvenv.cfg"), f"{VENV}/pyvenv.cfg"]
            for name in ("python", "python3", f"python{pyver}"):
                args += ["--symlink", base_python, f"{VENV}/bin/{name}"]
        args += ["--ro-bind", str(meta / "kernel_main.py"), f"{OPT}/kernel_main.py"]
        args += ["--ro-bind", str(meta / "kernel.json"), f"{OPT}/kernel.json"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        for name in _PROC_PRESENT:
            args += ["--ro-bind", "/dev/null", f"/proc/{name}"]
        # /tmp is on the sandbox's disk, with /mnt/data: one quota for both (mounts.py).
        args += ["--bind", str(sandbox_dir / "fs" / "tmp"), "/tmp"]
        args += ["--perms", "01777", "--size", str(cfg.tmp_mb << 20), "--tmpfs", "/dev/shm"]
        for prefix in self.python_prefixes:
            if prefix.startswith(scratch):  # e.g. a virtualenv made under /tmp
                for d in Path(prefix).parents:
                    made.discard(str(d))  # hidden by the tmpfs: make them again on top of it
                mkdirs(str(Path(prefix).parent))
                args += ["--ro-bind", prefix, prefix]
        mkdirs("/mnt")
        # No --chdir: bwrap has dropped CAP_DAC_OVERRIDE by then and /mnt/data is 0700 for the sandbox uid;
        # kernel_main changes into it once it runs as that uid.
        args += ["--bind", str(sandbox_dir / "fs" / "data"), "/mnt/data", "--remount-ro", "/"]
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        assert self._seccomp_path is not None
        seccomp_fd = os.open(self._seccomp_path, os.O_RDONLY)
        args += ["--seccomp", str(seccomp_fd)]
        args += ["--"]
        # The per-execution CPU allowance is enforced by the sandbox's watchdog (sandbox.py): RLIMIT_CPU
        # counts a process's whole life and cannot be re-armed for the long-lived kernel without
        # CAP_SYS_RESOURCE, which containers often withhold from root. It stays as a per-process backstop.
        cpu_backstop = cpu_lifetime_limit(cfg)
        limits = [
            f"--nproc={cfg.max_processes}",
            f"--fsize={cfg.max_file_mb << 20}",
            f"--cpu={cpu_backstop}:{cpu_backstop + 5}",
            "--core=0",
            "--nofile=4096",
        ]
        if cgroup is None or "memory" not in cgroup.dirs:
            limits.append(f"--as={(cfg.memory_mb + 512) << 20}")  # address space, so leave room for mappings
        args += [self._tools["prlimit"], *limits, "--"]
        args += [
            self._tools["setpriv"], f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        ]  # fmt: skip
        args += command or self.kernel_command(f"{OPT}/kernel.json")

        if cgroup is not None and cgroup.procs_files:
            files = cgroup.procs_files
            script = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; '
            script += 'exec "$@"'
            args = ["/bin/sh", "-c", script, "sh", str(len(files)), *files, *args]
        return LaunchSpec(args, self.kernel_env(), None, (seccomp_fd,), None)

    def _unsandboxed_spec(self, sandbox_dir: Path) -> LaunchSpec:
        cfg = self.config
        # Unix socket paths are limited to ~107 bytes, so the sockets go to a short folder of their own.
        ipc_dir = tempfile.mkdtemp(prefix="adci-")
        (sandbox_dir / "ipc").write_text(ipc_dir)
        home = sandbox_dir / "home"
        home.mkdir(exist_ok=True)
        conn = sandbox_dir / "kernel.json"
        conn.write_text(json.dumps(self.connection_info(secrets.token_hex(32), f"{ipc_dir}/kernel")))
        os.chmod(conn, 0o600)
        cpu = cpu_lifetime_limit(cfg)
        limits = [f"--fsize={cfg.max_file_mb << 20}", f"--cpu={cpu}:{cpu + 5}", "--core=0"]
        limits.append(f"--as={(cfg.memory_mb + 512) << 20}")
        prlimit = shutil.which("prlimit")
        argv: list[str] = [prlimit, *limits, "--"] if prlimit else []
        env = self.kernel_env(home=str(home))
        argv += self.kernel_command(str(conn))
        return LaunchSpec(argv, env, str(sandbox_dir / "fs" / "data"), (), f"{ipc_dir}/kernel")

    def kernel_env(self, home: str = "/tmp") -> dict[str, str]:
        threads = str(max(1, min(4, os.cpu_count() or 1)))
        # The kernel's own bin folder first, so `python` and `pip` in a subprocess mean the same environment.
        return {
            "PATH": ":".join([os.path.dirname(self.sandbox_python), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": home,
            "USER": "sandbox",
            "LOGNAME": "sandbox",
            "SHELL": "/bin/sh",
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp" if home == "/tmp" else home,
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "MPLCONFIGDIR": f"{home}/.config/matplotlib",
            "IPYTHONDIR": f"{home}/.ipython",
            "JUPYTER_PLATFORM_DIRS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            # BLAS and OpenMP start one thread per host core by default: on a big host that alone would
            # exhaust the process limit and crowd out the other sessions.
            "OMP_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        }

    @staticmethod
    def connection_info(key: str, ip: str) -> dict[str, object]:
        return {
            "transport": "ipc",
            "ip": ip,
            "shell_port": 1,
            "iopub_port": 2,
            "stdin_port": 3,
            "control_port": 4,
            "hb_port": 5,
            "key": key,
            "signature_scheme": "hmac-sha256",
            "kernel_name": "",
        }


def _python_mounts(info: dict[str, Any]) -> tuple[list[str], tuple[str, str, str] | None]:
    """The prefixes to bind at their own paths, and the venv to show as VENV (when it is one, with one
    site-packages folder): then only its base Python's prefixes are bound, not the venv's."""
    sites = info["site"]
    if not info["venv"] or len(sites) != 1:
        return list(info["prefixes"]), None
    base_python = info["base_executable"]
    prefixes = [*info["base_prefixes"], os.path.dirname(base_python)]
    return prefixes, (sites[0], base_python, info["pyver"])


def cpu_lifetime_limit(config: SandboxConfig) -> int:
    """RLIMIT_CPU for every sandbox process: ten executions' worth, for the life of the process."""
    return config.cpu_seconds * 10


class _Unavailable(Exception):
    pass


def _mount_roots(prefixes: list[str]) -> list[str]:
    """The distinct folders to bind for these prefixes: /usr is always bound, nested ones are covered."""
    roots: list[str] = []
    for p in sorted({os.path.realpath(p) for p in prefixes} | set(prefixes)):
        if p == "/usr" or p.startswith("/usr/"):
            continue
        if any(p == r or p.startswith(r + "/") for r in roots):
            continue
        roots.append(p)
    return roots


def _check_no_overlap(prefixes: list[str], guarded: tuple[Path, ...]) -> None:
    """A Python prefix that contains (or sits inside) server data would show that data to every sandbox."""
    for prefix in prefixes:
        p = Path(prefix)
        for g in (Path(os.path.realpath(x)) for x in guarded):
            if p == Path("/") or g == p or g.is_relative_to(p) or p.is_relative_to(g):
                raise _Unavailable(
                    f"the code interpreter's Python lives in {p}, which overlaps {g}; sandboxes would see "
                    "server data. Use a Python installed elsewhere (code_interpreter_python)."
                )


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
