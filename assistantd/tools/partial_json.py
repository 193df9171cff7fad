"""Reading one string field out of JSON that is still being written, to stream it as it grows."""

from __future__ import annotations

import json
import re

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def string_field(partial: str, key: str) -> str:
    """The decoded value of ``key`` so far in ``partial`` (an object's JSON, possibly cut anywhere).

    An escape cut in the middle is left out until it is whole, so the result only ever grows.
    """
    match = re.search(r'"' + re.escape(key) + r'"\s*:\s*"', partial)
    if match is None:
        return ""
    out: list[str] = []
    i = match.end()
    while i < len(partial):
        ch = partial[i]
        if ch == '"':
            break
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(partial):
            break
        kind = partial[i + 1]
        if kind == "u":
            if i + 6 > len(partial):
                break
            code = partial[i + 2 : i + 6]
            try:
                value = int(code, 16)
            except ValueError:
                break
            if 0xD800 <= value < 0xDC00:  # a surrogate pair needs its second half too
                if i + 12 > len(partial):
                    break
                try:
                    out.append(json.loads(f'"{partial[i : i + 12]}"'))
                except ValueError:
                    break
                i += 12
                continue
            out.append(chr(value))
            i += 6
            continue
        out.append(_ESCAPES.get(kind, kind))
        i += 2
    return "".join(out)
