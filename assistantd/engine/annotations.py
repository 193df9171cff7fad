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
