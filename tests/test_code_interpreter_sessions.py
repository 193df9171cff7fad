"""The code interpreter's sessions, for real: a bubblewrap sandbox with an IPython kernel per session.

State between executions, files in and out, figures, code errors, timeouts and crashes (the session
restarts fresh, files kept), output caps, the pool, idle expiry, the session limit, and what happens on
a host without a sandbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from code_interpreter_support import (
    Harness,
    LoopThread,
    MemorySaver,
    config,
    harness,
    host_pids_of_uid,
    require_sandbox,
)

from assistantd.settings import load_settings
from assistantd.tools.code_interpreter import (
    CodeInterpreter,
    InputFile,
    SandboxUnavailable,
    sandbox_config_from_settings,
)
from assistantd.tools.code_interpreter.interpreter import MemoryBudgetExhausted

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    yield from harness(tmp_path_factory.mktemp("ci-sessions"))


def test_variables_persist_between_executions(ci: Harness) -> None:
    assert ci.ok("s:state", "x = 40\ndef f(y):\n    return x + y") == ""
    assert ci.ok("s:state", "f(2)") == "42\n"
    assert ci.ok("s:state", "print('hello'); x") == "hello\n40\n"


def test_sessions_do_not_share_state(ci: Harness) -> None:
    ci.ok("s:one", "secret = 'one'")
    result = ci.execute("s:two", "secret")
    assert result.error == "NameError: name 'secret' is not defined"


def test_code_runs_as_an_unprivileged_uid_in_mnt_data(ci: Harness) -> None:
    logs = ci.ok("s:whoami", "import os, getpass; print(os.getuid(), os.getgid(), os.getcwd(), getpass.getuser())")
    uid, gid, cwd, user = logs.split()
    assert int(uid) >= 200_000 and uid == gid
    assert (cwd, user) == ("/mnt/data", "sandbox")


def test_the_data_science_stack_is_importable(tmp_path: Path) -> None:
    # A sandbox of its own with the default CPU allowance: these imports take ~2 s of CPU on a warm machine,
    # too close to the shared fixture's 4 s on a fresh VM with a cold page cache.
    gen = harness(tmp_path, pool_size=0, cpu_seconds=60, timeout_seconds=120.0)
    ci = next(gen)
    try:
        logs = ci.ok(
            "s:stack",
            "import numpy, pandas, scipy, matplotlib, sympy, sklearn, openpyxl\n"
            "from scipy.stats import ttest_ind\n"
            "print(round(float(ttest_ind([1, 2, 3, 4], [2, 3, 4, 5]).statistic), 3))",
        )
        assert logs == "-1.095\n"
    finally:
        gen.close()


def test_files_in_and_out(ci: Harness, tmp_path: Path) -> None:
    source = tmp_path / "upload.bin"
    source.write_text("city,temp\noslo,3\nrome,17\n")
    csv = InputFile(file_id="file-abc", filename="weather.csv", path=source)
    code = (
        "import os, pandas as pd\n"
        "df = pd.read_csv('/mnt/data/weather.csv')\n"
        "os.makedirs('out', exist_ok=True)\n"
        "df[df.temp > 10].to_csv('out/warm.csv', index=False)\n"
        "print(df.temp.sum())"
    )
    result = ci.execute("s:files", code, files=(csv,))
    assert result.error is None, result.logs
    assert result.logs == "20\n"
    # The input file is not an output; the new file is, and its copy can be read after execute() returns.
    assert [f.name for f in result.files] == ["out/warm.csv"]
    assert ci.saver.saved[result.files[0].file_id] == ("warm.csv", b"city,temp\nrome,17\n")

    # Seen already: not copied again, so the code's change to it survives; a change makes it an output.
    result = ci.execute("s:files", "open('weather.csv', 'a').write('lima,20\\n')", files=(csv,))
    assert [f.name for f in result.files] == ["weather.csv"]
    assert ci.saved(result.files[0].file_id).endswith(b"lima,20\n")
    assert source.read_text() == "city,temp\noslo,3\nrome,17\n"  # the host's copy is never touched

    # Nothing changed: nothing reported.
    assert ci.execute("s:files", "len(open('weather.csv').read())").files == []


def test_add_files_reports_paths_and_never_clobbers(ci: Harness, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("first")
    b.write_text("second")
    paths = ci.run(
        ci.ci.add_files(
            "s:names",
            [InputFile("file-1", "data.txt", a), InputFile("file-2", "../../etc/data.txt", b)],
        )
    )
    # Same name from two files: the second gets its id appended; folders in a name are dropped.
    assert paths == {"file-1": "/mnt/data/data.txt", "file-2": "/mnt/data/data-file-2.txt"}
    assert ci.ok("s:names", "print(open('data.txt').read(), open('data-file-2.txt').read())") == "first second\n"


def test_a_matplotlib_figure_becomes_a_png_image(ci: Harness) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.savefig('chart.png')\nplt.show()"
    result = ci.execute("s:plot", code)
    assert result.error is None, result.logs
    assert len(result.images) == 1 and ci.saved(result.images[0]).startswith(PNG)
    assert [f.name for f in result.files] == ["chart.png"]
    assert ci.saved(result.files[0].file_id).startswith(PNG)
    # A figure left open at the end of a cell is shown too (the inline backend), once.
    result = ci.execute("s:plot", "plt.figure(); plt.bar([1, 2], [3, 4])")
    assert len(result.images) == 1 and ci.saved(result.images[0]).startswith(PNG)


def test_images_still_queued_behind_the_reply_are_all_saved(ci: Harness) -> None:
    # Six images shown at once, saved by a slow store (0.6 s each): the reply and the return to idle
    # arrive while the first ones are being saved. The grace after the reply counts from the last message
    # handled; counted from the reply, the cell was reported crashed ("output channel broke") and its
    # session killed while its own output was still being saved.
    class SlowSaver(MemorySaver):
        async def __call__(self, name: str, chunks: Any) -> str:
            await asyncio.sleep(0.6)  # a slow blob store, not a wait for something
            return await super().__call__(name, chunks)

    code = (
        "from IPython.display import Image, display\n"
        "for i in range(6):\n"
        "    display(Image(data=b'\\x89PNG\\r\\n\\x1a\\n' + bytes([i]) * 64, format='png'))\n"
        "x = 'still here'\n"
    )
    saver = SlowSaver()
    result = ci.execute("s:slow-images", code, save=saver)
    assert result.error is None, result.logs
    assert [saver.saved[i][1][8:9] for i in result.images] == [bytes([i]) for i in range(6)]
    assert ci.ok("s:slow-images", "print(x)") == "still here\n"  # the same kernel, not a fresh one


def test_a_code_error_is_reported_and_the_session_goes_on(ci: Harness) -> None:
    ci.ok("s:error", "kept = 7")
    result = ci.execute("s:error", "print('before')\n1 / 0")
    assert result.error == "ZeroDivisionError: division by zero"
    assert result.logs.startswith("before\n")
    assert "ZeroDivisionError" in result.logs and "----> 2 1 / 0" in result.logs
    assert "\x1b[" not in result.logs  # no terminal colours for the model
    assert ci.ok("s:error", "kept") == "7\n"
    syntax = ci.execute("s:error", "def broken(:")
    assert syntax.error is not None and syntax.error.startswith("SyntaxError")
    assert ci.ok("s:error", "kept + 1") == "8\n"


def test_a_timeout_stops_the_cell_and_the_session_restarts_fresh(ci: Harness) -> None:
    ci.ok("s:timeout", "lost = 1\nopen('kept.txt', 'w').write('still here')")
    result = ci.execute("s:timeout", "print('started')\nwhile True:\n    pass", timeout=2)
    assert result.error == "timeout"
    assert result.logs.startswith("started\n")
    assert "KeyboardInterrupt" in result.logs  # interrupted first, so the model sees where it was stuck
    assert "longer than 2 s" in result.logs and "files in /mnt/data are kept" in result.logs
    after = ci.execute("s:timeout", "print(open('kept.txt').read())\nlost")
    assert after.logs.startswith("still here\n")
    assert after.error == "NameError: name 'lost' is not defined"


def test_a_cell_that_ignores_interrupts_is_killed_at_the_timeout(ci: Harness) -> None:
    uid = int(ci.ok("s:stubborn", "import os; print(os.getuid())"))
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    result = ci.execute("s:stubborn", code, timeout=2)
    assert result.error == "timeout"
    assert host_pids_of_uid(uid) == []  # the whole sandbox is gone, not just interrupted
    assert ci.ok("s:stubborn", "1 + 1") == "2\n"


def test_a_crashed_kernel_restarts_fresh_with_files_kept(ci: Harness) -> None:
    ci.ok("s:crash", "gone = 1\nopen('notes.txt', 'w').write('n')")
    result = ci.execute("s:crash", "import os\nos._exit(3)")
    assert result.error == "crashed"
    assert "exited with status 3" in result.logs and "files in /mnt/data are kept" in result.logs
    after = ci.execute("s:crash", "print(open('notes.txt').read())\ngone")
    assert after.logs.startswith("n\n") and after.error == "NameError: name 'gone' is not defined"
    # The files moved into the new sandbox belong to its uid: the code can still change them.
    assert ci.ok("s:crash", "open('notes.txt', 'a').write('m'); print(open('notes.txt').read())") == "nm\n"


def test_a_kernel_that_died_between_executions_is_replaced_with_a_note(ci: Harness) -> None:
    ci.ok("s:died", "v = 1\nopen('kept.txt', 'w').write('k')")
    sandbox = ci.ci._sessions["s:died"].sandbox
    assert sandbox is not None and sandbox.exited is not None
    os.kill(sandbox.kernel_pid, signal.SIGKILL)  # from outside, as the OOM killer would
    ci.run(asyncio.wait_for(asyncio.shield(sandbox.exited), 30))
    result = ci.execute("s:died", "print(open('kept.txt').read())\nv")
    assert result.logs.startswith("[the previous sandbox of this session ended: the Python process was killed")
    assert "k\n" in result.logs and result.error == "NameError: name 'v' is not defined"


def test_modules_written_to_mnt_data_are_importable(ci: Harness) -> None:
    ci.ok("s:module", "open('helper.py', 'w').write('def double(x):\\n    return 2 * x\\n')")
    assert ci.ok("s:module", "import helper\nhelper.double(21)") == "42\n"


def test_output_is_capped_with_a_note(ci: Harness) -> None:
    result = ci.execute("s:cap", "for i in range(2000):\n    print('line', i)\nprint('the end')")
    assert result.error is None
    assert result.logs.startswith("line 0\nline 1\n")
    assert "[output truncated: only the first 4096 bytes are shown]" in result.logs
    assert "the end" not in result.logs
    assert len(result.logs.encode()) < 4096 + 200
    # The cap is per execution.
    assert ci.ok("s:cap", "print('small')") == "small\n"


def test_a_traceback_survives_the_output_cap(ci: Harness) -> None:
    result = ci.execute("s:captb", "print('x' * 10000)\nraise ValueError('visible')")
    assert result.error == "ValueError: visible"
    assert "ValueError: visible" in result.logs and "[output truncated" in result.logs


def test_the_cpu_limit_is_per_execution(ci: Harness) -> None:
    # Two cells of ~2.5 s CPU each: over the 4 s limit together, each under it alone.
    for _ in range(2):
        ci.ok("s:cpu", "import time\nt = time.process_time()\nwhile time.process_time() - t < 2.5:\n    pass")
    result = ci.execute("s:cpu", "while True:\n    pass", timeout=60)
    assert result.error == "crashed"
    assert "CPU time limit (4 s)" in result.logs


def test_cpu_used_by_background_processes_counts(ci: Harness) -> None:
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
        "time.sleep(120)"  # the cell itself is idle: only the whole-sandbox count can catch the spinner
    )
    result = ci.execute("s:cpu-bg", code, timeout=100)
    assert result.error == "crashed"
    assert "CPU time limit (4 s)" in result.logs


def test_file_size_limit(ci: Harness) -> None:
    code = (
        "import errno\n"
        "try:\n"
        "    with open('big.bin', 'wb') as fh:\n"
        "        fh.write(b'0' * (16 << 20))\n"
        "except OSError as exc:\n"
        "    print(errno.errorcode[exc.errno])\n"
        "import os; print(os.path.getsize('big.bin'))"
    )
    assert ci.ok("s:fsize", code) == f"EFBIG\n{8 << 20}\n"


def test_idle_sessions_expire(ci: Harness) -> None:
    ci.ok("s:idle", "remembered = True\nopen('f.txt', 'w').write('x')")
    assert ci.run(ci.ci.expire_idle(time.monotonic())) == 0  # not idle yet
    expired = ci.run(ci.ci.expire_idle(time.monotonic() + ci.ci.config.idle_seconds + 1))
    assert expired >= 1
    result = ci.execute("s:idle", "import os\nprint(os.listdir('.'))\nremembered")
    assert result.logs.startswith("[]\n") and result.error == "NameError: name 'remembered' is not defined"


def test_the_pool_hands_out_warm_sandboxes_and_refills(ci: Harness) -> None:
    ci.run(ci.ci.wait_for_pool())
    assert ci.ci.pool_ready == 1
    # The pooled kernel has the preload imported already (the fixture preloads colorsys).
    assert ci.ok("s:pooled", "import sys; print('colorsys' in sys.modules)") == "True\n"
    ci.run(ci.ci.wait_for_pool())
    assert ci.ci.pool_ready == 1


def test_concurrent_executions(ci: Harness) -> None:
    async def both() -> list:
        return await asyncio.gather(
            ci.ci.execute("s:par-a", "a = 'A'; print(a)", save=ci.saver),
            ci.ci.execute("s:par-b", "b = 'B'; print(b)", save=ci.saver),
            ci.ci.execute(
                "s:par-a", "print(a * 2)", save=ci.saver
            ),  # same session: runs after the first, sees its state
        )

    first, second, third = ci.run(both())
    assert (first.logs, second.logs, third.logs) == ("A\n", "B\n", "AA\n")


def _open_pipes() -> set[str]:
    """The pipes this process holds open (a sandbox's output is one)."""
    fds = Path("/proc/self/fd")
    found = set()
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # the directory's own descriptor, closed by now
        if target.startswith("pipe:"):
            found.add(f"{fd.name}:{target}")
    return found


def test_stop_removes_every_sandbox_and_folder(tmp_path: Path) -> None:
    pipes = _open_pipes()
    gen = harness(tmp_path, pool_size=1)
    h = next(gen)
    uid = int(h.ok("s:stop", "import os; open('x', 'w').write('x'); print(os.getuid())"))
    h.run(h.ci.wait_for_pool())
    work_root = h.ci.config.work_root
    assert any(work_root.iterdir())
    assert len(_open_pipes() - pipes) >= 2  # the session's sandbox and the pooled one
    with pytest.raises(StopIteration):
        next(gen)  # runs stop()
    assert host_pids_of_uid(uid) == []
    assert list(work_root.iterdir()) == []
    assert _open_pipes() - pipes == set()  # every sandbox's output pipe is closed, not left to the collector


def test_a_sandbox_that_fails_to_start_leaves_no_pipe_open(tmp_path: Path) -> None:
    pipes = _open_pipes()
    gen = harness(tmp_path, pool_size=0, start_timeout_seconds=0.05)  # stopped before its kernel is ready
    h = next(gen)
    try:
        outcome: Any = h.execute("s:late", "print(1)")
    except Exception as exc:
        outcome = exc
    assert "failed to start" in str(getattr(outcome, "logs", outcome))
    assert _open_pipes() - pipes == set()  # its output pipe was closed with it, though never read to its end
    with pytest.raises(StopIteration):
        next(gen)


def test_least_recently_used_idle_session_is_closed_past_the_limit(tmp_path: Path) -> None:
    gen = harness(tmp_path, pool_size=0, max_sessions=2)
    h = next(gen)
    try:
        # No pool: a cold sandbox, which skips the preload so the first cell pays only for its own imports.
        assert h.ok("s:a", "import sys; print('colorsys' in sys.modules)\nv = 'a'") == "False\n"
        h.ok("s:b", "v = 'b'")
        h.ok("s:c", "v = 'c'")  # closes s:a, the least recently used
        assert h.ci.session_count == 2
        assert h.ok("s:b", "v") == "'b'\n"
        assert h.execute("s:a", "v").error == "NameError: name 'v' is not defined"
    finally:
        gen.close()


def test_no_sandbox_means_a_clear_error_not_unsandboxed_code(tmp_path: Path) -> None:
    loop = LoopThread()
    ci = CodeInterpreter(config(tmp_path, bwrap="/nonexistent/bwrap"))
    try:
        loop.run(ci.start())
        assert not ci.available
        assert ci.unavailable_reason is not None and "bubblewrap" in ci.unavailable_reason
        with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
            loop.run(ci.execute("s:x", "print(1)", save=MemorySaver()))
    finally:
        loop.run(ci.stop())
        loop.close()


def test_unsandboxed_only_when_asked_and_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    loop = LoopThread()
    ci = CodeInterpreter(config(tmp_path, bwrap="/nonexistent/bwrap", allow_unsandboxed=True, pool_size=0))
    try:
        with caplog.at_level(logging.WARNING, logger="assistantd.code_interpreter"):
            loop.run(ci.start())
        assert ci.available and not ci.sandboxed
        assert any("WITHOUT A SANDBOX" in r.getMessage() for r in caplog.records)
        code = "import os\nopen('o.txt', 'w').write('x')\nprint(6 * 7)"
        result = loop.run(ci.execute("s:x", code, save=MemorySaver()))
        assert (result.logs, [f.name for f in result.files]) == ("42\n", ["o.txt"])
    finally:
        loop.run(ci.stop())
        loop.close()


def test_concurrent_first_uses_share_one_start(tmp_path: Path) -> None:
    # With no pool the tool starts the interpreter on first use; three runs arriving together must all
    # wait for that one start, not find it half done and fail with "the code interpreter is not running".
    loop = LoopThread()
    ci = CodeInterpreter(config(tmp_path, pool_size=0))

    async def first_use(key: str) -> Any:
        await ci.start()
        return await ci.execute(key, f"print('{key}')", save=MemorySaver())

    async def together() -> list[Any]:
        return await asyncio.gather(*(first_use(f"s:first{i}") for i in range(3)), return_exceptions=True)

    try:
        results = loop.run(together())
        require_sandbox(ci)
        assert [getattr(r, "logs", repr(r)) for r in results] == [f"s:first{i}\n" for i in range(3)]
    finally:
        loop.run(ci.stop())
        loop.close()


def test_sandbox_config_from_settings(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "ASSISTANTD_DATA_DIR": str(tmp_path / "data"),
            "ASSISTANTD_CODE_INTERPRETER_POOL_SIZE": "5",
            "ASSISTANTD_CODE_INTERPRETER_TIMEOUT": "12.5",
            "ASSISTANTD_CODE_INTERPRETER_ALLOW_UNSANDBOXED": "false",
            "ASSISTANTD_CODE_INTERPRETER_DISK_MB": "300",
            "ASSISTANTD_CODE_INTERPRETER_MAX_IMAGE_MB": "4",
            "ASSISTANTD_CODE_INTERPRETER_MAX_OUTPUT_MB": "40",
            "ASSISTANTD_CODE_INTERPRETER_MEMORY_BUDGET_MB": "8192",
            "ASSISTANTD_CODE_INTERPRETER_MEMORY_WAIT_SECONDS": "7.5",
        }
    )
    cfg = sandbox_config_from_settings(settings)
    assert cfg.work_root == (tmp_path / "data" / "code-interpreter").resolve()
    assert (tmp_path / "data").resolve() in cfg.protect
    assert (cfg.pool_size, cfg.timeout_seconds, cfg.idle_seconds, cfg.allow_unsandboxed) == (5, 12.5, 3600.0, False)
    assert (cfg.memory_mb, cfg.max_output_bytes, cfg.python) == (1024, 32768, "")
    assert (cfg.disk_mb, cfg.max_image_mb, cfg.max_saved_mb) == (300, 4, 40)
    assert (cfg.memory_budget_mb, cfg.memory_wait_seconds) == (8192, 7.5)


def test_the_memory_budget_is_on_by_default(tmp_path: Path) -> None:
    # Unset, the budget is half of the host's memory (never under one sandbox): a default server no longer
    # promises 64 sessions of 1 GB each on any host. Only -1 turns it off.
    host_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20

    def budget(**environ: str) -> int:
        settings = load_settings(environ={"ASSISTANTD_DATA_DIR": str(tmp_path / "data"), **environ})
        return sandbox_config_from_settings(settings).memory_budget_mb

    assert budget() == max(host_mb // 2, 1024) > 0
    assert budget(ASSISTANTD_CODE_INTERPRETER_MEMORY_MB=str(host_mb)) == host_mb  # one sandbox still fits
    assert budget(ASSISTANTD_CODE_INTERPRETER_MEMORY_BUDGET_MB="-1") == 0  # asked for: none
    assert budget(ASSISTANTD_CODE_INTERPRETER_MEMORY_BUDGET_MB="3000") == 3000


def test_a_global_memory_budget_bounds_all_sessions_together(tmp_path: Path) -> None:
    # Room for two sandboxes of 512 MB: a third session first closes the least recently used idle one,
    # waits while every session is busy, and says so clearly once its wait is over.
    gen = harness(tmp_path, pool_size=1, memory_budget_mb=1024, memory_wait_seconds=2.0)
    h = next(gen)
    try:
        budget = h.ci._host.budget
        h.run(h.ci.wait_for_pool())
        h.ok("s:m1", "v = 1")
        h.run(h.ci.wait_for_pool())  # refilled: 2 x 512 MB reserved
        h.ok("s:m2", "v = 2")
        assert (budget.used_mb, h.ci.pool_ready) == (1024, 0)  # no room left to refill the pool
        assert h.ok("s:m3", "v = 3\nprint(v)") == "3\n"  # s:m1, idle the longest, was closed for it
        assert h.ci.session_count == 2 and budget.used_mb == 1024
        assert h.execute("s:m1", "v").error == "NameError: name 'v' is not defined"  # and s:m2 made room

        async def busy_then_new() -> list[Any]:
            slow = [h.ci.execute(k, "import time; time.sleep(6)", save=h.saver) for k in ("s:m1", "s:m3")]
            return await asyncio.gather(*slow, h.ci.execute("s:m4", "print(4)", save=h.saver), return_exceptions=True)

        _, _, refused = h.run(busy_then_new())
        assert isinstance(refused, MemoryBudgetExhausted)
        assert "memory budget (1024 MB for all sessions together, 512 MB each)" in str(refused)
        assert "try again shortly" in str(refused)

        async def waits_for_a_session_to_finish() -> list[Any]:
            short = h.ci.execute("s:m1", "import time; time.sleep(1)", save=h.saver)
            long = h.ci.execute("s:m3", "import time; time.sleep(8)", save=h.saver)
            return await asyncio.gather(short, long, h.ci.execute("s:m5", "print(5)", save=h.saver))

        h.ci.config = dataclasses.replace(h.ci.config, memory_wait_seconds=30.0)
        _, _, waited = h.run(waits_for_a_session_to_finish())
        assert waited.logs == "5\n" and budget.used_mb <= 1024
    finally:
        gen.close()
