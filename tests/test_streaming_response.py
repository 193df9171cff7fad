"""The one streamed response (``api/streaming.py``) against the ASGI contract it is sent through: the body in
order, the client leaving ends it at once (with the body's cleanup), a shutdown's cancel and the body's own
errors still go up, and nothing is left running afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from assistantd.api.streaming import StreamedResponse

SCOPE: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "method": "POST"}


class Client:
    """What uvicorn gives the app: ``receive`` answers ``http.disconnect`` once the client has gone (or the
    response is complete); ``send`` records the messages."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self.wrote = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self.wrote.set()
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.gone.set()  # uvicorn: after the last body message, receive says "disconnect"

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


class Body:
    """A body that yields ``chunks``, then waits for ``more`` (an upstream or a run gone quiet)."""

    def __init__(self, *chunks: bytes, error: Exception | None = None) -> None:
        self.chunks = chunks
        self.more = asyncio.Event()
        self.error = error
        self.cleaned = False

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.chunks:
                yield chunk
            if self.error is not None:
                raise self.error
            await self.more.wait()
            yield b"late"
        finally:
            self.cleaned = True


async def _nothing_left_running() -> None:
    """Every task the response started is finished or has been told to stop (then let them stop)."""
    others = asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]
    assert all(task.done() or task.cancelling() for task in others), others
    await asyncio.gather(*others, return_exceptions=True)


def test_the_body_goes_out_in_order_and_the_response_ends() -> None:
    async def main() -> None:
        client, body = Client(), Body(b"one", b"two")
        body.more.set()
        await StreamedResponse(body(), media_type="text/event-stream")(SCOPE, client.receive, client.send)
        start = client.sent[0]
        assert start["type"] == "http.response.start" and start["status"] == 200
        assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
        assert client.bodies() == [b"one", b"two", b"late", b""]
        assert body.cleaned
        await _nothing_left_running()

    asyncio.run(main())


def test_a_client_that_leaves_ends_the_response_where_the_body_waits() -> None:
    async def main() -> None:
        client, body = Client(), Body(b"one")
        response = StreamedResponse(body(), media_type="text/event-stream")
        sending = asyncio.create_task(response(SCOPE, client.receive, client.send))
        while client.bodies() != [b"one"]:
            client.wrote.clear()
            await client.wrote.wait()
        client.gone.set()  # the body is now waiting for more; the client hangs up
        async with asyncio.timeout(10):  # a bound, not a pause: without the watcher this waits forever
            await sending  # returns normally: the client's leaving is not an error
        assert client.bodies() == [b"one"]  # no final chunk for a client that is not there
        assert body.cleaned and not sending.cancelled()
        await _nothing_left_running()

    asyncio.run(main())


def test_a_shutdown_cancel_still_goes_up() -> None:
    async def main() -> None:
        client, body = Client(), Body(b"one")
        sending = asyncio.create_task(StreamedResponse(body())(SCOPE, client.receive, client.send))
        while not client.bodies():
            client.wrote.clear()
            await client.wrote.wait()
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        assert body.cleaned
        await _nothing_left_running()

    asyncio.run(main())


def test_the_bodys_own_error_is_not_taken_for_a_client_leaving() -> None:
    async def main() -> None:
        client, body = Client(), Body(b"one", error=OSError("the blob store went away"))
        with pytest.raises(OSError, match="blob store"):
            await StreamedResponse(body())(SCOPE, client.receive, client.send)
        assert body.cleaned

    asyncio.run(main())


def test_a_held_head_goes_out_with_the_first_chunk_and_not_before() -> None:
    async def main() -> None:
        client = Client()
        first = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            await first.wait()  # a run's executor has not announced it yet
            yield b"one"
            yield b"two"

        response = StreamedResponse(body(), media_type="text/event-stream", head_with_first_chunk=True)
        sending = asyncio.create_task(response(SCOPE, client.receive, client.send))
        for _ in range(20):  # the response gets many turns of the loop; none may send its head yet
            await asyncio.sleep(0)
        assert client.sent == []
        first.set()
        await sending
        assert [m["type"] for m in client.sent] == ["http.response.start", *["http.response.body"] * 3]
        assert client.sent[0]["status"] == 200 and client.bodies() == [b"one", b"two", b""]
        await _nothing_left_running()

    asyncio.run(main())


def test_a_held_head_of_an_empty_body_still_goes_out() -> None:
    async def main() -> None:
        client = Client()

        async def body() -> AsyncIterator[bytes]:
            return
            yield b""  # an async generator that yields nothing

        await StreamedResponse(body(), head_with_first_chunk=True)(SCOPE, client.receive, client.send)
        assert client.sent[0]["type"] == "http.response.start" and client.bodies() == [b""]
        await _nothing_left_running()

    asyncio.run(main())


def test_a_client_that_leaves_before_a_held_head_ends_the_response() -> None:
    async def main() -> None:
        client, body = Client(), Body()  # no chunk at all until ``more``
        response = StreamedResponse(body(), head_with_first_chunk=True)
        sending = asyncio.create_task(response(SCOPE, client.receive, client.send))
        await asyncio.sleep(0)
        client.gone.set()
        async with asyncio.timeout(10):  # a bound, not a pause
            await sending
        assert client.sent == [] and body.cleaned
        await _nothing_left_running()

    asyncio.run(main())
