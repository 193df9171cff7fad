"""The LLM seam: one request type and a stream of typed events."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of the tool call at ``index``: name and id arrive once, arguments in fragments."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Finish:
    reason: str  # stop, length, tool_calls, content_filter


ChatEvent = TextDelta | ToolCallDelta | Usage | Finish


class UpstreamError(Exception):
    """The model provider failed. ``code`` is the run's ``last_error.code``."""

    def __init__(self, message: str, *, code: str = "server_error", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class ChatModel(abc.ABC):
    @abc.abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        """Events of one model turn, in order. Raises ``UpstreamError`` on failure."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
