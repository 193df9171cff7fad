"""The real-model suite runs only when asked for: ``scripts/real-model-check --pytest`` (or set
ASSISTANTD_LLAMA_PYTHON and ASSISTANTD_LLAMA_GGUF and run ``pytest tests/realmodel``). It needs a
llama-cpp-python build (minutes of compiling), so the default test run leaves this folder out: it
is not collected at all, rather than collected and skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import RealServers

WANTED = bool(os.environ.get("ASSISTANTD_LLAMA_PYTHON") and os.environ.get("ASSISTANTD_LLAMA_GGUF"))


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    return None if WANTED else True


@pytest.fixture(scope="session")
def real() -> Iterator[RealServers]:
    servers = RealServers.from_env()
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()
