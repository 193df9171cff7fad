"""Server-side tools as data: a type, the function the model is offered, and an async invoke.

Failure contract: anything the model can act on (a code error, a timeout, a crashed sandbox, no search
results, malformed arguments) comes back as the outcome's ``output``, so the model can read it and try
again; the run goes on. Only a fault of the server itself (the database gone) raises, and fails the run.
"""

from __future__ import annotations

import abc
import json
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
    call_number: int = 0  # this call's place among the run's server-side calls (citation markers use it)


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
    citations: dict[str, str] = field(default_factory=dict)  # citation marker "call:result" -> file id


class BuiltinTool(abc.ABC):
    type: ClassVar[str]  # the tool type in the API; also the function name the model calls
    # False for a tool whose call may have effects beyond its answer (the code interpreter writes files,
    # may call out of its kernel state): a run interrupted while it runs is never resumed by repeating it.
    repeatable: ClassVar[bool] = True

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

    def check_arguments(self, tool: dict[str, Any], arguments: str) -> str | None:
        """What is wrong with a call's arguments (not JSON, a required field missing, a wrong type), said
        so the model can fix its next call; None when they fit ``definition(tool)``'s parameters."""
        return argument_problem(self.definition(tool), arguments)

    def rejected(self, run: dict[str, Any], problem: str) -> ToolOutcome:
        """The outcome of a call whose arguments were unusable (``problem`` says why): nothing ran."""
        return ToolOutcome(output=problem, details=self.first_details())


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "array": (list,),
    "object": (dict,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def argument_problem(definition: dict[str, Any], arguments: str) -> str | None:
    """What is wrong with a built-in tool call's arguments, said so the model can fix its next call."""
    function = definition["function"]
    params = function.get("parameters") or {}
    properties = params.get("properties") or {}
    shape = json.dumps({k: "..." for k in params.get("required") or properties})
    how = f"Call {function['name']} again with a JSON object like {shape}."
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        return f"Error: the arguments of this call are not valid JSON ({exc}); nothing was run. {how}"
    if not isinstance(parsed, dict):
        return f"Error: the arguments of this call must be a JSON object; nothing was run. {how}"
    for name in params.get("required") or []:
        if name not in parsed:
            return f"Error: the arguments of this call lack the required field {name!r}; nothing was run. {how}"
    for name, value in parsed.items():
        kind = (properties.get(name) or {}).get("type")
        allowed = _JSON_TYPES.get(kind) if isinstance(kind, str) else None
        if allowed is not None and (not isinstance(value, allowed) or (kind != "boolean" and isinstance(value, bool))):
            return f"Error: the field {name!r} of this call must be of type {kind}; nothing was run. {how}"
    return None
