"""Auth fails closed: open mode is decided at start-up, ends with the first key, never comes back; an open
server refuses what a web page could make a browser send; key changes take effect at once or within
``key_cache_seconds``; objects made while open can be moved to a project."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from engine_support import FakeChatModel, assistant, ok, thread, wait_run

from assistantd.cli import main
from assistantd.errors import InvalidRequest
from assistantd.service.keys import adopt_default, change_marker_path, create_key, revoke_key
from assistantd.store import Database, open_database
from assistantd.store.lock import DataDirLock, sqlite_lock_path

if TYPE_CHECKING:
    from conftest import Api, MakeApi


@pytest.fixture
def operator_db(database_url: str) -> Iterator[Database]:
    """A second handle on the test's database, as the `assistantd keys` command has."""
    db = open_database(database_url, pool_size=1)
    yield db
    asyncio.run(db.close())


def marker_of(api: Api) -> Any:
    return change_marker_path(api.settings.resolved_database_url, api.settings.data_path)


# --- what a browser can forge, refused while open --------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "10.0.0.5:8000", "localhost.evil.example"])
def test_open_server_refuses_foreign_host_names(make_api: MakeApi, expect_error: Any, host: str) -> None:
    api = make_api()
    r = api.client.post("/v1/assistants", json={"model": "m"}, headers={"Host": host})
    expect_error(r, 403, code="forbidden_host", contains=("loopback name", "assistantd keys create"))
    expect_error(api.client.get("/v1/assistants", headers={"Host": host}), 403, code="forbidden_host")
    assert api.count("assistants") == 0


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8000", "127.0.0.1:9", "127.8.9.1", "[::1]:8000", "a.localhost"]
)
def test_open_server_answers_loopback_names(make_api: MakeApi, host: str) -> None:
    api = make_api()
    r = api.client.post("/v1/assistants", json={"model": "m"}, headers={"Host": host})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost:3000", "null", "https://localhost"])
def test_open_server_refuses_foreign_origins(make_api: MakeApi, expect_error: Any, origin: str) -> None:
    api = make_api()
    r = api.client.post("/v1/assistants", json={"model": "m"}, headers={"Origin": origin, "Host": "localhost:8000"})
    expect_error(r, 403, code="cross_origin_refused", contains=("Cross-origin requests are refused",))
    assert api.count("assistants") == 0
    same = api.client.post(
        "/v1/assistants", json={"model": "m"}, headers={"Origin": "http://localhost:8000", "Host": "localhost:8000"}
    )
    assert same.status_code == 200, same.text


@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None]
)
def test_open_server_refuses_bodies_a_page_can_send_without_preflight(
    make_api: MakeApi, expect_error: Any, content_type: str | None
) -> None:
    api = make_api()
    headers = {"content-type": content_type} if content_type else {}
    r = api.client.post("/v1/assistants", content=b'{"model": "m"}', headers=headers)
    expect_error(r, 415, code="unsupported_media_type", contains=("Content-Type: application/json",))
    r = api.client.post("/v1/threads", content=b"{}", headers=headers)
    expect_error(r, 415, code="unsupported_media_type")
    assert api.count("assistants") == 0 and api.count("threads") == 0


def test_open_server_still_takes_json_uploads_and_bodiless_posts(make_api: MakeApi, expect_error: Any) -> None:
    api = make_api()
    assert api.client.post("/v1/threads").status_code == 200  # no body: nothing to smuggle
    up = api.client.post("/v1/files", files={"file": ("a.txt", b"hi")}, data={"purpose": "assistants"})
    assert up.status_code == 200, up.text
    # A form that posts multipart anywhere but /v1/files is refused like text/plain.
    r = api.client.post("/v1/assistants", files={"file": ("a.txt", b"hi")}, data={"model": "m"})
    expect_error(r, 415, code="unsupported_media_type")


def test_with_keys_the_browser_checks_do_not_apply(make_api: MakeApi) -> None:
    api = make_api(key="sk-real-0123456789", api_keys="sk-real-0123456789:acme")
    # A reverse proxy passes its public name; a keyed server cannot be driven by a page anyway.
    r = api.client.post("/v1/assistants", json={"model": "m"}, headers={"Host": "api.example.com"})
    assert r.status_code == 200, r.text


def test_allow_no_auth_on_a_public_address_checks_origin_not_host(make_api: MakeApi, expect_error: Any) -> None:
    api = make_api(host="0.0.0.0", allow_no_auth=True)
    assert api.client.get("/v1/assistants", headers={"Host": "assistant.lan:8000"}).status_code == 200
    r = api.client.post(
        "/v1/assistants", json={"model": "m"}, headers={"Host": "assistant.lan:8000", "Origin": "http://evil.example"}
    )
    expect_error(r, 403, code="cross_origin_refused")
    r = api.client.post("/v1/assistants", content=b'{"model": "m"}', headers={"content-type": "text/plain"})
    expect_error(r, 415)


def test_public_address_without_keys_or_allow_no_auth_fails_closed(make_api: MakeApi, expect_error: Any) -> None:
    api = make_api(host="0.0.0.0", key="anything")
    expect_error(api.client.get("/v1/assistants"), 401, code="invalid_api_key")


# --- keys appearing and disappearing ---------------------------------------------------------------


def test_first_key_switches_a_running_open_server_to_enforcing_at_once(
    make_api: MakeApi, operator_db: Database, expect_error: Any, caplog: pytest.LogCaptureFixture
) -> None:
    api = make_api(key=None, key_cache_seconds=3600)  # a long cache: only the marker makes it immediate
    made = api.client.post("/v1/assistants", json={"model": "m"})
    assert made.status_code == 200
    with caplog.at_level(logging.WARNING, logger="assistantd.keys"):
        created = create_key(operator_db, "acme", "first", marker=marker_of(api))
        expect_error(api.client.get("/v1/assistants"), 401, contains=("You didn't provide an API key",))
    assert "requires a valid key" in caplog.text and "adopt-default" in caplog.text
    mine = api.client.get("/v1/assistants", headers={"Authorization": f"Bearer {created.key}"})
    assert mine.status_code == 200 and mine.json()["data"] == []  # acme's, not default's


def test_revoking_the_last_key_locks_the_server_and_a_restart_keeps_it_locked(
    make_api: MakeApi, operator_db: Database, expect_error: Any
) -> None:
    created = create_key(operator_db, "acme", "only")
    api = make_api(key=None, key_cache_seconds=3600)
    auth = {"Authorization": f"Bearer {created.key}"}
    assert api.client.get("/v1/assistants", headers=auth).status_code == 200
    assert revoke_key(operator_db, created.id, marker=marker_of(api)) is True
    expect_error(api.client.get("/v1/assistants", headers=auth), 401, code="invalid_api_key")
    expect_error(api.client.get("/v1/assistants"), 401)
    r = api.client.post("/v1/assistants", json={"model": "m"}, headers={"Authorization": "Bearer whatever"})
    expect_error(r, 401, code="invalid_api_key")
    # Started again on the same database, still on loopback: no key exists, yet it does not open.
    again = make_api(key="any-key-at-all")
    expect_error(again.client.get("/v1/assistants"), 401, code="invalid_api_key")
    assert api.count("assistants") == 0


def test_without_the_marker_a_revocation_lands_within_key_cache_seconds(
    make_api: MakeApi, operator_db: Database, expect_error: Any
) -> None:
    created = create_key(operator_db, "acme", "k")
    api = make_api(key=created.key, key_cache_seconds=0)
    assert api.client.get("/v1/assistants").status_code == 200
    # As another replica does: a revocation whose marker this server cannot see.
    assert revoke_key(operator_db, created.id, marker=None) is True
    expect_error(api.client.get("/v1/assistants"), 401, code="invalid_api_key")


def test_cached_key_survives_until_its_cache_ends_without_the_marker(make_api: MakeApi, operator_db: Database) -> None:
    created = create_key(operator_db, "acme", "k")
    api = make_api(key=created.key, key_cache_seconds=3600)
    assert api.client.get("/v1/assistants").status_code == 200
    revoke_key(operator_db, created.id, marker=None)
    # The bound is the setting: this is exactly why the default is short and the marker exists.
    assert api.client.get("/v1/assistants").status_code == 200


# --- moving project default ------------------------------------------------------------------------


def storage_args(api: Api) -> list[str]:
    return ["--data-dir", str(api.settings.data_path), "--database-url", api.settings.resolved_database_url]


def test_adopt_default_moves_every_object_made_while_open(
    make_api: MakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api = make_api(key="anything")
    assistant = api.client.post("/v1/assistants", json={"model": "m"}).json()
    thread = api.client.post("/v1/threads", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    file = api.client.post("/v1/files", files={"file": ("a.txt", b"hi")}, data={"purpose": "assistants"}).json()
    store = api.client.post("/v1/vector_stores", json={"name": "s"}).json()
    assert api.count("assistants", project_id="default") == 1

    assert main(["keys", "adopt-default", "--project", "acme", *storage_args(api)]) == 0
    out = capsys.readouterr().out
    assert "to 'acme'" in out and "assistants 1" in out and "messages 1" in out
    for table in ("assistants", "threads", "messages", "files", "vector_stores"):
        assert api.count(table, project_id="default") == 0, table
        assert api.count(table, project_id="acme") >= 1, table
    assert main(["keys", "create", "--project", "acme", *storage_args(api)]) == 0
    key = next(line.split()[-1] for line in capsys.readouterr().out.splitlines() if line.startswith("key:"))
    auth = {"Authorization": f"Bearer {key}"}
    for path in (f"/v1/assistants/{assistant['id']}", f"/v1/threads/{thread['id']}", f"/v1/files/{file['id']}",
                 f"/v1/vector_stores/{store['id']}"):  # fmt: skip
        assert api.client.get(path, headers=auth).status_code == 200, path


def test_adopt_default_refuses_while_a_server_holds_the_sqlite_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["keys", "list", *data]) == 0  # creates the database
    lock_path = sqlite_lock_path(f"sqlite:///{tmp_path / 'data' / 'assistantd.db'}")
    assert lock_path is not None
    lock = DataDirLock(lock_path)
    lock.acquire()  # as `assistantd serve` does
    try:
        assert main(["keys", "adopt-default", "--project", "acme", *data]) == 1
        assert "stop the server first" in capsys.readouterr().err
    finally:
        lock.release()
    assert main(["keys", "adopt-default", "--project", "acme", *data]) == 0


def test_adopt_default_names_a_target_project(make_api: MakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api = make_api()
    assert main(["keys", "adopt-default", "--project", "default", *storage_args(api)]) == 1
    assert "not 'default' itself" in capsys.readouterr().err


def test_adopt_default_waits_for_project_defaults_active_runs(make_api: MakeApi, operator_db: Database) -> None:
    """A run still active in 'default' (here waiting for tool outputs) would be split from its thread."""
    model = FakeChatModel()
    call = {"tool_calls": [{"name": "lookup", "arguments": "{}"}]}
    model.script("m", call)
    api = make_api(chat_model=model)
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    asst = assistant(api.client, "m", tools=[tool])
    t = thread(api.client, "Look it up")
    run = ok(api.client.post(f"/v1/threads/{t['id']}/runs", json={"assistant_id": asst["id"]}))
    wait_run(api.client, t["id"], run["id"], ("requires_action",))
    with pytest.raises(InvalidRequest, match=r"1 run\(s\) of project 'default' are still active"):
        adopt_default(operator_db, "acme")
    assert api.count("threads", project_id="default") == 1  # nothing moved

    ok(api.client.post(f"/v1/threads/{t['id']}/runs/{run['id']}/cancel"))
    assert adopt_default(operator_db, "acme")["threads"] == 1
