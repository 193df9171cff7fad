"""The OpenAI-compatible adapter against the scripted Chat Completions server, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from scripted_support import free_port, upstream  # noqa: F401 (a fixture)

from assistantd.llm.base import ChatRequest, Finish, TextDelta, ToolCallDelta, UpstreamError, Usage
from assistantd.llm.openai_compat import OpenAICompatModel


def _script(url: str, model: str, *turns: dict) -> None:
    httpx.post(f"{url}/_script", json={"model": model, "turns": list(turns)}).raise_for_status()


def _collect(url: str, request: ChatRequest, **options: object) -> list:
    async def go() -> list:
        model = OpenAICompatModel(f"{url}/v1", "key", **options)  # type: ignore[arg-type]
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
    _script(upstream, "adapter-429", *[{"status": 429, "error": "slow down please"}] * 3)
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
        _collect(f"http://127.0.0.1:{free_port()}", ChatRequest(model="m", messages=[]))


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


# --- what the upstream is sent -----------------------------------------------------------------


def _sent(url: str, model: str) -> list[dict]:
    return httpx.get(f"{url}/_requests", params={"model": model}).json()


def test_null_content_beside_tool_calls_goes_up_as_empty_string(upstream: str) -> None:
    messages = [
        {"role": "user", "content": "add"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "2"},
    ]
    _collect(upstream, ChatRequest(model="shape-null", messages=messages))
    assert _sent(upstream, "shape-null")[0]["messages"][1]["content"] == ""


def test_consecutive_user_turns_are_merged_unless_the_upstream_opts_out(upstream: str) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one"},
                {"role": "user", "content": "two"}]
    _collect(upstream, ChatRequest(model="shape-merge", messages=messages))
    assert _sent(upstream, "shape-merge")[0]["messages"] == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "one\n\ntwo"}]
    _collect(upstream, ChatRequest(model="shape-nomerge", messages=messages), merge_roles=False)
    assert [m["role"] for m in _sent(upstream, "shape-nomerge")[0]["messages"]] == ["system", "user", "user"]


def test_reasoning_models_get_max_completion_tokens_and_no_sampling(upstream: str) -> None:
    request = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2, "top_p": 0.9,
               "max_tokens": 50, "reasoning_effort": "low"}
    _collect(upstream, ChatRequest(model="o3-mini", **request))  # type: ignore[arg-type]
    sent = _sent(upstream, "o3-mini")[0]
    assert sent["max_completion_tokens"] == 50 and sent["reasoning_effort"] == "low"
    assert not {"max_tokens", "temperature", "top_p"} & set(sent)
    _collect(upstream, ChatRequest(model="plain-chat", **request))  # type: ignore[arg-type]
    sent = _sent(upstream, "plain-chat")[0]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (50, 0.2, 0.9)
    assert not {"max_completion_tokens", "reasoning_effort"} & set(sent)
    # An upstream's own list replaces the built-in families.
    _collect(upstream, ChatRequest(model="my-thinker", **request), reasoning_models=["my-think*"])  # type: ignore[arg-type]
    assert _sent(upstream, "my-thinker")[0]["max_completion_tokens"] == 50


# --- malformed, incomplete and slow answers ----------------------------------------------------


@pytest.mark.parametrize(
    ("turn", "said"),
    [
        ({"raw": {"body": "<html><body>Bad Gateway</body></html>", "content_type": "text/html"}},
         "text/html body instead of an event stream: '<html><body>Bad Gateway"),
        ({"raw": {"body": '{"id": "x", "choices": []}', "content_type": "application/json"}},
         "application/json body instead of an event stream"),
        ({"raw_stream": ["hello there\n", "no events at all\n"]},
         "no data: lines in its event stream, only 'hello there"),
        ({"raw_stream": [": ping\n\n", ": ping\n\n"]}, "no data: lines in its event stream, only ': ping"),
        ({"raw_stream": ['data: {"choices": [{"index": 0, "delta": {"content": "cut"}}]}\n\n']},
         "ended without a finish_reason or [DONE]"),
        ({"raw_stream": ['data: {"choices": "nope"}\n\n', "data: [DONE]\n\n"]},
         "a stream chunk of the wrong shape: \'{\"choices\": \"nope\"}"),
        ({"raw_stream": ['data: {"choices": [{"delta": {"content": 5}}]}\n\n']}, "wrong shape"),
        ({"raw_stream": ["data: [1, 2]\n\n"]}, "not a JSON object"),
    ],
)
def test_a_malformed_answer_is_a_server_error_saying_what_was_sent(upstream: str, turn: dict, said: str) -> None:
    name = f"malformed-{abs(hash(said))}"
    _script(upstream, name, turn)
    with pytest.raises(UpstreamError) as err:
        _collect(upstream, ChatRequest(model=name, messages=[]))
    assert err.value.code == "server_error"
    assert said in err.value.message, err.value.message


def test_a_stream_with_finish_reason_but_no_done_still_ends_normally(upstream: str) -> None:
    _script(upstream, "finish-no-done", {"raw_stream": [
        'data: {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}\n\n']})
    events = _collect(upstream, ChatRequest(model="finish-no-done", messages=[]))
    assert TextDelta("ok") in events and events[-1] == Finish("stop")


def test_the_total_deadline_ends_a_trickling_or_comment_only_stream(upstream: str) -> None:
    _script(upstream, "trickle", {"text": " ".join(["tok"] * 40), "delay_ms": 100})  # never 0.5 s idle
    _script(upstream, "comments", {"raw_stream": [": keep-alive\n\n"], "repeat": 100, "delay_ms": 100})
    for name in ("trickle", "comments"):
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="within the 1s limit for one model call") as err:
            _collect(upstream, ChatRequest(model=name, messages=[]), timeout=0.5, total_timeout=1.0)
        assert err.value.code == "server_error" and time.monotonic() - started < 3.5


def test_retry_after_is_honoured_and_4xx_is_not_retried(upstream: str) -> None:
    _script(upstream, "retry-after", {"status": 429, "error": "wait", "headers": {"Retry-After": "1"}}, {"text": "ok"})
    started = time.monotonic()
    events = _collect(upstream, ChatRequest(model="retry-after", messages=[]))
    assert TextDelta("ok") in events and time.monotonic() - started >= 1.0
    for status in (408, 409):  # a timeout, a conflict (e.g. a model still loading): both say "again"
        _script(upstream, f"retry-{status}", {"status": status, "error": "again"}, {"text": "ok"})
        assert TextDelta("ok") in _collect(upstream, ChatRequest(model=f"retry-{status}", messages=[]))
        assert len(_sent(upstream, f"retry-{status}")) == 2
    _script(upstream, "no-retry-400", {"status": 400, "error": "bad request"}, {"text": "never"})
    with pytest.raises(UpstreamError, match="answered 400: bad request"):
        _collect(upstream, ChatRequest(model="no-retry-400", messages=[]))
    assert len(_sent(upstream, "no-retry-400")) == 1


def test_a_retry_after_past_the_bound_is_not_waited_for(upstream: str) -> None:
    _script(upstream, "retry-long", {"status": 503, "error": "maintenance", "headers": {"Retry-After": "3600"}})
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="answered 503: maintenance"):
        _collect(upstream, ChatRequest(model="retry-long", messages=[]))
    assert time.monotonic() - started < 5 and len(_sent(upstream, "retry-long")) == 1


# --- usage when the upstream reports none --------------------------------------------------------


def test_usage_is_counted_locally_when_the_upstream_sends_none(upstream: str) -> None:
    text = "The quick brown fox jumps over the lazy dog"
    _script(upstream, "no-usage", {"raw_stream": [
        'data: {"choices": [{"index": 0, "delta": {"content": "' + text + '"}}]}\n\n',
        'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n', "data: [DONE]\n\n"]})
    events = _collect(upstream, ChatRequest(model="no-usage", messages=[{"role": "user", "content": "Say a pangram."}]))
    usage = next(e for e in events if isinstance(e, Usage))
    assert usage.completion_tokens == 9  # one WordPiece token per word here
    assert 8 <= usage.prompt_tokens <= 14  # 4 words + a period, plus per-message and reply overhead
    assert events.index(usage) < events.index(Finish("stop"))
    # An upstream that does report usage is believed, and nothing is added.
    _script(upstream, "with-usage", {"text": "hi", "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    assert [e for e in _collect(upstream, ChatRequest(model="with-usage", messages=[])) if isinstance(e, Usage)] == [
        Usage(3, 1)]


def test_a_tool_call_name_repeated_on_every_fragment_arrives_once(upstream: str) -> None:
    """llama-cpp-python's server repeats the call's id and name on each argument fragment."""
    def fragment(args: str) -> str:
        call = {"index": 0, "id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": args}}
        delta = {"content": None, "tool_calls": [call]}
        return "data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]}) + "\n\n"

    _script(upstream, "repeated-names", {"raw_stream": [
        fragment('{"city"'), fragment(': "Paris"}'),
        'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}\n\n', "data: [DONE]\n\n"]})
    events = _collect(upstream, ChatRequest(model="repeated-names", messages=[]))
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(c.id, c.name) for c in calls] == [("call_x", "get_weather"), (None, None)]
    assert "".join(c.arguments for c in calls) == '{"city": "Paris"}'


def test_an_upstream_that_cannot_stream_tool_calls_is_asked_for_whole_answers(upstream: str) -> None:
    """llama-cpp-python: "Automatic streaming tool choice is not supported"; ``stream_with_tools = false``."""
    _script(upstream, "whole-tools", {"text": "Checking.", "tool_calls": [{"name": "f", "arguments": '{"a": 1}'}],
                                      "usage": {"prompt_tokens": 9, "completion_tokens": 4}})
    tools = [{"type": "function", "function": {"name": "f"}}]
    events = _collect(upstream, ChatRequest(model="whole-tools", messages=[], tools=tools), stream_with_tools=False)
    assert events == [Usage(9, 4), TextDelta("Checking."), ToolCallDelta(0, "call_0", "f", '{"a": 1}'),
                      Finish("tool_calls")]
    assert _sent(upstream, "whole-tools")[0]["stream"] is False
    _collect(upstream, ChatRequest(model="whole-no-tools", messages=[]), stream_with_tools=False)
    assert _sent(upstream, "whole-no-tools")[0]["stream"] is True  # no tools offered: streamed as usual
