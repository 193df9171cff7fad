"""Assistants through the official SDK: every field, the tool types, modify, delete, list and paging."""

from __future__ import annotations

import re
import time

import openai
import pytest

from .remote import E2E_MARKS, pages_with_data

pytestmark = E2E_MARKS

ASSISTANT_ID = re.compile(r"^asst_[0-9A-Za-z]{24}$")

SEED_001_METADATA = {
    "holds_threads": "True",
    "likes_threads": "True",
    "holds_messages": "True",
    "likes_messages": "True",
}


def test_create_with_metadata_temperature_top_p_as_in_seed_001(client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        instructions="You are a helpful assistant.",
        name="Run Step Friendly Assistant",
        metadata=SEED_001_METADATA,
        temperature=1,
        top_p=1,
    )

    assert ASSISTANT_ID.match(assistant.id)
    assert assistant.object == "assistant"
    assert abs(assistant.created_at - time.time()) < 60
    assert assistant.model == "gpt-4o"
    assert assistant.name == "Run Step Friendly Assistant"
    assert assistant.instructions == "You are a helpful assistant."
    assert assistant.description is None
    assert assistant.metadata == SEED_001_METADATA
    assert assistant.temperature == 1.0
    assert assistant.top_p == 1.0
    assert assistant.tools == []
    assert assistant.response_format == "auto"
    assert assistant.tool_resources is not None
    assert assistant.tool_resources.code_interpreter is None
    assert assistant.tool_resources.file_search is None

    assert client.beta.assistants.retrieve(assistant.id) == assistant


def test_defaults_when_only_the_model_is_given(client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o-mini")

    assert assistant.model == "gpt-4o-mini"
    assert (assistant.name, assistant.description, assistant.instructions) == (None, None, None)
    assert assistant.metadata == {}
    assert assistant.tools == []
    assert assistant.temperature == 1.0
    assert assistant.top_p == 1.0
    assert assistant.response_format == "auto"


def test_every_tool_type_round_trips(client: openai.OpenAI) -> None:
    tools = [
        {"type": "code_interpreter"},
        {
            "type": "file_search",
            "file_search": {
                "max_num_results": 7,
                "ranking_options": {"ranker": "default_2024_08_21", "score_threshold": 0.25},
            },
        },
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "no_params"}},
    ]
    assistant = client.beta.assistants.create(model="gpt-4o", tools=tools)  # type: ignore[arg-type]

    # model_dump keeps fields an older SDK does not know (e.g. ranking_options before 1.4x) as extras.
    assert [t.model_dump(exclude_none=True) for t in assistant.tools] == tools
    fetched = client.beta.assistants.retrieve(assistant.id)
    assert [t.model_dump(exclude_none=True) for t in fetched.tools] == tools
    assert [t.type for t in fetched.tools] == ["code_interpreter", "file_search", "function", "function"]


def test_v1_retrieval_tool_is_accepted_as_file_search_as_in_seed_003(client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(
        name="VT.ai Code Assistant",
        instructions="You are a helpful code and data analysis assistant",
        tools=[{"type": "code_interpreter"}, {"type": "retrieval"}],  # type: ignore[list-item]
        model="o3",
    )

    assert [t.type for t in assistant.tools] == ["code_interpreter", "file_search"]
    assert [t.type for t in client.beta.assistants.retrieve(assistant.id).tools] == [
        "code_interpreter",
        "file_search",
    ]


def test_code_interpreter_file_ids_and_response_formats(client: openai.OpenAI) -> None:
    data = client.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="assistants")
    schema = {
        "name": "answer",
        "schema": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
        "strict": True,
    }
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [data.id]}},
        response_format={"type": "json_schema", "json_schema": schema},  # type: ignore[typeddict-item]
    )

    assert assistant.tool_resources is not None
    assert assistant.tool_resources.code_interpreter is not None
    assert assistant.tool_resources.code_interpreter.file_ids == [data.id]
    assert not isinstance(assistant.response_format, str)
    assert assistant.response_format.model_dump(exclude_none=True, by_alias=True) == {
        "type": "json_schema",
        "json_schema": schema,
    }

    changed = client.beta.assistants.update(assistant.id, response_format={"type": "json_object"})
    assert not isinstance(changed.response_format, str)
    assert changed.response_format.type == "json_object"
    back = client.beta.assistants.update(assistant.id, response_format="auto")
    assert back.response_format == "auto"


def test_update_changes_only_the_fields_sent(client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        name="Math Tutor",
        instructions="You are a personal math tutor.",
        tools=[{"type": "code_interpreter"}],
        metadata={"v": "1"},
        temperature=0.2,
    )

    updated = client.beta.assistants.update(
        assistant.id,
        name="Physics Tutor",
        metadata={"v": "2", "subject": "physics"},
        tools=[{"type": "file_search"}],
        top_p=0.5,
    )

    assert updated.id == assistant.id
    assert updated.created_at == assistant.created_at
    assert updated.name == "Physics Tutor"
    assert updated.metadata == {"v": "2", "subject": "physics"}
    assert [t.type for t in updated.tools] == ["file_search"]
    assert updated.top_p == 0.5
    # untouched
    assert updated.instructions == "You are a personal math tutor."
    assert updated.model == "gpt-4o"
    assert updated.temperature == pytest.approx(0.2)
    assert client.beta.assistants.retrieve(assistant.id) == updated

    remodelled = client.beta.assistants.update(assistant.id, model="gpt-4.1", description="d")
    assert (remodelled.model, remodelled.description, remodelled.name) == ("gpt-4.1", "d", "Physics Tutor")


def test_delete_then_the_assistant_is_gone(client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")

    deleted = client.beta.assistants.delete(assistant.id)

    assert (deleted.id, deleted.object, deleted.deleted) == (assistant.id, "assistant.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve(assistant.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.delete(assistant.id)
    assert assistant.id not in {a.id for a in client.beta.assistants.list(limit=100)}


def test_list_orders_and_cursors_in_a_fresh_project(fresh_client: openai.OpenAI) -> None:
    client = fresh_client
    assert client.beta.assistants.list().data == []

    ids = [client.beta.assistants.create(model="gpt-4o", name=f"a{i}").id for i in range(5)]

    newest_first = client.beta.assistants.list()
    assert [a.id for a in newest_first.data] == ids[::-1]
    assert newest_first.has_more is False
    assert newest_first.first_id == ids[-1]
    assert newest_first.last_id == ids[0]

    assert [a.id for a in client.beta.assistants.list(order="asc").data] == ids

    first = client.beta.assistants.list(order="asc", limit=2)
    assert [a.id for a in first.data] == ids[:2]
    assert first.has_more is True
    assert first.has_next_page()
    second = first.get_next_page()
    assert [a.id for a in second.data] == ids[2:4]
    assert [a.id for a in client.beta.assistants.list(order="asc", after=ids[3]).data] == [ids[4]]

    # `before` gives the objects just before the cursor, still in the order asked for.
    assert [a.id for a in client.beta.assistants.list(order="asc", before=ids[3], limit=2).data] == ids[1:3]
    assert [a.id for a in client.beta.assistants.list(order="desc", before=ids[1], limit=2).data] == [
        ids[3],
        ids[2],
    ]
    last = client.beta.assistants.list(order="desc", after=ids[1])
    assert [a.id for a in last.data] == [ids[0]]
    assert last.has_more is False


def test_auto_pagination_over_more_than_100_assistants(fresh_client: openai.OpenAI) -> None:
    client = fresh_client
    ids = [client.beta.assistants.create(model="gpt-4o", metadata={"i": str(i)}).id for i in range(105)]

    assert [a.id for a in client.beta.assistants.list()] == ids[::-1]  # 20 per page: 6 pages
    assert [a.id for a in client.beta.assistants.list(order="asc", limit=100)] == ids
    pages = pages_with_data(client.beta.assistants.list(order="asc", limit=50))
    assert [len(p.data) for p in pages] == [50, 50, 5]
    assert [p.has_more for p in pages] == [True, True, False]
