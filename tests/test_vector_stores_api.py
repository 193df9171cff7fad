"""/v1/vector_stores: stores, their files and file batches, on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from file_search_support import create_store, upload, wait_file, wait_store
from starlette.testclient import TestClient

if TYPE_CHECKING:
    from conftest import Api, MakeApi

VS_RE = re.compile(r"^vs_[A-Za-z0-9]{24}$")
BATCH_RE = re.compile(r"^vsfb_[A-Za-z0-9]{24}$")
AUTO = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}
ZERO = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0}
DOC = "Lighthouses guide ships with rotating lamps. The Fresnel lens focuses the light into a beam."


def vs_object(obj: dict[str, Any], conforms: Any) -> None:
    """Every field of the spec's VectorStoreObject is there (expires_after only when set, as in the spec)."""
    expected = {"id", "object", "created_at", "name", "description", "usage_bytes", "file_counts", "status",
                "expires_after", "expires_at", "last_active_at", "metadata"}  # fmt: skip
    assert set(obj) == expected
    conforms(
        {k: v for k, v in obj.items() if not (k in ("expires_after", "description") and v is None)}, "VectorStoreObject"
    )
    assert VS_RE.match(obj["id"]) and obj["object"] == "vector_store"


# --- stores --------------------------------------------------------------------------------------


def test_create_an_empty_store_with_defaults(client: TestClient, conforms: Any) -> None:
    r = client.post("/v1/vector_stores", json={})
    assert r.status_code == 200, r.text
    obj = r.json()
    vs_object(obj, conforms)
    assert obj["name"] == "" and obj["description"] is None and obj["metadata"] == {}
    assert obj["file_counts"] == ZERO and obj["usage_bytes"] == 0 and obj["status"] == "completed"
    assert obj["expires_after"] is None and obj["expires_at"] is None
    assert obj["last_active_at"] == obj["created_at"]
    assert "openai-poll-after-ms" not in r.headers
    assert client.get(f"/v1/vector_stores/{obj['id']}").json() == obj
    assert client.post("/v1/vector_stores").status_code == 200  # no body at all


def test_create_with_files_is_in_progress_then_completed(client: TestClient, conforms: Any) -> None:
    a, b = upload(client, "a.txt", DOC), upload(client, "b.md", "# Bees\nBees make honey from nectar.")
    body = {
        "name": "Support FAQ",
        "description": "Questions people ask",
        "file_ids": [a, b],
        "expires_after": {"anchor": "last_active_at", "days": 7},
        "metadata": {"team": "docs"},
    }
    r = client.post("/v1/vector_stores", json=body)
    assert r.status_code == 200, r.text
    created = r.json()
    vs_object(created, conforms)
    assert created["name"] == "Support FAQ" and created["description"] == "Questions people ask"
    assert created["metadata"] == {"team": "docs"}
    assert created["expires_after"] == {"anchor": "last_active_at", "days": 7}
    assert created["expires_at"] == created["last_active_at"] + 7 * 86400
    assert created["file_counts"]["total"] == 2
    if created["status"] == "in_progress":  # ingestion is in the background: the poll header says when to look again
        assert r.headers["openai-poll-after-ms"] == "200"
    done = wait_store(client, created["id"])
    vs_object(done, conforms)
    assert done["status"] == "completed"
    assert done["file_counts"] == {"in_progress": 0, "completed": 2, "failed": 0, "cancelled": 0, "total": 2}
    assert done["usage_bytes"] > len(DOC)


def test_ingestion_never_happens_in_the_request(make_api: MakeApi) -> None:
    api = make_api(ingest_workers=0)  # this server processes no files: they stay queued
    c = api.client
    store = create_store(c, file_ids=[upload(c, "a.txt", DOC)])
    assert store["status"] == "in_progress" and store["file_counts"]["in_progress"] == 1
    assert c.get(f"/v1/vector_stores/{store['id']}").json()["status"] == "in_progress"
    other = make_api()  # a server that does ingest picks the queued file up
    assert wait_store(other.client, store["id"])["file_counts"]["completed"] == 1


def test_list_stores_pages_with_live_counts(client: TestClient, conforms: Any) -> None:
    ids = [create_store(client, name=f"s{i}")["id"] for i in range(5)]
    file_id = upload(client, "a.txt", DOC)
    client.post(f"/v1/vector_stores/{ids[2]}/files", json={"file_id": file_id})
    wait_store(client, ids[2])
    page = client.get("/v1/vector_stores", params={"limit": 2}).json()
    assert [o["id"] for o in page["data"]] == [ids[4], ids[3]] and page["has_more"] is True
    conforms(page, {"type": "object", "required": ["object", "data", "first_id", "last_id", "has_more"]})
    page = client.get("/v1/vector_stores", params={"limit": 2, "after": page["last_id"]}).json()
    assert [o["id"] for o in page["data"]] == [ids[2], ids[1]]
    assert page["data"][0]["file_counts"]["completed"] == 1 and page["data"][0]["usage_bytes"] > 0
    asc = client.get("/v1/vector_stores", params={"order": "asc"}).json()
    assert [o["id"] for o in asc["data"]] == ids and asc["has_more"] is False
    for o in asc["data"]:
        vs_object(o, conforms)


def test_modify_name_metadata_and_expiry(client: TestClient, expect_error: Any) -> None:
    store = create_store(client, name="old", metadata={"a": "1"})
    vs = store["id"]
    r = client.post(
        f"/v1/vector_stores/{vs}", json={"name": "new", "expires_after": {"anchor": "last_active_at", "days": 2}}
    )
    assert r.status_code == 200, r.text
    obj = r.json()
    assert obj["name"] == "new" and obj["metadata"] == {"a": "1"}
    assert obj["expires_at"] == obj["last_active_at"] + 2 * 86400
    obj = client.post(f"/v1/vector_stores/{vs}", json={"expires_after": None, "metadata": {"b": "2"}}).json()
    assert obj["expires_after"] is None and obj["expires_at"] is None and obj["metadata"] == {"b": "2"}
    assert client.get(f"/v1/vector_stores/{vs}").json() == obj
    expect_error(client.post("/v1/vector_stores/vs_nope", json={"name": "x"}), 404,
                 message="No vector store found with id 'vs_nope'.")  # fmt: skip
    expect_error(
        client.post(f"/v1/vector_stores/{vs}", json={"file_ids": []}), 400, code="unknown_parameter", param="file_ids"
    )


def test_delete_store_removes_its_files_batches_and_index(api: Api, expect_error: Any) -> None:
    c = api.client
    file_id = upload(c, "a.txt", DOC)
    store = create_store(c, file_ids=[file_id])
    c.post(f"/v1/vector_stores/{store['id']}/file_batches", json={"file_ids": [file_id]})
    wait_store(c, store["id"])
    assert api.count("vector_store_chunks", vector_store_id=store["id"]) > 0
    r = c.delete(f"/v1/vector_stores/{store['id']}")
    assert r.json() == {"id": store["id"], "object": "vector_store.deleted", "deleted": True}
    expect_error(c.get(f"/v1/vector_stores/{store['id']}"), 404)
    expect_error(c.delete(f"/v1/vector_stores/{store['id']}"), 404)
    assert api.count("vector_store_chunks") == 0
    assert api.count("vector_store_files") == 0 and api.count("vector_store_file_batches") == 0
    if api.backend == "sqlite":
        assert api.sql("SELECT count(*) FROM vector_store_chunks_fts")[0][0] == 0
    assert c.get(f"/v1/files/{file_id}").status_code == 200  # the File itself stays


def test_create_validation(client: TestClient, expect_error: Any) -> None:
    def post(body: Any) -> Any:
        return client.post("/v1/vector_stores", json=body)

    expect_error(
        post({"file_ids": ["file-nope"]}), 400, param="file_ids[0]", message="No file found with id 'file-nope'."
    )
    expect_error(post({"file_ids": ["nope"]}), 400, param="file_ids[0]", code="invalid_value")
    expect_error(post({"expires_after": {"anchor": "last_active_at", "days": 0}}), 400, param="expires_after.days")
    expect_error(post({"expires_after": {"anchor": "created_at", "days": 1}}), 400, param="expires_after.anchor")
    expect_error(
        post(
            {
                "chunking_strategy": {
                    "type": "static",
                    "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0},
                }
            }
        ),
        400,
        param="chunking_strategy.static.max_chunk_size_tokens",
        code="integer_below_min_value",
    )
    expect_error(
        post(
            {
                "chunking_strategy": {
                    "type": "static",
                    "static": {"max_chunk_size_tokens": 400, "chunk_overlap_tokens": 201},
                }
            }
        ),
        400,
        param="chunking_strategy.static.chunk_overlap_tokens",
        contains=("more than half",),
    )
    expect_error(post({"chunking_strategy": {"type": "fancy"}}), 400, param="chunking_strategy.type")
    expect_error(post({"name": 5}), 400, param="name", code="invalid_type")
    expect_error(post({"metadata": {"k": "v" * 513}}), 400, code="string_above_max_length")
    expect_error(post({"file_ids": [f"file-{i}" for i in range(501)]}), 400, code="array_above_max_length")
    assert client.get("/v1/vector_stores").json()["data"] == []  # nothing was created


# --- files in a store ----------------------------------------------------------------------------


def test_add_file_with_chunking_and_attributes(client: TestClient, conforms: Any) -> None:
    vs = create_store(client)["id"]
    file_id = upload(client, "notes.txt", DOC)
    chunking = {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}}
    attrs = {"author": "ada", "year": 2024, "score": 4.5, "public": True}
    r = client.post(
        f"/v1/vector_stores/{vs}/files", json={"file_id": file_id, "chunking_strategy": chunking, "attributes": attrs}
    )
    assert r.status_code == 200, r.text
    obj = r.json()
    conforms(obj, "VectorStoreFileObject")
    assert obj["id"] == file_id and obj["object"] == "vector_store.file" and obj["vector_store_id"] == vs
    assert obj["chunking_strategy"] == chunking and obj["attributes"] == attrs and obj["last_error"] is None
    done = wait_file(client, vs, file_id)
    conforms(done, "VectorStoreFileObject")
    assert done["status"] == "completed" and done["usage_bytes"] > 0
    assert done["chunking_strategy"] == chunking and done["attributes"] == attrs
    store = client.get(f"/v1/vector_stores/{vs}").json()
    assert store["usage_bytes"] == done["usage_bytes"]


def test_auto_chunking_is_reported_as_800_and_400(client: TestClient) -> None:
    vs = create_store(client)["id"]
    file_id = upload(client, "a.txt", DOC)
    obj = client.post(
        f"/v1/vector_stores/{vs}/files", json={"file_id": file_id, "chunking_strategy": {"type": "auto"}}
    ).json()
    assert obj["chunking_strategy"] == AUTO and obj["attributes"] == {}


def test_list_files_with_status_filter_and_paging(client: TestClient, expect_error: Any) -> None:
    good = [upload(client, f"g{i}.txt", f"{DOC} {i}") for i in range(3)]
    bad = upload(client, "image.png", b"\x89PNG\r\n\x1a\n" + bytes(100))
    vs = create_store(client, file_ids=[*good, bad])["id"]
    wait_store(client, vs)
    listing = client.get(f"/v1/vector_stores/{vs}/files", params={"order": "asc"}).json()
    assert [o["id"] for o in listing["data"]] == [*good, bad]
    failed = client.get(f"/v1/vector_stores/{vs}/files", params={"filter": "failed"}).json()
    assert [o["id"] for o in failed["data"]] == [bad]
    completed = client.get(f"/v1/vector_stores/{vs}/files", params={"filter": "completed", "limit": 2}).json()
    assert [o["id"] for o in completed["data"]] == [good[2], good[1]] and completed["has_more"] is True
    rest = client.get(
        f"/v1/vector_stores/{vs}/files", params={"filter": "completed", "after": completed["last_id"]}
    ).json()
    assert [o["id"] for o in rest["data"]] == [good[0]] and rest["has_more"] is False
    assert client.get(f"/v1/vector_stores/{vs}/files", params={"filter": "cancelled"}).json()["data"] == []
    expect_error(client.get(f"/v1/vector_stores/{vs}/files", params={"filter": "done"}), 400, param="filter")
    expect_error(client.get("/v1/vector_stores/vs_nope/files"), 404)


def test_failed_file_says_why(client: TestClient, conforms: Any) -> None:
    vs = create_store(client)["id"]
    for name, data, code in [
        ("picture.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "unsupported_file"),
        ("broken.pdf", b"%PDF-1.7 not really", "invalid_file"),
        ("empty.txt", b"", "invalid_file"),
    ]:
        file_id = upload(client, name, data)
        client.post(f"/v1/vector_stores/{vs}/files", json={"file_id": file_id})
        done = wait_file(client, vs, file_id)
        conforms(done, "VectorStoreFileObject")
        assert done["status"] == "failed" and done["usage_bytes"] == 0
        assert done["last_error"]["code"] == code and name.split(".")[0] in done["last_error"]["message"] + name
        assert done["last_error"]["message"]
    store = wait_store(client, vs)
    assert store["file_counts"] == {"in_progress": 0, "completed": 0, "failed": 3, "cancelled": 0, "total": 3}
    assert store["status"] == "completed"


def test_adding_a_file_again_keeps_it_or_processes_it_again(client: TestClient) -> None:
    vs = create_store(client)["id"]
    file_id = upload(client, "a.txt", DOC)
    client.post(f"/v1/vector_stores/{vs}/files", json={"file_id": file_id})
    first = wait_file(client, vs, file_id)
    again = client.post(f"/v1/vector_stores/{vs}/files", json={"file_id": file_id, "attributes": {"v": 2}}).json()
    assert again["status"] == "completed" and again["attributes"] == {"v": 2}
    assert again["created_at"] == first["created_at"]
    static = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
    redo = client.post(f"/v1/vector_stores/{vs}/files", json={"file_id": file_id, "chunking_strategy": static}).json()
    assert redo["chunking_strategy"] == static
    assert wait_file(client, vs, file_id)["status"] == "completed"
    listing = client.get(f"/v1/vector_stores/{vs}/files").json()["data"]
    assert [o["id"] for o in listing] == [file_id]


def test_retrieve_update_and_delete_a_store_file(api: Api, conforms: Any, expect_error: Any) -> None:
    c = api.client
    file_id = upload(c, "a.txt", DOC)
    vs = create_store(c, file_ids=[file_id])["id"]
    wait_store(c, vs)
    r = c.post(f"/v1/vector_stores/{vs}/files/{file_id}", json={"attributes": {"lang": "en", "n": 1}})
    assert r.status_code == 200, r.text
    conforms(r.json(), "VectorStoreFileObject")
    assert r.json()["attributes"] == {"lang": "en", "n": 1}
    assert c.get(f"/v1/vector_stores/{vs}/files/{file_id}").json()["attributes"] == {"lang": "en", "n": 1}
    assert c.post(f"/v1/vector_stores/{vs}/files/{file_id}", json={"attributes": None}).json()["attributes"] == {}
    expect_error(c.post(f"/v1/vector_stores/{vs}/files/{file_id}", json={}), 400, code="missing_required_parameter")
    expect_error(
        c.post(f"/v1/vector_stores/{vs}/files/{file_id}", json={"attributes": {f"k{i}": i for i in range(17)}}),
        400,
        code="object_above_max_properties",
    )
    expect_error(
        c.post(f"/v1/vector_stores/{vs}/files/{file_id}", json={"attributes": {"k": [1]}}), 400, param="attributes.k"
    )
    r = c.delete(f"/v1/vector_stores/{vs}/files/{file_id}")
    assert r.json() == {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}
    expect_error(c.get(f"/v1/vector_stores/{vs}/files/{file_id}"), 404,
                 message=f"No file found with id '{file_id}' in vector store '{vs}'.")  # fmt: skip
    assert api.count("vector_store_chunks") == 0
    assert c.get(f"/v1/files/{file_id}").status_code == 200  # detaching keeps the File
    assert c.get(f"/v1/vector_stores/{vs}").json()["file_counts"]["total"] == 0


def test_file_content_is_the_parsed_text(client: TestClient, conforms: Any, expect_error: Any) -> None:
    file_id = upload(
        client, "page.html", "<html><body><h1>Title</h1><p>Body text</p><script>x()</script></body></html>"
    )
    vs = create_store(client, file_ids=[file_id])["id"]
    wait_store(client, vs)
    r = client.get(f"/v1/vector_stores/{vs}/files/{file_id}/content")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "object": "vector_store.file_content.page",
        "data": [{"type": "text", "text": "Title\n\nBody text"}],
        "has_more": False,
        "next_page": None,
    }
    conforms(r.json(), "VectorStoreFileContentResponse")
    expect_error(client.get(f"/v1/vector_stores/{vs}/files/file-nope/content"), 404)


def test_adding_files_checks_them(client: TestClient, expect_error: Any) -> None:
    vs = create_store(client)["id"]
    expect_error(client.post(f"/v1/vector_stores/{vs}/files", json={"file_id": "file-nope"}), 400, param="file_id")
    expect_error(client.post(f"/v1/vector_stores/{vs}/files", json={}), 400, code="missing_required_parameter")
    expect_error(client.post("/v1/vector_stores/vs_nope/files", json={"file_id": "file-x"}), 404)
    long_value = {"attributes": {"k": "v" * 513}, "file_id": upload(client, "a.txt", "x")}
    expect_error(client.post(f"/v1/vector_stores/{vs}/files", json=long_value), 400, code="string_above_max_length")


# --- file batches --------------------------------------------------------------------------------


def test_batch_with_file_ids_has_live_counts(client: TestClient, conforms: Any) -> None:
    vs = create_store(client)["id"]
    ids = [upload(client, f"d{i}.txt", f"Document {i}: {DOC}") for i in range(3)]
    attrs = {"source": "batch"}
    r = client.post(f"/v1/vector_stores/{vs}/file_batches", json={"file_ids": ids, "attributes": attrs})
    assert r.status_code == 200, r.text
    batch = r.json()
    conforms(batch, "VectorStoreFileBatchObject")
    assert BATCH_RE.match(batch["id"]) and batch["object"] == "vector_store.files_batch"
    assert batch["vector_store_id"] == vs and batch["file_counts"]["total"] == 3
    if batch["file_counts"]["in_progress"]:
        assert r.headers["openai-poll-after-ms"] == "200"
    wait_store(client, vs)
    done = client.get(f"/v1/vector_stores/{vs}/file_batches/{batch['id']}")
    conforms(done.json(), "VectorStoreFileBatchObject")
    assert done.json()["status"] == "completed" and "openai-poll-after-ms" not in done.headers
    assert done.json()["file_counts"] == {"in_progress": 0, "completed": 3, "failed": 0, "cancelled": 0, "total": 3}
    files = client.get(f"/v1/vector_stores/{vs}/file_batches/{batch['id']}/files", params={"order": "asc"}).json()
    assert [f["id"] for f in files["data"]] == ids
    assert all(f["attributes"] == attrs for f in files["data"])
    filtered = client.get(f"/v1/vector_stores/{vs}/file_batches/{batch['id']}/files", params={"filter": "failed"})
    assert filtered.json()["data"] == []


def test_batch_with_files_gives_each_its_own_settings(client: TestClient) -> None:
    vs = create_store(client)["id"]
    a, b = upload(client, "a.txt", DOC), upload(client, "b.txt", DOC)
    static = {"type": "static", "static": {"max_chunk_size_tokens": 300, "chunk_overlap_tokens": 100}}
    body = {
        "files": [
            {"file_id": a, "attributes": {"n": 1}, "chunking_strategy": static},
            {"file_id": b, "attributes": {"n": 2}},
        ]
    }
    batch = client.post(f"/v1/vector_stores/{vs}/file_batches", json=body).json()
    wait_store(client, vs)
    fa = client.get(f"/v1/vector_stores/{vs}/files/{a}").json()
    fb = client.get(f"/v1/vector_stores/{vs}/files/{b}").json()
    assert (fa["attributes"], fa["chunking_strategy"]) == ({"n": 1}, static)
    assert (fb["attributes"], fb["chunking_strategy"]) == ({"n": 2}, AUTO)
    assert client.get(f"/v1/vector_stores/{vs}/file_batches/{batch['id']}").json()["file_counts"]["completed"] == 2


def test_batch_validation(client: TestClient, expect_error: Any) -> None:
    vs = create_store(client)["id"]
    file_id = upload(client, "a.txt", DOC)
    url = f"/v1/vector_stores/{vs}/file_batches"
    expect_error(client.post(url, json={}), 400, contains=("exactly one of 'file_ids' or 'files'",))
    expect_error(client.post(url, json={"file_ids": [file_id], "files": [{"file_id": file_id}]}), 400)
    expect_error(client.post(url, json={"file_ids": []}), 400, code="empty_array", param="file_ids")
    expect_error(client.post(url, json={"file_ids": [file_id, "file-nope"]}), 400, param="file_ids[1]")
    expect_error(
        client.post(url, json={"files": [{"file_id": file_id}, {"file_id": "file-nope"}]}),
        400,
        param="files[1].file_id",
    )
    expect_error(client.post("/v1/vector_stores/vs_nope/file_batches", json={"file_ids": [file_id]}), 404)
    expect_error(client.get(f"{url}/vsfb_nope"), 404, message="No vector store file batch found with id 'vsfb_nope'.")
    assert client.get(f"/v1/vector_stores/{vs}/files").json()["data"] == []  # nothing was added


def test_cancel_a_batch_in_progress(make_api: MakeApi, conforms: Any, expect_error: Any) -> None:
    api = make_api(ingest_workers=0)  # nothing is processed, so the batch is surely still in progress
    c = api.client
    vs = create_store(c)["id"]
    ids = [upload(c, f"d{i}.txt", DOC) for i in range(2)]
    batch = c.post(f"/v1/vector_stores/{vs}/file_batches", json={"file_ids": ids}).json()
    assert batch["status"] == "in_progress" and batch["file_counts"]["in_progress"] == 2
    r = c.post(f"/v1/vector_stores/{vs}/file_batches/{batch['id']}/cancel")
    assert r.status_code == 200, r.text
    conforms(r.json(), "VectorStoreFileBatchObject")
    assert r.json()["status"] == "cancelled"
    assert r.json()["file_counts"] == {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 2, "total": 2}
    assert c.post(f"/v1/vector_stores/{vs}/file_batches/{batch['id']}/cancel").json()["status"] == "cancelled"
    cancelled = c.get(f"/v1/vector_stores/{vs}/file_batches/{batch['id']}/files", params={"filter": "cancelled"})
    assert sorted(f["id"] for f in cancelled.json()["data"]) == sorted(ids)
    assert c.get(f"/v1/vector_stores/{vs}").json()["file_counts"]["cancelled"] == 2
    # a server that ingests finds nothing left to do for them
    worker = make_api()
    assert wait_store(worker.client, vs)["file_counts"]["cancelled"] == 2


def test_cancel_a_finished_batch_is_refused(client: TestClient, expect_error: Any) -> None:
    vs = create_store(client)["id"]
    batch = client.post(
        f"/v1/vector_stores/{vs}/file_batches", json={"file_ids": [upload(client, "a.txt", DOC)]}
    ).json()
    wait_store(client, vs)
    expect_error(client.post(f"/v1/vector_stores/{vs}/file_batches/{batch['id']}/cancel"), 400,
                 message="Cannot cancel a file batch with status 'completed'.")  # fmt: skip


# --- projects ------------------------------------------------------------------------------------


def test_stores_belong_to_their_project(make_api: MakeApi, expect_error: Any) -> None:
    api = make_api(api_keys="sk-one-0123456789:p1,sk-two-0123456789:p2", key="sk-one-0123456789")
    mine = create_store(api.client, file_ids=[upload(api.client, "a.txt", DOC)])
    wait_store(api.client, mine["id"])
    other = TestClient(api.app, base_url="http://localhost", headers={"Authorization": "Bearer sk-two-0123456789"})
    expect_error(other.get(f"/v1/vector_stores/{mine['id']}"), 404)
    expect_error(other.post(f"/v1/vector_stores/{mine['id']}/search", json={"query": "lamp"}), 404)
    expect_error(other.get(f"/v1/vector_stores/{mine['id']}/files"), 404)
    assert other.get("/v1/vector_stores").json()["data"] == []
    foreign_file = upload(other, "b.txt", DOC)
    expect_error(
        api.client.post(f"/v1/vector_stores/{mine['id']}/files", json={"file_id": foreign_file}), 400, param="file_id"
    )
