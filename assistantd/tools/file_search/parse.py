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
from pathlib import Path
from typing import BinaryIO, Literal


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

READ_BLOCK = 1 << 20  # bytes read at a time from a text file
RATIO_FLOOR = 1 << 20  # a zip member smaller than this unpacks to little whatever its ratio


@dataclass(frozen=True)
class Limits:
    """What one file may cost to read. Each is a setting (named in the message of a file past it)."""

    max_chars: int = 8_000_000  # characters of text one file may hold (about 2M tokens, as OpenAI allows)
    max_unzipped_bytes: int = 256 * 1024 * 1024  # what an office file's members may unpack to, in all
    max_zip_ratio: int = 100  # how many times larger than its compressed size a (large) member may unpack


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


def parse(path: Path, filename: str, limits: Limits = Limits()) -> Document:
    """Read the file at ``path`` (uploaded as ``filename``) into text segments.

    Every limit is checked before the work it guards: text is decoded a block at a time and refused as
    soon as it passes ``max_chars``; an office file's zip directory is read (sizes and ratios) before
    any member is unpacked; a PDF is counted page by page.
    """
    ext = extension(filename)
    if path.stat().st_size == 0:
        raise ParseError("invalid_file", f"The file '{filename}' is empty: there is no text to search.")
    reader = _BINARY_READERS.get(ext)
    if reader is not None:
        segments = reader(path, filename, limits)
    elif ext in HTML_EXTENSIONS:
        segments = [html_to_text(read_text(path, filename, limits.max_chars))]
    elif ext in TEXT_EXTENSIONS:
        segments = [read_text(path, filename, limits.max_chars)]
    elif ext in KNOWN_UNSUPPORTED:
        raise ParseError(
            "unsupported_file",
            f"Files of type .{ext} are not supported by file search ({KNOWN_UNSUPPORTED[ext]}).",
        )
    else:
        segments = [_sniff(path, filename, ext, limits)]
    segments = [s for s in (_tidy(s) for s in segments) if s]
    if not segments:
        raise ParseError("invalid_file", f"No text could be extracted from '{filename}'.")
    _check_chars(sum(len(s) for s in segments), filename, limits.max_chars)
    return Document(segments)


def _check_chars(count: int, filename: str, max_chars: int) -> None:
    if count > max_chars:
        raise ParseError(
            "invalid_file",
            f"'{filename}' holds more text than one file may: over {max_chars} characters "
            "(the ingest_max_chars limit). Split it into smaller files.",
        )


def _sniff(path: Path, filename: str, ext: str, limits: Limits) -> str:
    """An unknown (or missing) extension: text if the bytes are text, else unsupported."""
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(b"%PDF-"):
        return "\n\n".join(_pdf(path, filename, limits))
    what = f"type .{ext}" if ext else "this type (it has no extension)"
    try:
        text = read_text(path, filename, limits.max_chars)
    except ParseError as exc:
        if "ingest_max_chars" in exc.message:
            raise
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
_HEAD = 65536  # bytes looked at to tell text from binary


def read_text(path: Path, filename: str, max_chars: int) -> str:
    """A text file decoded a block at a time, refused as soon as it passes ``max_chars``."""
    with path.open("rb") as fh:
        return decode_stream(fh, filename, max_chars)


def decode_text(data: bytes, filename: str, max_chars: int = Limits.max_chars) -> str:
    """Bytes to text: UTF-8 (or UTF-16 with a BOM), else Windows-1252 if that reads as text."""
    return decode_stream(io.BytesIO(data), filename, max_chars)


def decode_stream(fh: BinaryIO, filename: str, max_chars: int) -> str:
    head = fh.read(_HEAD)
    for bom, codec in _BOMS:
        if head.startswith(bom):
            try:
                return _decode(fh, head, codec, filename, max_chars)
            except UnicodeDecodeError:
                break
    if b"\x00" not in head:
        try:
            return _decode(fh, head, "utf-8", filename, max_chars)
        except UnicodeDecodeError:
            pass
        fh.seek(0)
        text = _decode(fh, fh.read(_HEAD), "cp1252", filename, max_chars)
        if _printable_share(text) > 0.95:
            return text
    raise ParseError("invalid_file", f"'{filename}' is not text: its bytes are not UTF-8, UTF-16 or Windows-1252 text.")


def _decode(fh: BinaryIO, head: bytes, codec: str, filename: str, max_chars: int) -> str:
    """Decode ``head`` and the rest of ``fh`` incrementally, counting characters as they come."""
    decoder = codecs.getincrementaldecoder(codec)("replace" if codec == "cp1252" else "strict")
    parts: list[str] = []
    count = 0
    block = head
    while True:
        final = not block
        piece = decoder.decode(block, final=final)
        count += len(piece)
        _check_chars(count, filename, max_chars)
        parts.append(piece)
        if final:
            return "".join(parts)
        block = fh.read(READ_BLOCK)


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
    # The lookbehind starts a match only where a run of blanks starts: without it, a long run of blanks
    # not followed by a line end would be rescanned from each of its characters (quadratic).
    text = re.sub(r"(?<![ \t])[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


# --- HTML ----------------------------------------------------------------------------------------
#
# A scanner of our own rather than html.parser: the standard parser rescans the rest of the document
# from every ``<`` of an unfinished tag, so 250 KB of ``<a<a<a...`` costs minutes. Here every pattern
# stops at the next ``<``, so each character is looked at a bounded number of times (linear). The price:
# a ``<`` inside a quoted attribute value makes that tag read as text, which costs a few stray words.

_BLOCK = _word_set(
    "address article aside blockquote br dd details dialog div dl dt fieldset figcaption figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table tbody thead tfoot tr ul caption "
    "title"
)
_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
_RAW_TEXT = ("script", "style")  # their content is not markup: it runs to the closing tag
_TAG = re.compile(r"<(/?)([A-Za-z][^\s/<>]*)((?:[^<>\"']|\"[^\"<]*\"|'[^'<]*')*)>")
_DECLARATION = re.compile(r"<[!?][^<>]*>")  # <!doctype ...>, <?xml ...?>, <![CDATA[ ... ]]>
_RAW_END = {name: re.compile(rf"</{name}\s*>", re.I) for name in _RAW_TEXT}


class _TextExtractor:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.skipping = 0
        self.title: list[str] = []
        self.in_title = False
        self.pre = 0

    def start(self, tag: str) -> None:
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

    def end(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _BLOCK:
            self.parts.append("\n")

    def data(self, raw: str) -> None:
        if not raw:
            return
        data = html.unescape(raw)
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
    out = _TextExtractor()
    n = len(markup)
    text_from = i = 0  # text runs from text_from to the next tag; i is where the scan goes on
    while True:
        j = markup.find("<", i)
        if j < 0:
            out.data(markup[text_from:])
            break
        if markup.startswith("<!--", j):
            out.data(markup[text_from:j])
            k = markup.find("-->", j + 4)
            text_from = i = n if k < 0 else k + 3
            continue
        tag = _TAG.match(markup, j)
        if tag is None:
            declaration = _DECLARATION.match(markup, j)
            if declaration is not None:
                out.data(markup[text_from:j])
                text_from = i = declaration.end()
            else:
                i = j + 1  # a stray "<": part of the text
            continue
        out.data(markup[text_from:j])
        text_from = i = tag.end()
        name = tag.group(2).lower()
        if tag.group(1):
            out.end(name)
            continue
        out.start(name)
        if tag.group(3).rstrip().endswith("/"):
            out.end(name)
        elif name in _RAW_TEXT:
            close = _RAW_END[name].search(markup, i)  # its content is skipped, never text
            text_from = i = n if close is None else close.end()
            out.end(name)
    body = "".join(out.parts)
    body = "\n".join(line.rstrip(" ") for line in body.split("\n"))
    title = " ".join("".join(out.title).split())
    if title and not body.lstrip().startswith(title):
        body = f"{title}\n\n{body}"
    return body


# --- PDF, DOCX, PPTX -----------------------------------------------------------------------------


def _pdf(path: Path, filename: str, limits: Limits) -> list[str]:
    import pypdf
    from pypdf.errors import PdfReadError

    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("invalid_file", f"'{filename}' is an encrypted PDF; upload it without a password.")
        pages: list[str] = []
        count = 0
        for page in reader.pages:
            # Justified lines come out with runs of spaces between words: one is enough.
            text = re.sub(r"[ \t]{2,}", " ", page.extract_text() or "")
            count += len(text)
            _check_chars(count, filename, limits.max_chars)  # page by page, not after the whole file
            pages.append(text)
        return pages
    except ParseError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, AttributeError, IndexError) as exc:
        raise ParseError("invalid_file", f"'{filename}' could not be read as a PDF: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("pypdf") or "encrypt" in str(exc).lower():
            raise ParseError("invalid_file", f"'{filename}' could not be read as a PDF: {exc}") from None
        raise


def check_zip(path: Path, filename: str, what: str, limits: Limits) -> None:
    """Refuse an office file whose members would unpack too large, from its zip directory alone.

    The directory's sizes bind: ``zipfile`` never returns more bytes than a member declares. So a 1 MB
    document whose XML unpacks to 300 MB is refused here, before a byte of it is inflated.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ParseError("invalid_file", f"'{filename}' could not be read as a {what}: {exc}") from None
    total = 0
    for member in members:
        total += member.file_size
        if total > limits.max_unzipped_bytes:
            raise ParseError(
                "invalid_file",
                f"'{filename}' unpacks to more than {limits.max_unzipped_bytes // (1024 * 1024)} MB "
                "(the ingest_max_unzipped_mb limit); it was not opened.",
            )
        if member.file_size > RATIO_FLOOR and member.file_size > member.compress_size * limits.max_zip_ratio:
            raise ParseError(
                "invalid_file",
                f"'{filename}' has a part ({member.filename}) that unpacks to "
                f"{member.file_size // max(1, member.compress_size)} times its packed size, more than "
                f"{limits.max_zip_ratio} (the ingest_max_zip_ratio limit); it was not opened.",
            )


def _docx(path: Path, filename: str, limits: Limits) -> list[str]:
    check_zip(path, filename, "Word document", limits)
    import docx
    from docx.oxml.ns import qn

    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ParseError("invalid_file", f"'{filename}' could not be read as a Word document: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("docx", "lxml")):
            raise ParseError("invalid_file", f"'{filename}' could not be read as a Word document: {exc}") from None
        raise
    lines: list[str] = []
    count = 0

    def add(line: str) -> None:
        nonlocal count
        count += len(line) + 1
        _check_chars(count, filename, limits.max_chars)
        lines.append(line)

    # Body paragraphs and tables in document order.
    for block in document.element.body.iterchildren():
        if block.tag == qn("w:p"):
            add("".join(t.text or "" for t in block.iter(qn("w:t"))))
        elif block.tag == qn("w:tbl"):
            for row in block.iter(qn("w:tr")):
                add("\t".join("".join(t.text or "" for t in cell.iter(qn("w:t"))) for cell in row.iter(qn("w:tc"))))
            add("")
    return ["\n".join(lines)]


def _pptx(path: Path, filename: str, limits: Limits) -> list[str]:
    check_zip(path, filename, "PowerPoint deck", limits)
    import pptx
    from pptx.exc import PackageNotFoundError

    try:
        deck = pptx.Presentation(str(path))
    except (zipfile.BadZipFile, PackageNotFoundError, KeyError, ValueError, OSError) as exc:
        raise ParseError("invalid_file", f"'{filename}' could not be read as a PowerPoint deck: {exc}") from None
    slides = []
    count = 0
    for number, slide in enumerate(deck.slides, start=1):
        lines = [f"Slide {number}"]
        for shape in slide.shapes:
            lines.extend(_shape_text(shape))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                lines.append(f"Notes: {notes}")
        slides.append("\n".join(lines))
        count += len(slides[-1])
        _check_chars(count, filename, limits.max_chars)
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


_BINARY_READERS: dict[str, Callable[[Path, str, Limits], list[str]]] = {"pdf": _pdf, "docx": _docx, "pptx": _pptx}
