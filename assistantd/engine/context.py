"""What the model sees: instructions, the thread's messages, and this run's own steps so far.

Token counts here are estimates (about four characters a token, plus a little per message): no
tokenizer ships with every model, and the estimate only decides what to drop when truncating. Budgets
are enforced on the upstream's reported counts (or the adapter's local count when it reports none).
"""

from __future__ import annotations

from typing import Any

_PER_MESSAGE = 4
# The room kept for the model's answer when truncating: a quarter of the window, at least 128 tokens
# (or half a tiny window) and at most 4096, so a 1024-token window still keeps 768 tokens of history.
_RESERVE_SHARE = 4
_RESERVE_FLOOR = 128
_RESERVE_CAP = 4096


def answer_reserve(window: int) -> int:
    """Tokens of the context window ``window`` left free for the answer when truncating the history."""
    return max(min(window // 2, _RESERVE_FLOOR), min(window // _RESERVE_SHARE, _RESERVE_CAP))


def estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def message_tokens(message: dict[str, Any]) -> int:
    content = message.get("content")
    total = _PER_MESSAGE
    if isinstance(content, str):
        total += estimate_tokens(content)
    elif isinstance(content, list):
        for part in content:
            if part.get("type") == "text":
                total += estimate_tokens(part.get("text", ""))
            else:
                total += 85  # an image at low detail
    for call in message.get("tool_calls") or []:
        total += estimate_tokens(call["function"]["name"]) + estimate_tokens(call["function"]["arguments"])
    return total


def _chat_content(message: dict[str, Any]) -> str | list[dict[str, Any]]:
    """A stored message's content blocks as Chat Completions content."""
    parts: list[dict[str, Any]] = []
    for block in message.get("content", []):
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block["text"]["value"]})
        elif kind == "image_url":
            parts.append(
                {
                    "type": "image_url",
                    "image_url": {"url": block["image_url"]["url"], "detail": block["image_url"].get("detail", "auto")},
                }
            )
        elif kind == "image_file":
            parts.append({"type": "text", "text": f"[image file {block['image_file']['file_id']}]"})
        elif kind == "refusal":
            parts.append({"type": "text", "text": block.get("refusal", "")})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def thread_history(messages: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """The thread's messages as chat messages, leaving out those this run wrote (its steps add them)."""
    return [{"role": m["role"], "content": _chat_content(m)} for m in messages if m.get("run_id") != run_id]


def run_turns(
    steps: list[dict[str, Any]],
    messages_by_id: dict[str, dict[str, Any]],
    server_calls: dict[str, dict[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """This run's completed work so far, as the assistant and tool turns that produced it."""
    turns: list[dict[str, Any]] = []
    for step in steps:
        details = step["step_details"]
        if details["type"] == "message_creation":
            message = messages_by_id.get(details["message_creation"]["message_id"])
            if message is not None:
                turns.append({"role": "assistant", "content": _chat_content(message)})
            continue
        # Server-side calls (code interpreter, file search) are replayed as the function calls the model
        # made, with the output it was given; ``server_calls`` keeps both, by call id.
        calls = []
        for c in details["tool_calls"]:
            if c["type"] == "function":
                calls.append((c["id"], c["function"]["name"], c["function"]["arguments"], c["function"]["output"]))
            elif server_calls and c["id"] in server_calls:
                known = server_calls[c["id"]]
                calls.append((c["id"], known["name"], known["arguments"], known["output"]))
        if not calls:
            continue
        tool_calls = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            for call_id, name, arguments, _ in calls
        ]
        if turns and turns[-1]["role"] == "assistant" and "tool_calls" not in turns[-1]:
            # A message followed by tool calls came from one model turn (a turn with text alone ends
            # the run): send it back as one assistant message, as chat templates expect roles to alternate.
            turns[-1]["tool_calls"] = tool_calls
        else:
            # "" not null: llama-cpp-python's server rejects null content ("Input should be a valid string").
            turns.append({"role": "assistant", "content": "", "tool_calls": tool_calls})
        for call_id, _, _, output in calls:
            turns.append({"role": "tool", "tool_call_id": call_id, "content": output or ""})
    return turns


def fit_turns(turns: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """This run's turns, the oldest tool rounds dropped until they fit ``budget`` tokens.

    A run that calls tools again and again (a small model, or one whose server does not show it the
    outputs) grows past the window by its own turns, which no truncation of the thread's history can
    help. A round (an assistant turn with its tool calls and the outputs answering them) goes as a
    whole, so every tool output still follows its call; the newest round is always kept, and if that
    alone is over the window the upstream's own error (its context length) ends the run.
    """
    rounds: list[list[dict[str, Any]]] = []
    for turn in turns:
        if turn.get("role") == "tool" and rounds:
            rounds[-1].append(turn)
        else:
            rounds.append([turn])
    costs = [sum(message_tokens(m) for m in r) for r in rounds]
    total = sum(costs)
    first = 0
    while total > budget and first < len(rounds) - 1:
        total -= costs[first]
        first += 1
    return [m for r in rounds[first:] for m in r]


def truncate(
    history: list[dict[str, Any]], strategy: dict[str, Any] | None, budget: int | None
) -> list[dict[str, Any]]:
    """Apply ``truncation_strategy`` to the thread history, then drop the oldest to fit ``budget``.

    The newest message is always kept: a run with nothing to answer is worse than one over budget,
    which the upstream's count then reports. When anything was dropped, the kept history starts with a
    user turn (leading assistant turns go too, if a user turn follows): chat templates that require
    user/assistant alternation (Gemma, Mistral, ...) reject a conversation that opens with the assistant.
    """
    if strategy and strategy.get("type") == "last_messages" and strategy.get("last_messages"):
        kept_last = history[-int(strategy["last_messages"]) :]
        history = _from_user(kept_last) if len(kept_last) < len(history) else kept_last
    if budget is None:
        return history
    kept: list[dict[str, Any]] = []
    used = 0
    for message in reversed(history):
        cost = message_tokens(message)
        if kept and used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    return _from_user(kept) if len(kept) < len(history) else kept


def _from_user(kept: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first_user = next((i for i, m in enumerate(kept) if m.get("role") == "user"), None)
    return kept[first_user:] if first_user is not None else kept
