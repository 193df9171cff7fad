"""Vector stores around the rest of the API: tool_resources on assistants and threads (ids and the
``vector_stores`` helper), the thread store of message attachments, waiting for a store to be ready,
deleting Files, and expiry; on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from file_search_support import call, create_store, execute, search, store_with, upload, wait_store

from assistantd.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from conftest import Api, MakeApi

TEXT = "Owls hunt at night; their soft feathers make their flight almost silent."


# --- tool_resources ------------------------------------------------------------------------------


def test_assistant_names_an_existing_store(client: Any, expect_error: Any) -> None:
    vs = create_store(client)["id"]
    body = {
        "model": "gpt-4o",
        "tools": [{"type": "file_search"}],
        "tool_resources": {"file_search": {"vector_store_ids": [vs]}},
    }
    r = client.post("/v1/assistants", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["tool_resources"] == {"file_search": {"vector_store_ids": [vs]}}
    missing = {**body, "tool_resources": {"file_search": {"vector_store_ids": ["vs_missing"]}}}
    expect_error(
        client.post("/v1/assistants", json=missing),
        400,
        param="tool_resources.file_search.vector_store_ids[0]",
        message="No vector store found with id 'vs_missing'.",
    )


def test_assistant_vector_stores_helper_creates_a_store(api: Api) -> None:
    c = api.client
    file_id = upload(c, "owls.txt", TEXT)
    static = {"type": "static", "static": {"max_chunk_size_tokens": 300, "chunk_overlap_tokens": 0}}
    helper = {"file_ids": [file_id], "chunking_strategy": static, "metadata": {"made_by": "helper"}}
    r = c.post(
        "/v1/assistants", json={"model": "gpt-4o", "tool_resources": {"file_search": {"vector_stores": [helper]}}}
    )
    assert r.status_code == 200, r.text
    [vs] = r.json()["tool_resources"]["file_search"]["vector_store_ids"]
    assert c.get(f"/v1/assistants/{r.json()['id']}").json()["tool_resources"] == {
        "file_search": {"vector_store_ids": [vs]}
    }
    store = wait_store(c, vs)
    assert store["metadata"] == {"made_by": "helper"} and store["file_counts"]["completed"] == 1
    assert c.get(f"/v1/vector_stores/{vs}/files/{file_id}").json()["chunking_strategy"] == static
    assert search(c, vs, query="silent owls")["data"][0]["file_id"] == file_id
    # modify with the helper again: a second store replaces the first in tool_resources
    r = c.post(
        f"/v1/assistants/{r.json()['id']}",
        json={"tool_resources": {"file_search": {"vector_stores": [{"file_ids": [file_id]}]}}},
    )
    [second] = r.json()["tool_resources"]["file_search"]["vector_store_ids"]
    assert second != vs and wait_store(c, second)["file_counts"]["completed"] == 1


def test_thread_vector_stores_helper_and_modify(api: Api) -> None:
    c = api.client
    file_id = upload(c, "owls.txt", TEXT)
    r = c.post("/v1/threads", json={"tool_resources": {"file_search": {"vector_stores": [{"file_ids": [file_id]}]}}})
    assert r.status_code == 200, r.text
    [vs] = r.json()["tool_resources"]["file_search"]["vector_store_ids"]
    assert wait_store(c, vs)["file_counts"]["completed"] == 1
    thread = r.json()["id"]
    empty = c.post(f"/v1/threads/{thread}", json={"tool_resources": {"file_search": {"vector_stores": [{}]}}}).json()
    [new] = empty["tool_resources"]["file_search"]["vector_store_ids"]
    assert new != vs and c.get(f"/v1/vector_stores/{new}").json()["file_counts"]["total"] == 0


def test_helper_with_a_bad_file_creates_nothing(api: Api, expect_error: Any) -> None:
    c = api.client
    body = {"model": "m", "tool_resources": {"file_search": {"vector_stores": [{"file_ids": ["file-nope"]}]}}}
    expect_error(
        c.post("/v1/assistants", json=body), 400, param="tool_resources.file_search.vector_stores[0].file_ids[0]"
    )
    bad_chunks = {
        "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 60}}
    }
    body = {"tool_resources": {"file_search": {"vector_stores": [bad_chunks]}}}
    param = "tool_resources.file_search.vector_stores[0].chunking_strategy.static.chunk_overlap_tokens"
    expect_error(c.post("/v1/threads", json=body), 400, param=param)
    assert api.count("vector_stores") == 0 and api.count("assistants") == 0 and api.count("threads") == 0


# --- the thread store, and waiting for it --------------------------------------------------------


def test_ensure_thread_store_creates_then_extends_a_7_day_store(api: Api) -> None:
    c = api.client
    service = api.app.state.services.vector_stores
    thread = c.post("/v1/threads").json()["id"]
    first, second = upload(c, "a.txt", TEXT), upload(c, "b.txt", "Badgers dig setts under hedgerows.")
    vs = call(api, service.ensure_thread_store, "default", thread, [first])
    store = c.get(f"/v1/vector_stores/{vs}").json()
    assert store["expires_after"] == {"anchor": "last_active_at", "days": 7}
    assert store["expires_at"] == store["last_active_at"] + 7 * 86400
    assert c.get(f"/v1/threads/{thread}").json()["tool_resources"] == {"file_search": {"vector_store_ids": [vs]}}
    assert call(api, service.ensure_thread_store, "default", thread, [second, first]) == vs
    call(api, service.wait_ready, "default", [vs], timeout=60)
    done = c.get(f"/v1/vector_stores/{vs}").json()
    assert done["file_counts"] == {"in_progress": 0, "completed": 2, "failed": 0, "cancelled": 0, "total": 2}
    hits = call(api, service.search, "default", [vs], ["badgers"], max_num_results=1)
    assert [h.filename for h in hits] == ["b.txt"]


def test_ensure_thread_store_uses_the_store_the_thread_names(api: Api) -> None:
    c = api.client
    service = api.app.state.services.vector_stores
    mine = create_store(c, name="mine")["id"]
    thread = c.post("/v1/threads", json={"tool_resources": {"file_search": {"vector_store_ids": [mine]}}}).json()["id"]
    assert call(api, service.ensure_thread_store, "default", thread, [upload(c, "a.txt", TEXT)]) == mine
    assert c.get(f"/v1/vector_stores/{mine}").json()["expires_after"] is None  # a user's store keeps its policy
    with pytest.raises(NotFound):
        call(api, service.ensure_thread_store, "default", "thread_nope", [])
    with pytest.raises(InvalidRequest, match="file-nope"):
        call(api, service.ensure_thread_store, "default", thread, ["file-nope"])


def test_wait_ready_gives_up_after_its_timeout(make_api: MakeApi) -> None:
    api = make_api(ingest_workers=0)
    vs = create_store(api.client, file_ids=[upload(api.client, "a.txt", TEXT)])["id"]
    started = time.monotonic()
    call(api, api.app.state.services.vector_stores.wait_ready, "default", [vs], timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 10
    assert api.client.get(f"/v1/vector_stores/{vs}").json()["status"] == "in_progress"


# --- deleting Files ------------------------------------------------------------------------------


def test_deleting_a_file_removes_it_from_every_store(api: Api) -> None:
    c = api.client
    owls, other = upload(c, "owls.txt", TEXT), upload(c, "keep.txt", "Hedgehogs eat beetles.")
    vs1 = create_store(c, file_ids=[owls, other])["id"]
    vs2 = create_store(c, file_ids=[owls])["id"]
    wait_store(c, vs1), wait_store(c, vs2)
    assert search(c, vs2, query="owls")["data"]
    assert c.delete(f"/v1/files/{owls}").json()["deleted"] is True
    assert c.get(f"/v1/vector_stores/{vs1}").json()["file_counts"]["total"] == 1
    assert c.get(f"/v1/vector_stores/{vs2}").json()["file_counts"]["total"] == 0
    assert c.get(f"/v1/vector_stores/{vs2}/files/{owls}").status_code == 404
    assert api.sql("SELECT DISTINCT file_id FROM vector_store_chunks") == [(other,)]
    assert search(c, vs2, query="owls")["data"] == []
    assert [d["filename"] for d in search(c, vs1, query="owls hedgehogs")["data"]] == ["keep.txt"]


def test_a_file_that_expires_leaves_every_store(api: Api) -> None:
    c = api.client
    form = {"purpose": "assistants", "expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
    r = c.post("/v1/files", files={"file": ("t.txt", TEXT.encode())}, data=form)
    file_id = r.json()["id"]
    vs = create_store(c, file_ids=[file_id])["id"]
    wait_store(c, vs)
    execute(api, "UPDATE files SET expires_at = 1 WHERE id = ?", (file_id,))
    assert call(api, api.app.state.services.files.delete_expired) == 1
    assert c.get(f"/v1/vector_stores/{vs}").json()["file_counts"]["total"] == 0
    assert api.count("vector_store_chunks") == 0


# --- expiry --------------------------------------------------------------------------------------


def test_a_store_past_its_expiry_becomes_expired_and_unusable(api: Api, conforms: Any, expect_error: Any) -> None:
    c = api.client
    vs, ids = store_with(c, {"owls.txt": TEXT}, expires_after={"anchor": "last_active_at", "days": 1})
    service = api.app.state.services.vector_stores
    assert call(api, service.expire_due) == 0  # not yet
    execute(api, "UPDATE vector_stores SET expires_at = 1 WHERE id = ?", (vs,))
    assert call(api, service.expire_due) == 1
    obj = c.get(f"/v1/vector_stores/{vs}").json()
    conforms(obj, "VectorStoreObject")
    assert obj["status"] == "expired" and obj["file_counts"]["completed"] == 1
    assert api.count("vector_store_chunks") == 0  # the index is gone; the records stay
    assert c.get("/v1/vector_stores").json()["data"][0]["status"] == "expired"
    expect_error(c.post(f"/v1/vector_stores/{vs}/search", json={"query": "owls"}), 400, code="vector_store_expired")
    expect_error(
        c.post(f"/v1/vector_stores/{vs}/files", json={"file_id": ids["owls.txt"]}), 400, code="vector_store_expired"
    )
    expect_error(c.post(f"/v1/vector_stores/{vs}/file_batches", json={"file_ids": [ids["owls.txt"]]}), 400,
                 code="vector_store_expired")  # fmt: skip
    assert c.post(f"/v1/vector_stores/{vs}", json={"name": "renamed"}).json()["status"] == "expired"
    assert call(api, service.expire_due) == 0  # once
    thread = c.post("/v1/threads", json={"tool_resources": {"file_search": {"vector_store_ids": [vs]}}}).json()["id"]
    fresh = call(api, service.ensure_thread_store, "default", thread, [ids["owls.txt"]])
    assert fresh != vs  # an expired thread store is replaced, not extended
    assert c.delete(f"/v1/vector_stores/{vs}").json()["deleted"] is True
