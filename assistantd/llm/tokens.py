"""Local token counts, for upstreams that report no usage (llama-cpp-python's server sends none in streams).

The counter is the WordPiece tokenizer of the bundled all-MiniLM-L6-v2 (``tokenizer.json``, shipped in
the package for file search, so nothing is downloaded at run time), loaded with ``tokenizers``. No one
tokenizer matches every model; on English text it lands within a few tens of percent of GPT and Gemma
counts (README, "Usage when the upstream reports none", has the measured figures). Counts made here are
estimates and are logged as such; budgets (``max_prompt_tokens``, ``max_completion_tokens``) then act on
them as they would on the upstream's own.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("assistantd.llm")

# The file ships inside the package (package data of assistantd.tools.file_search); located by path so
# the llm layer does not import the tools layer.
TOKENIZER_FILE = (
    Path(__file__).resolve().parent.parent / "tools" / "file_search" / "models" / "all-MiniLM-L6-v2" / "tokenizer.json"
)
# Chat templates wrap each message in a few tokens (role markers, separators); OpenAI documents 3 + 1.
PER_MESSAGE = 4
PER_REPLY = 3  # the assistant header the template opens the answer with
_lock = threading.Lock()


@functools.cache
def _tokenizer() -> Any:
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
    except Exception as exc:  # no file (a trimmed install) or no library: fall back to 4 characters a token
        log.warning("local token counting falls back to 4 characters a token: %s", exc)
        return None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_text(text: str) -> int:
    if not text:
        return 0
    tokenizer = _tokenizer()
    if tokenizer is None:
        return (len(text) + 3) // 4
    with _lock:  # one Tokenizer object; its Rust side is thread-safe but cheap enough to serialise
        return len(tokenizer.encode(text, add_special_tokens=False).ids)


def _content_text(content: Any) -> tuple[str, int]:
    """A message content's text, and the tokens its images cost (85 each, OpenAI's low-detail figure)."""
    if isinstance(content, str):
        return content, 0
    text, images = [], 0
    for part in content or []:
        if isinstance(part, dict) and part.get("type") == "text":
            text.append(str(part.get("text") or ""))
        else:
            images += 85
    return "\n".join(text), images


def count_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    """Estimated prompt tokens of a Chat Completions request: messages, tool calls, tool definitions."""
    import orjson

    total = PER_REPLY
    for message in messages:
        text, extra = _content_text(message.get("content"))
        total += PER_MESSAGE + extra + count_text(text)
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            total += count_text(str(fn.get("name") or "")) + count_text(str(fn.get("arguments") or ""))
    for tool in tools or []:
        total += count_text(orjson.dumps(tool).decode())
    return total
