"""One log format for everything: ours, uvicorn's, and any library's that propagates to the root logger.

Text lines are ``<time> level=<LEVEL> logger=<name> <message> key=value ...``; with ``log_format = "json"``
each record is one JSON object (``time``, ``level``, ``logger``, ``message``, then its fields), for log
shippers. Structured fields are passed as ``extra={"fields": {...}}`` so both formats show them.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

# Libraries that log every request or connection at INFO/DEBUG: their lines say nothing an operator needs
# (our own lines cover upstream calls and requests), so they stay at WARNING even with log_level = debug.
QUIET = ("httpx", "httpcore", "hpack", "multipart", "python_multipart", "psycopg.pool", "asyncio", "watchfiles")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _text_value(value: Any) -> str:
    text = "-" if value is None else str(value)
    if not text or " " in text or '"' in text or "=" in text or "\n" in text:  # (a generator here: ~1 us a field)
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} level={record.levelname} logger={record.name} {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (as logging's last resort does), so a
    process that swaps stderr (a test runner capturing output) never leaves it writing to a closed file."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str, fmt: str = "text") -> None:
    """Route every logger through one stderr handler with the chosen format (calling it again replaces it)."""
    handler = _StderrHandler()
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # Neither format shows where a line was logged from, nor the thread or process: not collecting them
    # (the logging HOWTO's "Optimization") saves ~4 us a record, e.g. each run's ``run ended`` line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # uvicorn's own loggers: no handlers of their own, so their lines take the format above.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
