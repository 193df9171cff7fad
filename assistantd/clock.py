"""The one clock: API timestamps are whole seconds since the epoch."""

from __future__ import annotations

import time


def now() -> int:
    return int(time.time())
