"""The HTTP edge's body writer (``streaming.BODY_WRITER``) on a real uvicorn server and socket: it writes a
chunk of the response being sent as ``send`` would, and declines (False) whenever ``send`` must do it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from assistantd.api.http_edge import EdgeLimits, protocol_class
from assistantd.api.streaming import BODY_WRITER

LIMITS = EdgeLimits(
    max_url_bytes=8192, max_header_bytes=32768, max_headers=100, header_timeout=5.0, body_timeout=5.0,
    max_connections_per_client=0,
)  # fmt: skip

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def _serve(app: App, client: Callable[[int], Awaitable[bytes]]) -> bytes:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=protocol_class(LIMITS), lifespan="off", log_level="warning")
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])  # listening when this returns
    try:
        return await client(port)
    finally:
        await server.shutdown(sockets=[sock])


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    body = b""
    while True:  # the chunked body, decoded
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            break
        body += chunk[:-2]
    writer.close()
    return head + body


def test_the_writer_sends_chunks_of_a_started_chunked_response_and_declines_otherwise() -> None:
    said: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        write = scope["extensions"][BODY_WRITER]
        said.append(write(b"too early"))  # no head yet
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        said.append(write(b"one,"))
        await send({"type": "http.response.body", "body": b"two,", "more_body": True})
        said.append(write(b"three"))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        said.append(write(b"too late"))  # the response is complete

    got = asyncio.run(_serve(app, _get))
    assert said == [False, True, True, False]
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in got.lower()
    assert got.endswith(b"\r\n\r\none,two,three")


def test_the_writer_declines_a_response_with_a_length_and_a_client_that_left() -> None:
    said: list[bool] = []
    left, answered = asyncio.Event(), asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        write = scope["extensions"][BODY_WRITER]
        if scope["path"] == "/sized":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            said.append(write(b"no"))  # not chunked: its framing is send's to keep
            await send({"type": "http.response.body", "body": b"ok", "more_body": False})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await left.wait()
        while (await receive())["type"] != "http.disconnect":
            pass
        said.append(write(b"nobody reads this"))
        answered.set()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def client(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /sized HTTP/1.1\r\nHost: x\r\n\r\n")
        sized = await reader.readuntil(b"\r\n\r\n") + await reader.readexactly(2)
        writer.write(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await writer.wait_closed()
        left.set()
        await asyncio.wait_for(answered.wait(), 10)
        return sized

    sized = asyncio.run(_serve(app, client))
    assert sized.endswith(b"\r\n\r\nok")
    assert said == [False, False]
