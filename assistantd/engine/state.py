"""What a run remembers between model calls and across executions: the typed form of ``runs.state``.

Stored as a JSON object in the ``state`` column under the same keys the free-form dict used before, so
runs written by an older server load unchanged (missing keys take their defaults; keys this version does
not know are carried along untouched).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from assistantd.llm.base import Usage


@dataclass
class ServerCall:
    """A call a server-side tool answered: what the model asked and what it was told."""

    name: str
    arguments: str
    output: str


@dataclass
class RunState:
    include: list[str] = field(default_factory=list)
    reasoning_effort: str | None = None
    usage: dict[str, int] | None = None  # summed over the run's model calls, as the run object shows it
    model_calls: int = 0  # model calls made so far (a forced tool_choice applies to the first only)
    server_call_count: int = 0  # numbers the server-side calls, e.g. in citation markers
    server_calls: dict[str, ServerCall] = field(default_factory=dict)  # by call id
    citations: dict[str, str] = field(default_factory=dict)  # citation marker "call:result" -> file id
    links: dict[str, str] = field(default_factory=dict)  # "sandbox:/mnt/data/<name>" -> file id
    images: list[str] = field(default_factory=list)  # image file ids for the next message
    pending_step_id: str | None = None  # the tool step waiting for the client's outputs
    in_flight: list[str] = field(default_factory=list)  # tools with effects running now (stored before they run)
    takeovers: int = 0  # times a server took the run over after its executing server died
    other: dict[str, Any] = field(default_factory=dict)  # keys written by another version

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RunState:
        data = dict(data or {})
        calls = data.pop("server_calls", None) or {}
        known = {
            "include": list(data.pop("include", None) or []),
            "reasoning_effort": data.pop("reasoning_effort", None),
            "usage": data.pop("usage", None),
            "model_calls": int(data.pop("model_calls", 0) or 0),
            "server_call_count": int(data.pop("server_call_count", 0) or 0),
            "citations": dict(data.pop("citations", None) or {}),
            "links": dict(data.pop("links", None) or {}),
            "images": list(data.pop("images", None) or []),
            "pending_step_id": data.pop("pending_step_id", None),
            "in_flight": list(data.pop("in_flight", None) or []),
            "takeovers": int(data.pop("takeovers", 0) or 0),
        }
        return cls(
            **known,
            server_calls={
                cid: ServerCall(str(c.get("name", "")), str(c.get("arguments", "")), str(c.get("output", "")))
                for cid, c in calls.items()
            },
            other=data,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.other, "include": self.include}
        if self.reasoning_effort is not None:
            out["reasoning_effort"] = self.reasoning_effort
        if self.usage is not None:
            out["usage"] = self.usage
        if self.model_calls:
            out["model_calls"] = self.model_calls
        if self.server_call_count:
            out["server_call_count"] = self.server_call_count
        if self.server_calls:
            out["server_calls"] = {
                cid: {"name": c.name, "arguments": c.arguments, "output": c.output}
                for cid, c in self.server_calls.items()
            }
        for key in ("citations", "links", "images"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.pending_step_id is not None:
            out["pending_step_id"] = self.pending_step_id
        if self.in_flight:
            out["in_flight"] = self.in_flight
        if self.takeovers:
            out["takeovers"] = self.takeovers
        return out

    def add_usage(self, usage: Usage | None) -> None:
        if usage is None:
            return
        total = self.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        total["prompt_tokens"] += usage.prompt_tokens
        total["completion_tokens"] += usage.completion_tokens
        total["total_tokens"] = total["prompt_tokens"] + total["completion_tokens"]
        self.usage = total

    def used(self, kind: str) -> int:
        return (self.usage or {}).get(kind, 0)

    def server_call_dicts(self) -> dict[str, dict[str, str]]:
        """The calls in the shape ``context.run_turns`` reads."""
        return {
            cid: {"name": c.name, "arguments": c.arguments, "output": c.output} for cid, c in self.server_calls.items()
        }
