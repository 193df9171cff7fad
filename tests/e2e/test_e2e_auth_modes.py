"""Auth fail-closed over a real socket, on both databases: a browser's forgeries refused while open, the
first key created by the CLI closing a running server at once, revoking it locking it for good."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from .remote import E2E_MARKS, RemoteServer, check_clean_exit, make_client

pytestmark = E2E_MARKS


@pytest.fixture
def open_box(
    backend: str, tmp_path_factory: pytest.TempPathFactory, postgres: Callable[[], str]
) -> Iterator[RemoteServer]:
    """A fresh keyless server of its own (these tests change its auth for good)."""
    server = RemoteServer(
        f"auth[{backend}]",
        tmp_path_factory.mktemp(f"auth-{backend}"),
        database_url=postgres() if backend == "postgres" else "",
        extra_args=["--key-cache-seconds", "3600"],  # only the CLI's marker can make changes immediate
    )
    server.start()
    try:
        yield server
    finally:
        code = server.stop()
    check_clean_exit(server, code)


def raw_request(server: RemoteServer, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(raw)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and out.endswith(b"}"):
                break
        return out


def test_open_server_refuses_browser_forgeries_over_the_wire(open_box: RemoteServer) -> None:
    body = b'{"model": "m"}'
    # A cross-site form or fetch with text/plain: no preflight, so the browser would send it.
    forged = raw_request(
        open_box,
        b"POST /v1/assistants HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (open_box.port, len(body), body),
    )
    assert forged.startswith(b"HTTP/1.1 415 "), forged[:200]
    assert b'"code":"unsupported_media_type"' in forged
    # DNS rebinding: the page's own name resolving to 127.0.0.1.
    rebound = raw_request(
        open_box, b"GET /v1/assistants HTTP/1.1\r\nHost: rebind.evil.example:8000\r\nConnection: close\r\n\r\n"
    )
    assert rebound.startswith(b"HTTP/1.1 403 "), rebound[:200]
    assert b'"code":"forbidden_host"' in rebound
    cross = httpx.post(
        f"{open_box.base_url}/assistants", json={"model": "m"}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403 and cross.json()["error"]["code"] == "cross_origin_refused"
    with make_client(open_box, "anything") as client:
        assert client.beta.assistants.list().data == []  # none of the above created anything
        client.beta.assistants.create(model="m")  # the SDK itself is welcome


def test_first_key_closes_a_running_server_and_revoking_it_never_reopens(open_box: RemoteServer) -> None:
    with make_client(open_box, "no-key-needed") as anyone:
        anyone.beta.assistants.create(model="m", name="made while open")
        created = open_box.create_key("acme")
        with pytest.raises(openai.AuthenticationError):
            anyone.beta.assistants.list()
    assert "requires a valid key" in open_box.log_text()
    with make_client(open_box, created.key) as acme:
        assert acme.beta.assistants.list().data == []  # the open-mode assistant stayed in 'default'
        open_box.keys_cli("revoke", created.id)
        with pytest.raises(openai.AuthenticationError):
            acme.beta.assistants.list()
    with make_client(open_box, "no-key-needed") as anyone, pytest.raises(openai.AuthenticationError):
        anyone.beta.assistants.create(model="m")
    # A restart on the same database does not reopen it either.
    check_clean_exit(open_box, open_box.stop())
    open_box.start()
    assert "every API key has been revoked" in open_box.log_text()
    with make_client(open_box, "no-key-needed") as anyone, pytest.raises(openai.AuthenticationError):
        anyone.beta.assistants.list()
    # The way forward: a new key, and the keyless objects moved to its project (with the server stopped).
    check_clean_exit(open_box, open_box.stop())
    open_box.keys_cli("adopt-default", "--project", "acme")
    fresh = open_box.create_key("acme")
    open_box.start()
    with make_client(open_box, fresh.key) as acme:
        assert [a.name for a in acme.beta.assistants.list().data] == ["made while open"]
