"""Parsing every supported format to text, and the errors for files that cannot be read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from file_search_support import encrypt_pdf, make_docx, make_pdf, make_pptx

from assistantd.tools.file_search.parse import ParseError, decode_text, html_to_text, parse

NON_ASCII = "Grüße aus Köln — naïve café, Ελληνικά καλημέρα, Русский привет"


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def parsed(tmp_path: Path, name: str, data: bytes | str) -> list[str]:
    return parse(write(tmp_path, name, data), name).segments


def test_plain_text_markdown_code_json_and_csv_are_read_as_they_are(tmp_path: Path) -> None:
    assert parsed(tmp_path, "a.txt", "first line\r\nsecond line\n\n\n\nlast") == ["first line\nsecond line\n\nlast"]
    md = "# Title\n\n- item *one*\n- item two\n"
    assert parsed(tmp_path, "b.md", md) == [md.strip()]
    code = 'def greet(name: str) -> str:\n    return f"hello {name}"\n'
    assert parsed(tmp_path, "c.py", code) == [code.strip()]
    doc = json.dumps({"city": "Köln", "tags": ["a", "b"]}, ensure_ascii=False)
    assert parsed(tmp_path, "d.json", doc) == [doc]
    assert parsed(tmp_path, "e.csv", "name,score\nada,10\n") == ["name,score\nada,10"]
    for ext in ("ts", "go", "rs", "java", "sql", "yaml", "toml", "sh"):
        assert parsed(tmp_path, f"f.{ext}", "x = 1") == ["x = 1"]


def test_encodings_utf8_bom_utf16_and_windows_1252(tmp_path: Path) -> None:
    assert parsed(tmp_path, "bom.txt", b"\xef\xbb\xbf" + NON_ASCII.encode()) == [NON_ASCII]
    assert parsed(tmp_path, "u16.txt", NON_ASCII.encode("utf-16")) == [NON_ASCII]
    assert parsed(tmp_path, "cp.txt", "naïve café – 5 €".encode("cp1252")) == ["naïve café – 5 €"]


def test_html_keeps_text_and_title_and_drops_scripts_and_styles(tmp_path: Path) -> None:
    page = """<!doctype html><html><head><title>Release notes</title><style>p {color: red}</style>
    <script>var secret = "do not index";</script></head>
    <body><h1>Version 2.0</h1><p>Adds <b>hybrid</b>&nbsp;search &amp; citations.</p>
    <ul><li>First</li><li>Second</li></ul><pre>code   keeps
  its spacing</pre></body></html>"""
    [text] = parsed(tmp_path, "notes.html", page)
    assert text.startswith("Release notes")
    assert "Version 2.0" in text and "Adds hybrid search & citations." in text
    assert "First\n" in text and "Second" in text
    assert "code   keeps\n  its spacing" in text
    assert "secret" not in text and "color" not in text


def test_html_without_extension_is_recognised(tmp_path: Path) -> None:
    [text] = parsed(tmp_path, "page", "<html><body><p>Hello <i>there</i></p></body></html>")
    assert text == "Hello there"


def test_non_ascii_pdf_keeps_every_page_and_character(tmp_path: Path) -> None:
    pages = [f"{NON_ASCII}.", "The second page tells of the Zeppelin hangar at Friedrichshafen."]
    segments = parsed(tmp_path, "résumé.pdf", make_pdf(pages))
    assert len(segments) == 2
    assert segments[0] == f"{NON_ASCII}."
    assert segments[1] == pages[1]


def test_docx_paragraphs_and_tables_in_order(tmp_path: Path) -> None:
    data = make_docx(
        "Quarterly report", ["Revenue grew in Zürich.", "Costs fell."], [["City", "Sales"], ["Köln", "42"]]
    )
    [text] = parsed(tmp_path, "report.docx", data)
    assert text.splitlines()[:3] == ["Quarterly report", "Revenue grew in Zürich.", "Costs fell."]
    assert "City\tSales" in text and "Köln\t42" in text


def test_pptx_one_segment_per_slide_with_notes(tmp_path: Path) -> None:
    data = make_pptx([("Roadmap", "Ship file search", "Remember the demo"), ("Risks", "Latency on 2 cores", "")])
    segments = parsed(tmp_path, "deck.pptx", data)
    assert segments == [
        "Slide 1\nRoadmap\nShip file search\nNotes: Remember the demo",
        "Slide 2\nRisks\nLatency on 2 cores",
    ]


@pytest.mark.parametrize(
    ("name", "data", "code", "fragment"),
    [
        ("photo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "unsupported_file", "not supported"),
        ("sheet.xlsx", b"PK\x03\x04" + bytes(32), "unsupported_file", "export the sheet as .csv"),
        ("old.doc", b"\xd0\xcf\x11\xe0" + bytes(32), "unsupported_file", "save it as .docx"),
        ("blob", bytes(range(256)) * 4, "unsupported_file", "no extension"),
        ("empty.txt", b"", "invalid_file", "is empty"),
        ("blank.md", b"  \n\n\t ", "invalid_file", "No text could be extracted"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "invalid_file", "could not be read as a PDF"),
        ("fake.docx", b"not a zip file at all", "invalid_file", "could not be read as a Word document"),
        ("fake.pptx", b"PK\x03\x04 truncated", "invalid_file", "could not be read as a PowerPoint deck"),
        ("binary.txt", bytes([0, 159, 146, 150]) * 100, "invalid_file", "is not text"),
    ],
)
def test_unreadable_files_fail_with_a_code_and_a_useful_message(
    tmp_path: Path, name: str, data: bytes, code: str, fragment: str
) -> None:
    with pytest.raises(ParseError) as info:
        parse(write(tmp_path, name, data), name)
    assert info.value.code == code
    assert fragment in info.value.message, info.value.message


def test_encrypted_pdf_is_an_invalid_file(tmp_path: Path) -> None:
    data = encrypt_pdf(make_pdf(["top secret plans"]), "hunter2")
    with pytest.raises(ParseError) as info:
        parse(write(tmp_path, "locked.pdf", data), "locked.pdf")
    assert info.value.code == "invalid_file"
    assert "encrypted" in info.value.message


def test_pdf_encrypted_with_an_empty_password_is_read(tmp_path: Path) -> None:
    data = encrypt_pdf(make_pdf(["open to everyone"]), "")
    assert parsed(tmp_path, "open.pdf", data) == ["open to everyone"]


def test_utf16_without_a_bom_is_not_guessed() -> None:
    with pytest.raises(ParseError):
        decode_text("ok".encode("utf-16-le"), "x")


def test_block_elements_become_line_breaks() -> None:
    assert html_to_text("<p>a</p><p>b</p>").split() == ["a", "b"]
    assert "\n" in html_to_text("<div>a</div><div>b</div>").strip()
