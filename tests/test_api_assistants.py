"""/v1/assistants: create, list, retrieve, modify, delete (each test on SQLite and on PostgreSQL)."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from starlette.testclient import TestClient

if TYPE_CHECKING:
    from conftest import Api

ID_RE = re.compile(r"^asst_[A-Za-z0-9]{24}$")


def upload(client: TestClient, name: str = "notes.txt", data: bytes = b"hello", purpose: str = "assistants") -> str:
    r = client.post("/v1/files", files={"file": (name, data)}, data={"purpose": purpose})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def create(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/assistants", json={"model": "gpt-4o", **body})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def test_create_minimal_applies_openai_defaults(client: TestClient, conforms: Any) -> None:
    before = int(time.time())
    obj = create(client)
    after = int(time.time())
    assert ID_RE.match(obj["id"]), obj["id"]
    assert before <= obj["created_at"] <= after
    assert obj == {
        "id": obj["id"],
        "object": "assistant",
        "created_at": obj["created_at"],
        "name": None,
        "description": None,
        "model": "gpt-4o",
        "instructions": None,
        "tools": [],
        "tool_resources": {},
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "response_format": "auto",
    }
    conforms(obj, "AssistantObject")


def test_create_with_every_field_round_trips(client: TestClient, conforms: Any) -> None:
    file_id = upload(client)
    tools = [
        {"type": "code_interpreter"},
        {
            "type": "file_search",
            "file_search": {
                "max_num_results": 7,
                "ranking_options": {"ranker": "default_2024_08_21", "score_threshold": 0.5},
            },
        },
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
        },
    ]
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    obj = create(
        client,
        name="Tutor",
        description="Helps with maths",
        instructions="Be brief.",
        tools=tools,
        tool_resources={"code_interpreter": {"file_ids": [file_id]}},
        metadata={"team": "blue", "tier": "1"},
        temperature=0.2,
        top_p=0.9,
        response_format=response_format,
    )
    assert obj["name"] == "Tutor"
    assert obj["description"] == "Helps with maths"
    assert obj["instructions"] == "Be brief."
    assert obj["tools"] == tools
    assert obj["tool_resources"] == {"code_interpreter": {"file_ids": [file_id]}}
    assert obj["metadata"] == {"team": "blue", "tier": "1"}
    assert obj["temperature"] == 0.2
    assert obj["top_p"] == 0.9
    assert obj["response_format"] == response_format
    conforms(obj, "AssistantObject")

    fetched = client.get(f"/v1/assistants/{obj['id']}")
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "application/json"
    assert fetched.json() == obj


def test_integer_temperature_is_a_number_and_simple_formats_are_kept(client: TestClient) -> None:
    obj = create(client, temperature=2, top_p=0, response_format={"type": "json_object"})
    assert obj["temperature"] == 2.0
    assert obj["top_p"] == 0.0
    assert obj["response_format"] == {"type": "json_object"}
    assert create(client, response_format="auto")["response_format"] == "auto"
    assert create(client, response_format={"type": "text"})["response_format"] == {"type": "text"}


def test_v1_retrieval_tool_is_stored_as_file_search(client: TestClient) -> None:
    obj = create(client, tools=[{"type": "retrieval"}, {"type": "code_interpreter"}])
    assert obj["tools"] == [{"type": "file_search"}, {"type": "code_interpreter"}]
    assert client.get(f"/v1/assistants/{obj['id']}").json()["tools"] == obj["tools"]


def test_explicit_nulls_mean_not_set(client: TestClient) -> None:
    obj = create(
        client,
        name=None,
        description=None,
        instructions=None,
        tools=None,
        tool_resources=None,
        metadata=None,
        temperature=None,
        top_p=None,
        response_format=None,
    )
    assert obj["name"] is None and obj["instructions"] is None
    assert obj["tools"] == [] and obj["tool_resources"] == {} and obj["metadata"] == {}
    assert obj["temperature"] == 1.0 and obj["top_p"] == 1.0 and obj["response_format"] == "auto"


def test_sdk_beta_header_and_extra_headers_are_accepted(client: TestClient) -> None:
    r = client.post(
        "/v1/assistants",
        json={"model": "gpt-4o"},
        headers={"OpenAI-Beta": "assistants=v2", "X-Stainless-Poll-Helper": "true"},
    )
    assert r.status_code == 200, r.text


def test_retrieve_unknown_and_wrong_kind_ids_are_404(client: TestClient, expect_error: Any) -> None:
    expect_error(
        client.get("/v1/assistants/asst_doesnotexist000000000000"),
        404,
        message="No assistant found with id 'asst_doesnotexist000000000000'.",
    )
    thread = client.post("/v1/threads").json()
    expect_error(client.get(f"/v1/assistants/{thread['id']}"), 404, contains=(thread["id"],))


def test_list_returns_newest_first_by_default(client: TestClient, conforms: Any) -> None:
    ids = [create(client, name=f"a{i}")["id"] for i in range(3)]
    page = client.get("/v1/assistants").json()
    assert [a["id"] for a in page["data"]] == ids[::-1]
    assert page["object"] == "list"
    assert page["first_id"] == ids[2] and page["last_id"] == ids[0]
    assert page["has_more"] is False
    conforms(page, "ListAssistantsResponse")
    asc = client.get("/v1/assistants", params={"order": "asc"}).json()
    assert [a["id"] for a in asc["data"]] == ids


def test_list_when_empty(client: TestClient) -> None:
    assert client.get("/v1/assistants").json() == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_modify_changes_only_the_fields_sent(client: TestClient, conforms: Any) -> None:
    obj = create(client, name="Old", instructions="Keep me", metadata={"a": "1"}, temperature=0.5)
    r = client.post(f"/v1/assistants/{obj['id']}", json={"name": "New", "metadata": {"b": "2"}})
    assert r.status_code == 200, r.text
    modified = r.json()
    conforms(modified, "AssistantObject")
    assert modified == {**obj, "name": "New", "metadata": {"b": "2"}}
    assert client.get(f"/v1/assistants/{obj['id']}").json() == modified


def test_modify_model_tools_and_resources(client: TestClient) -> None:
    file_id = upload(client)
    obj = create(client, tools=[{"type": "code_interpreter"}])
    modified = client.post(
        f"/v1/assistants/{obj['id']}",
        json={
            "model": "gpt-4o-mini",
            "tools": [{"type": "file_search"}],
            "tool_resources": {"code_interpreter": {"file_ids": [file_id]}},
            "response_format": {"type": "json_object"},
        },
    ).json()
    assert modified["model"] == "gpt-4o-mini"
    assert modified["tools"] == [{"type": "file_search"}]
    assert modified["tool_resources"] == {"code_interpreter": {"file_ids": [file_id]}}
    assert modified["response_format"] == {"type": "json_object"}
    assert modified["id"] == obj["id"] and modified["created_at"] == obj["created_at"]


def test_modify_with_nulls_resets_to_defaults_but_keeps_the_model(client: TestClient) -> None:
    obj = create(client, name="N", metadata={"a": "1"}, temperature=0.3, tools=[{"type": "code_interpreter"}])
    modified = client.post(
        f"/v1/assistants/{obj['id']}",
        json={"name": None, "metadata": None, "temperature": None, "tools": None, "model": None},
    ).json()
    assert modified["name"] is None
    assert modified["metadata"] == {}
    assert modified["temperature"] == 1.0
    assert modified["tools"] == []
    assert modified["model"] == "gpt-4o"


def test_modify_with_no_body_changes_nothing(client: TestClient) -> None:
    obj = create(client, name="Same")
    r = client.post(f"/v1/assistants/{obj['id']}")
    assert r.status_code == 200, r.text
    assert r.json() == obj


def test_modify_unknown_assistant_is_404(client: TestClient, expect_error: Any) -> None:
    expect_error(
        client.post("/v1/assistants/asst_nope", json={"name": "x"}),
        404,
        message="No assistant found with id 'asst_nope'.",
    )


def test_delete(api: Api, conforms: Any, expect_error: Any) -> None:
    client = api.client
    keep = create(client, name="keep")
    gone = create(client, name="gone")
    r = client.delete(f"/v1/assistants/{gone['id']}")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": gone["id"], "object": "assistant.deleted", "deleted": True}
    conforms(r.json(), "DeleteAssistantResponse")
    expect_error(client.get(f"/v1/assistants/{gone['id']}"), 404)
    expect_error(client.delete(f"/v1/assistants/{gone['id']}"), 404, contains=(gone["id"],))
    assert [a["id"] for a in client.get("/v1/assistants").json()["data"]] == [keep["id"]]
    assert api.count("assistants") == 1


def test_objects_survive_a_restart(make_api: Any) -> None:
    first = make_api()
    obj = create(first.client, name="durable", metadata={"k": "v"})
    second = make_api()
    assert second.client.get(f"/v1/assistants/{obj['id']}").json() == obj
