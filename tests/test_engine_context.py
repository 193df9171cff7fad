"""What the model is sent: history, this run's own turns, truncation."""

from __future__ import annotations

from assistantd.engine import context


def _msg(i: int, role: str = "user", run_id: str | None = None) -> dict:
    return {"id": f"msg_{i}", "role": role, "run_id": run_id,
            "content": [{"type": "text", "text": {"value": f"message {i} " + "x" * 40, "annotations": []}}]}


def test_history_leaves_out_the_runs_own_messages() -> None:
    history = context.thread_history([_msg(1), _msg(2, "assistant", "run_a"), _msg(3, "assistant", "run_b")], "run_a")
    assert [h["content"][:9] for h in history] == ["message 1", "message 3"]


def test_last_messages_keeps_the_newest() -> None:
    history = context.thread_history([_msg(i) for i in range(10)], "run_x")
    kept = context.truncate(history, {"type": "last_messages", "last_messages": 3}, None)
    assert [k["content"][:9] for k in kept] == ["message 7", "message 8", "message 9"]


def test_auto_drops_oldest_to_fit_the_budget_but_keeps_the_newest() -> None:
    history = context.thread_history([_msg(i) for i in range(10)], "run_x")
    per = context.message_tokens(history[0])
    kept = context.truncate(history, {"type": "auto"}, per * 4)
    assert [k["content"][:9] for k in kept] == ["message 6", "message 7", "message 8", "message 9"]
    assert len(context.truncate(history, {"type": "auto"}, 1)) == 1  # never nothing


def test_run_turns_replay_tool_calls_with_their_outputs() -> None:
    steps = [
        {"step_details": {"type": "tool_calls", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}", "output": "42"}}]}},
        {"step_details": {"type": "message_creation", "message_creation": {"message_id": "msg_9"}}},
    ]
    turns = context.run_turns(steps, {"msg_9": _msg(9, "assistant", "run_x")})
    assert turns[0]["tool_calls"][0]["id"] == "call_1"
    assert turns[1] == {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    assert turns[2]["role"] == "assistant" and turns[2]["content"].startswith("message 9")


def test_image_url_parts_stay_parts() -> None:
    message = {"role": "user", "run_id": None, "content": [
        {"type": "text", "text": {"value": "what is this?", "annotations": []}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
    ]}
    (chat,) = context.thread_history([message], "run_x")
    assert chat["content"][1] == {"type": "image_url", "image_url": {"url": "https://example.com/cat.png",
                                                                     "detail": "low"}}


def test_text_then_tool_calls_of_one_turn_go_back_as_one_assistant_message() -> None:
    steps = [
        {"step_details": {"type": "message_creation", "message_creation": {"message_id": "msg_1"}}},
        {"step_details": {"type": "tool_calls", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}", "output": "ok"}}]}},
    ]
    turns = context.run_turns(steps, {"msg_1": _msg(1, "assistant", "run_x")})
    assert [t["role"] for t in turns] == ["assistant", "tool"]
    assert turns[0]["content"].startswith("message 1") and turns[0]["tool_calls"][0]["id"] == "call_1"


def test_tool_call_turns_carry_empty_string_content_never_null() -> None:
    steps = [{"step_details": {"type": "tool_calls", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}", "output": "42"}}]}}]
    assert context.run_turns(steps, {})[0]["content"] == ""


def test_truncated_history_starts_with_a_user_turn() -> None:
    roles = ["user", "assistant", "user", "assistant", "assistant", "user"]
    history = context.thread_history([_msg(i, role) for i, role in enumerate(roles)], "run_x")
    per = context.message_tokens(history[0])
    kept = context.truncate(history, {"type": "auto"}, per * 3)  # would keep assistant, assistant, user
    assert [k["role"] for k in kept] == ["user"]
    kept = context.truncate(history, {"type": "last_messages", "last_messages": 4}, None)
    assert [k["role"] for k in kept] == ["user", "assistant", "assistant", "user"]
    # Nothing dropped: the thread's own order stands, even if it opens with the assistant.
    opening = context.thread_history([_msg(0, "assistant"), _msg(1)], "run_x")
    assert [k["role"] for k in context.truncate(opening, {"type": "auto"}, None)] == ["assistant", "user"]


def test_the_answer_reserve_scales_with_the_window() -> None:
    assert context.answer_reserve(1024) == 256  # a 1024-token window keeps 768 tokens of history
    assert context.answer_reserve(128_000) == 4096
    assert context.answer_reserve(8192) == 2048
    assert 0 < context.answer_reserve(200) <= 100


def test_the_runs_oldest_tool_rounds_go_when_its_turns_overflow_the_window() -> None:
    def round_(i: int) -> list[dict]:
        call = {"id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": "a" * 400}}
        return [{"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": f"call_{i}", "content": "out " * 50}]

    turns = round_(1) + round_(2) + round_(3)
    per_round = sum(context.message_tokens(m) for m in round_(1))
    assert context.fit_turns(turns, per_round * 3) == turns  # fits: untouched
    kept = context.fit_turns(turns, per_round * 2)
    assert kept == round_(2) + round_(3)  # whole rounds, oldest first, outputs still after their calls
    assert context.fit_turns(turns, 1) == round_(3)  # the newest round always stays
    assert context.fit_turns([], 0) == []
