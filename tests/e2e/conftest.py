"""End-to-end fixtures: a real ``assistantd serve`` subprocess on a free port, driven over a real socket.

Each session-scoped server is parametrized over the two metadata backends, SQLite (in the server's data
dir) and PostgreSQL (a real server from the ``pgserver`` package, one database per assistantd server).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from .remote import (
    BACKENDS,
    KEY_A,
    KEY_B,
    MAX_BODY_BYTES,
    MAX_UPLOAD_BYTES,
    PROJECT_A,
    PROJECT_B,
    RemoteServer,
    check_clean_exit,
    make_client,
    running,
)
from .replicas import replica_sets, replicas  # noqa: F401 - replicas on one PostgreSQL
from .runs_support import expiry_server, rclient, runs_server, upstream  # noqa: F401 - fixtures for the runs tests


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the running servers' logs to every failed e2e test report."""
    report: pytest.TestReport = yield
    if report.failed:
        for server in running:
            report.sections.append((f"assistantd server log: {server.name}", server.log_tail()))
    return report  # type: ignore[return-value]


# --- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty databases on one real PostgreSQL server (started on first use)."""
    state: dict[str, Any] = {}

    def new_database() -> str:
        import psycopg  # only needed when a PostgreSQL backend is asked for

        with warnings.catch_warnings():
            # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset (CI containers):
            # a fact about the machine, not about the code under test.
            warnings.simplefilter("ignore")
            import pgserver

        if "server" not in state:
            # Not under pytest's basetemp: as root, pgserver runs PostgreSQL as its own user, and any
            # pytest session that starts meanwhile resets /tmp/pytest-of-root to mode 0700.
            state["dir"] = Path(tempfile.mkdtemp(prefix="assistantd-e2e-"))
            state["server"] = pgserver.get_server(state["dir"] / "pgdata", cleanup_mode="stop")
        server = state["server"]
        name = f"e2e_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return str(server.get_uri(database=name))

    yield new_database
    if "server" in state:
        state["server"].cleanup()
        shutil.rmtree(state["dir"], ignore_errors=True)


def _start_server(
    name: str,
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
    postgres: Callable[[], str],
    *,
    api_keys: str = "",
    extra_args: list[str] | None = None,
) -> Iterator[RemoteServer]:
    database_url = postgres() if backend == "postgres" else ""
    server = RemoteServer(
        f"{name}[{backend}]",
        tmp_path_factory.mktemp(f"{name}-{backend}"),
        database_url=database_url,
        api_keys=api_keys,
        extra_args=extra_args,
    )
    server.start()
    try:
        yield server
    finally:
        code = server.stop()
    check_clean_exit(server, code)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server(
    backend: str, tmp_path_factory: pytest.TempPathFactory, postgres: Callable[[], str]
) -> Iterator[RemoteServer]:
    """The main server, with two static API keys in two projects, and body limits small enough to test."""
    keys = f"{KEY_A}:{PROJECT_A},{KEY_B}:{PROJECT_B}"
    limits = ["--max-body-bytes", str(MAX_BODY_BYTES), "--max-upload-bytes", str(MAX_UPLOAD_BYTES)]
    yield from _start_server("keys", backend, tmp_path_factory, postgres, api_keys=keys, extra_args=limits)


@pytest.fixture(scope="session")
def open_server(
    backend: str, tmp_path_factory: pytest.TempPathFactory, postgres: Callable[[], str]
) -> Iterator[RemoteServer]:
    """A server started with no API keys at all, on loopback: any key is accepted."""
    yield from _start_server("open", backend, tmp_path_factory, postgres)


# --- clients -------------------------------------------------------------------------------------


@pytest.fixture
def client(server: RemoteServer) -> Iterator[openai.OpenAI]:
    """The SDK client of project A."""
    with make_client(server, KEY_A) as c:
        yield c


@pytest.fixture
def fresh_client(server: RemoteServer) -> Iterator[openai.OpenAI]:
    """A client of a brand-new, empty project (its key made with the CLI), for exact list contents."""
    created = server.create_key(f"proj-{uuid.uuid4().hex[:10]}")
    with make_client(server, created.key) as c:
        yield c


@pytest.fixture
def raw(server: RemoteServer) -> Iterator[httpx.Client]:
    """Plain HTTP to the server's /v1, with no SDK in between (and no OpenAI-Beta header)."""
    with httpx.Client(base_url=server.base_url, timeout=30.0) as c:
        yield c
