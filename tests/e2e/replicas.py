"""Several ``assistantd serve`` replicas on one PostgreSQL, as a scale-out deployment runs them.

Each replica has its own data dir (as on separate machines) and shares only the database and the
scripted upstream. ``ReplicaSet`` gives an official SDK client per replica, direct SQL on the shared
database (to check what is stored), every data dir (to check what is not), and ``kill`` (SIGKILL, as a
machine dying) for the takeover tests. The module-scoped ``replicas`` fixture is a set the file-flow
tests share; a test that kills one takes ``replica_sets`` and starts a set of its own.

Like ``remote.py``, nothing here imports ``assistantd``: the suite runs under the old SDK venv too.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from .remote import KEY_A, PROJECT_A, RemoteServer, ServerFailed, check_clean_exit, make_client
from .runs_support import ScriptedUpstream, server_flags

REPLICAS = 3


class ReplicaSet:
    def __init__(self, servers: list[RemoteServer], database_url: str) -> None:
        self.servers = servers
        self.database_url = database_url
        self.killed: set[int] = set()
        self._clients: dict[int, openai.OpenAI] = {}

    def __len__(self) -> int:
        return len(self.servers)

    def client(self, i: int, *, timeout: float = 60.0) -> openai.OpenAI:
        """The official SDK pointed at replica ``i`` (project A's key, no retries)."""
        if i not in self._clients:
            c = make_client(self.servers[i], KEY_A)
            self._clients[i] = c.with_options(timeout=timeout)
        return self._clients[i]

    def kill(self, i: int) -> None:
        """SIGKILL replica ``i``: no shutdown, no lease released, as when its machine dies."""
        proc = self.servers[i].proc
        assert proc is not None and proc.poll() is None, f"replica {i} is not running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        self.killed.add(i)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run ``query`` (psycopg ``%s`` placeholders) on the shared database."""
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def data_dirs(self) -> list[Path]:
        return [s.data_dir for s in self.servers]

    def files_on_disk(self, needle: str = "") -> list[Path]:
        """Regular files under any replica's data dir whose path contains ``needle``, sandboxes excluded
        (a code interpreter session keeps its own /mnt/data, which is not the file store)."""
        found = []
        for d in self.data_dirs():
            for p in d.rglob("*"):
                if p.is_file() and needle in str(p) and "code-interpreter" not in p.parts:
                    found.append(p)
        return found

    def stop(self) -> None:
        for c in self._clients.values():
            c.close()
        failures = []
        for i, server in enumerate(self.servers):
            code = server.stop()
            if i in self.killed:
                continue
            try:
                check_clean_exit(server, code)
            except ServerFailed as exc:
                failures.append(str(exc))
        if failures:
            raise ServerFailed("\n".join(failures))


def start_replicas(
    name: str,
    workdir: Path,
    database_url: str,
    upstream: ScriptedUpstream,
    *,
    count: int = REPLICAS,
    flags: Callable[[int], list[str]] = lambda i: [],
) -> ReplicaSet:
    """``count`` replicas on ``database_url``; ``flags(i)`` adds serve flags to replica ``i``."""
    servers: list[RemoteServer] = []
    replicas = ReplicaSet(servers, database_url)
    try:
        for i in range(count):
            server = RemoteServer(
                f"{name}-{i}",
                workdir / f"replica-{i}",
                database_url=database_url,
                api_keys=f"{KEY_A}:{PROJECT_A}",
                extra_args=server_flags(upstream, *flags(i)),
            )
            (workdir / f"replica-{i}").mkdir(parents=True)
            servers.append(server)
            server.start()
    except BaseException:
        replicas.stop()
        raise
    return replicas


# Replica 0 ingests no vector store files itself (--ingest-workers 0), so a file uploaded there is
# necessarily read by another replica to be indexed.
def _shared_flags(i: int) -> list[str]:
    return ["--ingest-workers", "0"] if i == 0 else []


@pytest.fixture(scope="module")
def replicas(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory, postgres: Callable[[], str]
) -> Iterator[ReplicaSet]:
    """Three replicas on one fresh PostgreSQL database, shared by a module's tests."""
    workdir = tmp_path_factory.mktemp("replicas")
    rs = start_replicas("replica", workdir, postgres(), upstream, flags=_shared_flags)
    try:
        yield rs
    finally:
        rs.stop()


StartReplicas = Callable[..., ReplicaSet]


@pytest.fixture
def replica_sets(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory, postgres: Callable[[], str]
) -> Iterator[StartReplicas]:
    """Start sets of replicas for one test (each on a fresh database), all stopped when it ends:
    ``replica_sets(count=3, flags=lambda i: [...])``. Killed replicas are not checked for a clean exit."""
    started: list[ReplicaSet] = []

    def start(*, count: int = REPLICAS, flags: Callable[[int], list[str]] = lambda i: []) -> ReplicaSet:
        rs = start_replicas(
            f"set{len(started)}", tmp_path_factory.mktemp("replica-set"), postgres(), upstream, count=count, flags=flags
        )
        started.append(rs)
        return rs

    try:
        yield start
    finally:
        for rs in started:
            rs.stop()
