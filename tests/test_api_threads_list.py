"""GET /v1/threads: assistantd's list of threads (not in OpenAI's API), on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.testclient import TestClient

if TYPE_CHECKING:
    from conftest import MakeApi


def ids(client: TestClient, **params: Any) -> list[str]:
    r = client.get("/v1/threads", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    return [t["id"] for t in body["data"]]


def new_thread(client: TestClient, **body: Any) -> str:
    r = client.post("/v1/threads", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def test_threads_list_newest_first_and_pages_both_ways(client: TestClient) -> None:
    made = [new_thread(client) for _ in range(5)]
    newest_first = list(reversed(made))
    assert ids(client) == newest_first
    assert ids(client, order="asc") == made
    first = client.get("/v1/threads", params={"limit": 2}).json()
    assert [t["id"] for t in first["data"]] == newest_first[:2]
    assert first["has_more"] is True and first["last_id"] == newest_first[1]
    assert ids(client, limit=2, after=first["last_id"]) == newest_first[2:4]
    last = client.get("/v1/threads", params={"limit": 2, "after": newest_first[3]}).json()
    assert [t["id"] for t in last["data"]] == newest_first[4:] and last["has_more"] is False
    assert ids(client, limit=2, before=newest_first[2]) == newest_first[:2]


def test_threads_list_filters_by_metadata(client: TestClient) -> None:
    a = new_thread(client, metadata={"user": "ann", "topic": "billing"})
    b = new_thread(client, metadata={"user": "bob", "topic": "billing"})
    new_thread(client)
    assert ids(client, **{"metadata[user]": "ann"}) == [a]
    assert ids(client, **{"metadata[topic]": "billing"}) == [b, a]
    assert ids(client, **{"metadata[topic]": "billing", "metadata[user]": "bob"}) == [b]
    assert ids(client, **{"metadata[user]": "carl"}) == []
    # Keys are data, not JSON paths: quotes and dots match literally.
    odd = new_thread(client, metadata={'we"ird.key': "x'y"})
    assert ids(client, **{'metadata[we"ird.key]': "x'y"}) == [odd]


def test_threads_list_filters_by_assistant_of_their_runs(client: TestClient) -> None:
    asst_a = client.post("/v1/assistants", json={"model": "no-such-model"}).json()["id"]
    asst_b = client.post("/v1/assistants", json={"model": "no-such-model"}).json()["id"]
    with_a = new_thread(client)
    with_b = new_thread(client)
    new_thread(client)  # no runs at all
    for thread, assistant in ((with_a, asst_a), (with_b, asst_b)):
        r = client.post(f"/v1/threads/{thread}/runs", json={"assistant_id": assistant})
        assert r.status_code == 200, r.text
    assert ids(client, assistant_id=asst_a) == [with_a]
    assert ids(client, assistant_id=asst_b) == [with_b]
    assert ids(client, assistant_id="asst_unknown") == []


def test_threads_list_rejects_bad_filters_and_cursors(client: TestClient, expect_error: Any) -> None:
    new_thread(client)
    expect_error(client.get("/v1/threads", params={"metadata[]": "x"}), 400, param="metadata[]")
    expect_error(client.get("/v1/threads", params={"metadata[k]": "v" * 513}), 400, param="metadata[k]")
    many = {f"metadata[k{i}]": "v" for i in range(17)}
    expect_error(client.get("/v1/threads", params=many), 400, param="metadata")
    expect_error(client.get("/v1/threads", params={"limit": 101}), 400, param="limit")
    expect_error(client.get("/v1/threads", params={"after": "thread_nope"}), 400, param="after")


def test_threads_list_shows_only_the_projects_own(make_api: MakeApi) -> None:
    keys = "key-a:proj_a,key-b:proj_b"
    a = make_api(key="key-a", api_keys=keys).client
    b = make_api(key="key-b", api_keys=keys).client
    mine = new_thread(a, metadata={"k": "v"})
    assert ids(a) == [mine]
    assert ids(b) == [] and ids(b, **{"metadata[k]": "v"}) == []
    r = make_api(key="wrong", api_keys=keys).client.get("/v1/threads")
    assert r.status_code == 401
