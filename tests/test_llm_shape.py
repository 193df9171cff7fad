"""Which models take reasoning parameters, and message shapes any server accepts."""

from __future__ import annotations

import pytest

from assistantd.llm.router import ModelRouter
from assistantd.llm.shape import is_reasoning_model, sampling_fields, upstream_messages, upstream_tool_choice


@pytest.mark.parametrize("model", ["o1", "o1-mini", "o3", "o3-mini-2025-01-31", "o4-mini", "gpt-5", "gpt-5-mini",
                                   "gpt-5.1", "openai/o3"])
def test_reasoning_families(model: str) -> None:
    assert is_reasoning_model(model)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4.1-mini", "gpt-5-chat-latest", "llama3.1:8b", "o", "gemma3"])
def test_not_reasoning(model: str) -> None:
    assert not is_reasoning_model(model)


def test_default_temperature_one_may_go_to_a_reasoning_model() -> None:
    fields = sampling_fields(reasoning=True, temperature=1, top_p=None, max_tokens=None, reasoning_effort=None)
    assert fields == {"temperature": 1}


def test_assistant_text_then_tool_calls_become_one_turn_and_tool_results_stay_apart() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    shaped = upstream_messages([
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "u"}}]},
        {"role": "user", "content": "and this"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": "1"},
        {"role": "tool", "tool_call_id": "d", "content": "2"},
    ])
    assert [m["role"] for m in shaped] == ["user", "assistant", "tool", "tool"]
    assert shaped[0]["content"][-1] == {"type": "text", "text": "and this"}
    assert shaped[1] == {"role": "assistant", "content": "Let me check.", "tool_calls": [call]}


def test_upstream_options_come_from_the_config() -> None:
    router = ModelRouter.from_config(base_url="", api_key="", timeout=5.0, total_timeout=60.0, extra={"upstreams": [
        {"base_url": "http://a/v1", "merge_roles": False, "reasoning_models": ["think-*"], "total_timeout": 9}]})
    upstream = router.upstreams[0]
    assert (upstream.merge_roles, upstream.reasoning_models, upstream.total_timeout) == (False, ["think-*"], 9.0)
    with pytest.raises(ValueError, match="reasoning_models must be a list"):
        ModelRouter.from_config(base_url="", api_key="", timeout=5.0, extra={"upstreams": [
            {"base_url": "http://a/v1", "reasoning_models": "o*"}]})


def test_required_with_one_tool_names_it() -> None:
    one = [{"type": "function", "function": {"name": "code_interpreter"}}]
    two = [*one, {"type": "function", "function": {"name": "f"}}]
    assert upstream_tool_choice(one, "required") == {"type": "function", "function": {"name": "code_interpreter"}}
    assert upstream_tool_choice(two, "required") == "required"
    assert upstream_tool_choice(one, "auto") == "auto"


def test_tool_results_as_user_turns_for_servers_that_drop_tool_turns() -> None:
    """llama-cpp-python's chatml-function-calling renders no ``tool`` turn: the model never sees an output."""
    calls = [{"id": "c1", "type": "function", "function": {"name": "code_interpreter", "arguments": "{}"}},
             {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "4"},
        {"role": "tool", "tool_call_id": "c2", "content": "ok"},
    ]
    assert upstream_messages(messages) == messages  # the default: tool turns as they are
    shaped = upstream_messages(messages, tool_results_as_user=True)
    assert shaped[:2] == messages[:2]
    assert shaped[2:] == [{"role": "user", "content": "Output of code_interpreter (call c1):\n\n4\n\n"
                                                     "Output of f (call c2):\n\nok"}]  # merged: roles alternate
    apart = upstream_messages(messages, tool_results_as_user=True, merge_roles=False)
    assert [m["role"] for m in apart] == ["user", "assistant", "user", "user"]
    router = ModelRouter.from_config(base_url="", api_key="", timeout=5.0, extra={"upstreams": [
        {"base_url": "http://a/v1", "tool_results_as_user": True}]})
    assert router.upstreams[0].tool_results_as_user is True
    assert router.upstreams[0].client.tool_results_as_user is True  # type: ignore[attr-defined]
