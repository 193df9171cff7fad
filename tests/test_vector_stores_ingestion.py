"""Ingestion through the API: every format (a non-ASCII PDF among them), failures, restarts that resume,
and embeddings from an OpenAI-compatible endpoint, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import query as sql_query
from file_search_support import (
    EmbeddingsServer,
    call,
    create_store,
    execute,
    make_docx,
    make_pdf,
    make_pptx,
    search,
    store_with,
    upload,
    wait_file,
    wait_store,
)
from starlette.testclient import TestClient

from assistantd.app import create_app
from assistantd.settings import load_settings

if TYPE_CHECKING:
    from conftest import Api, MakeApi

GREEK = "Η καλημέρα του φάρου"
PDF_PAGES = [
    f"Grüße aus Köln! {GREEK}. Русский текст: маяк светит ночью. Naïve café prices in €.",
    "Page two: the Zeppelin hangar at Friedrichshafen houses the airship museum.",
]


def formats() -> dict[str, bytes | str]:
    return {
        "notes.txt": "The quarterly offsite is in Lisbon; flights are booked through the travel desk.",
        "guide.md": "# Onboarding\n\n1. Request a laptop.\n2. Enable two-factor authentication on your account.",
        "page.html": "<html><head><title>Cafeteria</title></head><body><p>The cafeteria serves paella on Fridays."
        "</p><script>track()</script></body></html>",
        "config.json": json.dumps({"service": "billing", "retries": 5, "region": "eu-west-3"}),
        "people.csv": "name,role\nAda,engineer\nGrace,admiral\n",
        "tool.py": "def fibonacci(n: int) -> int:\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
        "travel.pdf": make_pdf(PDF_PAGES),
        "report.docx": make_docx(
            "Warehouse audit", ["Inventory of forklifts in Rotterdam."], [["item", "count"], ["forklift", "7"]]
        ),
        "deck.pptx": make_pptx(
            [("Launch plan", "Beta opens in March", "Mention the waitlist"), ("Budget", "Marketing spend doubles", "")]
        ),
    }  # fmt: skip


def test_every_format_is_ingested_and_searchable(api: Api) -> None:
    c = api.client
    vs, ids = store_with(c, formats())
    files = c.get(f"/v1/vector_stores/{vs}/files", params={"limit": 100}).json()["data"]
    assert {f["status"] for f in files} == {"completed"} and len(files) == 9
    expectations = {
        "Lisbon travel desk": "notes.txt",
        "two-factor authentication laptop": "guide.md",
        "paella Fridays": "page.html",
        "billing retries region": "config.json",
        "Grace admiral": "people.csv",
        "fibonacci recursion": "tool.py",
        "Zeppelin airship museum": "travel.pdf",
        "forklifts Rotterdam inventory": "report.docx",
        "marketing budget spend": "deck.pptx",
        "Köln": "travel.pdf",
        "καλημέρα φάρου": "travel.pdf",
        "маяк": "travel.pdf",
    }
    for query, expected in expectations.items():
        result = search(c, vs, query=query, max_num_results=1)
        assert [d["filename"] for d in result["data"]] == [expected], query
    pdf = c.get(f"/v1/vector_stores/{vs}/files/{ids['travel.pdf']}/content").json()
    # one item per page, every character intact (the PDF wraps long lines: compare words)
    assert [d["text"].split() for d in pdf["data"]] == [page.split() for page in PDF_PAGES]
    deck = c.get(f"/v1/vector_stores/{vs}/files/{ids['deck.pptx']}/content").json()
    assert deck["data"][0]["text"] == "Slide 1\nLaunch plan\nBeta opens in March\nNotes: Mention the waitlist"


def test_long_document_is_chunked_as_configured(api: Api) -> None:
    c = api.client
    text = " ".join(f"Sentence {i} of the long handbook describes procedure {i} in detail." for i in range(250))
    file_id = upload(c, "handbook.txt", text)
    static = {"type": "static", "static": {"max_chunk_size_tokens": 400, "chunk_overlap_tokens": 100}}
    vs = create_store(c, file_ids=[file_id], chunking_strategy=static)["id"]
    wait_store(c, vs)
    chunks = api.sql("SELECT text FROM vector_store_chunks WHERE vector_store_id = ? ORDER BY chunk_index", (vs,))
    auto = create_store(c, file_ids=[file_id])["id"]
    wait_store(c, auto)
    auto_chunks = api.count("vector_store_chunks", vector_store_id=auto)
    assert len(chunks) > auto_chunks > 2  # steps of 300 tokens against steps of 400
    assert chunks[0][0].startswith("Sentence 0 ") and chunks[-1][0].endswith("procedure 249 in detail.")
    assert all(text.find(row[0]) >= 0 for row in chunks)  # chunks are verbatim slices of the text
    result = search(c, vs, query="procedure 137", max_num_results=1)
    assert "procedure 137" in result["data"][0]["content"][0]["text"]


def test_failed_file_leaves_no_chunks(api: Api) -> None:
    c = api.client
    bad, good = upload(c, "scan.pdf", b"%PDF-1.5 corrupted"), upload(c, "ok.txt", "fine text")
    vs = create_store(c, file_ids=[bad, good])["id"]
    wait_store(c, vs)
    failed = c.get(f"/v1/vector_stores/{vs}/files/{bad}").json()
    assert failed["status"] == "failed" and failed["last_error"]["code"] == "invalid_file"
    assert "scan.pdf" in failed["last_error"]["message"]
    assert api.sql("SELECT DISTINCT file_id FROM vector_store_chunks") == [(good,)]
    assert c.get(f"/v1/vector_stores/{vs}/files/{bad}/content").json()["data"] == []


# --- restarts ------------------------------------------------------------------------------------


def queued_store(make_api: MakeApi, docs: dict[str, str]) -> tuple[Api, str]:
    """A store whose files are queued by a server that does not ingest."""
    api = make_api(ingest_workers=0)
    ids = [upload(api.client, name, text) for name, text in docs.items()]
    return api, create_store(api.client, file_ids=ids)["id"]


def test_a_file_left_in_progress_by_a_dead_server_is_processed_again(make_api: MakeApi) -> None:
    api, vs = queued_store(make_api, {"a.txt": "Alpha document about rivers.", "b.txt": "Beta document about lakes."})
    # As if a server had claimed the files and died mid-way: on SQLite its lease still looks valid
    # (start-up drops it, the database being embedded); on PostgreSQL it has lapsed.
    until = time.time() + (3600 if api.backend == "sqlite" else -1)
    execute(api, "UPDATE vector_store_files SET lease_owner = 'dead-server', lease_until = ?, attempts = 1", (until,))
    restarted = make_api()
    done = wait_store(restarted.client, vs)
    assert done["file_counts"] == {"in_progress": 0, "completed": 2, "failed": 0, "cancelled": 0, "total": 2}
    assert sorted(api.sql("SELECT attempts, lease_owner FROM vector_store_files")) == [(2, None), (2, None)]
    assert api.count("vector_store_chunks", vector_store_id=vs) == 2


def test_a_file_that_keeps_stopping_its_server_fails_instead_of_looping(make_api: MakeApi) -> None:
    api, vs = queued_store(make_api, {"a.txt": "Gamma document."})
    execute(
        api, "UPDATE vector_store_files SET lease_owner = 'dead', lease_until = ?, attempts = 3", (time.time() - 1,)
    )
    worker = make_api()
    file_id = worker.client.get(f"/v1/vector_stores/{vs}/files").json()["data"][0]["id"]
    done = wait_file(worker.client, vs, file_id)
    assert done["status"] == "failed" and done["last_error"]["code"] == "server_error"
    assert "Processing stopped 3 times" in done["last_error"]["message"]


def test_a_file_deleted_while_queued_is_never_processed(make_api: MakeApi) -> None:
    api, vs = queued_store(make_api, {"a.txt": "Delta document."})
    file_id = api.client.get(f"/v1/vector_stores/{vs}/files").json()["data"][0]["id"]
    assert api.client.delete(f"/v1/files/{file_id}").json()["deleted"] is True
    worker = make_api()
    assert wait_store(worker.client, vs)["file_counts"]["total"] == 0
    assert api.count("vector_store_chunks") == 0


# --- embeddings from an endpoint -----------------------------------------------------------------


@pytest.fixture
def embeddings_server() -> Iterator[EmbeddingsServer]:
    with EmbeddingsServer() as server:
        yield server


def test_embeddings_from_an_openai_compatible_endpoint(make_api: MakeApi, embeddings_server: EmbeddingsServer) -> None:
    api = make_api(
        embedding_base_url=embeddings_server.base_url, embedding_model="test-embed", embedding_api_key="sk-e"
    )
    vs, _ = store_with(api.client, {"x.txt": "xylophone xerox xenon", "q.txt": "quiet quilt quartz"})
    assert set(api.sql("SELECT DISTINCT model, dims FROM vector_store_chunks")) == {("openai:test-embed", 26)}
    assert embeddings_server.requests and embeddings_server.requests[0]["auth"] == "Bearer sk-e"
    service = api.app.state.services.vector_stores
    hits = call(api, service.search, "default", [vs], ["xxxx"], max_num_results=1, modes=("vector",))
    assert [h.filename for h in hits] == ["x.txt"]  # by letters alone: no keyword matches "xxxx"
    if api.backend == "postgres":
        assert api.sql("SELECT count(*) FROM pg_indexes WHERE indexname = 'vector_store_chunks_hnsw_26'") == [(1,)]


def test_vectors_of_another_model_are_never_compared(make_api: MakeApi, embeddings_server: EmbeddingsServer) -> None:
    local = make_api()
    vs, _ = store_with(local.client, {"m.txt": "Marmalade is made from bitter oranges."})
    remote = make_api(embedding_base_url=embeddings_server.base_url, embedding_model="test-embed")
    result = search(remote.client, vs, query="marmalade oranges")
    assert [d["filename"] for d in result["data"]] == ["m.txt"]  # found by keywords; no 384-vs-26 mix-up
    service = remote.app.state.services.vector_stores
    assert call(remote, service.search, "default", [vs], ["marmalade"], max_num_results=3, modes=("vector",)) == []


def test_endpoint_failure_fails_the_file_with_server_error(
    make_api: MakeApi, embeddings_server: EmbeddingsServer
) -> None:
    api = make_api(embedding_base_url=embeddings_server.base_url, embedding_model="test-embed")
    embeddings_server.fail_next = 100
    file_id = upload(api.client, "a.txt", "anything")
    vs = create_store(api.client, file_ids=[file_id])["id"]
    done = wait_file(api.client, vs, file_id)
    assert done["status"] == "failed" and done["last_error"]["code"] == "server_error"
    assert "503" in done["last_error"]["message"]


def test_status_of_every_file_is_final_after_shutdown(database_url: str, tmp_path: Path, make_api: MakeApi) -> None:
    """Stopping a server mid-ingestion leaves nothing half-written: a file is in progress (to be resumed) or
    completed with all its chunks, never completed with some."""
    settings = load_settings(overrides={"data_dir": str(tmp_path / "data"), "database_url": database_url}, environ={})
    text = " ".join(f"Line {i} of a long file about harbour cranes and container logistics." for i in range(150))
    auth = {"Authorization": "Bearer sk-x"}
    with TestClient(create_app(settings), base_url="http://localhost", headers=auth) as client:
        ids = [upload(client, f"big{i}.txt", text) for i in range(2)]
        vs = create_store(client, file_ids=ids)["id"]
    # the server has shut down, whatever it was doing
    for seq, status in sql_query(database_url, "SELECT seq, status FROM vector_store_files"):
        chunks = sql_query(database_url, "SELECT count(*) FROM vector_store_chunks WHERE vsf_seq = ?", (seq,))[0][0]
        assert status in ("in_progress", "completed")
        assert (chunks > 0) == (status == "completed")
    again = make_api()
    assert wait_store(again.client, vs)["file_counts"]["completed"] == 2


def test_search_falls_back_to_keywords_when_the_endpoint_fails(
    make_api: MakeApi, embeddings_server: EmbeddingsServer, caplog: pytest.LogCaptureFixture
) -> None:
    api = make_api(embedding_base_url=embeddings_server.base_url, embedding_model="test-embed")
    vs, _ = store_with(api.client, {"k.txt": "kumquats grow in Kyoto", "o.txt": "olives grow in Sevilla"})
    embeddings_server.fail_next = 100
    with caplog.at_level("WARNING", logger="assistantd.vector_stores"):
        result = search(api.client, vs, query="kumquats")
    assert [d["filename"] for d in result["data"]] == ["k.txt"]
    assert any("searching by keywords alone" in r.getMessage() for r in caplog.records)
