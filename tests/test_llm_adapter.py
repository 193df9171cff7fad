"""The OpenAI-compatible adapter against the scripted Chat Completions server, over real HTTP."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from assistantd.llm.base import ChatRequest, Finish, TextDelta, ToolCallDelta, UpstreamError, Usage
from assistantd.llm.openai_compat import OpenAICompatModel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "assistantd.llm.scripted", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/v1/models", timeout=1)
            break
        except httpx.TransportError:
            try:
                proc.wait(timeout=0.05)
                raise RuntimeError("scripted upstream exited")
            except subprocess.TimeoutExpired:
                continue
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _script(url: str, model: str, *turns: dict) -> None:
    httpx.post(f"{url}/_script", json={"model": model, "turns": list(turns)}).raise_for_status()


def _collect(url: str, request: ChatRequest) -> list:
    async def go() -> list:
        model = OpenAICompatModel(f"{url}/v1", "key")
        try:
            return [event async for event in model.stream(request)]
        finally:
            await model.aclose()

    return asyncio.run(go())


def test_text_tool_calls_and_usage_arrive_as_typed_events(upstream: str) -> None:
    _script(upstream, "adapter-1", {"text": "Hello big world", "tool_calls": [{"name": "lookup",
            "arguments": '{"q": "a long query string"}'}], "usage": {"prompt_tokens": 12, "completion_tokens": 7}})
    events = _collect(upstream, ChatRequest(model="adapter-1", messages=[{"role": "user", "content": "hi"}],
                                            tools=[{"type": "function", "function": {"name": "lookup"}}]))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert text == "Hello big world"
    assert calls[0].name == "lookup" and all(c.name is None for c in calls[1:])
    assert "".join(c.arguments for c in calls) == '{"q": "a long query string"}'
    assert Usage(12, 7) in events
    sent = httpx.get(f"{upstream}/_requests", params={"model": "adapter-1"}).json()[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["tools"][0]["function"]["name"] == "lookup"


def test_429_is_a_rate_limit_error_with_the_upstream_message(upstream: str) -> None:
    _script(upstream, "adapter-429", {"status": 429, "error": "slow down please"})
    with pytest.raises(UpstreamError) as err:
        _collect(upstream, ChatRequest(model="adapter-429", messages=[]))
    assert err.value.code == "rate_limit_exceeded"
    assert "slow down please" in err.value.message


def test_5xx_is_retried_before_any_token(upstream: str) -> None:
    _script(upstream, "adapter-503", {"status": 503, "error": "warming up"}, {"text": "ready now"})
    events = _collect(upstream, ChatRequest(model="adapter-503", messages=[]))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "ready now"


def test_persistent_5xx_fails_as_server_error(upstream: str) -> None:
    _script(upstream, "adapter-500", *[{"status": 500, "error": "broken"}] * 3)
    with pytest.raises(UpstreamError) as err:
        _collect(upstream, ChatRequest(model="adapter-500", messages=[]))
    assert err.value.code == "server_error" and "broken" in err.value.message


def test_unreachable_upstream_is_a_clear_error() -> None:
    with pytest.raises(UpstreamError, match="could not be reached"):
        _collect(f"http://127.0.0.1:{_free_port()}", ChatRequest(model="m", messages=[]))


def test_text_then_tool_calls_in_one_answer(upstream: str) -> None:
    _script(upstream, "adapter-full", {"text": "one two", "tool_calls": [{"name": "f", "arguments": "{}"}]})
    events = _collect(upstream, ChatRequest(model="adapter-full", messages=[]))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two"
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0].name == "f" and "".join(c.arguments for c in calls) == "{}"
    assert Finish("tool_calls") in events


def _collect_with_timeout(url: str, model_name: str, timeout: float) -> list:
    async def go() -> list:
        model = OpenAICompatModel(f"{url}/v1", "key", timeout=timeout)
        try:
            return [event async for event in model.stream(ChatRequest(model=model_name, messages=[]))]
        finally:
            await model.aclose()

    return asyncio.run(go())


def test_an_upstream_silent_for_the_timeout_fails_the_call(upstream: str) -> None:
    _script(upstream, "adapter-slow-first", {"text": "too late", "ttft_ms": 1500})
    _script(upstream, "adapter-stalls", {"text": "a b c", "delay_ms": 1500})
    for name in ("adapter-slow-first", "adapter-stalls"):  # headers come at once, then nothing
        with pytest.raises(UpstreamError, match="broke off its answer: ReadTimeout"):
            _collect_with_timeout(upstream, name, 0.4)


def test_the_timeout_is_per_wait_not_for_the_whole_stream(upstream: str) -> None:
    _script(upstream, "adapter-steady", {"text": "a b c d e f g h", "delay_ms": 150})
    events = _collect_with_timeout(upstream, "adapter-steady", 0.4)  # 1 s in all, never 0.4 s quiet
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "a b c d e f g h"
