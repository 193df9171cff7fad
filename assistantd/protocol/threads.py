"""Request bodies for /threads and /threads/{id}/messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from assistantd.protocol.common import (
    CodeInterpreterTool,
    FileSearchTool,
    Metadata,
    Strict,
    ToolResources,
)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageFileRef(Strict):
    file_id: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageFilePart(Strict):
    type: Literal["image_file"]
    image_file: ImageFileRef


class ImageUrlRef(Strict):
    url: Annotated[str, Field(pattern=r"^(https?://|data:image/)")]
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(Strict):
    type: Literal["image_url"]
    image_url: ImageUrlRef


ContentPart = Annotated[TextPart | ImageFilePart | ImageUrlPart, Field(discriminator="type")]

AttachmentTool = Annotated[CodeInterpreterTool | FileSearchTool, Field(discriminator="type")]


class Attachment(Strict):
    file_id: str
    tools: list[AttachmentTool]


def _content_branch(value: Any) -> str:
    return "list" if isinstance(value, list) else "str"


# A callable discriminator makes pydantic report only the branch matching the input's JSON type.
MessageContent = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[ContentPart], Field(min_length=1), Tag("list")],
    Discriminator(_content_branch),
]


class CreateMessage(Strict):
    role: Literal["user", "assistant"]
    content: MessageContent
    attachments: list[Attachment] | None = None
    metadata: Metadata = None


class ModifyMessage(Strict):
    metadata: Metadata = None


class CreateThread(Strict):
    messages: list[CreateMessage] | None = None
    tool_resources: ToolResources | None = None
    metadata: Metadata = None


class ModifyThread(Strict):
    tool_resources: ToolResources | None = None
    metadata: Metadata = None
