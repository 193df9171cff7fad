"""Annotations on an assistant's text: citations of file search results and links to files the code
interpreter wrote. Offsets are character offsets into the text value, as the API defines them."""

from __future__ import annotations

import re
from typing import Any

CITATION = re.compile(r"【(\d+):(\d+)†[^】]*】")


def annotate(text: str, citations: dict[str, str], links: dict[str, str]) -> list[dict[str, Any]]:
    """``citations`` maps "call:result" to a file id; ``links`` maps "sandbox:/mnt/data/x" to a file id."""
    found: list[dict[str, Any]] = []
    for match in CITATION.finditer(text):
        file_id = citations.get(f"{match[1]}:{match[2]}")
        if file_id is not None:
            found.append(
                {
                    "type": "file_citation",
                    "text": match[0],
                    "start_index": match.start(),
                    "end_index": match.end(),
                    "file_citation": {"file_id": file_id},
                }
            )
    # Longest first, so "sandbox:/mnt/data/a.csv.gz" is not also taken for "sandbox:/mnt/data/a.csv".
    taken: list[tuple[int, int]] = []
    for link in sorted(links, key=len, reverse=True):
        for match in re.finditer(re.escape(link), text):
            span = (match.start(), match.end())
            if any(s < span[1] and span[0] < e for s, e in taken):
                continue
            taken.append(span)
            found.append(
                {
                    "type": "file_path",
                    "text": link,
                    "start_index": span[0],
                    "end_index": span[1],
                    "file_path": {"file_id": links[link]},
                }
            )
    found.sort(key=lambda a: a["start_index"])
    return found


MAX_MARKER = 256  # a "【" not closed within this many characters is plain text, not a citation marker
_OPEN = "【"


class StreamAnnotator:
    """Annotates text as it streams, so each annotation rides on the delta that carries its text.

    Text that could still become a citation marker or a file link is held back until it is complete (or
    can no longer be one), then released in one piece with its annotation, as OpenAI streamed them. The
    concatenation of the released pieces is always the text fed in, and ``annotations`` are those of
    ``annotate`` on that text for every marker and link shorter than ``MAX_MARKER``.
    """

    def __init__(self, citations: dict[str, str], links: dict[str, str]) -> None:
        self.citations = citations
        self.links = sorted(links, key=len, reverse=True)
        self.link_ids = links
        self.active = bool(citations or links)  # nothing to annotate: text passes straight through
        self.held = ""
        self.released = 0  # characters released so far: the offset of ``held`` in the message
        self.annotations: list[dict[str, Any]] = []

    def feed(self, text: str) -> list[tuple[str, list[dict[str, Any]]]]:
        """Pieces that can go out now, each with the (numbered) annotations it carries."""
        if not self.active:
            self.released += len(text)
            return [(text, [])]
        self.held += text
        return self._release(final=False)

    def flush(self) -> list[tuple[str, list[dict[str, Any]]]]:
        return self._release(final=True) if self.active else []

    def _release(self, *, final: bool) -> list[tuple[str, list[dict[str, Any]]]]:
        out: list[tuple[str, list[dict[str, Any]]]] = []
        plain = ""
        while self.held:
            start = self._candidate()
            if start < 0:
                plain += self.held
                self.held = ""
                break
            plain += self.held[:start]
            self.held = self.held[start:]
            found, length, waiting = self._at_start(final)
            if waiting:
                break
            if found is None:
                plain += self.held[:length]
                self.held = self.held[length:]
                continue
            if plain:
                out.append(self._piece(plain, None))
                plain = ""
            out.append(self._piece(self.held[:length], found))
            self.held = self.held[length:]
        if plain:
            out.append(self._piece(plain, None))
        return out

    def _piece(self, text: str, found: dict[str, Any] | None) -> tuple[str, list[dict[str, Any]]]:
        notes: list[dict[str, Any]] = []
        if found is not None:
            found.update(start_index=self.released, end_index=self.released + len(text))
            self.annotations.append(found)
            notes.append({"index": len(self.annotations) - 1, **found})
        self.released += len(text)
        return text, notes

    def _candidate(self) -> int:
        """The first position in the held text where a marker or a link may start, or -1."""
        best = self.held.find(_OPEN) if self.citations else -1
        for i in range(len(self.held)):
            if best >= 0 and i >= best:
                break
            tail = self.held[i:]
            if any(link.startswith(tail) or tail.startswith(link) for link in self.links):
                return i
        return best

    def _at_start(self, final: bool) -> tuple[dict[str, Any] | None, int, bool]:
        """At the start of the held text: (annotation or None, length it covers, must wait for more)."""
        held = self.held
        if held.startswith(_OPEN) and self.citations:
            match = CITATION.match(held)
            if match is not None:
                file_id = self.citations.get(f"{match[1]}:{match[2]}")
                if file_id is None:
                    return None, len(match[0]), False
                return (
                    {"type": "file_citation", "text": match[0], "file_citation": {"file_id": file_id}},
                    len(match[0]),
                    False,
                )
            if "】" not in held and len(held) < MAX_MARKER and not final:
                return None, 0, True
            return None, 1, False
        for link in self.links:  # longest first
            if held.startswith(link):
                longer = any(other != link and other.startswith(held) for other in self.links)
                if longer and not final:
                    return None, 0, True
                return (
                    {"type": "file_path", "text": link, "file_path": {"file_id": self.link_ids[link]}},
                    len(link),
                    False,
                )
        if any(link.startswith(held) for link in self.links) and not final:
            return None, 0, True
        return None, 1, False
