"""The turn loop alone: a scripted ChatModel and a scripted server tool in, typed events out. No
database, no HTTP; what the loop yields is what the executor persists and publishes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from engine_support import FakeChatModel

from assistantd.engine import events as ev
from assistantd.engine.annotations import MAX_MARKER, StreamAnnotator, annotate
from assistantd.engine.state import RunState
from assistantd.engine.turns import MAX_MODEL_CALLS, RunContext, TurnLoop
from assistantd.tools.base import BuiltinTool, ToolContext, ToolOutcome


class Notes(BuiltinTool):
    """A server tool that streams two partial outputs, cites a file and links another."""

    type = "notes"

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def definition(self, tool: dict[str, Any]) -> dict[str, Any]:
        params = {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}
        return {"type": "function", "function": {"name": "notes", "parameters": params}}

    def first_details(self) -> dict[str, Any]:
        return {"outputs": []}

    async def invoke(self, ctx: ToolContext, arguments: str) -> ToolOutcome:
        self.calls.append((ctx.call_number, arguments))
        ctx.stream({"outputs": [{"type": "logs", "logs": "one"}]})
        await asyncio.sleep(0)
        ctx.stream({"outputs": [{"type": "logs", "logs": "two"}]})
        return ToolOutcome(
            output=f"【{ctx.call_number}:0†a.txt】 tides",
            details={"outputs": [{"type": "logs", "logs": "one two"}]},
            citations={f"{ctx.call_number}:0": "file-a"},
            files={"sandbox:/mnt/data/t.csv": "file-t"},
            images=["file-img"],
        )


def make_loop(model: FakeChatModel, **run: Any) -> TurnLoop:
    tool = Notes()
    base = {
        "id": "run_1",
        "thread_id": "thread_1",
        "assistant_id": "asst_1",
        "model": "m",
        "instructions": "",
        "tools": [{"type": "notes"}],
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    context = RunContext(
        messages=[{"id": "msg_0", "role": "user", "content": [{"type": "text", "text": {"value": "hi"}}]}],
        steps=[],
        thread={"id": "thread_1"},
        assistant={},
    )
    return TurnLoop(
        project="p",
        run={**base, **run},
        state=RunState(),
        context=context,
        model=model,
        upstream_model="m",
        tools={"notes": tool},
        context_tokens=128_000,
    )


def collect(loop: TurnLoop) -> list[Any]:
    async def go() -> list[Any]:
        return [e async for e in loop.events()]

    return asyncio.run(go())


def kinds(events: list[Any]) -> list[str]:
    """Event class names, each run of one kind of delta folded into ``<name>+``."""
    out: list[str] = []
    for e in events:
        name = type(e).__name__
        folded = f"{name}+" if name in ("TextDelta", "ToolInputDelta", "ToolOutput") else name
        if not (out and out[-1] == folded and folded.endswith("+")):
            out.append(folded)
    return out


def test_a_text_answer() -> None:
    model = FakeChatModel()
    model.script("m", {"chunks": ["Hi", " there"], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    loop = make_loop(model)
    events = collect(loop)
    assert [type(e) for e in events] == [
        ev.MessageOpened,
        ev.TextDelta,
        ev.TextDelta,
        ev.TurnFinished,
        ev.MessageClosed,
        ev.RunFinished,
    ]
    first, second = events[1], events[2]
    assert (first.value, first.annotations) == ("Hi", [])
    assert (second.value, second.annotations) == (" there", None)
    closed = events[4]
    assert closed.message["content"] == [{"type": "text", "text": {"value": "Hi there", "annotations": []}}]
    assert closed.step["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert events[-1] == ev.RunFinished("completed")
    assert loop.state.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_a_server_tool_streams_its_outputs_and_its_citations_annotate_the_answer() -> None:
    model = FakeChatModel()
    model.script(
        "m",
        {"tool_calls": [{"name": "notes", "arguments": json.dumps({"topic": "tides"})}]},
        {"chunks": ["See ", "【0:0", "†a.txt】", " and sandbox:/mnt", "/data/t.csv", "."]},
    )
    loop = make_loop(model)
    events = collect(loop)
    assert kinds(events) == [
        "ToolStepOpened",
        "ToolCallStarted",
        "TurnFinished",
        "ToolOutput+",
        "StepCompleted",
        "MessageOpened",
        "TextDelta+",
        "TurnFinished",
        "ContentAdded",
        "MessageClosed",
        "RunFinished",
    ]
    outputs = [e.call["notes"] for e in events if isinstance(e, ev.ToolOutput)]
    assert outputs == [{"outputs": [{"type": "logs", "logs": "one"}]}, {"outputs": [{"type": "logs", "logs": "two"}]}]
    (done,) = [e for e in events if isinstance(e, ev.StepCompleted)]
    assert done.step["step_details"]["tool_calls"][0]["notes"] == {"outputs": [{"type": "logs", "logs": "one two"}]}
    assert loop.state.server_calls[done.step["step_details"]["tool_calls"][0]["id"]].output == "【0:0†a.txt】 tides"
    # The model read the output back.
    told = model.requests["m"][1]["messages"][-1]
    assert told["role"] == "tool" and told["content"] == "【0:0†a.txt】 tides"

    deltas = [e for e in events if isinstance(e, ev.TextDelta)]
    assert [d.value for d in deltas] == ["See ", "【0:0†a.txt】", " and ", "sandbox:/mnt/data/t.csv", "."]
    assert deltas[0].annotations == [] and deltas[2].annotations is None and deltas[4].annotations is None
    (cite,) = deltas[1].annotations or []
    (link,) = deltas[3].annotations or []
    assert cite == {
        "index": 0,
        "type": "file_citation",
        "text": "【0:0†a.txt】",
        "file_citation": {"file_id": "file-a"},
        "start_index": 4,
        "end_index": 4 + len("【0:0†a.txt】"),
    }
    assert link["index"] == 1 and link["file_path"] == {"file_id": "file-t"}
    (images,) = [e for e in events if isinstance(e, ev.ContentAdded)]
    assert images.blocks == [{"index": 1, "type": "image_file", "image_file": {"file_id": "file-img"}}]
    closed = [e for e in events if isinstance(e, ev.MessageClosed)][-1]
    text = closed.message["content"][0]["text"]
    assert text["value"] == "".join(d.value for d in deltas)
    # The same annotations as annotating the whole text at once.
    assert text["annotations"] == annotate(text["value"], {"0:0": "file-a"}, {"sandbox:/mnt/data/t.csv": "file-t"})
    assert events[-1] == ev.RunFinished("completed")


def test_bad_arguments_never_reach_the_tool() -> None:
    model = FakeChatModel()
    model.script("m", {"tool_calls": [{"name": "notes", "arguments": '{"topic": 3}'}]}, {"text": "ok"})
    loop = make_loop(model)
    collect(loop)
    tool = loop.tools["notes"]
    assert isinstance(tool, Notes) and tool.calls == []
    told = model.requests["m"][1]["messages"][-1]["content"]
    assert "'topic' of this call must be of type string" in told


def test_forced_tool_choice_first_call_only_and_builtin_by_name() -> None:
    model = FakeChatModel()
    model.script("m", {"tool_calls": [{"name": "notes", "arguments": '{"topic": "x"}'}]}, {"text": "ok"})
    loop = make_loop(model, tool_choice={"type": "notes"})
    collect(loop)
    assert [r["tool_choice"] for r in model.requests["m"]] == [
        {"type": "function", "function": {"name": "notes"}},
        "auto",
    ]
    assert loop.state.model_calls == 2


def test_a_model_that_never_stops_calling_tools_is_stopped() -> None:
    model = FakeChatModel()
    model.script("m", *[{"tool_calls": [{"name": "notes", "arguments": '{"topic": "x"}'}]}] * MAX_MODEL_CALLS)
    events = collect(make_loop(model))
    assert events[-1].status == "failed" and "without answering" in events[-1].last_error["message"]


def test_an_upstream_error_ends_the_run_failed() -> None:
    model = FakeChatModel()
    model.script("m", {"chunks": ["a", "b"], "fail_after": 1})
    loop = make_loop(model)
    events = collect(loop)
    assert events[-1].status == "failed" and "broke off" in events[-1].last_error["message"]
    message, step = loop.unfinished()
    assert message is not None and message["content"][0]["text"]["value"] == "a" and step is None


def test_the_prompt_budget_ends_the_run_incomplete() -> None:
    model = FakeChatModel()
    model.script("m", {"text": "long", "usage": {"prompt_tokens": 900, "completion_tokens": 1}})
    events = collect(make_loop(model, max_prompt_tokens=500))
    assert events[-1] == ev.RunFinished("incomplete", incomplete_reason="max_prompt_tokens")


# --- the stream annotator -------------------------------------------------------------------


def feed_all(annotator: StreamAnnotator, pieces: list[str]) -> list[tuple[str, list[dict[str, Any]]]]:
    out = [p for piece in pieces for p in annotator.feed(piece)]
    return out + annotator.flush()


def test_text_passes_straight_through_when_nothing_can_be_annotated() -> None:
    annotator = StreamAnnotator({}, {})
    assert feed_all(annotator, ["a【0:0†x", "】"]) == [("a【0:0†x", []), ("】", [])]


def test_a_longer_link_is_waited_for_and_an_unknown_marker_is_plain_text() -> None:
    links = {"sandbox:/mnt/data/a.csv": "f1", "sandbox:/mnt/data/a.csv.gz": "f2"}
    annotator = StreamAnnotator({"1:0": "f3"}, links)
    out = feed_all(
        annotator, ["get sandbox:/mnt/data/a.csv", ".gz or sandbox:/mnt/data/a.csv", " 【2:0†y】", "【1:0†z】"]
    )
    assert "".join(v for v, _ in out) == "get sandbox:/mnt/data/a.csv.gz or sandbox:/mnt/data/a.csv 【2:0†y】【1:0†z】"
    noted = [(v, [n["type"] for n in notes]) for v, notes in out if notes]
    assert noted == [
        ("sandbox:/mnt/data/a.csv.gz", ["file_path"]),
        ("sandbox:/mnt/data/a.csv", ["file_path"]),
        ("【1:0†z】", ["file_citation"]),
    ]
    assert [
        a["file_path" if a["type"] == "file_path" else "file_citation"]["file_id"] for a in annotator.annotations
    ] == [
        "f2",
        "f1",
        "f3",
    ]


def test_an_unclosed_marker_is_released_past_its_bound_and_at_the_end() -> None:
    annotator = StreamAnnotator({"0:0": "f"}, {})
    assert annotator.feed("【0:0") == []  # held: it may become a marker
    out = annotator.feed("x" * MAX_MARKER)
    assert "".join(v for v, _ in out).startswith("【0:0")
    annotator = StreamAnnotator({"0:0": "f"}, {})
    assert annotator.feed("end 【0") == [("end ", [])]
    assert annotator.flush() == [("【0", [])]


def test_a_server_tool_call_cut_off_by_the_run_ending_keeps_its_type() -> None:
    """Cancelled (or failed) while the model is still writing a code interpreter call: the closed step
    shows that call as the tool it is, not as a client function of the same name."""
    model = FakeChatModel()
    model.script("m", {"tool_calls": [{"name": "notes", "arguments": '{"topic": "x"}'}]})
    loop = make_loop(model)

    async def until_the_call_starts() -> None:
        events = loop.events()
        async for event in events:
            if isinstance(event, ev.ToolCallStarted):
                break
        await events.aclose()

    asyncio.run(until_the_call_starts())
    _, step = loop.unfinished()
    assert step is not None
    (call,) = step["step_details"]["tool_calls"]
    assert call["type"] == "notes" and call["notes"] == {"outputs": []} and "function" not in call
