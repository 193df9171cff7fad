"""What one execution of a run says happened, in order: the turn loop yields these, the executor
persists them at step boundaries and turns them into the API's stream events.

The objects inside (messages, steps) are the loop's own dicts, as they are at that moment; an event
that goes on the wire is serialized by the executor before the loop is resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assistantd.llm.base import Usage


@dataclass(frozen=True)
class MessageOpened:
    """The model started answering in text: a new message and its message_creation step.

    ``early``: opened as the model call goes out, because text is all the call can answer with (no tools
    offered): the executor stores it while the model thinks and announces it with the first text, or
    removes it unannounced if the run ends before the model said anything."""

    message: dict[str, Any]
    step: dict[str, Any]
    early: bool = False


@dataclass(frozen=True)
class TextDelta:
    """Text of the open message. ``annotations`` (already numbered) ride on the text they cover; the
    first delta of a message carries a list, possibly empty, the others None unless they annotate."""

    message_id: str
    value: str
    annotations: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class ContentAdded:
    """Non-text blocks (images) appended to the message just before it closes."""

    message_id: str
    blocks: list[dict[str, Any]]  # each with its content index


@dataclass(frozen=True)
class MessageClosed:
    message: dict[str, Any]  # completed or incomplete, with its final text and annotations
    step: dict[str, Any]  # its message_creation step, completed


@dataclass(frozen=True)
class ToolStepOpened:
    step: dict[str, Any]


@dataclass(frozen=True)
class ToolCallStarted:
    step_id: str
    call: dict[str, Any]  # the first delta of the call: index, id, type and its opening details


@dataclass(frozen=True)
class ToolInputDelta:
    step_id: str
    call: dict[str, Any]  # index, type and the piece of input


@dataclass(frozen=True)
class ToolOutput:
    step_id: str
    call: dict[str, Any]  # index, type and a partial of the call's outputs, while a server tool runs


@dataclass(frozen=True)
class StepCompleted:
    """Every call of a tool step ran on the server; the run's state now includes their results."""

    step: dict[str, Any]


@dataclass(frozen=True)
class TurnFinished:
    """One model call is over."""

    usage: Usage | None
    finish_reason: str


@dataclass(frozen=True)
class RequiresAction:
    """The run waits for the client's function outputs; the execution ends here."""

    step: dict[str, Any]
    required_action: dict[str, Any]


@dataclass(frozen=True)
class EffectsStarting:
    """A server-side tool whose call may have effects (``repeatable = False``) is about to run: the run's
    state, saying so, must be stored before it does, so a server that takes the run over after a crash
    knows not to run the call again."""

    tool: str


@dataclass(frozen=True)
class RunFinished:
    """The run ends with this terminal status; the execution ends here."""

    status: str
    last_error: dict[str, str] | None = None
    incomplete_reason: str | None = None


Event = (
    MessageOpened
    | TextDelta
    | ContentAdded
    | MessageClosed
    | ToolStepOpened
    | ToolCallStarted
    | ToolInputDelta
    | ToolOutput
    | StepCompleted
    | EffectsStarting
    | TurnFinished
    | RequiresAction
    | RunFinished
)
