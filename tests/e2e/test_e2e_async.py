"""The async client (seed 003 is written against AsyncOpenAI): CRUD, concurrency, paging, errors."""

from __future__ import annotations

import asyncio

import openai
import pytest

from .remote import E2E_MARKS, KEY_A, RemoteServer, make_async_client

pytestmark = E2E_MARKS


def test_seed_003_assistant_thread_and_message_flow(server: RemoteServer) -> None:
    async def scenario() -> None:
        async with make_async_client(server, KEY_A) as client:
            assistant = await client.beta.assistants.create(
                name="VT.ai Code Assistant",
                instructions="You are a helpful code and data analysis assistant",
                tools=[{"type": "code_interpreter"}, {"type": "retrieval"}],  # type: ignore[list-item]
                model="o3",
            )
            assert [t.type for t in assistant.tools] == ["code_interpreter", "file_search"]

            thread = await client.beta.threads.create()
            sent = await client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Plot y = x^2")
            assert sent.thread_id == thread.id

            listed = await client.beta.threads.messages.list(thread_id=thread.id, order="asc")
            assert [m.id for m in listed.data] == [sent.id]
            assert listed.data[0].content[0].type == "text"
            assert listed.data[0].content[0].text.value == "Plot y = x^2"
            assert (await client.beta.assistants.retrieve(assistant.id)).name == "VT.ai Code Assistant"

            assert (await client.beta.threads.delete(thread.id)).deleted is True
            assert (await client.beta.assistants.delete(assistant.id)).deleted is True
            with pytest.raises(openai.NotFoundError):
                await client.beta.threads.retrieve(thread.id)

    asyncio.run(scenario())


def test_concurrent_writes_and_async_auto_pagination(server: RemoteServer) -> None:
    async def scenario() -> None:
        async with make_async_client(server, KEY_A) as client:
            thread = await client.beta.threads.create()
            # Sequential first, so the expected order is known...
            ids = [
                (await client.beta.threads.messages.create(thread.id, role="user", content=f"m{i}")).id
                for i in range(101)
            ]
            # ...then many at once: every one lands, each with its own id.
            burst = await asyncio.gather(
                *(client.beta.threads.messages.create(thread.id, role="user", content=f"b{i}") for i in range(25))
            )
            burst_ids = {m.id for m in burst}
            assert len(burst_ids) == 25

            ascending = [m.id async for m in client.beta.threads.messages.list(thread.id, order="asc")]
            assert ascending[:101] == ids
            assert set(ascending[101:]) == burst_ids
            descending = [m.id async for m in client.beta.threads.messages.list(thread.id, limit=7)]
            assert descending == ascending[::-1]

    asyncio.run(scenario())


def test_async_files_and_errors(server: RemoteServer) -> None:
    async def scenario() -> None:
        async with make_async_client(server, KEY_A) as client:
            uploaded = await client.files.create(file=("async.txt", b"from asyncio"), purpose="assistants")
            content = await client.files.content(uploaded.id)
            assert content.read() == b"from asyncio"
            assert (await client.files.retrieve(uploaded.id)).bytes == len(b"from asyncio")

            with pytest.raises(openai.BadRequestError) as caught:
                await client.beta.assistants.create(model="gpt-4o", temperature=5)
            assert caught.value.param == "temperature"
            with pytest.raises(openai.NotFoundError):
                await client.beta.threads.messages.list("thread_abcdefghijklmnopqrstuvwx")

            assert (await client.files.delete(uploaded.id)).deleted is True

    asyncio.run(scenario())
