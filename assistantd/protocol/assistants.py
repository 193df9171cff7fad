"""Request bodies for /assistants."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from assistantd.protocol.common import (
    AssistantTools,
    Metadata,
    ReasoningEffort,
    ResponseFormat,
    Strict,
    ToolResources,
)

Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(ge=0, le=1)]


class CreateAssistant(Strict):
    model: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(max_length=256)] | None = None
    description: Annotated[str, Field(max_length=512)] | None = None
    instructions: Annotated[str, Field(max_length=256_000)] | None = None
    reasoning_effort: ReasoningEffort | None = None
    tools: AssistantTools | None = None
    tool_resources: ToolResources | None = None
    metadata: Metadata = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    response_format: ResponseFormat | None = None


class ModifyAssistant(CreateAssistant):
    model: Annotated[str, Field(min_length=1)] | None = None  # type: ignore[assignment]
