"""Shapes shared by several resources: metadata, tools, tool resources, response formats."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from assistantd.protocol.validation import custom_error

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


class Strict(BaseModel):
    """Base of every request model: no coercion, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


def _check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > MAX_METADATA_PAIRS:
        raise custom_error(
            "object_above_max_properties",
            f"Invalid '{{param}}': too many properties. Expected an object with at most "
            f"{MAX_METADATA_PAIRS} properties, but got an object with {len(value)} properties instead.",
        )
    for key, val in value.items():
        if len(key) > MAX_METADATA_KEY:
            raise custom_error(
                "string_above_max_length",
                f"Invalid '{{param}}': key '{key[:80]}' is too long. Expected a key with maximum length "
                f"{MAX_METADATA_KEY}, but got a key with length {len(key)} instead.",
            )
        if len(val) > MAX_METADATA_VALUE:
            raise custom_error(
                "string_above_max_length",
                f"Invalid '{{param}}.{key}': string too long. Expected a string with maximum length "
                f"{MAX_METADATA_VALUE}, but got a string with length {len(val)} instead.",
            )
    return value


Metadata = Annotated[dict[str, str] | None, AfterValidator(_check_metadata)]


# --- tools -------------------------------------------------------------------------------------


class RankingOptions(Strict):
    ranker: Literal["auto", "default_2024_08_21"] | None = None
    score_threshold: Annotated[float, Field(ge=0, le=1)] | None = None


class FileSearchOptions(Strict):
    max_num_results: Annotated[int, Field(ge=1, le=50)] | None = None
    ranking_options: RankingOptions | None = None


class CodeInterpreterTool(Strict):
    type: Literal["code_interpreter"]


class FileSearchTool(Strict):
    type: Literal["file_search"]
    file_search: FileSearchOptions | None = None


class FunctionDefinition(Strict):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(Strict):
    type: Literal["function"]
    function: FunctionDefinition


def _v1_tools(value: Any) -> Any:
    """v1's ``retrieval`` tool became ``file_search`` in v2; older code still sends it."""
    if isinstance(value, list):
        return [
            {**t, "type": "file_search"} if isinstance(t, dict) and t.get("type") == "retrieval" else t
            for t in value
        ]
    return value


Tool = Annotated[CodeInterpreterTool | FileSearchTool | FunctionTool, Field(discriminator="type")]
AssistantTools = Annotated[list[Tool], Field(max_length=128), BeforeValidator(_v1_tools)]


# --- tool resources ----------------------------------------------------------------------------


class CodeInterpreterResources(Strict):
    file_ids: Annotated[list[str], Field(max_length=20)] | None = None


class AutoChunking(Strict):
    type: Literal["auto"]


class StaticChunkingConfig(Strict):
    max_chunk_size_tokens: Annotated[int, Field(ge=100, le=4096)]
    chunk_overlap_tokens: Annotated[int, Field(ge=0)]


class StaticChunking(Strict):
    type: Literal["static"]
    static: StaticChunkingConfig


ChunkingStrategy = Annotated[AutoChunking | StaticChunking, Field(discriminator="type")]


class VectorStoreHelper(Strict):
    file_ids: list[str] | None = None
    chunking_strategy: ChunkingStrategy | None = None
    metadata: Metadata = None


class FileSearchResources(Strict):
    vector_store_ids: Annotated[list[str], Field(max_length=1)] | None = None
    vector_stores: Annotated[list[VectorStoreHelper], Field(max_length=1)] | None = None


class ToolResources(Strict):
    code_interpreter: CodeInterpreterResources | None = None
    file_search: FileSearchResources | None = None


# --- response format ---------------------------------------------------------------------------


class JsonSchemaFormat(Strict):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


class TextFormat(Strict):
    type: Literal["text"]


class JsonObjectFormat(Strict):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormatObject = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")
]
ResponseFormat = Annotated[
    Annotated[Literal["auto"], Tag("str")] | Annotated[ResponseFormatObject, Tag("object")],
    Discriminator(lambda v: "object" if isinstance(v, dict | BaseModel) else "str"),
]

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


def dump(model: BaseModel | None) -> Any:
    """A request sub-object as it appears in a response: unset optional fields left out."""
    if model is None:
        return None
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)
