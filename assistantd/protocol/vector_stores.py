"""Request bodies for /vector_stores: stores, their files and file batches, and search."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, model_validator

from assistantd.protocol.common import ChunkingStrategy, Metadata, Strict
from assistantd.protocol.validation import custom_error

MAX_ATTRIBUTES = 16
MAX_ATTRIBUTE_KEY = 64
MAX_ATTRIBUTE_VALUE = 512


def _check_attributes(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if len(value) > MAX_ATTRIBUTES:
        raise custom_error(
            "object_above_max_properties",
            f"Invalid '{{param}}': too many properties. Expected an object with at most {MAX_ATTRIBUTES} "
            f"properties, but got an object with {len(value)} properties instead.",
        )
    for key, val in value.items():
        if len(key) > MAX_ATTRIBUTE_KEY:
            raise custom_error(
                "string_above_max_length",
                f"Invalid '{{param}}': key '{key[:80]}' is too long. Expected a key with maximum length "
                f"{MAX_ATTRIBUTE_KEY}, but got a key with length {len(key)} instead.",
            )
        if isinstance(val, str) and len(val) > MAX_ATTRIBUTE_VALUE:
            raise custom_error(
                "string_above_max_length",
                f"Invalid '{{param}}.{key}': string too long. Expected a string with maximum length "
                f"{MAX_ATTRIBUTE_VALUE}, but got a string with length {len(val)} instead.",
            )
    return value


AttributeValue = Annotated[bool, Tag("bool")] | Annotated[str, Tag("str")] | Annotated[int | float, Tag("number")]


def _attribute_branch(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "str" if isinstance(value, str) else "number"


Attributes = Annotated[
    dict[str, Annotated[AttributeValue, Discriminator(_attribute_branch)]] | None,
    AfterValidator(_check_attributes),
]


class ExpiresAfter(Strict):
    anchor: Literal["last_active_at"]
    days: Annotated[int, Field(ge=1, le=365)]


class CreateVectorStore(Strict):
    file_ids: Annotated[list[str], Field(max_length=500)] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    description: Annotated[str, Field(max_length=512)] | None = None
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingStrategy | None = None
    metadata: Metadata = None


class ModifyVectorStore(Strict):
    name: Annotated[str, Field(max_length=256)] | None = None
    expires_after: ExpiresAfter | None = None
    metadata: Metadata = None


class CreateVectorStoreFile(Strict):
    file_id: str
    chunking_strategy: ChunkingStrategy | None = None
    attributes: Attributes = None


class UpdateVectorStoreFile(Strict):
    attributes: Attributes


class CreateFileBatch(Strict):
    file_ids: Annotated[list[str], Field(min_length=1, max_length=2000)] | None = None
    files: Annotated[list[CreateVectorStoreFile], Field(min_length=1, max_length=2000)] | None = None
    chunking_strategy: ChunkingStrategy | None = None
    attributes: Attributes = None

    @model_validator(mode="after")
    def _one_list(self) -> CreateFileBatch:
        if (self.file_ids is None) == (self.files is None):
            raise custom_error(
                "invalid_value", "Give exactly one of 'file_ids' or 'files' (a list of {file_id, ...} objects)."
            )
        return self


# --- search --------------------------------------------------------------------------------------

ComparisonType = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]


def _value_branch(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    return _attribute_branch(value)


ListItem = Annotated[
    Annotated[str, Tag("str")] | Annotated[int | float, Tag("number")],
    Discriminator(lambda v: "str" if isinstance(v, str) else "number"),
]
FilterValue = Annotated[
    Annotated[bool, Tag("bool")]
    | Annotated[str, Tag("str")]
    | Annotated[int | float, Tag("number")]
    | Annotated[list[ListItem], Tag("list")],
    Discriminator(_value_branch),
]


class ComparisonFilter(Strict):
    type: ComparisonType
    key: str
    value: FilterValue

    @model_validator(mode="after")
    def _value_fits_type(self) -> ComparisonFilter:
        listed = isinstance(self.value, list)
        if self.type in ("in", "nin") and not listed:
            raise custom_error("invalid_type", f"Invalid '{{param}}': '{self.type}' compares with an array of values.")
        if self.type not in ("in", "nin") and listed:
            raise custom_error(
                "invalid_type", f"Invalid '{{param}}': an array value needs the type 'in' or 'nin', not '{self.type}'."
            )
        return self


def _filter_branch(value: Any) -> str:
    if isinstance(value, dict) and value.get("type") in ("and", "or"):
        return "compound"
    return "comparison"


class CompoundFilter(Strict):
    type: Literal["and", "or"]
    filters: list[Filter]


Filter = Annotated[
    Annotated[ComparisonFilter, Tag("comparison")] | Annotated[CompoundFilter, Tag("compound")],
    Discriminator(_filter_branch),
]
CompoundFilter.model_rebuild()


class SearchRankingOptions(Strict):
    ranker: Literal["none", "auto", "default-2024-11-15"] | None = None
    score_threshold: Annotated[float, Field(ge=0, le=1)] | None = None


QueryText = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[str], Field(min_length=1, max_length=10), Tag("list")],
    Discriminator(lambda v: "list" if isinstance(v, list) else "str"),
]


class SearchVectorStore(Strict):
    query: QueryText
    rewrite_query: bool | None = None
    max_num_results: Annotated[int, Field(ge=1, le=50)] | None = None
    filters: Filter | None = None
    ranking_options: SearchRankingOptions | None = None
