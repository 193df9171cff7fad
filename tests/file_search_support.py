"""Helpers for the vector store and file search tests: uploads, waiting for ingestion, and documents
of every format made on the spot (PDF with fpdf2, Word and PowerPoint with python-docx and python-pptx)."""

from __future__ import annotations

import functools
import importlib.util
import io
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

if TYPE_CHECKING:
    from conftest import Api

T = TypeVar("T")

DEADLINE_SECONDS = 120.0  # ingestion of a test document takes well under a second; this is a hang


def upload(client: TestClient, name: str, data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    r = client.post("/v1/files", files={"file": (name, raw)}, data={"purpose": "assistants"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def create_store(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/vector_stores", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_store(client: TestClient, store_id: str, deadline: float = DEADLINE_SECONDS) -> dict[str, Any]:
    """Poll the store until no file is in progress (as the SDK's poll helpers do), with a deadline."""
    end = time.monotonic() + deadline
    while True:
        r = client.get(f"/v1/vector_stores/{store_id}")
        assert r.status_code == 200, r.text
        obj = dict(r.json())
        if obj["file_counts"]["in_progress"] == 0:
            return obj
        assert time.monotonic() < end, f"vector store {store_id} still in progress: {obj}"
        time.sleep(0.02)


def wait_file(client: TestClient, store_id: str, file_id: str, deadline: float = DEADLINE_SECONDS) -> dict[str, Any]:
    end = time.monotonic() + deadline
    while True:
        r = client.get(f"/v1/vector_stores/{store_id}/files/{file_id}")
        assert r.status_code == 200, r.text
        obj = dict(r.json())
        if obj["status"] != "in_progress":
            return obj
        assert time.monotonic() < end, f"file {file_id} still in progress: {obj}"
        time.sleep(0.02)


def store_with(client: TestClient, docs: dict[str, bytes | str], **body: Any) -> tuple[str, dict[str, str]]:
    """A store holding these documents, fully ingested; returns its id and {filename: file id}."""
    ids = {name: upload(client, name, data) for name, data in docs.items()}
    store = create_store(client, file_ids=list(ids.values()), **body)
    done = wait_store(client, store["id"])
    assert done["file_counts"]["completed"] == len(docs), done
    return store["id"], ids


def search(client: TestClient, store_id: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"/v1/vector_stores/{store_id}/search", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def execute(api: Api, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Change the database behind the API directly (``?`` placeholders), committed, to set up a state."""
    import contextlib

    import psycopg
    import sqlean

    if api.database_url.startswith("sqlite:"):
        path = api.database_url.removeprefix("sqlite:").removeprefix("//")
        with contextlib.closing(sqlean.connect(path)) as conn:
            conn.execute(sql, params)
            conn.commit()
    else:
        with psycopg.connect(api.database_url) as conn:
            conn.execute(sql.replace("?", "%s"), params)


def call(api: Api, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
    """Run a service coroutine on the app's own event loop (the TestClient's portal)."""
    portal = api.client.portal
    assert portal is not None
    return portal.call(functools.partial(fn, *args, **kwargs))


# --- documents -----------------------------------------------------------------------------------


def unicode_font() -> Path:
    """A TrueType font with Greek and Cyrillic: DejaVu Sans, from matplotlib (a dev dependency through the
    code-interpreter extra) or from the system."""
    spec = importlib.util.find_spec("matplotlib")
    candidates = []
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf")
    candidates.append(Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"))
    for path in candidates:
        if path.is_file():
            return path
    raise RuntimeError("no DejaVuSans.ttf found (install matplotlib or fonts-dejavu-core)")


def make_pdf(pages: list[str]) -> bytes:
    """A PDF with one page per string, in an embedded Unicode font (so non-ASCII text round-trips)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_font("DejaVu", fname=str(unicode_font()))
    pdf.set_font("DejaVu", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text, align="L")
    return bytes(pdf.output())


def encrypt_pdf(data: bytes, password: str) -> bytes:
    import pypdf

    reader = pypdf.PdfReader(io.BytesIO(data))
    writer = pypdf.PdfWriter()
    for page in reader.pages:
        writer.add_page(page)
    writer.encrypt(user_password=password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx(title: str, paragraphs: list[str], table: list[list[str]] | None = None) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                grid.cell(r, c).text = cell
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_pptx(slides: list[tuple[str, str, str]]) -> bytes:
    """Slides of (title, body, speaker notes)."""
    import pptx

    deck = pptx.Presentation()
    layout = deck.slide_layouts[1]  # title and content
    for title, body, notes in slides:
        slide = deck.slides.add_slide(layout)
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


# --- an OpenAI-compatible embeddings endpoint ------------------------------------------------------


class EmbeddingsServer:
    """An OpenAI-compatible /v1/embeddings on a free port: bag-of-letters vectors, and a log of requests."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0

        async def embeddings(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append({"body": body, "auth": request.headers.get("authorization")})
            if self.fail_next:
                self.fail_next -= 1
                return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
            data = [{"object": "embedding", "index": i, "embedding": letters(t)} for i, t in enumerate(body["input"])]
            return JSONResponse({"object": "list", "data": list(reversed(data)), "model": body["model"]})

        app = Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> EmbeddingsServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "embeddings server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def letters(text: str) -> list[float]:
    v = [0.0] * 26
    for ch in text.lower():
        if "a" <= ch <= "z":
            v[ord(ch) - 97] += 1.0
    v[0] += 0.001
    return v
