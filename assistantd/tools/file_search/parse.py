"""Documents to text: plain text and source code, Markdown, HTML, JSON, CSV, PDF, DOCX and PPTX.

``parse`` returns the text as segments (a PDF's pages, a deck's slides, or the whole text), or raises
``ParseError`` whose ``code`` is what the vector store file's ``last_error.code`` says:
``unsupported_file`` for a kind of file we do not read, ``invalid_file`` for a file we should read but
cannot (corrupt, encrypted, or without any text).
"""

from __future__ import annotations

import codecs
import html
import io
import logging
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


log = logging.getLogger("assistantd.file_search")

ErrorCode = Literal["unsupported_file", "invalid_file"]

# Read as text: OpenAI's list for file_search plus CSV, logs and common configuration and source files.
TEXT_EXTENSIONS = _word_set(
    """
    txt text md markdown mdx rst adoc tex csv tsv log json jsonl ndjson yaml yml toml ini cfg conf xml
    c h cc cpp cxx hpp hh cs go java kt kts scala js mjs cjs jsx ts tsx py pyi rb php pl pm sh bash zsh
    fish ps1 bat sql r swift rs lua dart m mm vue svelte css scss less proto graphql gql dockerfile
    makefile mk cmake gradle properties env gitignore diff patch srt vtt bib
    """
)
HTML_EXTENSIONS = frozenset({"html", "htm", "xhtml"})
BINARY_KINDS = {"pdf": "PDF", "docx": "Word (.docx)", "pptx": "PowerPoint (.pptx)"}
SUPPORTED = sorted(TEXT_EXTENSIONS | HTML_EXTENSIONS | set(BINARY_KINDS))
# Formats people try that we do not read: a clearer message than "not text".
KNOWN_UNSUPPORTED = {
    "doc": "legacy Word (.doc); save it as .docx",
    "ppt": "legacy PowerPoint (.ppt); save it as .pptx",
    "xls": "spreadsheets; export the sheet as .csv",
    "xlsx": "spreadsheets; export the sheet as .csv",
    "odt": "OpenDocument text; save it as .docx",
    "rtf": "RTF; save it as .docx or .txt",
    "epub": "EPUB",
}

MAX_TEXT_CHARS = 200_000_000  # what one file may expand to (a zip bomb in a docx stops here)


class ParseError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Document:
    segments: list[str]  # pages, slides, or the whole text; never empty strings only

    @property
    def text(self) -> str:
        return "\n\n".join(self.segments)


def extension(filename: str) -> str:
    name = filename.rsplit("/", 1)[-1].lower()
    if name in ("dockerfile", "makefile"):
        return name
    return name.rsplit(".", 1)[-1] if "." in name.strip(".") else ""


def parse(path: Path, filename: str) -> Document:
    """Read the file at ``path`` (uploaded as ``filename``) into text segments."""
    ext = extension(filename)
    data = path.read_bytes()
    if not data:
        raise ParseError("invalid_file", f"The file '{filename}' is empty: there is no text to search.")
    reader = _BINARY_READERS.get(ext)
    if reader is not None:
        segments = reader(data, filename)
    elif ext in HTML_EXTENSIONS:
        segments = [html_to_text(decode_text(data, filename))]
    elif ext in TEXT_EXTENSIONS:
        segments = [decode_text(data, filename)]
    elif ext in KNOWN_UNSUPPORTED:
        raise ParseError(
            "unsupported_file",
            f"Files of type .{ext} are not supported by file search ({KNOWN_UNSUPPORTED[ext]}).",
        )
    else:
        segments = [_sniff(data, filename, ext)]
    segments = [s for s in (_tidy(s) for s in segments) if s]
    if not segments:
        raise ParseError("invalid_file", f"No text could be extracted from '{filename}'.")
    if sum(len(s) for s in segments) > MAX_TEXT_CHARS:
        raise ParseError(
            "invalid_file", f"'{filename}' holds more text than one file may ({MAX_TEXT_CHARS} characters)."
        )
    return Document(segments)


def _sniff(data: bytes, filename: str, ext: str) -> str:
    """An unknown (or missing) extension: text if the bytes are text, else unsupported."""
    if data.startswith(b"%PDF-"):
        return "\n\n".join(_pdf(data, filename))
    what = f"type .{ext}" if ext else "this type (it has no extension)"
    try:
        text = decode_text(data, filename)
    except ParseError:
        raise ParseError(
            "unsupported_file",
            f"Files of {what} are not supported by file search. Supported types: "
            f"{', '.join('.' + e for e in SUPPORTED)}.",
        ) from None
    if text.lstrip()[:1] == "<" and re.search(r"<(html|body|p|div)\b", text[:4096], re.I):
        return html_to_text(text)
    return text


# --- text ----------------------------------------------------------------------------------------

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode_text(data: bytes, filename: str) -> str:
    """Bytes to text: UTF-8 (or UTF-16 with a BOM), else Windows-1252 if that reads as text."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                break
    if b"\x00" not in data[:65536]:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        text = data.decode("cp1252", errors="replace")
        if _printable_share(text) > 0.95:
            return text
    raise ParseError("invalid_file", f"'{filename}' is not text: its bytes are not UTF-8, UTF-16 or Windows-1252 text.")


def _printable_share(text: str) -> float:
    sample = text[:65536]
    if not sample:
        return 1.0
    good = sum(1 for ch in sample if ch.isprintable() or ch in "\n\r\t\f")
    return good / len(sample)


def _tidy(text: str) -> str:
    """Normalise line ends, drop control characters and trailing blanks, collapse runs of blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[\x01-\x08\x0b\x0e-\x1f\x7f]", "", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


# --- HTML ----------------------------------------------------------------------------------------

_BLOCK = _word_set(
    "address article aside blockquote br dd details dialog div dl dt fieldset figcaption figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table tbody thead tfoot tr ul caption "
    "title"
)
_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.title: list[str] = []
        self.in_title = False
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in _SKIP:
            self.skipping += 1
        elif tag == "pre":
            self.pre += 1
        if tag in _BLOCK:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append("\t")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.skipping:
            if self.pre:
                self.parts.append(data)
                return
            text = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith(("\n", "\t")):
                text = text.lstrip(" ")
            self.parts.append(text)


def html_to_text(markup: str) -> str:
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
    except Exception as exc:  # the stdlib parser is lenient; this is a last resort
        log.debug("HTML parse error: %s", exc)
        return html.unescape(re.sub(r"<[^>]+>", " ", markup))
    body = "".join(parser.parts)
    body = "\n".join(line.rstrip(" ") for line in body.split("\n"))
    title = " ".join("".join(parser.title).split())
    if title and not body.lstrip().startswith(title):
        body = f"{title}\n\n{body}"
    return body


# --- PDF, DOCX, PPTX -----------------------------------------------------------------------------


def _pdf(data: bytes, filename: str) -> list[str]:
    import pypdf
    from pypdf.errors import PdfReadError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("invalid_file", f"'{filename}' is an encrypted PDF; upload it without a password.")
        # Justified lines come out with runs of spaces between words: one is enough.
        return [re.sub(r"[ \t]{2,}", " ", page.extract_text() or "") for page in reader.pages]
    except ParseError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, AttributeError, IndexError) as exc:
        raise ParseError("invalid_file", f"'{filename}' could not be read as a PDF: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("pypdf") or "encrypt" in str(exc).lower():
            raise ParseError("invalid_file", f"'{filename}' could not be read as a PDF: {exc}") from None
        raise


def _docx(data: bytes, filename: str) -> list[str]:
    import docx
    from docx.oxml.ns import qn

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ParseError("invalid_file", f"'{filename}' could not be read as a Word document: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("docx", "lxml")):
            raise ParseError("invalid_file", f"'{filename}' could not be read as a Word document: {exc}") from None
        raise
    lines: list[str] = []
    # Body paragraphs and tables in document order.
    for block in document.element.body.iterchildren():
        if block.tag == qn("w:p"):
            lines.append("".join(t.text or "" for t in block.iter(qn("w:t"))))
        elif block.tag == qn("w:tbl"):
            for row in block.iter(qn("w:tr")):
                cells = ["".join(t.text or "" for t in cell.iter(qn("w:t"))) for cell in row.iter(qn("w:tc"))]
                lines.append("\t".join(cells))
            lines.append("")
    return ["\n".join(lines)]


def _pptx(data: bytes, filename: str) -> list[str]:
    import pptx
    from pptx.exc import PackageNotFoundError

    try:
        deck = pptx.Presentation(io.BytesIO(data))
    except (zipfile.BadZipFile, PackageNotFoundError, KeyError, ValueError, OSError) as exc:
        raise ParseError("invalid_file", f"'{filename}' could not be read as a PowerPoint deck: {exc}") from None
    slides = []
    for number, slide in enumerate(deck.slides, start=1):
        lines = [f"Slide {number}"]
        for shape in slide.shapes:
            lines.extend(_shape_text(shape))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                lines.append(f"Notes: {notes}")
        slides.append("\n".join(lines))
    return slides


def _shape_text(shape: object) -> list[str]:
    out: list[str] = []
    if getattr(shape, "has_text_frame", False):
        out.append(shape.text_frame.text)  # type: ignore[attr-defined]
    if getattr(shape, "has_table", False):
        for row in shape.table.rows:  # type: ignore[attr-defined]
            out.append("\t".join(cell.text for cell in row.cells))
    for child in getattr(shape, "shapes", ()) or ():  # groups
        out.extend(_shape_text(child))
    return out


_BINARY_READERS: dict[str, Callable[[bytes, str], list[str]]] = {"pdf": _pdf, "docx": _docx, "pptx": _pptx}
