"""The program that runs *inside* the sandbox: an IPython kernel with our output cap and a ready signal.

This file is bind-mounted read-only into the sandbox and run by the sandbox's Python as a script, so it
imports nothing of ``assistantd`` (the package is not visible in there) and only ipykernel and the
standard library.

Usage: ``python kernel_main.py CONNECTION_FILE MAX_OUTPUT_BYTES``

Why not plain ``python -m ipykernel_launcher``:

* **Ready signal.** The host must know when the kernel's sockets are bound, without polling. After
  ``initialize()`` (which binds them) we write ``READY`` to the original stdout, which is a pipe the
  host reads, and close it.
* **No output flood through the pipes.** ipykernel captures file-descriptor output (``os.system``,
  C libraries) and also *echoes* it to the original fd 1/2. Those would be pipes into the server, so a
  cell writing a gigabyte at fd level would push a gigabyte through them. Before ipykernel starts,
  fd 1 and 2 are pointed at /dev/null; startup errors still reach the host through saved copies that
  are closed once the kernel is ready.
* **Output cap inside the kernel.** Every byte a cell prints crosses a socket and is decoded by the
  server. ``CappedOutStream`` stops forwarding a cell's text once stdout and stderr together pass the
  limit, so a ``while True: print(...)`` costs the server nothing. (The server enforces the limit too;
  this only keeps the traffic small.)
"""

from __future__ import annotations

import codecs
import os
import sys
import threading
import traceback
from typing import Any

from ipykernel.iostream import OutStream

_MAX_OUTPUT = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 20
# One budget for stdout and stderr together, per cell (keyed by the execute request's msg_id).
_budget_lock = threading.Lock()
_budget: dict[str, Any] = {"msg_id": None, "used": 0, "noted": False}
NOTE = "\n[assistantd: output limit reached; the rest of this cell's output was dropped]\n"


class CappedOutStream(OutStream):
    """ipykernel's stream, forwarding at most ``_MAX_OUTPUT`` characters (+1) per cell."""

    # IPython 9 wraps ``sys.stdout.write`` during each cell (``InteractiveShell._tee``) to keep everything
    # the cell printed in ``history_manager.outputs``, in memory, for the life of the kernel: a cell that
    # writes a gigabyte at fd level would hold a gigabyte. A property whose setter ignores the assignment
    # keeps that wrapper out; ``_forget_outputs`` below drops whatever else it records.
    @property
    def write(self) -> Any:
        return self._capped_write

    @write.setter
    def write(self, _value: Any) -> None:
        pass

    def _watch_pipe_fd(self) -> None:
        """Forward what the cell writes at fd level (C code, subprocesses). ipykernel's own loop reads
        1000 bytes at a time and echoes to the original fd; 64 KiB reads make a gigabyte take seconds, not
        a minute, and the original fd is /dev/null anyway."""
        fid = getattr(self, "_fid", None)
        if fid is None:
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while self._should_watch and (data := os.read(fid, 1 << 16)):
                self.write(decoder.decode(data))
        except Exception:
            self._exc = sys.exc_info()

    def _capped_write(self, string: str) -> int | None:
        if not isinstance(string, str):
            return super().write(string)
        msg_id = self.parent_header.get("msg_id") if isinstance(self.parent_header, dict) else None
        with _budget_lock:
            if _budget["msg_id"] != msg_id:
                _budget.update(msg_id=msg_id, used=0, noted=False)
            room = _MAX_OUTPUT + 1 - _budget["used"]
            if room <= 0:
                if _budget["noted"]:
                    return len(string)
                _budget["noted"] = True
                forward = NOTE
            else:
                forward = string[:room]
            _budget["used"] += len(forward)
        super().write(forward)
        return len(string)


def main() -> None:
    connection_file = sys.argv[1]
    if os.path.isdir("/mnt/data"):  # in the sandbox (unsandboxed, the server sets the working folder)
        os.chdir("/mnt/data")
    # As in any notebook, modules the code writes next to its data are importable (python -I left the
    # working folder off sys.path).
    sys.path.insert(0, "")
    # The ipc sockets live in the sandbox's private /tmp (see the connection file's "ip").
    ip = _read_ip(connection_file)
    os.makedirs(os.path.dirname(ip), mode=0o700, exist_ok=True)

    status_fd = os.dup(1)
    diag_fd = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process's own fds, alive until exit
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115

    try:
        from ipykernel.kernelapp import IPKernelApp

        app = IPKernelApp.instance()
        app.initialize(
            [
                "-f",
                connection_file,
                "--IPKernelApp.outstream_class=__main__.CappedOutStream",
                "--IPKernelApp.quiet=True",
                "--IPKernelApp.log_level=ERROR",
                "--InteractiveShell.colors=nocolor",
                "--HistoryManager.enabled=False",
                "--InlineBackend.figure_formats=png",
            ]
        )
    except BaseException:
        os.write(diag_fd, traceback.format_exc().encode(errors="replace"))
        raise SystemExit(3) from None
    shell = getattr(app, "shell", None)
    if shell is not None:
        shell.events.register("post_execute", lambda: _forget_outputs(shell))
    os.write(status_fd, b"READY\n")
    os.close(status_fd)
    os.close(diag_fd)
    app.start()


def _forget_outputs(shell: Any) -> None:
    clear = getattr(getattr(getattr(shell, "history_manager", None), "outputs", None), "clear", None)
    if callable(clear):
        clear()


def _read_ip(connection_file: str) -> str:
    import json

    with open(connection_file, encoding="utf-8") as fh:
        return str(json.load(fh)["ip"])


if __name__ == "__main__":
    main()
