"""Browser fixtures: a real ``assistantd serve`` (SQLite, one static key) with the scripted model as its
upstream, and the OS's chromium driven by Playwright. Nothing is downloaded: the browser is
``/usr/bin/chromium`` (CI installs it with apt-get); under ``CI=true`` a missing browser fails the suite.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.remote import RemoteServer
from e2e.runs_support import ScriptedUpstream, serve, server_flags

KEY = "sk-console-0123456789abcdef"
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--no-first-run",
    "--disable-dev-shm-usage",
]  # fmt: skip


def chromium_path() -> str | None:
    for candidate in (os.environ.get("ASSISTANTD_TEST_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in the main thread
# while it is open, and every later test that calls asyncio.run() would fail on it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        path = None
    if path is None:
        message = "chromium (apt-get install chromium) and the playwright package are needed for the browser tests"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedUpstream]:
    scripted = ScriptedUpstream(tmp_path_factory.mktemp("scripted"))
    scripted.start()
    try:
        yield scripted
    finally:
        scripted.stop()


@pytest.fixture(scope="session")
def console_server(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    yield from serve(
        "console", tmp_path_factory.mktemp("console"), api_keys=f"{KEY}:proj-console", extra_args=server_flags(upstream)
    )


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


pages: list[Any] = []  # the open console pages, screenshotted when a test fails


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    if report.failed and report.when == "call":
        for i, page in enumerate(pages):
            try:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"FAILED-{item.name}-{i}.png"), full_page=True)
            except Exception as exc:  # the page may be gone; the report still stands
                report.sections.append(("screenshot", f"could not take one: {exc}"))
    return report  # type: ignore[return-value]


@pytest.fixture(scope="session")
def open_console_server(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    """A server with no keys at all, on loopback (open mode): the console needs no key there."""
    workdir = tmp_path_factory.mktemp("console-open")
    yield from serve("console-open", workdir, api_keys="", extra_args=server_flags(upstream))
