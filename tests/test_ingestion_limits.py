"""Hostile files for file search: each is built here (never shipped), fails with ``invalid_file`` and a
message naming the limit it passed, costs the server no memory (parsing happens in a reader process
with its own limit), and holds up no other file; on SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import query
from file_search_support import create_store, make_docx, make_pptx, upload, wait_file, wait_store
from starlette.testclient import TestClient

from assistantd.app import create_app
from assistantd.settings import load_settings
from assistantd.tools.file_search.parse import html_to_text

if TYPE_CHECKING:
    from conftest import Api, MakeApi

KEYS = "key-a:proj_a,key-b:proj_b"


# --- hostile files -------------------------------------------------------------------------------


def _rewrite_zip(data: bytes, name: str, write: Any) -> bytes:
    """A copy of the office file ``data`` whose member ``name`` is streamed out by ``write(stream)``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename == name:
                member = zipfile.ZipInfo(name)
                member.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(member, "w", force_zip64=True) as stream:
                    write(stream)
            else:
                dst.writestr(info, src.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


@pytest.fixture(scope="module")
def zip_bomb_docx() -> bytes:
    """A Word document under 1 MB whose word/document.xml unpacks to 286 MB of paragraphs."""
    base = make_docx("Bomb", ["x"], [])
    xml = zipfile.ZipFile(io.BytesIO(base)).read("word/document.xml").decode()
    head, tail = xml.split("<w:body>", 1)
    paragraph = b"<w:p><w:r><w:t>" + b"boom " * 200 + b"</w:t></w:r></w:p>"
    target = 286 * 1024 * 1024

    def write(stream: Any) -> None:
        stream.write((head + "<w:body>").encode())
        written = 0
        block = paragraph * 256
        while written < target:
            stream.write(block)
            written += len(block)
        stream.write(tail.encode())

    docx = _rewrite_zip(base, "word/document.xml", write)
    assert len(docx) < 1024 * 1024
    return docx


@pytest.fixture(scope="module")
def many_shapes_pptx() -> bytes:
    """A deck whose one slide holds 100,000 text shapes (tens of MB of XML in a small file)."""
    base = make_pptx([("Shapes", "body", "")])
    xml = zipfile.ZipFile(io.BytesIO(base)).read("ppt/slides/slide1.xml").decode()
    head, tail = xml.split("</p:spTree>", 1)
    shape = (
        b'<p:sp><p:nvSpPr><p:cNvPr id="9" name="s"/><p:cNvSpPr/><p:nvPr/></p:nvSpPr><p:spPr/>'
        b"<p:txBody><a:bodyPr/><a:p><a:r><a:t>shape</a:t></a:r></a:p></p:txBody></p:sp>"
    )

    def write(stream: Any) -> None:
        stream.write(head.encode())
        for _ in range(100):
            stream.write(shape * 1000)
        stream.write(b"</p:spTree>" + tail.encode())

    return _rewrite_zip(base, "ppt/slides/slide1.xml", write)


QUADRATIC_HTML = "<a" * 125_000  # 250 KB: html.parser rescans the rest from every "<" (minutes)


def big_csv(path: Path, chars: int) -> Path:
    """A CSV of short lines, written a block at a time (never held in memory)."""
    line = "7,ok\n"
    block = line * 100_000
    with path.open("w") as fh:
        written = 0
        while written <= chars:
            fh.write(block)
            written += len(block)
    return path


# --- helpers -------------------------------------------------------------------------------------


def failed_with(api: Api, vs: str, file_id: str) -> dict[str, Any]:
    done = wait_file(api.client, vs, file_id)
    assert done["status"] == "failed", done
    error = done["last_error"]
    assert error["code"] == "invalid_file", error
    assert api.count("vector_store_chunks", vector_store_id=vs) == 0
    return dict(error)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The largest resident size of this process (the server runs in it) while the block runs."""

    def __init__(self) -> None:
        self.base = rss_bytes()
        self.peak = self.base
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


# --- limits --------------------------------------------------------------------------------------


def test_zip_bomb_docx_is_refused_from_its_zip_directory(api: Api, zip_bomb_docx: bytes) -> None:
    c = api.client
    file_id = upload(c, "bomb.docx", zip_bomb_docx)
    vs = create_store(c, file_ids=[file_id])["id"]
    with PeakRss() as rss:
        error = failed_with(api, vs, file_id)
    assert "ingest_max_unzipped_mb" in error["message"] and "bomb.docx" in error["message"]
    assert "not opened" in error["message"]
    assert rss.peak - rss.base < 100 * 1024 * 1024


def test_deck_of_100k_shapes_is_refused_by_its_zip_ratio(api: Api, many_shapes_pptx: bytes) -> None:
    c = api.client
    file_id = upload(c, "shapes.pptx", many_shapes_pptx)
    vs = create_store(c, file_ids=[file_id])["id"]
    error = failed_with(api, vs, file_id)
    assert "ingest_max_zip_ratio" in error["message"] and "ppt/slides/slide1.xml" in error["message"]


def test_reader_is_stopped_by_its_own_memory_limit_not_the_server(make_api: MakeApi, zip_bomb_docx: bytes) -> None:
    # The zip checks off: the 286 MB of XML reach the parser, in a reader capped at 300 MB.
    api = make_api(ingest_max_unzipped_mb=100_000, ingest_max_zip_ratio=1_000_000, ingest_worker_memory_mb=300)
    c = api.client
    file_id = upload(c, "bomb.docx", zip_bomb_docx)
    vs = create_store(c, file_ids=[file_id])["id"]
    with PeakRss() as rss:
        error = failed_with(api, vs, file_id)
    assert "ingest_worker_memory_mb" in error["message"] and "300 MB" in error["message"]
    assert rss.peak - rss.base < 100 * 1024 * 1024  # the server never held the document
    # The reader that died was replaced: the next file is read.
    ok = upload(c, "after.txt", "The reader after the bomb reads this.")
    c.post(f"/v1/vector_stores/{vs}/files", json={"file_id": ok})
    assert wait_file(c, vs, ok)["status"] == "completed"


def test_big_csv_is_refused_while_it_is_read(api: Api, tmp_path: Path) -> None:
    """12M characters of short lines: refused at the character cap, not after being parsed whole."""
    path = big_csv(tmp_path / "lines.csv", 12_000_000)
    with path.open("rb") as fh:
        r = api.client.post("/v1/files", files={"file": ("lines.csv", fh)}, data={"purpose": "assistants"})
    assert r.status_code == 200, r.text
    file_id = r.json()["id"]
    vs = create_store(api.client, file_ids=[file_id])["id"]
    with PeakRss() as rss:
        error = failed_with(api, vs, file_id)
    assert "ingest_max_chars" in error["message"] and "8000000 characters" in error["message"]
    assert rss.peak - rss.base < 150 * 1024 * 1024


def test_chunk_cap_and_a_deadline_name_their_limits(make_api: MakeApi) -> None:
    api = make_api(ingest_max_chunks=3)
    c = api.client
    text = " ".join(f"Sentence {i} about lighthouses and their keepers." for i in range(400))
    file_id = upload(c, "long.txt", text)
    vs = create_store(c, file_ids=[file_id], chunking_strategy={"type": "static", "static": {
        "max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50}})["id"]  # fmt: skip
    error = failed_with(api, vs, file_id)
    assert "ingest_max_chunks" in error["message"] and "3 chunks" in error["message"]


def test_a_file_read_past_its_deadline_fails_naming_it(make_api: MakeApi, many_shapes_pptx: bytes) -> None:
    # With the zip ratio check off, the 100k-shape deck takes its reader tens of seconds: one second is
    # all it gets here. Its reader is killed (no reader is left once the server stops, see below).
    api = make_api(ingest_max_zip_ratio=1_000_000, ingest_file_timeout_seconds=1)
    c = api.client
    slow = upload(c, "shapes.pptx", many_shapes_pptx)
    vs = create_store(c, file_ids=[slow])["id"]
    error = failed_with(api, vs, slow)
    assert "'shapes.pptx' took longer than 1 s to read" in error["message"]
    assert "ingest_file_timeout_seconds" in error["message"]
    # The slot is free again for the next file.
    small = upload(c, "small.txt", "twelve bytes")
    other = create_store(c, file_ids=[small])["id"]
    assert wait_file(c, other, small)["status"] == "completed"


def test_quadratic_html_is_read_in_linear_time(make_api: MakeApi) -> None:
    """The markup that held html.parser for minutes is read well inside a short deadline (keywords only:
    embedding its 250k tokens is a cost of its own, and not the parser's)."""
    api = make_api(ingest_workers=1, ingest_file_timeout_seconds=30, local_embeddings=False)
    c = api.client
    hostile = upload(c, "angles.html", QUADRATIC_HTML)
    small = upload(c, "small.txt", "twelve bytes")
    vs = create_store(c, file_ids=[hostile, small])["id"]
    done = wait_store(c, vs)
    assert done["file_counts"]["completed"] == 2, done


def test_quadratic_html_text_is_kept() -> None:
    assert html_to_text(QUADRATIC_HTML) == QUADRATIC_HTML
    assert html_to_text("<p>a <a<b>bold</b></p>").split() == ["a", "<abold"]


def test_slow_file_in_one_slot_never_delays_another_projects_file(make_api: MakeApi, many_shapes_pptx: bytes) -> None:
    # With the zip ratio check off, the 100k-shape deck is read for real: tens of seconds in one reader.
    api = make_api(key="key-a", api_keys=KEYS, ingest_workers=2, ingest_max_zip_ratio=1_000_000)
    c = api.client
    slow = upload(c, "shapes.pptx", many_shapes_pptx)
    vs = create_store(c, file_ids=[slow])["id"]
    end = time.monotonic() + 60
    while not api.sql("SELECT 1 FROM vector_store_files WHERE id = ? AND lease_owner IS NOT NULL", (slow,)):
        assert time.monotonic() < end, "the deck was never claimed"
        time.sleep(0.05)
    # The reader holds none of the server's secrets (keys, database URL): only what Python needs to start.
    while not (readers := _readers(str(os.getpid()))):  # claimed first, then handed to a reader
        assert time.monotonic() < end, "no reader was started"
        time.sleep(0.05)
    [reader] = readers
    names = {item.split(b"=", 1)[0].decode() for item in (reader / "environ").read_bytes().split(b"\0") if item}
    assert names <= {"PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "HOME", "LANG", "LC_ALL", "TMPDIR",
                     "RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "RUST_BACKTRACE"}, names  # fmt: skip
    other = {"Authorization": "Bearer key-b"}
    form = {"purpose": "assistants"}
    r = c.post("/v1/files", files={"file": ("tiny.txt", b"twelve bytes")}, data=form, headers=other)
    tiny = r.json()["id"]
    vs_b = c.post("/v1/vector_stores", json={"file_ids": [tiny]}, headers=other).json()["id"]
    end = time.monotonic() + 60
    while True:
        got = c.get(f"/v1/vector_stores/{vs_b}/files/{tiny}", headers=other).json()
        if got["status"] != "in_progress":
            break
        assert time.monotonic() < end, got
        time.sleep(0.05)
    assert got["status"] == "completed"
    # ...while the deck is still being read in the other slot.
    assert c.get(f"/v1/vector_stores/{vs}/files/{slow}").json()["status"] == "in_progress"
    # Deleting it stops its reader at once (the test need not wait for it).
    assert c.delete(f"/v1/vector_stores/{vs}/files/{slow}").json()["deleted"] is True


# --- shutdown ------------------------------------------------------------------------------------


def test_graceful_shutdowns_are_not_failed_attempts(database_url: str, tmp_path: Path, many_shapes_pptx: bytes) -> None:
    """Four servers in a row stop (gracefully) while reading the same slow file: it stays queued with no
    attempt counted, where the fourth restart used to fail it as a file that keeps killing its server."""
    overrides = {"data_dir": str(tmp_path / "data"), "database_url": database_url, "ingest_max_zip_ratio": 1_000_000}
    settings = load_settings(overrides=overrides, environ={})
    vs = file_id = ""
    for restart in range(4):
        with TestClient(
            create_app(settings), base_url="http://localhost", headers={"Authorization": "Bearer sk-x"}
        ) as client:
            if not restart:
                file_id = upload(client, "shapes.pptx", many_shapes_pptx)
                vs = create_store(client, file_ids=[file_id])["id"]
            end = time.monotonic() + 60
            while not query(database_url, "SELECT 1 FROM vector_store_files WHERE lease_owner IS NOT NULL"):
                assert time.monotonic() < end, "the file was never claimed"
                time.sleep(0.05)
        # stopped mid-file: the claim is given back, and not counted
        assert query(database_url, "SELECT status, attempts, lease_owner FROM vector_store_files") == [
            ("in_progress", 0, None)
        ]
    with TestClient(
        create_app(settings), base_url="http://localhost", headers={"Authorization": "Bearer sk-x"}
    ) as client:
        assert client.get(f"/v1/vector_stores/{vs}/files/{file_id}").json()["status"] == "in_progress"
        client.delete(f"/v1/vector_stores/{vs}/files/{file_id}")


@pytest.fixture(autouse=True)
def _no_leftover_readers() -> Iterator[None]:
    yield
    # Every reader a test's server started is gone once that server has stopped (no orphans).
    assert _readers(str(os.getpid())) == []


def _readers(pid: str) -> list[Path]:
    """The /proc entries of this process's children that are file readers."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                if parent == pid and b"file_search.worker" in (entry / "cmdline").read_bytes():
                    out.append(entry)
            except OSError:
                continue
    return out
