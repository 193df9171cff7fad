"""Server-side tools as data: a type, the function the model is offered, and an async invoke.

Failure contract: anything the model can act on (a code error, a timeout, a crashed sandbox, no search
results, malformed arguments) comes back as the outcome's ``output``, so the model can read it and try
again; the run goes on. Only a fault of the server itself (the database gone) raises, and fails the run.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class ToolContext:
    """What one invocation may know about its run."""

    project: str
    run: dict[str, Any]
    thread: dict[str, Any]
    assistant: dict[str, Any]
    attachments: list[dict[str, Any]]  # the thread's message attachments: {file_id, tools}
    include: list[str]
    stream: Callable[[dict[str, Any]], None]  # a partial of this call's details, sent as a step delta


def resource_ids(ctx: ToolContext, tool: str, key: str) -> list[str]:
    """The ids the assistant's and then the thread's ``tool_resources.<tool>.<key>`` name, without repeats."""
    ids: list[str] = []
    for owner in (ctx.assistant, ctx.thread):
        ids += ((owner.get("tool_resources") or {}).get(tool) or {}).get(key) or []
    return list(dict.fromkeys(ids))


@dataclass
class ToolOutcome:
    output: str  # what the model reads back
    details: dict[str, Any]  # the run step's record of the call, e.g. {"input", "outputs"}
    images: list[str] = field(default_factory=list)  # file ids of images to show in the next message
    files: dict[str, str] = field(default_factory=dict)  # "sandbox:/mnt/data/<name>" -> file id
    sources: list[dict[str, str]] = field(default_factory=list)  # citable results: {file_id, filename}


class BuiltinTool(abc.ABC):
    type: ClassVar[str]  # the tool type in the API; also the function name the model calls

    @abc.abstractmethod
    def definition(self, tool: dict[str, Any]) -> dict[str, Any]:
        """The Chat Completions function tool offered to the model for the run's ``tool``."""

    @abc.abstractmethod
    def first_details(self) -> dict[str, Any]:
        """The details of the call's first streamed delta (``{"input": "", "outputs": []}``, ``{}``)."""

    def input_delta(self, arguments: str, fragment: str) -> dict[str, Any] | None:
        """A partial to stream while the model writes its arguments (``arguments`` includes ``fragment``)."""
        return None

    @abc.abstractmethod
    async def invoke(self, ctx: ToolContext, arguments: str) -> ToolOutcome: ...
