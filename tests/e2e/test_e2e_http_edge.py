"""The HTTP edge over raw sockets: head and URL limits, read deadlines, per-client connections, and the
OpenAI error envelope on every answer the server shapes itself (never a plain-text 400)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from .remote import E2E_MARKS, RemoteServer, check_clean_exit

pytestmark = E2E_MARKS

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_URL = 2048
MAX_HEAD = 8192
MAX_HEADERS = 40
PER_CLIENT = 12
READ_DEADLINE = 15.0  # how long a test waits for the server to answer or close, at most


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    server = RemoteServer(
        "edge[sqlite]",
        tmp_path_factory.mktemp("edge"),
        extra_args=[
            "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
            "--max-url-bytes", str(MAX_URL), "--max-header-bytes", str(MAX_HEAD),
            "--max-headers", str(MAX_HEADERS), "--max-connections-per-client", str(PER_CLIENT),
        ],
    )  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        code = server.stop()
    check_clean_exit(server, code)


def connect(server: RemoteServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=READ_DEADLINE)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline fails the test)."""
    out = b""
    deadline = time.monotonic() + READ_DEADLINE
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"the server kept the connection open; got {out[:200]!r}")


def exchange(server: RemoteServer, raw: bytes) -> bytes:
    with connect(server) as sock:
        # The server may answer and close before reading everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        return read_until_closed(sock)


def envelope(response: bytes, status: int, code: str) -> str:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *headers = head.decode("latin-1").split("\r\n")
    assert status_line.startswith(f"HTTP/1.1 {status} "), response[:300]
    lowered = {h.split(":", 1)[0].lower(): h.split(":", 1)[1].strip() for h in headers}
    assert lowered["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", code)
    return str(error["message"])


def test_oversized_url_is_414_naming_the_limit(edge_server: RemoteServer) -> None:
    raw = b"GET /v1/models?q=" + b"a" * (MAX_URL + 10) + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
    message = envelope(exchange(edge_server, raw), 414, "request_uri_too_long")
    assert f"{MAX_URL} bytes" in message and "max_url_bytes" in message


def test_too_many_headers_is_431(edge_server: RemoteServer) -> None:
    lines = b"".join(b"X-Filler-%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
    raw = b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n" + lines + b"\r\n"
    message = envelope(exchange(edge_server, raw), 431, "request_header_fields_too_large")
    assert f"limit is {MAX_HEADERS}" in message and "max_headers" in message


def test_oversized_head_is_431_even_before_it_ends(edge_server: RemoteServer) -> None:
    whole = b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n"
    assert "max_header_bytes" in envelope(exchange(edge_server, whole), 431, "request_header_fields_too_large")
    # A head that never ends, sent in small pieces: cut off at the cap, not buffered without end.
    with connect(edge_server) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Endless: ")
        sent = 0
        try:
            while sent < MAX_HEAD * 4:
                sock.sendall(b"b" * 512)
                sent += 512
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_until_closed(sock)
    envelope(response, 431, "request_header_fields_too_large")


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"NOT-A-METHOD\r\n\r\n",
        b"POST /v1/threads HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nBad Header Name: x\r\n\r\n",
    ],
    ids=["two-lengths", "no-method", "bad-chunk", "bad-header-name"],
)
def test_malformed_framing_is_400_in_the_envelope(edge_server: RemoteServer, raw: bytes) -> None:
    assert "malformed" in envelope(exchange(edge_server, raw), 400, "invalid_http_request")


def test_trickled_head_is_cut_off_at_the_header_timeout_while_others_are_served(edge_server: RemoteServer) -> None:
    stop = threading.Event()
    result: dict[str, bytes] = {}

    def trickle() -> None:
        with connect(edge_server) as sock:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n")
            try:
                while not stop.wait(0.05):
                    sock.sendall(b"X-Slow: 1\r\n"[:1])
            except (BrokenPipeError, ConnectionResetError):
                pass
            result["response"] = read_until_closed(sock)

    def trickle_until_cut() -> None:
        try:
            trickle()
        finally:
            stop.set()

    worker = threading.Thread(target=trickle_until_cut)
    worker.start()
    # Others get answers meanwhile.
    with httpx.Client(base_url=edge_server.base_url, timeout=10.0) as http:
        answered = 0
        while not stop.is_set() and answered < 200:
            assert http.get("/models").status_code == 200
            answered += 1
    worker.join(timeout=READ_DEADLINE)
    assert not worker.is_alive()
    assert answered > 0
    message = envelope(result["response"], 408, "request_timeout")
    assert "header_timeout" in message


def test_idle_connection_is_closed_after_the_header_timeout(edge_server: RemoteServer) -> None:
    with connect(edge_server) as sock:
        assert read_until_closed(sock) == b""  # nothing was asked, so nothing is answered


def test_stalled_body_is_408(edge_server: RemoteServer) -> None:
    head = b"POST /v1/threads HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    raw = head + b"Content-Length: 100\r\n\r\n{"
    with connect(edge_server) as sock:
        sock.sendall(raw)
        response = read_until_closed(sock)
    assert "body_timeout" in envelope(response, 408, "request_timeout")
    # Nothing was created from the half-sent body, and the server is fine.
    assert httpx.get(f"{edge_server.base_url}/models", timeout=10).status_code == 200
    assert "Traceback" not in edge_server.log_text()


def test_one_client_address_holds_a_bounded_number_of_connections(edge_server: RemoteServer) -> None:
    held = [connect(edge_server) for _ in range(PER_CLIENT)]
    try:
        # An answer on each proves the server has taken it (kept alive afterwards) before the next one counts.
        for sock in held:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        with connect(edge_server) as extra:
            response = read_until_closed(extra)
        message = envelope(response, 429, "too_many_connections")
        assert "max_connections_per_client" in message
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, the address is served again.
    deadline = time.monotonic() + READ_DEADLINE
    while True:
        try:
            if httpx.get(f"{edge_server.base_url}/models", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the address stayed capped after its connections closed"


def test_limits_do_not_touch_ordinary_requests(edge_server: RemoteServer) -> None:
    with httpx.Client(base_url=edge_server.base_url, timeout=10.0) as http:
        made = http.post("/assistants", json={"model": "m", "instructions": "x" * 100_000})
        assert made.status_code == 200, made.text
        upload = http.post(
            "/files", files={"file": ("a.txt", b"y" * 200_000, "text/plain")}, data={"purpose": "assistants"}
        )
        assert upload.status_code == 200, upload.text
        # Keep-alive: several requests over one connection.
        for _ in range(5):
            assert http.get(f"/assistants/{made.json()['id']}").status_code == 200
