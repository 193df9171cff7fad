"""Request bodies for runs, create-thread-and-run and submit_tool_outputs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Discriminator, Field, Tag

from assistantd.protocol.common import (
    Metadata,
    ReasoningEffort,
    ResponseFormat,
    Strict,
    Tool,
    ToolResources,
    _v1_tools,
)
from assistantd.protocol.threads import CreateMessage, CreateThread

RunTools = Annotated[list[Tool], Field(max_length=20), BeforeValidator(_v1_tools)]
TokenBudget = Annotated[int, Field(ge=256)]


class Truncation(Strict):
    type: Literal["auto", "last_messages"]
    last_messages: Annotated[int, Field(ge=1)] | None = None


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function", "code_interpreter", "file_search"]
    function: NamedFunction | None = None


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("str")] | Annotated[NamedToolChoice, Tag("object")],
    Discriminator(lambda v: "object" if isinstance(v, dict | BaseModel) else "str"),
]


class RunOptions(Strict):
    """Fields shared by create-run and create-thread-and-run."""

    assistant_id: str
    model: str | None = None
    instructions: str | None = None
    tools: RunTools | None = None
    metadata: Metadata = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stream: bool | None = None
    max_prompt_tokens: TokenBudget | None = None
    max_completion_tokens: TokenBudget | None = None
    truncation_strategy: Truncation | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None


class CreateRun(RunOptions):
    reasoning_effort: ReasoningEffort | None = None
    additional_instructions: str | None = None
    additional_messages: list[CreateMessage] | None = None


class CreateThreadAndRun(RunOptions):
    thread: CreateThread | None = None
    tool_resources: ToolResources | None = None


class ModifyRun(Strict):
    metadata: Metadata = None


def _id_as_tool_call_id(value: Any) -> Any:
    # Published client code (seed 004) sends each output as {"id": call_id, "output": ...}. The spec
    # requires neither key, and "id" can only mean the call, so it is taken as tool_call_id.
    if isinstance(value, dict) and "tool_call_id" not in value and isinstance(value.get("id"), str):
        value = {("tool_call_id" if k == "id" else k): v for k, v in value.items()}
    return value


class ToolOutput(Strict):
    tool_call_id: str
    output: str


LenientToolOutput = Annotated[ToolOutput, BeforeValidator(_id_as_tool_call_id)]


class SubmitToolOutputs(Strict):
    tool_outputs: list[LenientToolOutput]
    stream: bool | None = None


INCLUDE_FILE_SEARCH_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"


def without_search_content(raw: str | bytes, include: list[str]) -> str | bytes:
    """A serialized run step (or step delta) as a client that did not ask for search content sees it.

    File search results always keep their chunk text in the stored step, so a later
    ``steps.retrieve(..., include=[...])`` can show it, as OpenAI's does; it is left out of what is
    sent unless ``include`` names it. Objects without file search results pass through untouched.
    """
    import orjson

    if INCLUDE_FILE_SEARCH_CONTENT in include:
        return raw
    probe = raw.encode() if isinstance(raw, str) else raw
    if b'"file_search"' not in probe or b'"content"' not in probe:
        return raw
    doc = orjson.loads(probe)
    details = doc.get("step_details") or (doc.get("delta") or {}).get("step_details") or {}
    for call in details.get("tool_calls") or []:
        search = call.get("file_search") if isinstance(call, dict) else None
        for result in (search or {}).get("results") or []:
            if isinstance(result, dict):
                result.pop("content", None)
    out = orjson.dumps(doc)
    return out.decode() if isinstance(raw, str) else out


def parse_include(values: list[str]) -> list[str]:
    """The ``include[]`` query values; only one is defined by the API."""
    from assistantd.errors import InvalidRequest

    for value in values:
        if value != INCLUDE_FILE_SEARCH_CONTENT:
            raise InvalidRequest(
                f"Invalid value: '{value}'. Supported values are: '{INCLUDE_FILE_SEARCH_CONTENT}'.",
                param="include",
                code="invalid_value",
            )
    return values


def tool_choice_json(choice: Any) -> Any:
    if choice is None:
        return "auto"
    if isinstance(choice, BaseModel):
        return choice.model_dump(mode="json", exclude_none=True)
    return choice
