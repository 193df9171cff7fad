"""`assistantd backup` while a server runs, `assistantd restore` into a fresh place: every object comes back.

Both databases: SQLite (the backup API) and PostgreSQL (pg_dump / pg_restore from the pgserver build the
tests' PostgreSQL runs, so the versions match). Objects are compared row by row in every table, file
bytes byte for byte, and through a server started on the restored copy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest
import sqlean
from conftest import create_pg_database, drop_pg_database
from ops_support import assistantd_serve, run_cli, scripted_model

pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]

TABLES = (
    "schema_migrations", "api_keys", "assistants", "threads", "messages", "files", "runs", "run_steps",
    "vector_stores", "vector_store_files", "vector_store_file_batches", "vector_store_chunks",
)  # fmt: skip
KEY = "sk-backup-0123456789abcdef"


def _pg_tools() -> tuple[str, str]:
    import pgserver

    bin_dir = Path(pgserver.__file__).parent / "pginstall" / "bin"
    return str(bin_dir / "pg_dump"), str(bin_dir / "pg_restore")


def _rows(database_url: str, table: str) -> list[tuple[Any, ...]]:
    if database_url.startswith("sqlite:"):
        conn = sqlean.connect(database_url.removeprefix("sqlite://"))
        try:
            return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
        finally:
            conn.close()
    with psycopg.connect(database_url) as conn:
        return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


def _populate(model_url: str, server_url: str) -> dict[str, Any]:
    client = openai.OpenAI(base_url=server_url + "/v1", api_key=KEY)
    notes = b"# Backups\nThe heron nests by the lighthouse.\n"
    text = client.files.create(file=("notes.md", notes), purpose="assistants")
    blob = client.files.create(file=("blob.bin", os.urandom(300_000)), purpose="assistants")
    store = client.vector_stores.create(name="notes", file_ids=[text.id])
    deadline = time.monotonic() + 60
    while client.vector_stores.retrieve(store.id).file_counts.completed != 1:
        assert time.monotonic() < deadline, "the file was not indexed"
        time.sleep(0.05)
    assistant = client.beta.assistants.create(
        model="backup-model", name="Keeper", metadata={"k": "v"}, tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )  # fmt: skip
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "Where does the heron nest?", "attachments": []}]
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "completed", run.last_error
    return {"client": client, "files": [text.id, blob.id], "store": store.id, "thread": thread.id, "run": run.id}


def _snapshot_via_api(client: openai.OpenAI, made: dict[str, Any]) -> dict[str, Any]:
    return {
        "assistants": [a.model_dump() for a in client.beta.assistants.list(order="asc")],
        "thread": client.beta.threads.retrieve(made["thread"]).model_dump(),
        "messages": [m.model_dump() for m in client.beta.threads.messages.list(made["thread"], order="asc")],
        "runs": [r.model_dump() for r in client.beta.threads.runs.list(made["thread"], order="asc")],
        "steps": [s.model_dump() for s in client.beta.threads.runs.steps.list(made["run"], thread_id=made["thread"])],
        "files": [f.model_dump() for f in client.files.list()],
        "contents": [client.files.content(f).read() for f in made["files"]],
        "store": client.vector_stores.retrieve(made["store"]).model_dump(),
        "search": [
            r.model_dump() for r in client.vector_stores.search(made["store"], query="where does the heron nest")
        ],
    }


@pytest.fixture(params=["sqlite", "postgres"])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, list[str], list[str]]]:
    """(source URL, target URL, backup flags, restore flags) for one backend."""
    if request.param == "sqlite":
        yield (
            f"sqlite:///{tmp_path / 'a' / 'data' / 'assistantd.db'}",
            f"sqlite:///{tmp_path / 'b' / 'data' / 'assistantd.db'}",
            [],
            [],
        )
        return
    server = request.getfixturevalue("pg_server")
    source, target = create_pg_database(server), create_pg_database(server)
    pg_dump, pg_restore = _pg_tools()
    try:
        yield source, target, ["--database-url", source, "--pg-dump", pg_dump], [
            "--database-url", target, "--pg-restore", pg_restore,
        ]  # fmt: skip
    finally:
        drop_pg_database(server, source)
        drop_pg_database(server, target)


def test_backup_online_and_restore_into_a_fresh_place(
    tmp_path: Path, databases: tuple[str, str, list[str], list[str]]
) -> None:
    source, target, backup_flags, restore_flags = databases
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    archive = tmp_path / "backups" / "assistantd.tar"
    in_database = not source.startswith("sqlite")
    db_args_a = ["--database-url", source] if not source.startswith("sqlite") else []
    db_args_b = ["--database-url", target] if not target.startswith("sqlite") else []
    with scripted_model(tmp_path) as model:
        with assistantd_serve(
            a, "--upstream-base-url", model.url, "--api-keys", f"{KEY}:backup", "--code-interpreter-pool-size", "0",
            *db_args_a,
        ) as server_a:  # fmt: skip
            made = _populate(model.url, server_a.url)
            with made.pop("client") as client_a:
                before = _snapshot_via_api(client_a, made)
            # Online: the server is running (and serving) while the backup is taken.
            result = run_cli("backup", str(archive), "--data-dir", str(a / "data"), *backup_flags)
            assert result.returncode == 0, result.stderr
            # PostgreSQL keeps file bytes in the database (store/blobs.py), so the dump carries them.
            contents = "0 file contents" if in_database else "2 file contents"
            assert f"2 files, {contents}" in result.stdout, result.stdout
            assert httpx.get(server_a.url + "/health").status_code == 200

        restored = run_cli("restore", str(archive), "--data-dir", str(b / "data"), *restore_flags)
        assert restored.returncode == 0, restored.stderr
        assert f"2 files, {contents}" in restored.stdout

        # Every row of every table, and every file's bytes.
        for table in TABLES + (("blobs", "blob_chunks") if in_database else ()):
            assert _rows(source, table) == _rows(target, table), table
        for file_id in made["files"] if not in_database else ():
            name = file_id.replace("/", "_")
            assert (a / "data" / "files" / name[-2:] / name).read_bytes() == (
                b / "data" / "files" / name[-2:] / name
            ).read_bytes()

        # A server on the restored copy answers with the same objects.
        with assistantd_serve(
            b, "--upstream-base-url", model.url, "--api-keys", f"{KEY}:backup", "--code-interpreter-pool-size", "0",
            *db_args_b,
        ) as server_b, openai.OpenAI(base_url=server_b.url + "/v1", api_key=KEY) as client:  # fmt: skip
            assert _snapshot_via_api(client, made) == before

        # A second restore onto objects is refused unless forced.
        again = run_cli("restore", str(archive), "--data-dir", str(b / "data"), *restore_flags)
        assert again.returncode == 1
        assert "--force" in again.stderr


def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    bogus = tmp_path / "x.tar"
    import tarfile

    with tarfile.open(bogus, "w"):
        pass
    result = run_cli("restore", str(bogus), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 1
    assert "is not an assistantd backup" in result.stderr
    missing = run_cli("backup", str(tmp_path / "b.tar"), "--database-url", "postgresql://u@127.0.0.1:1/x",
                      "--pg-dump", "no-such-pg_dump")  # fmt: skip
    assert missing.returncode == 1
    assert "no-such-pg_dump was not found: install PostgreSQL's client tools" in missing.stderr
