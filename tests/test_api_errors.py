"""The error envelope on every path: unknown routes, wrong methods, big bodies, auth, internal errors."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

if TYPE_CHECKING:
    from conftest import MakeApi

SECRET = "sk-very-secret-key-1234567890abcdef"


# --- health --------------------------------------------------------------------------------------


def test_health_needs_no_key(make_api: MakeApi) -> None:
    api = make_api(key=None, api_keys="key-a:proj_a")
    r = api.client.get("/health")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "ok"
    assert isinstance(body["version"], str) and body["version"]


# --- routes and methods --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nothing-here"),
        ("POST", "/v1/assistants/asst_1/extra"),
        ("GET", "/v1/"),
        ("GET", "/nowhere"),
        ("GET", "/console-not-here/x"),
        ("GET", "/nowhere/deeper"),
        ("DELETE", "/v1/threads/thread_1/messages/msg_1/more"),
    ],
)
def test_unknown_routes_are_404_envelopes(shared_client: TestClient, method: str, path: str, expect_error: Any) -> None:
    expect_error(
        shared_client.request(method, path), 404, message=f"Invalid URL ({method} {path})", code=None, param=None
    )


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/assistants", {"GET", "POST"}),
        ("PUT", "/v1/assistants/asst_1", {"GET", "POST", "DELETE"}),
        ("PATCH", "/v1/threads/thread_1", {"GET", "POST", "DELETE"}),
        ("DELETE", "/v1/threads", {"GET", "POST"}),
        ("PUT", "/v1/threads/thread_1/messages", {"GET", "POST"}),
        ("POST", "/v1/files/file-1/content", {"GET"}),
        ("PUT", "/v1/files", {"GET", "POST"}),
        ("POST", "/health", {"GET"}),
    ],
)
def test_wrong_methods_are_405_naming_every_allowed_method(
    shared_client: TestClient, method: str, path: str, allowed: set[str], expect_error: Any
) -> None:
    r = shared_client.request(method, path)
    err = expect_error(r, 405, code=None, param=None, contains=(method, path))
    # The Allow header lists every method the path supports (HEAD comes with GET), and so does the message.
    header = {m.strip() for m in r.headers["allow"].split(",")}
    assert header - {"HEAD"} == allowed
    for m in allowed:
        assert m in err["message"]


# --- body size -----------------------------------------------------------------------------------


def test_body_over_max_body_bytes_is_413(make_api: MakeApi, expect_error: Any) -> None:
    api = make_api(max_body_bytes=200)
    small = api.client.post("/v1/assistants", json={"model": "m", "name": "x" * 100})
    assert small.status_code == 200, small.text
    expect_error(
        api.client.post("/v1/assistants", json={"model": "m", "instructions": "x" * 500}),
        413,
        code="request_too_large",
        message="The request body is too large: the limit is 200 bytes.",
    )
    assert api.count("assistants") == 1


def test_streamed_body_without_length_is_cut_off_at_the_limit(make_api: MakeApi, expect_error: Any) -> None:
    api = make_api(max_body_bytes=200)

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "m", "instructions": "'
        for _ in range(10):
            yield b"x" * 50
        yield b'"}'

    r = api.client.post("/v1/assistants", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    expect_error(r, 413, code="request_too_large", contains=("200 bytes",))
    assert api.count("assistants") == 0


def test_json_limit_does_not_apply_to_uploads(make_api: MakeApi) -> None:
    api = make_api(max_body_bytes=200)
    r = api.client.post("/v1/files", files={"file": ("a.bin", b"x" * 5000)}, data={"purpose": "assistants"})
    assert r.status_code == 200, r.text
    assert r.json()["bytes"] == 5000


# --- authentication ------------------------------------------------------------------------------


def test_missing_key_is_401_when_keys_are_configured(make_api: MakeApi, expect_error: Any) -> None:
    api = make_api(key=None, api_keys=f"{SECRET}:proj")
    expect_error(
        api.client.get("/v1/assistants"),
        401,
        code=None,
        param=None,
        contains=("You didn't provide an API key", "Authorization: Bearer"),
    )
    expect_error(api.client.get("/v1/assistants", headers={"Authorization": "Basic abc"}), 401)
    expect_error(api.client.get("/v1/assistants", headers={"Authorization": "Bearer "}), 401)


@pytest.mark.parametrize("wrong", ["sk-wrong-key-abcdefghijklmnopqrstuvwxyz", "short", SECRET + "x"])
def test_wrong_key_is_401_and_never_echoed(make_api: MakeApi, wrong: str, expect_error: Any) -> None:
    api = make_api(key=wrong, api_keys=f"{SECRET}:proj")
    r = api.client.post("/v1/assistants", json={"model": "m"})
    err = expect_error(r, 401, code="invalid_api_key", param=None, contains=("Incorrect API key provided",))
    assert wrong not in r.text
    assert SECRET not in r.text
    if len(wrong) > 8:
        # Enough for the owner to recognise the key: its first 3 and last 4 characters.
        assert f"{wrong[:3]}" in err["message"] and f"{wrong[-4:]}." in err["message"]
    assert api.count("assistants") == 0


def test_configured_key_is_accepted(make_api: MakeApi) -> None:
    api = make_api(key=SECRET, api_keys=f"{SECRET}:proj")
    assert api.client.get("/v1/assistants").status_code == 200


def test_without_configured_keys_any_key_is_accepted(make_api: MakeApi) -> None:
    anyone = make_api(key="literally-anything")
    made = anyone.client.post("/v1/assistants", json={"model": "m"}).json()
    other = make_api(key="another-key")
    assert other.client.get(f"/v1/assistants/{made['id']}").json() == made


def test_auth_runs_before_routing_and_validation(make_api: MakeApi, expect_error: Any) -> None:
    api = make_api(key=None, api_keys=f"{SECRET}:proj")
    expect_error(api.client.get("/v1/no-such-route"), 401)
    expect_error(api.client.post("/v1/assistants", content=b"{not json"), 401)
    # Outside /v1 no key is needed, so unknown routes there are plain 404s.
    expect_error(api.client.get("/elsewhere"), 404)


# --- internal errors -----------------------------------------------------------------------------


def test_access_log_has_one_line_per_request_and_never_the_key(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    api = make_api(key=SECRET, api_keys=f"{SECRET}:proj", access_log=True)
    with caplog.at_level(logging.DEBUG):
        api.client.post("/v1/assistants", json={"model": "m"})
        api.client.get("/v1/assistants", headers={"Authorization": "Bearer sk-wrong-0123456789abcdef"})
    lines = [r.getMessage() for r in caplog.records if r.name == "assistantd.access"]
    assert len(lines) == 2, lines
    assert "method=POST path=/v1/assistants status=200" in lines[0] and "project=proj" in lines[0]
    assert "method=GET path=/v1/assistants status=401" in lines[1]
    everything = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    assert SECRET not in everything and "sk-wrong-0123456789abcdef" not in everything


def test_internal_errors_become_a_generic_500(
    make_api: MakeApi, expect_error: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secret_detail = "password=hunter2 at /srv/secret/path.py line 42"

    async def explode(request: Request) -> Response:
        raise RuntimeError(secret_detail)

    def add_route(app: Starlette) -> None:
        # The real app with one more route under /v1, so the request passes auth and the middleware.
        mount = next(r for r in app.router.routes if isinstance(r, Mount) and r.path == "/v1")
        mount.routes.append(Route("/explode", explode, methods=["GET"]))

    api = make_api(extend=add_route, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="assistantd"):
        r = api.client.get("/v1/explode")
    expect_error(
        r,
        500,
        type_="server_error",
        code=None,
        param=None,
        message="The server had an error while processing your request. Sorry about that!",
    )
    assert "hunter2" not in r.text and "RuntimeError" not in r.text and "secret" not in r.text
    assert r.headers["x-should-retry"] == "false"
    # The detail goes to the log, for the operator.
    assert any(secret_detail in (rec.exc_text or "") or secret_detail in str(rec.exc_info) for rec in caplog.records)


def test_error_responses_are_json_for_every_source(make_api: MakeApi) -> None:
    """One envelope whatever raised: validation, not found, routing, method, size, auth."""
    api = make_api(max_body_bytes=100, api_keys=f"{SECRET}:proj", key=SECRET)
    c = api.client
    responses = [
        c.post("/v1/assistants", json={}),
        c.get("/v1/assistants/asst_x"),
        c.get("/v1/x"),
        c.put("/v1/assistants"),
        c.post("/v1/assistants", json={"model": "m" * 200}),
        c.get("/v1/assistants", headers={"Authorization": "Bearer nope"}),
    ]
    assert [r.status_code for r in responses] == [400, 404, 404, 405, 413, 401]
    for r in responses:
        assert r.headers["content-type"] == "application/json"
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert all(isinstance(err[k], str) for k in ("message", "type"))


def test_readiness_needs_no_key_and_names_every_dependency(make_api: MakeApi) -> None:
    api = make_api(key=None, api_keys="key-a:proj_a")
    r = api.client.get("/health/ready")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": {"status": "ok"}, "file_storage": {"status": "ok"}}


def test_readiness_is_503_naming_what_is_down(make_api: MakeApi, request: pytest.FixtureRequest) -> None:
    api = make_api(key=None)
    with contextlib.ExitStack() as restore:
        if api.backend == "sqlite":
            # The folder's scratch directory gone (a disk unmounted under the server): writes fail.
            shutil.rmtree(Path(api.settings.data_dir) / "files" / "tmp")
            down = {"database": "ok", "file_storage": "down"}
        else:
            # The database refuses connections and drops the open ones; the file bytes live there too.
            name = urlsplit(api.database_url).path.lstrip("/")
            with psycopg.connect(request.getfixturevalue("pg_server"), autocommit=True) as admin:
                admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            restore.callback(_allow_connections, request.getfixturevalue("pg_server"), name)
            down = {"database": "down", "file_storage": "down"}
        r = api.client.get("/health/ready")
        assert r.status_code == 503, r.text
        body = r.json()
        assert {n: check["status"] for n, check in body["checks"].items()} == down
        assert body["status"] == "unavailable"
        assert body["error"]["type"] == "server_error" and body["error"]["code"] == "dependency_unavailable"
        for n, state in down.items():
            assert (n in body["error"]["message"]) is (state == "down")
        if api.backend == "sqlite":
            assert api.client.get("/health").status_code == 200  # liveness stays the cheap database ping


def _allow_connections(server_uri: str, name: str) -> None:
    with psycopg.connect(server_uri, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
