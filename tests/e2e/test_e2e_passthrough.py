"""The official SDK's chat.completions and embeddings against assistantd's base URL: apps that call them
with the same client as the Assistants API keep working when only the base URL changes."""

from __future__ import annotations

import asyncio

import httpx
import openai

from .remote import E2E_MARKS, KEY_A, RemoteServer
from .runs_support import ScriptedUpstream, new_model

pytestmark = E2E_MARKS


def test_chat_completions_streamed_and_not_and_embeddings(
    runs_server: RemoteServer, upstream: ScriptedUpstream
) -> None:
    client = openai.OpenAI(base_url=runs_server.base_url, api_key=KEY_A, max_retries=0, timeout=60.0)
    model = new_model()
    upstream.script(model, {"text": "streamed answer here"}, {"text": "whole answer"})
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed answer here"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    whole = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "again"}])
    assert whole.choices[0].message.content == "whole answer" and whole.usage is not None

    embedded = client.embeddings.create(model="text-embedding-3-small", input=["first", "second"])
    assert [e.index for e in embedded.data] == [0, 1] and len(embedded.data[0].embedding) == 4

    upstream.script(model, {"status": 400, "error": "context too long"})
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("expected an error")
    except openai.BadRequestError as exc:
        assert exc.status_code == 400 and "context too long" in str(exc)


def test_more_concurrent_streams_than_one_connection_pool_held(
    runs_server: RemoteServer, upstream: ScriptedUpstream
) -> None:
    """Each pass-through stream gets its own upstream connection however many are open: here 150 at once,
    all held open by the upstream after their first words until every one has started (httpx's pool, which
    the pass-through used, held 128 and made the rest wait for one to end)."""
    model = new_model()
    streams = 150
    upstream.script(model, *[{"text": "first second", "hold": True}] * streams)
    body = {"model": model, "messages": [{"role": "user", "content": "go"}], "stream": True}

    async def main() -> list[tuple[int, bytes]]:
        started = 0
        all_started = asyncio.Event()
        limits = httpx.Limits(max_connections=streams, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=runs_server.base_url, headers={"Authorization": f"Bearer {KEY_A}"}, limits=limits, timeout=60
        ) as client:

            async def one() -> tuple[int, bytes]:
                nonlocal started
                seen = b""
                async with client.stream("POST", "/chat/completions", json=body) as response:
                    async for chunk in response.aiter_raw():
                        if b'"first"' not in seen and b'"first"' in seen + chunk:
                            started += 1
                            if started == streams:
                                all_started.set()
                        seen += chunk
                    return response.status_code, seen

            tasks = [asyncio.create_task(one()) for _ in range(streams)]
            try:
                await asyncio.wait_for(all_started.wait(), 60)  # every stream has its first words
            finally:
                await asyncio.to_thread(upstream.release, model)  # one release lets every held turn go on
            return await asyncio.wait_for(asyncio.gather(*tasks), 60)

    results = asyncio.run(main())
    assert [status for status, _ in results] == [200] * streams
    assert all(b'" second"' in relayed and relayed.endswith(b"data: [DONE]\n\n") for _, relayed in results)
