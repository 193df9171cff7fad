"""Vector stores through the official SDK, unmodified: the poll helpers (``upload_and_poll``,
``create_and_poll``, ``file_batches.upload_and_poll``), store and file CRUD, and search with filters.

SDK 1.x (1.40.8 in scripts/test) keeps vector stores under ``client.beta`` and has no ``search`` or
``attributes``; 3.x has them at ``client.vector_stores``. The tests use the SDK's own methods where the
version has them and its generic ``client.post``/``client.get`` (same auth, same headers) where it does not.
"""

from __future__ import annotations

import re
import time
from typing import Any

import openai
import pytest

from .remote import E2E_MARKS, accepts, pages_with_data
from .runs_support import wait_for

pytestmark = E2E_MARKS

VS_ID = re.compile(r"^vs_[0-9A-Za-z]{24}$")
AUTO = {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}

DOCS = {
    "lighthouse.txt": b"The Fresnel lens of a lighthouse focuses the lamp into a beam visible for twenty miles.",
    "bread.md": b"# Sourdough\nWild yeast ferments the dough overnight; bake it in a Dutch oven.",
    "owls.txt": b"Owls hunt at night. Soft feathers make their flight almost silent.",
}


def stores(client: openai.OpenAI) -> Any:
    """The vector stores resource of this SDK version."""
    return client.vector_stores if hasattr(client, "vector_stores") else client.beta.vector_stores  # type: ignore[attr-defined, unused-ignore]


def search(client: openai.OpenAI, vector_store_id: str, **body: Any) -> list[dict[str, Any]]:
    """Search results as plain dicts, through ``vector_stores.search`` where the SDK has it."""
    api = stores(client)
    if hasattr(api, "search"):
        return [item.model_dump() for item in api.search(vector_store_id, **body)]
    page = client.post(f"/vector_stores/{vector_store_id}/search", body=body, cast_to=object)
    assert isinstance(page, dict) and page["object"] == "vector_store.search_results.page"
    return list(page["data"])


@pytest.fixture
def corpus(client: openai.OpenAI) -> str:
    """A store with the three documents, made by the batch upload helper."""
    store = stores(client).create(name="e2e corpus")
    batch = stores(client).file_batches.upload_and_poll(store.id, files=[(name, data) for name, data in DOCS.items()])
    assert batch.status == "completed" and batch.file_counts.completed == 3
    return str(store.id)


def test_upload_and_poll_one_file(client: openai.OpenAI) -> None:
    store = stores(client).create(name="one file", metadata={"suite": "e2e"})
    assert VS_ID.match(store.id) and store.status == "completed" and store.file_counts.total == 0

    started = time.monotonic()
    vs_file = stores(client).files.upload_and_poll(vector_store_id=store.id, file=("owls.txt", DOCS["owls.txt"]))
    elapsed = time.monotonic() - started

    assert vs_file.status == "completed" and vs_file.last_error is None
    assert vs_file.vector_store_id == store.id and vs_file.usage_bytes > 0
    assert vs_file.chunking_strategy is not None and vs_file.chunking_strategy.type == "static"
    assert vs_file.chunking_strategy.static.model_dump() == AUTO  # type: ignore[union-attr]
    assert elapsed < 30
    done = stores(client).retrieve(store.id)
    assert done.status == "completed" and done.file_counts.completed == 1 and done.usage_bytes == vs_file.usage_bytes
    assert done.metadata == {"suite": "e2e"}


def test_create_and_poll_with_static_chunking(client: openai.OpenAI) -> None:
    store = stores(client).create()
    uploaded = client.files.create(file=("lighthouse.txt", DOCS["lighthouse.txt"]), purpose="assistants")
    static = {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}}

    vs_file = stores(client).files.create_and_poll(uploaded.id, vector_store_id=store.id, chunking_strategy=static)  # type: ignore[arg-type]

    assert vs_file.id == uploaded.id and vs_file.status == "completed"
    assert vs_file.chunking_strategy.static.max_chunk_size_tokens == 200  # type: ignore[union-attr]


def test_the_create_response_says_when_to_poll_again(client: openai.OpenAI) -> None:
    store = stores(client).create()
    uploaded = client.files.create(file=("owls.txt", DOCS["owls.txt"]), purpose="assistants")

    raw = stores(client).files.with_raw_response.create(vector_store_id=store.id, file_id=uploaded.id)

    assert raw.parse().status == "in_progress"  # attaching only queues the file
    assert raw.headers["openai-poll-after-ms"] == "200"
    assert stores(client).files.poll(uploaded.id, vector_store_id=store.id).status == "completed"


def test_batch_create_and_poll_with_a_failed_file(client: openai.OpenAI) -> None:
    store = stores(client).create()
    good = client.files.create(file=("owls.txt", DOCS["owls.txt"]), purpose="assistants")
    bad = client.files.create(file=("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(64)), purpose="assistants")

    batch = stores(client).file_batches.create_and_poll(store.id, file_ids=[good.id, bad.id])

    assert batch.status == "completed"
    assert batch.file_counts.model_dump() == {"in_progress": 0, "completed": 1, "failed": 1, "cancelled": 0, "total": 2}
    failed = stores(client).files.retrieve(bad.id, vector_store_id=store.id)
    assert failed.status == "failed" and failed.last_error is not None
    assert failed.last_error.code == "unsupported_file" and "not supported" in failed.last_error.message
    listed = stores(client).file_batches.list_files(batch.id, vector_store_id=store.id, filter="completed")
    assert [f.id for f in listed.data] == [good.id]


def test_store_crud_and_paging(fresh_client: openai.OpenAI) -> None:
    api = stores(fresh_client)
    made = [api.create(name=f"store {i}") for i in range(5)]

    pages = pages_with_data(api.list(limit=2, order="asc"))
    assert [s.id for page in pages for s in page.data] == [s.id for s in made]
    assert [page.has_more for page in pages] == [True, True, False]

    updated = api.update(made[0].id, name="renamed", expires_after={"anchor": "last_active_at", "days": 3})
    assert updated.name == "renamed" and updated.expires_after is not None and updated.expires_after.days == 3
    assert updated.expires_at == updated.last_active_at + 3 * 86400

    deleted = api.delete(made[0].id)
    assert (deleted.id, deleted.deleted, deleted.object) == (made[0].id, True, "vector_store.deleted")
    with pytest.raises(openai.NotFoundError):
        api.retrieve(made[0].id)


def test_store_files_list_detach_and_content(client: openai.OpenAI, corpus: str) -> None:
    files = stores(client).files.list(vector_store_id=corpus)
    assert len(files.data) == 3 and {f.status for f in files.data} == {"completed"}
    owls = next(f for f in files.data if client.files.retrieve(f.id).filename == "owls.txt")

    content = client.get(f"/vector_stores/{corpus}/files/{owls.id}/content", cast_to=object)
    assert isinstance(content, dict)
    assert content["data"] == [{"type": "text", "text": DOCS["owls.txt"].decode()}]

    gone = stores(client).files.delete(owls.id, vector_store_id=corpus)
    assert gone.deleted is True and gone.object == "vector_store.file.deleted"
    assert stores(client).retrieve(corpus).file_counts.total == 2
    assert client.files.retrieve(owls.id).id == owls.id  # the File itself stays
    assert all(hit["filename"] != "owls.txt" for hit in search(client, corpus, query="silent owls at night"))


def test_search_ranks_and_scores(client: openai.OpenAI, corpus: str) -> None:
    hits = search(client, corpus, query="How far can the lamp's beam be seen?", max_num_results=2)

    assert len(hits) == 2
    assert hits[0]["filename"] == "lighthouse.txt"
    assert hits[0]["content"] == [{"type": "text", "text": DOCS["lighthouse.txt"].decode()}]
    assert 0 <= hits[1]["score"] <= hits[0]["score"] <= 1
    several = search(client, corpus, query=["sourdough oven", "owls"], max_num_results=2)
    assert sorted(h["filename"] for h in several) == ["bread.md", "owls.txt"]


def test_search_with_attribute_filters(client: openai.OpenAI) -> None:
    api = stores(client)
    store = api.create()
    attributes_of = [{"topic": "sea", "year": 1890}, {"topic": "food", "year": 2020}, {"topic": "birds", "year": 2021}]
    for (name, data), attributes in zip(DOCS.items(), attributes_of, strict=True):
        uploaded = client.files.create(file=(name, data), purpose="assistants")
        if accepts(api.files.create, "attributes"):
            api.files.create(vector_store_id=store.id, file_id=uploaded.id, attributes=attributes)
        else:  # SDK 1.40 predates attributes: the same field goes in the body
            api.files.create(vector_store_id=store.id, file_id=uploaded.id, extra_body={"attributes": attributes})
    wait_for("ingestion to finish", lambda: api.retrieve(store.id).file_counts.in_progress == 0, timeout=60)

    recent = search(client, store.id, query="anything at all", filters={"type": "gte", "key": "year", "value": 2020})
    assert sorted(h["filename"] for h in recent) == ["bread.md", "owls.txt"]
    sea, birds = ({"type": "eq", "key": "topic", "value": v} for v in ("sea", "birds"))
    either = {"type": "or", "filters": [sea, birds]}
    assert sorted(h["filename"] for h in search(client, store.id, query="x", filters=either)) == [
        "lighthouse.txt",
        "owls.txt",
    ]
    assert all(
        h["attributes"]["topic"] in ("sea", "birds") for h in search(client, store.id, query="x", filters=either)
    )
    with pytest.raises(openai.BadRequestError):
        search(client, store.id, query="x", filters={"type": "in", "key": "year", "value": 2020})


def test_assistant_and_thread_stores(client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("owls.txt", DOCS["owls.txt"]), purpose="assistants")
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_stores": [{"file_ids": [uploaded.id]}]}},
    )
    assert assistant.tool_resources is not None and assistant.tool_resources.file_search is not None
    [store_id] = assistant.tool_resources.file_search.vector_store_ids or []
    wait_for("the assistant's store", lambda: stores(client).retrieve(store_id).status == "completed", timeout=60)
    assert search(client, store_id, query="owls")[0]["file_id"] == uploaded.id
    with pytest.raises(openai.BadRequestError, match="No vector store found"):
        client.beta.threads.create(tool_resources={"file_search": {"vector_store_ids": ["vs_doesnotexist"]}})
