"""The in-process LLM double: a ``ChatModel`` that plays scripted turns, injected through the
composition root (``create_app(..., chat_model=...)``), and helpers to drive runs through the app.

A turn is a dict, as for the scripted HTTP upstream: ``text`` (streamed word by word) or ``chunks``,
``tool_calls`` (``[{"name", "arguments"}]``), ``usage`` (``{"prompt_tokens", "completion_tokens"}``),
``finish_reason``, ``error`` (``{"message", "code"}``: fail before the first chunk), ``fail_after``
(send that many chunks, then fail as a broken stream), ``gate`` (a ``Gate``: after the first chunk,
wait until the test opens it). With no turn queued the model echoes the last user message.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any, TypeVar

import orjson
from starlette.testclient import TestClient

from assistantd.llm.base import (
    ChatEvent,
    ChatModel,
    ChatRequest,
    Finish,
    TextDelta,
    ToolCallDelta,
    UpstreamError,
    Usage,
)

T = TypeVar("T")
DEADLINE = 30.0  # the most any awaited condition may take before the test fails
TERMINAL = ("completed", "failed", "cancelled", "expired", "incomplete")


class Gate:
    """Holds a model turn after its first chunk until the test opens it; ``reached`` tells the test the
    model got there. Opening works from the test's thread while the app runs in its own loop."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._opened = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    async def wait(self) -> None:
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.reached.set()
        if not self._opened:
            await self._event.wait()

    def open(self) -> None:
        self._opened = True
        if self._loop is not None and self._event is not None:
            self._loop.call_soon_threadsafe(self._event.set)

    def wait_reached(self) -> None:
        assert self.reached.wait(DEADLINE), "the model never reached the gate"


class FakeChatModel(ChatModel):
    def __init__(self) -> None:
        self.turns: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self.requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.gates: list[Gate] = []

    def script(self, model: str, *turns: dict[str, Any]) -> None:
        for turn in turns:
            self.gates += [turn[k] for k in ("gate", "gate_before") if isinstance(turn.get(k), Gate)]
            self.turns[model].append(turn)

    def open_all(self) -> None:
        for gate in self.gates:
            gate.open()

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        self.requests[request.model].append(asdict(request))
        queue = self.turns.get(request.model)
        turn = queue.popleft() if queue else self._echo(request)
        if "error" in turn:
            raise UpstreamError(turn["error"]["message"], code=turn["error"].get("code", "server_error"))
        chunks = list(turn.get("chunks") or _words(turn.get("text", "")))
        if isinstance(turn.get("gate_before"), Gate):
            await turn["gate_before"].wait()  # the model thinking: nothing said yet
        for i, chunk in enumerate(chunks):
            if turn.get("fail_after") is not None and i >= turn["fail_after"]:
                raise UpstreamError("The model provider 'fake' broke off its answer: stream ended")
            yield TextDelta(chunk)
            if i == 0 and isinstance(turn.get("gate"), Gate):
                await turn["gate"].wait()
        for i, call in enumerate(turn.get("tool_calls") or []):
            arguments = call.get("arguments", "")
            yield ToolCallDelta(i, f"call_{i}", call["name"], arguments[: len(arguments) // 2])
            yield ToolCallDelta(i, None, None, arguments[len(arguments) // 2 :])
        if turn.get("usage"):
            yield Usage(turn["usage"]["prompt_tokens"], turn["usage"]["completion_tokens"])
        yield Finish(turn.get("finish_reason") or ("tool_calls" if turn.get("tool_calls") else "stop"))

    @staticmethod
    def _echo(request: ChatRequest) -> dict[str, Any]:
        said = next((m.get("content") for m in reversed(request.messages) if m.get("role") == "user"), "")
        return {"text": f"You said: {said}"}


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [(" " if i else "") + w for i, w in enumerate(words) if w or i == 0] if text else []


# --- driving runs through the app --------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], T | None], deadline: float = DEADLINE) -> T:
    end = time.monotonic() + deadline
    last: T | None = None
    while time.monotonic() < end:
        last = probe()
        if last:
            return last
        time.sleep(0.01)
    raise AssertionError(f"timed out after {deadline}s waiting for {what} (last seen: {last!r})")


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def assistant(client: TestClient, model: str, **body: Any) -> dict[str, Any]:
    return dict(ok(client.post("/v1/assistants", json={"model": model, **body})))


def thread(client: TestClient, *texts: str) -> dict[str, Any]:
    return dict(ok(client.post("/v1/threads", json={"messages": [{"role": "user", "content": t} for t in texts]})))


def sse(client: TestClient, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """POST with ``stream: true`` and the whole event stream, decoded (the run has ended or paused)."""
    r = client.post(f"/v1{path}", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events: list[tuple[str, Any]] = []
    for block in r.text.split("\n\n"):
        name, data = "", ""
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if name:
            events.append((name, data if name == "done" else orjson.loads(data)))
    return events


def names(events: list[tuple[str, Any]]) -> list[str]:
    """Event names with each run of deltas folded into one ``<name>+``."""
    out: list[str] = []
    for name, _ in events:
        folded = f"{name}+" if name.endswith(".delta") else name
        if not (out and out[-1] == folded and name.endswith(".delta")):
            out.append(folded)
    return out


def of(events: list[tuple[str, Any]], name: str) -> list[Any]:
    return [data for n, data in events if n == name]


def wait_run(client: TestClient, thread_id: str, run_id: str, statuses: tuple[str, ...] = TERMINAL) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        run = dict(ok(client.get(f"/v1/threads/{thread_id}/runs/{run_id}")))
        return run if run["status"] in statuses else None

    return wait_for(f"run {run_id} to reach {statuses}", probe)


def messages(client: TestClient, thread_id: str) -> list[dict[str, Any]]:
    return list(ok(client.get(f"/v1/threads/{thread_id}/messages", params={"order": "asc"}))["data"])


def steps(client: TestClient, thread_id: str, run_id: str) -> list[dict[str, Any]]:
    return list(ok(client.get(f"/v1/threads/{thread_id}/runs/{run_id}/steps", params={"order": "asc"}))["data"])
