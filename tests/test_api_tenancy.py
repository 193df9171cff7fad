"""Projects are walls: a key sees only its own project's objects (on SQLite and on PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from starlette.testclient import TestClient

if TYPE_CHECKING:
    from conftest import Api, MakeApi

KEYS = "key-a:proj_a,key-b:proj_b,key-plain"


@dataclass
class Tenants:
    a: TestClient
    b: TestClient
    api_a: Api
    objects: dict[str, str]


@pytest.fixture
def tenants(make_api: MakeApi) -> Tenants:
    api_a = make_api(key="key-a", api_keys=KEYS)
    api_b = make_api(key="key-b", api_keys=KEYS)
    a = api_a.client
    file_id = a.post("/v1/files", files={"file": ("a.txt", b"secret")}, data={"purpose": "assistants"}).json()["id"]
    asst = a.post("/v1/assistants", json={"model": "m"}).json()["id"]
    thread = a.post("/v1/threads", json={"messages": [{"role": "user", "content": "a's"}]}).json()["id"]
    msg = a.get(f"/v1/threads/{thread}/messages").json()["data"][0]["id"]
    return Tenants(
        a=a, b=api_b.client, api_a=api_a, objects={"file": file_id, "asst": asst, "thread": thread, "msg": msg}
    )


def requests_on_a_objects(o: dict[str, str]) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", f"/v1/assistants/{o['asst']}", None),
        ("POST", f"/v1/assistants/{o['asst']}", {"name": "hijacked"}),
        ("DELETE", f"/v1/assistants/{o['asst']}", None),
        ("GET", f"/v1/threads/{o['thread']}", None),
        ("POST", f"/v1/threads/{o['thread']}", {"metadata": {"x": "y"}}),
        ("GET", f"/v1/threads/{o['thread']}/messages", None),
        ("POST", f"/v1/threads/{o['thread']}/messages", {"role": "user", "content": "intrude"}),
        ("GET", f"/v1/threads/{o['thread']}/messages/{o['msg']}", None),
        ("POST", f"/v1/threads/{o['thread']}/messages/{o['msg']}", {"metadata": {"x": "y"}}),
        ("DELETE", f"/v1/threads/{o['thread']}/messages/{o['msg']}", None),
        ("DELETE", f"/v1/threads/{o['thread']}", None),
        ("GET", f"/v1/files/{o['file']}", None),
        ("GET", f"/v1/files/{o['file']}/content", None),
        ("DELETE", f"/v1/files/{o['file']}", None),
    ]


def test_other_project_gets_404_for_everything(tenants: Tenants, expect_error: Any) -> None:
    o = tenants.objects
    for method, path, body in requests_on_a_objects(o):
        r = tenants.b.request(method, path, json=body)
        err = expect_error(r, 404)
        assert "secret" not in r.text
        assert any(v in err["message"] for v in o.values()), err
    # And nothing of A's changed or went away.
    a = tenants.a
    assert a.get(f"/v1/assistants/{o['asst']}").json().get("name") is None
    assert a.get(f"/v1/threads/{o['thread']}").json()["metadata"] == {}
    msgs = a.get(f"/v1/threads/{o['thread']}/messages").json()["data"]
    assert [(m["id"], m["metadata"]) for m in msgs] == [(o["msg"], {})]
    assert a.get(f"/v1/files/{o['file']}/content").content == b"secret"


def test_lists_show_only_own_objects(tenants: Tenants) -> None:
    b = tenants.b
    for path in ("/v1/assistants", "/v1/files"):
        assert b.get(path).json()["data"] == []
    mine = b.post("/v1/assistants", json={"model": "m"}).json()["id"]
    assert [x["id"] for x in b.get("/v1/assistants").json()["data"]] == [mine]
    assert [x["id"] for x in tenants.a.get("/v1/assistants").json()["data"]] == [tenants.objects["asst"]]
    assert [x["id"] for x in tenants.a.get("/v1/files").json()["data"]] == [tenants.objects["file"]]


def test_other_projects_ids_are_not_cursors(tenants: Tenants, expect_error: Any) -> None:
    b = tenants.b
    b.post("/v1/assistants", json={"model": "m"})
    expect_error(b.get("/v1/assistants", params={"after": tenants.objects["asst"]}), 400, param="after")
    expect_error(b.get("/v1/files", params={"before": tenants.objects["file"]}), 400, param="before")


def test_other_projects_files_cannot_be_referenced(tenants: Tenants, expect_error: Any) -> None:
    b = tenants.b
    f = tenants.objects["file"]
    expect_error(
        b.post("/v1/assistants", json={"model": "m", "tool_resources": {"code_interpreter": {"file_ids": [f]}}}),
        400,
        param="tool_resources.code_interpreter.file_ids[0]",
        message=f"No file found with id '{f}'.",
    )
    expect_error(
        b.post(
            "/v1/threads",
            json={"messages": [{"role": "user", "content": "x", "attachments": [{"file_id": f, "tools": []}]}]},
        ),
        400,
        param="messages[0].attachments[0].file_id",
    )
    thread = b.post("/v1/threads").json()["id"]
    expect_error(
        b.post(
            f"/v1/threads/{thread}/messages",
            json={"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": f}}]},
        ),
        400,
        param="content[0].image_file.file_id",
    )


def test_bare_key_belongs_to_the_default_project(make_api: MakeApi) -> None:
    plain = make_api(key="key-plain", api_keys=KEYS).client
    a = make_api(key="key-a", api_keys=KEYS).client
    made = plain.post("/v1/assistants", json={"model": "m"}).json()["id"]
    assert plain.get(f"/v1/assistants/{made}").status_code == 200
    assert a.get(f"/v1/assistants/{made}").status_code == 404


def test_same_project_keys_share_objects(make_api: MakeApi) -> None:
    keys = "key-one:team,key-two:team"
    one = make_api(key="key-one", api_keys=keys).client
    two = make_api(key="key-two", api_keys=keys).client
    made = one.post("/v1/assistants", json={"model": "m"}).json()
    assert two.get(f"/v1/assistants/{made['id']}").json() == made
    assert tenants_rows(one) == tenants_rows(two)


def tenants_rows(client: TestClient) -> list[str]:
    return [a["id"] for a in client.get("/v1/assistants").json()["data"]]


def test_rows_carry_their_project(tenants: Tenants) -> None:
    api = tenants.api_a
    for table in ("assistants", "threads", "messages", "files"):
        assert {r[0] for r in api.sql(f"SELECT project_id FROM {table}")} == {"proj_a"}, table
