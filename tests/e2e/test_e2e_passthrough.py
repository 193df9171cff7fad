"""The official SDK's chat.completions and embeddings against assistantd's base URL: apps that call them
with the same client as the Assistants API keep working when only the base URL changes."""

from __future__ import annotations

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
