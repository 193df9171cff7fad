"""The streaming client the adapter uses for model calls (llm/http_stream.py), against a raw HTTP/1.1
server on a real socket that answers exactly the bytes each test gives it: framing, keep-alive reuse,
connections that break, and when httpx must be used instead (proxies)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import httpx
import pytest
import uvloop

from assistantd.llm.base import ChatRequest, Finish, TextDelta, UpstreamError
from assistantd.llm.http_stream import StreamClient, usable_for
from assistantd.llm.openai_compat import OpenAICompatModel

Run = Callable[[Coroutine[Any, Any, Any]], Any]
Answer = Callable[[int], list[bytes]]  # request number (0, 1, ...) -> byte pieces to send, then close if empty


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Each test on both event loops: the server runs on uvloop, whose transports differ from asyncio's."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    return run


class RawServer:
    """Reads one request at a time per connection (head + Content-Length body) and writes the pieces
    ``answer`` gives; a trailing ``b""`` closes the connection after them."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                number = len(self.requests)
                self.requests.append((head, body))
                for piece in self.answer(number):
                    if piece == b"":
                        writer.close()
                        return
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)  # separate reads on the client's side
        except (asyncio.CancelledError, ConnectionError):
            return  # the test is over, or the client went away
        finally:
            writer.close()


def _sse(*texts: str, done: bool = True) -> list[bytes]:
    events = [
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": t}}]}).encode() + b"\n\n" for t in texts
    ]
    events.append(b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n')
    if done:
        events.append(b"data: [DONE]\n\n")
    return events


def _chunked(pieces: list[bytes], *, end_apart: bool = True) -> list[bytes]:
    """A chunked response; ``end_apart``: the body's last (empty) chunk comes in a write of its own."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    chunks = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces]
    if end_apart:
        return [head, *chunks, b"0\r\n\r\n"]
    return [head, *chunks[:-1], chunks[-1] + b"0\r\n\r\n"]


async def _events(url: str) -> list[object]:
    model = OpenAICompatModel(url, "sekrit")
    try:
        return [e async for e in model.stream(ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}]))]
    finally:
        await model.aclose()


def _text(events: Sequence[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_a_chunked_stream_is_read_and_the_connection_kept_for_the_next_call(run: Run) -> None:
    async def go() -> None:
        server = RawServer(lambda n: _chunked(_sse("Hel", "lo", f" {n}"), end_apart=False))
        async with server as url:
            model = OpenAICompatModel(url, "sekrit")
            try:
                for n in range(3):
                    request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
                    events = [e async for e in model.stream(request)]
                    assert _text(events) == f"Hello {n}" and events[-1] == Finish("stop")
            finally:
                await model.aclose()
        assert server.connections == 1  # one keep-alive connection carried all three calls
        head, body = server.requests[0]
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"Authorization: Bearer sekrit\r\n" in head and b"Content-Type: application/json\r\n" in head
        assert json.loads(body)["messages"] == [{"role": "user", "content": "hi"}]

    run(go())


def test_a_connection_whose_body_ends_after_done_is_pooled_when_it_ends(run: Run) -> None:
    # The adapter stops reading at [DONE]; the body's last chunk comes 10 ms later.
    async def go() -> None:
        server = RawServer(lambda n: _chunked(_sse(f"call{n}")))
        async with server as url:
            client = StreamClient(url, {}, tls=httpx.create_ssl_context(), connect_timeout=5, max_connections=1)
            try:
                for n in range(2):
                    async with client.stream("POST", "/chat/completions", content=b"{}", headers={}) as response:
                        seen = b""
                        async for piece in response.aiter_bytes():
                            seen += piece
                            if b"[DONE]" in seen:
                                break
                        assert f"call{n}".encode() in seen
                    # max_connections=1: the next call waits for this connection to be pooled (or closed)
            finally:
                await client.aclose()
        assert server.connections == 1

    run(go())


@pytest.mark.parametrize(
    "framing",
    [
        "content-length",  # the whole stream in one body of known length
        "until-close",  # no length, no chunking: the body ends with the connection
    ],
)
def test_bodies_delimited_by_length_or_by_closing_are_read_whole(framing: str, run: Run) -> None:
    body = b"".join(_sse("a", "b", "c"))
    if framing == "content-length":
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(body)
        answer = [head, body[:40], body[40:]]
    else:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        answer = [head, body[:40], body[40:], b""]

    async def go() -> list[object]:
        async with RawServer(lambda n: answer) as url:
            return await _events(url)

    assert _text(run(go())) == "abc"


def test_a_connection_that_breaks_mid_stream_is_a_broken_answer(run: Run) -> None:
    pieces = [*_chunked(_sse("partial", "never"))[:2], b""]  # headers, one event, then the socket closes

    async def go() -> None:
        async with RawServer(lambda n: pieces) as url:
            await _events(url)

    with pytest.raises(UpstreamError, match="broke off its answer: RemoteProtocolError"):
        run(go())


def test_a_pooled_connection_closed_as_it_is_reused_is_retried_once_on_a_new_one(run: Run) -> None:
    # The keep-alive race made deterministic: the upstream keeps the first connection open, then closes
    # it on the next request without answering a byte. That request was not taken, so the client sends
    # it again on a new connection instead of failing the model call.
    answers = {0: _chunked(_sse("first")), 1: [b""], 2: _chunked(_sse("second"))}

    async def go() -> None:
        server = RawServer(lambda n: answers[n])
        async with server as url:
            client = StreamClient(url, {}, tls=httpx.create_ssl_context(), connect_timeout=5, max_connections=4)
            try:
                for word in ("first", "second"):
                    async with client.stream("POST", "/chat/completions", content=b"{}", headers={}) as response:
                        assert response.status_code == 200
                        assert word.encode() in await response.aread()
            finally:
                await client.aclose()
        assert server.connections == 2 and len(server.requests) == 3

    run(go())


def test_a_fresh_connection_closed_without_an_answer_is_an_error_not_a_retry(run: Run) -> None:
    # Only a reused connection is retried: a new one that answers nothing is the upstream's failure.
    async def go() -> None:
        server = RawServer(lambda n: [b""])
        async with server as url:
            client = StreamClient(url, {}, tls=httpx.create_ssl_context(), connect_timeout=5, max_connections=4)
            try:
                with pytest.raises(httpx.RemoteProtocolError):
                    async with client.stream("POST", "/chat/completions", content=b"{}", headers={}):
                        pass
            finally:
                await client.aclose()
        assert len(server.requests) == 1

    run(go())


def test_an_idle_connection_the_upstream_closed_is_not_reused_or_is_retried_once(run: Run) -> None:
    # The upstream answers and closes (keep-alive refused after the fact): the next call connects anew.
    async def go() -> None:
        server = RawServer(lambda n: [*_chunked(_sse(f"call{n}")), b""])
        async with server as url:
            client = StreamClient(url, {}, tls=httpx.create_ssl_context(), connect_timeout=5, max_connections=4)
            try:
                for n in range(2):
                    async with client.stream("POST", "/chat/completions", content=b"{}", headers={}) as response:
                        assert response.status_code == 200
                        assert f"call{n}".encode() in await response.aread()
                # No pause between the calls: whether the close has arrived or not (the keep-alive race),
                # the second call must succeed on a connection of its own.
            finally:
                await client.aclose()
        assert server.connections == 2

    run(go())


def test_an_error_status_is_read_with_its_message(run: Run) -> None:
    error = json.dumps({"error": {"message": "model m does not exist"}}).encode()
    head = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(error)

    async def go() -> None:
        async with RawServer(lambda n: [head, error]) as url:
            await _events(url)

    with pytest.raises(UpstreamError, match="answered 404: model m does not exist"):
        run(go())


def test_proxied_or_unusual_base_urls_go_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    assert usable_for("http://127.0.0.1:8000/v1") and usable_for("https://api.openai.com/v1")
    assert not usable_for("https://example.test/v1?api-version=1")  # a query: httpx merges URLs its way
    assert not usable_for("https://user:pw@example.test/v1")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    assert not usable_for("https://api.openai.com/v1") and usable_for("http://127.0.0.1:8000/v1")
    monkeypatch.setenv("NO_PROXY", "api.openai.com")
    assert usable_for("https://api.openai.com/v1")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.test:3128")
    assert not usable_for("http://upstream.test/v1")
