"""What one upstream is sent: message shapes every server accepts, and the reasoning-model parameter rules.

Both are decided here, once, so the engine builds one provider-neutral request and each upstream gets
the variant it takes:

- Messages. llama-cpp-python's server rejects ``content: null`` beside ``tool_calls`` (OpenAI and vLLM
  take ``""`` as well), so content is never null. Strict chat templates (Gemma, Mistral, Llama 2 and
  many others raise "roles must alternate") fail on two user turns in a row, which a thread with two
  added messages gives; OpenAI, vLLM and Ollama accept either, so consecutive turns of one role are
  merged by default (``merge_roles = false`` on an upstream turns it off).
- Tool results. Some servers drop ``role: tool`` turns from the prompt: llama-cpp-python's
  ``chatml-function-calling`` format renders the assistant's calls but no results, so the model never
  sees an output and calls the tool again and again; Gemma's own template has no tool role at all.
  ``tool_results_as_user = true`` on an upstream sends each result as a user turn naming the call.
- Reasoning models (OpenAI's o1/o3/o4-mini and gpt-5 families) reject ``max_tokens`` and any
  non-default ``temperature``/``top_p``; other models reject ``reasoning_effort``. Which models reason
  is matched by name (``reasoning_models`` globs on an upstream override the defaults below).
"""

from __future__ import annotations

import fnmatch
import functools
from typing import Any

# Model names that follow the reasoning parameter rules. gpt-5-chat is the non-reasoning gpt-5.
DEFAULT_REASONING_MODELS = ("o1", "o1-*", "o3", "o3-*", "o4-mini", "o4-mini-*", "gpt-5", "gpt-5-*", "gpt-5.*")
_NOT_REASONING = ("gpt-5-chat", "gpt-5-chat-*")


def is_reasoning_model(model: str, patterns: list[str] | tuple[str, ...] | None = None) -> bool:
    """Whether ``model`` takes reasoning-model parameters; ``patterns`` (an upstream's own) replace the defaults."""
    return _is_reasoning(model, None if patterns is None else tuple(patterns))


@functools.lru_cache(maxsize=1024)  # asked on every model call, of a few names: ~4 us of globbing each time
def _is_reasoning(model: str, patterns: tuple[str, ...] | None) -> bool:
    name = model.rsplit("/", 1)[-1].lower()  # "openai/o3-mini" through a proxy is still o3-mini
    if patterns is None:
        if any(fnmatch.fnmatchcase(name, p) for p in _NOT_REASONING):
            return False
        patterns = DEFAULT_REASONING_MODELS
    return any(fnmatch.fnmatchcase(name, p.lower()) for p in patterns)


def sampling_fields(
    *,
    reasoning: bool,
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    reasoning_effort: str | None,
) -> dict[str, Any]:
    """The sampling and length fields of a Chat Completions body, as the model family accepts them."""
    if reasoning:
        fields: dict[str, Any] = {
            # Reasoning models accept only the default (1); anything else is a 400, so it is left out.
            "temperature": temperature if temperature == 1 else None,
            "top_p": top_p if top_p == 1 else None,
            "max_completion_tokens": max_tokens,
            "reasoning_effort": reasoning_effort,
        }
    else:
        fields = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
    return {k: v for k, v in fields.items() if v is not None}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return list(content)
    return [{"type": "text", "text": str(content or "")}] if content else []


def _joined(first: Any, second: Any) -> Any:
    """Two turns' contents as one: text joined by a blank line, parts (images) kept as parts."""
    if isinstance(first, list) or isinstance(second, list):
        return _parts(first) + _parts(second)
    if not first:
        return second or ""
    if not second:
        return first
    return f"{first}\n\n{second}"


def upstream_messages(
    messages: list[dict[str, Any]], *, merge_roles: bool = True, tool_results_as_user: bool = False
) -> list[dict[str, Any]]:
    """``messages`` as any server takes them: no null content, and (``merge_roles``) no two turns of a role in a row.

    Tool results are never merged (each answers its own call id) unless ``tool_results_as_user`` makes
    them user turns ("Output of <name> (call <id>): ..."); an assistant text turn followed by an
    assistant tool-call turn becomes one turn carrying both, which is what the model produced.
    """
    shaped: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for message in messages:
        message = dict(message)
        for call in message.get("tool_calls") or []:
            names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
        if tool_results_as_user and message.get("role") == "tool":
            call_id = str(message.get("tool_call_id", ""))
            label = f"{names[call_id]} (call {call_id})" if names.get(call_id) else f"call {call_id}"
            message = {"role": "user", "content": _joined(f"Output of {label}:", message.get("content") or "")}
        if message.get("content") is None:
            message["content"] = ""
        prev = shaped[-1] if shaped else None
        if (
            merge_roles
            and prev is not None
            and prev["role"] == message["role"]
            and message["role"] in ("system", "user", "assistant")
            and not prev.get("tool_calls")
            and set(message) <= {"role", "content", "tool_calls"}
            and set(prev) <= {"role", "content"}
        ):
            prev["content"] = _joined(prev["content"], message["content"])
            if message.get("tool_calls"):
                prev["tool_calls"] = message["tool_calls"]
            continue
        shaped.append(message)
    return shaped


def upstream_tool_choice(tools: list[dict[str, Any]], choice: Any) -> Any:
    """``tool_choice`` as every server takes it: ``required`` with a single tool names that tool.

    The two mean the same, and llama-cpp-python's function-calling format accepts only ``auto``, ``none``
    or a named function (``required`` is a 500 there).
    """
    if choice == "required" and len(tools) == 1 and tools[0].get("type") == "function":
        return {"type": "function", "function": {"name": tools[0]["function"]["name"]}}
    return choice
