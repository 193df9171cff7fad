"""One SQLite data dir, one server: a second `assistantd serve` on it refuses to start and says who holds it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from .remote import E2E_MARKS, SERVER_PYTHON, RemoteServer, check_clean_exit

pytestmark = E2E_MARKS


def test_second_server_on_the_same_sqlite_data_dir_refuses_to_start(tmp_path: Path) -> None:
    first = RemoteServer("lock-first", tmp_path)
    first.start()
    try:
        assert first.proc is not None
        second = subprocess.run(
            [SERVER_PYTHON, "-m", "assistantd", "serve", "--port", "0", *first.storage_args()],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert f"pid {first.proc.pid}" in second.stderr
        assert "already serving" in second.stderr
        # The first server is untouched and still answers.
        assert httpx.get(f"{first.url}/health", timeout=10).status_code == 200
    finally:
        code = first.stop()
    check_clean_exit(first, code)


def test_the_lock_is_released_when_the_server_stops(tmp_path: Path) -> None:
    first = RemoteServer("lock-release", tmp_path)
    first.start()
    check_clean_exit(first, first.stop())
    again = RemoteServer("lock-again", tmp_path)
    again.start()  # raises if the data dir were still locked
    check_clean_exit(again, again.stop())


@pytest.mark.parametrize("command", [["keys", "list"], ["migrate"]])
def test_operator_commands_still_work_while_a_server_holds_the_lock(tmp_path: Path, command: list[str]) -> None:
    server = RemoteServer("lock-cli", tmp_path)
    server.start()
    try:
        out = subprocess.run(
            [SERVER_PYTHON, "-m", "assistantd", *command, *server.storage_args()],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    finally:
        code = server.stop()
    check_clean_exit(server, code)
