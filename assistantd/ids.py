"""Object ids: OpenAI's prefixes plus 24 random base62 characters."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
# Random bytes to characters in one C call: byte b < 248 becomes _ALPHABET[b % 62] (248 = 4 * 62, so
# every character is equally likely) and bytes 248-255 are dropped. One character at a time through
# secrets.choice cost ~50 us an id, several ids a run.
_TABLE = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) for b in range(256))
_DROP = bytes(range(4 * len(_ALPHABET), 256))

PREFIXES = {
    "assistant": "asst_",
    "thread": "thread_",
    "message": "msg_",
    "run": "run_",
    "step": "step_",
    "call": "call_",
    "file": "file-",
    "vector_store": "vs_",
    "file_batch": "vsfb_",
    "key": "key_",
}


def new_id(kind: str) -> str:
    while True:
        chars = secrets.token_bytes(32).translate(_TABLE, _DROP)
        if len(chars) >= 24:  # too few kept (9+ of 32 dropped) about once in 2.4 million
            return PREFIXES[kind] + chars[:24].decode()


def has_prefix(kind: str, value: str) -> bool:
    return value.startswith(PREFIXES[kind])
