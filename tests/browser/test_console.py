"""The web console in a real browser (the OS's chromium via Playwright) against a real server whose model
is the scripted upstream. The tests run in file order on one page, as a person would: set the key,
upload and ingest, build an assistant, chat (streaming, a chart, a function call, a citation), browse
the thread, and try to inject script. Screenshots of each screen go to tests/browser/artifacts/.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.remote import RemoteServer
from e2e.runs_support import ScriptedUpstream

from .conftest import KEY, pages

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

MODEL = f"scripted-console-{uuid.uuid4().hex[:8]}"
GUIDE = (
    "# Office guide\n\nThe office coffee machine is descaled every Tuesday by Priya.\n\n"
    "Visitors sign in at the front desk on the ground floor and receive a blue badge.\n"
)
CHART_CODE = (
    "import matplotlib.pyplot as plt\n"
    "xs = list(range(10))\nplt.plot(xs, [x * x for x in xs])\nplt.title('squares')\nplt.show()\n"
    "open('/mnt/data/squares.csv', 'w').write('x,y\\n' + ''.join(f'{x},{x*x}\\n' for x in xs))\n"
    "print('sum', sum(x * x for x in xs))\n"
)
WAIT_MS = 60_000


class Console:
    """One browser page on the console, recording what must never happen: console errors, page errors,
    dialogs (an alert from injected script), and requests to any other origin."""

    def __init__(self, page: Any, base: str, shots: Path) -> None:
        self.page = page
        self.base = base
        self.shots = shots
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.foreign: list[str] = []
        self.allowed_errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("dialog", self._dialog)
        page.on(
            "request",
            lambda r: r.url.startswith(base) or r.url.startswith(("blob:", "data:")) or self.foreign.append(r.url),
        )

    def _request(self, request: Any) -> None:
        if not request.url.startswith((self.base + "/", "blob:", "data:")):
            self.foreign.append(request.url)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def check_clean(self) -> None:
        errors = [e for e in self.errors if not any(a in e for a in self.allowed_errors)]
        assert errors == [], errors
        assert self.dialogs == [], self.dialogs
        assert self.foreign == [], self.foreign

    def shoot(self, name: str) -> None:
        """Desktop light, desktop dark and phone width (light) screenshots of the current screen."""
        page = self.page
        page.set_viewport_size({"width": 1280, "height": 800})
        page.emulate_media(color_scheme="light")
        page.screenshot(path=str(self.shots / f"{name}-desktop-light.png"))
        page.emulate_media(color_scheme="dark")
        page.screenshot(path=str(self.shots / f"{name}-desktop-dark.png"))
        page.emulate_media(color_scheme="light")
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(self.shots / f"{name}-phone.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 800})


@pytest.fixture(scope="module")
def console(browser: Any, console_server: RemoteServer, artifacts: Path) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    c = Console(page, console_server.url, artifacts)
    pages.append(page)
    yield c
    pages.remove(page)
    page.screenshot(path=str(artifacts / "last.png"), full_page=True)
    context.close()


def wait_text(page: Any, selector: str, text: str) -> None:
    page.locator(selector, has_text=text).first.wait_for()


def choose(page: Any, select: str, text: str) -> None:
    """Select the option of ``select`` whose label contains ``text`` (waiting for it to be listed)."""
    option = page.locator(f"{select} option", has_text=text).first
    option.wait_for(state="attached")
    page.select_option(select, label=option.inner_text())


# --- the tests, in order -------------------------------------------------------------------------


def test_the_key_is_asked_once_and_kept_out_of_urls(console: Console, upstream: ScriptedUpstream) -> None:
    upstream.script(MODEL)  # makes the model known to the upstream's /v1/models before the page asks
    page = console.page
    # The first visit has no key: the API's 401 opens the key dialog (that 401 is the one expected error).
    console.allowed_errors.append("status of 401")
    page.goto(console.base + "/")
    page.locator("#key-dialog[open]").wait_for()
    console.shoot("01-key-dialog")
    page.fill("#key-input", KEY)
    page.click("#key-save")
    page.locator("#assistant-select").wait_for()
    page.locator("#a-model option", has_text=MODEL).wait_for(state="attached")
    assert page.evaluate("localStorage.getItem('assistantd.apiKey')") == KEY
    assert KEY not in page.url
    paint = page.evaluate("performance.getEntriesByType('paint').map(e => [e.name, Math.round(e.startTime)])")
    print("paint timings (ms):", paint)
    # A reload keeps the key: no dialog, no 401.
    assert all("status of 401" in e for e in console.errors), console.errors
    console.errors.clear()
    console.allowed_errors.clear()
    page.reload()
    page.locator("#a-model option", has_text=MODEL).wait_for(state="attached")
    assert page.locator("#key-dialog[open]").count() == 0
    console.check_clean()


def test_storage_uploads_ingests_and_searches(console: Console, tmp_path: Path) -> None:
    page = console.page
    page.goto(console.base + "/#/storage/files")
    guide = tmp_path / "guide.md"
    guide.write_text(GUIDE)
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 this is not really a pdf")
    page.set_input_files("#upload-input", [str(guide), str(bad)])
    page.click("#upload-button")
    wait_text(page, "#files-table td", "guide.md")
    wait_text(page, "#files-table td", "broken.pdf")
    console.shoot("02-files")

    page.goto(console.base + "/#/storage/vector_stores")
    page.fill("#vs-name", "Office docs")
    page.click("#vs-create")
    page.locator("#vs-add-files option", has_text="guide.md").wait_for(state="attached")
    choose(page, "#vs-add-files", "guide.md")
    page.fill("#vs-add-attributes", '{"category": "office"}')
    page.click("#vs-add")
    page.locator("#vs-files tr[data-status='completed']").wait_for()
    # A file that cannot be parsed fails with its reason shown.
    choose(page, "#vs-add-files", "broken.pdf")
    page.fill("#vs-add-attributes", "")
    page.click("#vs-add")
    failed = page.locator("#vs-files tr[data-status='failed']")
    failed.wait_for()
    assert failed.locator("td.error").inner_text().strip() != ""
    wait_text(page, "#vs-progress", "1 failed")

    page.fill("#vs-query", "who descales the coffee machine")
    page.fill("#vs-filters", '{"type": "eq", "key": "category", "value": "office"}')
    page.click("#vs-search")
    first = page.locator("#vs-results li.result").first
    first.wait_for()
    assert "guide.md" in first.inner_text() and "descaled every Tuesday" in first.inner_text()
    assert "score" in first.inner_text() and 'category="office"' in first.inner_text()
    console.shoot("03-vector-store")
    console.check_clean()


def test_an_assistant_with_all_three_tool_kinds(console: Console, tmp_path: Path) -> None:
    page = console.page
    page.goto(console.base + "/#/playground")
    page.locator("#a-model option", has_text=MODEL).wait_for(state="attached")
    page.select_option("#assistant-select", value="")
    page.fill("#a-name", "Console tester")
    page.fill("#a-instructions", "You help with the office.")
    page.select_option("#a-model", value=MODEL)
    page.check("#t-code")
    data = tmp_path / "sales.csv"
    data.write_text("amount\n1\n2\n3\n")
    page.set_input_files("#t-code-upload", str(data))
    page.locator("#t-code-files option:checked", has_text="sales.csv").wait_for(state="attached")
    page.check("#t-search")
    page.locator("#t-search-store option", has_text="Office docs").wait_for(state="attached")
    choose(page, "#t-search-store", "Office docs")
    page.click("#add-function")
    editor = page.locator(".function-json").first
    # The schema editor validates as one types.
    editor.fill('{"name": "get weather", "parameters": {"type": "object", "required": ["city"]}}')
    wait_text(page, ".validation", "letters, digits")
    editor.fill(
        json.dumps(
            {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "strin"}}, "required": ["city"]},
            }
        )
    )
    wait_text(page, ".validation", "not a JSON Schema type")
    editor.fill(
        json.dumps(
            {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            }
        )
    )
    wait_text(page, ".validation", "valid function schema")
    page.click("#save-assistant")
    page.locator("#assistant-select option", has_text="Console tester").wait_for(state="attached")
    page.locator("#save-assistant", has_text="Save").wait_for()
    page.locator("#t-code-files option:checked", has_text="sales.csv").wait_for(state="attached")
    console.shoot("04-assistant")
    console.check_clean()


def send(page: Any, text: str) -> None:
    page.fill("#chat-input", text)
    page.press("#chat-input", "Enter")


def wait_idle(page: Any) -> None:
    page.locator("#send:not([disabled])").wait_for()


def test_chat_streams_and_shows_a_chart_from_the_code_interpreter(console: Console, upstream: ScriptedUpstream) -> None:
    page = console.page
    answer = "Here is the **chart** of squares. [Download the data](sandbox:/mnt/data/squares.csv)"
    upstream.script(
        MODEL,
        {"tool_calls": [{"name": "code_interpreter", "arguments": json.dumps({"code": CHART_CODE})}]},
        {"text": answer, "delay_ms": 30},
    )
    send(page, "Plot the squares of 0..9")
    page.locator("#messages .msg.assistant", has_text="Here is the chart of squares").wait_for()
    wait_idle(page)
    wait_text(page, "#run-info", "completed")
    # The chart: an image output of the code interpreter, loaded from the file's bytes.
    image = page.locator("#steps .call.ci img.inline-image").first
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=image.element_handle())
    wait_text(page, "#steps .logs", "sum 285")
    assert page.locator("#messages .msg.assistant strong", has_text="chart").count() == 1
    # Streaming: the answer arrived as many deltas, each in the raw event log.
    page.click("#tabbtn-log")
    deltas = page.locator("#event-log code", has_text="thread.message.delta").count()
    assert deltas >= 5, deltas
    console.shoot("05-chat-chart-log")
    page.click("#tabbtn-run")
    # The sandbox link downloads the file the code wrote.
    with page.expect_download() as download_info:
        page.locator("#messages button.sandbox").first.click()
    download = download_info.value
    assert download.suggested_filename == "squares.csv"
    assert Path(download.path()).read_text().startswith("x,y\n0,0\n")
    console.shoot("06-chat-chart")
    console.check_clean()


def test_a_function_call_is_answered_through_the_form(console: Console, upstream: ScriptedUpstream) -> None:
    page = console.page
    upstream.script(
        MODEL,
        {"tool_calls": [{"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}]},
        {"text": "It is sunny in Paris."},
    )
    send(page, "What is the weather in Paris?")
    form = page.locator("#tool-outputs-form")
    form.wait_for()
    assert "get_weather" in form.inner_text() and '"city": "Paris"' in form.inner_text()
    wait_text(page, "#run-info", "requires_action")
    console.shoot("07-requires-action")
    form.locator("textarea").fill('{"forecast": "sunny"}')
    page.click("#submit-outputs")
    page.locator("#messages .msg.assistant", has_text="It is sunny in Paris.").wait_for()
    wait_idle(page)
    wait_text(page, "#run-info", "completed")
    wait_text(page, "#steps .call.fn", '{"forecast": "sunny"}')
    asked = upstream.requests(MODEL)[-1]["messages"]
    assert any(m.get("role") == "tool" and "sunny" in str(m.get("content")) for m in asked)
    console.check_clean()


def test_a_file_search_answer_cites_the_file(console: Console, upstream: ScriptedUpstream) -> None:
    page = console.page
    upstream.script(
        MODEL,
        {"tool_calls": [{"name": "file_search", "arguments": json.dumps({"queries": ["who descales the machine"]})}]},
        {"text": "Priya descales it every Tuesday【0:0†guide.md】."},
    )
    send(page, "Who descales the coffee machine?")
    answer = page.locator("#messages .msg.assistant", has_text="Priya descales it every Tuesday")
    answer.wait_for()
    wait_idle(page)
    cite = answer.locator("sup.cite button")
    cite.wait_for()
    assert cite.inner_text() == "[1]"
    assert "【" not in answer.inner_text()
    wait_text(page, "#messages .footnotes", "guide.md")
    wait_text(page, "#steps .call.fs", "guide.md")
    assert "score" in page.locator("#steps .call.fs").first.inner_text()
    cite.click()
    dialog = page.locator("#citation[open]")
    dialog.wait_for()
    wait_text(page, "#citation", "descaled every Tuesday by Priya")
    console.shoot("08-citation")
    page.click("#citation-close")
    console.shoot("09-chat-cited")
    console.check_clean()


XSS_USER = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> [go](javascript:window.__xss=3)'
XSS_ANSWER = (
    "Sure: <script>window.__xss = 4</script> and [click me](javascript:alert(1)) and "
    "[also](JaVaScRiPt:alert(2)) and ![x](javascript:alert(3)) <img src=x onerror=alert(4)>"
)


def test_script_in_messages_does_nothing(console: Console, upstream: ScriptedUpstream) -> None:
    page = console.page
    upstream.script(MODEL, {"text": XSS_ANSWER})
    send(page, XSS_USER)
    answer = page.locator("#messages .msg.assistant", has_text="Sure:")
    answer.wait_for()
    wait_idle(page)
    assert "<script>window.__xss = 4</script>" in answer.inner_text()  # shown as text
    assert page.locator("#messages script, #messages img[src='x'], #messages a[href^='javascript' i]").count() == 0
    for link in page.locator("#messages .deadlink").all():
        link.click()
    assert page.evaluate("window.__xss") is None
    assert console.dialogs == []
    console.shoot("10-xss")
    console.check_clean()


def test_the_thread_is_browsable_afterwards(console: Console) -> None:
    page = console.page
    thread_id = page.locator("#thread-label code").inner_text()
    page.goto(console.base + "/#/threads")
    page.locator(f"#thread-list a[href='#/threads/{thread_id}']").wait_for()
    # The assistant filter keeps this thread; metadata that no thread has shows none.
    page.locator("#filter-assistant option", has_text="Console tester").wait_for(state="attached")
    choose(page, "#filter-assistant", "Console tester")
    page.click(".filters button[type=submit]")
    page.locator(f"#thread-list a[href='#/threads/{thread_id}']").wait_for()
    page.fill("#filter-key", "team")
    page.fill("#filter-value", "nobody")
    page.click(".filters button[type=submit]")
    wait_text(page, "#thread-list", "No threads match.")
    page.fill("#filter-key", "")
    page.click(".filters button[type=submit]")
    page.click(f"#thread-list a[href='#/threads/{thread_id}']")
    wait_text(page, "#thread-messages", "Plot the squares")
    wait_text(page, "#thread-messages", "Priya descales it every Tuesday")
    runs = page.locator("#thread-runs details.run")
    runs.nth(3).wait_for(state="attached")
    assert runs.count() == 4
    wait_text(page, "#thread-runs", "get_weather")
    wait_text(page, "#thread-runs", "Code interpreter")
    # Raw JSON of the thread itself.
    page.locator(".thread-detail > details.raw summary").click()
    wait_text(page, ".thread-detail > details.raw pre", f'"id": "{thread_id}"')
    console.shoot("11-thread")
    console.check_clean()


def test_long_threads_page_back(console: Console, console_server: RemoteServer) -> None:
    import httpx

    with httpx.Client(base_url=console_server.base_url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        messages = [{"role": "user", "content": f"note {i}"} for i in range(45)]
        thread = http.post("/threads", json={"messages": messages[:30], "metadata": {"team": "ops"}}).json()
        for m in messages[30:]:
            http.post(f"/threads/{thread['id']}/messages", json=m).raise_for_status()
    page = console.page
    page.goto(console.base + f"/#/threads/{thread['id']}")
    wait_text(page, "#thread-messages", "note 44")
    assert page.locator("#thread-messages .msg").count() == 30
    assert page.locator("#thread-messages .msg", has_text="note 0").count() == 0
    page.click("text=Load earlier messages")
    wait_text(page, "#thread-messages", "note 0")
    assert page.locator("#thread-messages .msg").count() == 45
    started = time.monotonic()
    page.fill("#filter-key", "team")
    page.fill("#filter-value", "ops")
    page.click(".filters button[type=submit]")
    page.locator("#thread-list li").first.wait_for()
    wait_text(page, "#thread-list", thread["id"])
    assert page.locator("#thread-list li").count() == 1, time.monotonic() - started
    console.check_clean()


PAYLOADS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[a](javascript:alert(1))",
    "[a]( javascript:alert(1) )",
    "[a](java\tscript:alert(1))",
    "[a](JAVASCRIPT:alert(1))",
    "[a](data:text/html,<script>alert(1)</script>)",
    "[a](vbscript:msgbox(1))",
    "![x](javascript:alert(1))",
    '<a href="javascript:alert(1)">x</a>',
    "```html\n<script>alert(1)</script>\n```",
    "| a | b |\n|---|---|\n| <svg onload=alert(1)> | [x](javascript:alert(1)) |",
    "> <iframe src=javascript:alert(1)>",
    "- <b onclick=alert(1)>x</b>\n- **<i>y</i>**",
    "`<script>alert(1)</script>`",
    "snake_case_name and a__b__c and **bold [link](https://example.com/a_(b))**",
]
ALLOWED_TAGS = {
    "DIV", "P", "STRONG", "EM", "DEL", "CODE", "PRE", "SPAN", "A", "UL", "OL", "LI", "BLOCKQUOTE", "TABLE",
    "THEAD", "TBODY", "TR", "TH", "TD", "H3", "H4", "H5", "H6", "HR", "BR", "SUP", "BUTTON",
}  # fmt: skip


def test_the_markdown_renderer_never_makes_markup_from_text(console: Console) -> None:
    page = console.page
    page.goto(console.base + "/#/threads")
    found = page.evaluate(
        """async (payloads) => {
            const { renderMarkdown } = await import('/console/markdown.js');
            return payloads.map((p) => {
                const root = renderMarkdown(p, {});
                const els = [...root.querySelectorAll('*')];
                return {
                    text: root.textContent,
                    tags: [...new Set(els.map((e) => e.tagName))],
                    attrs: els.flatMap((e) => [...e.attributes].map((a) => `${e.tagName}.${a.name}=${a.value}`)),
                };
            });
        }""",
        PAYLOADS,
    )
    for payload, out in zip(PAYLOADS, found, strict=True):
        assert set(out["tags"]) <= ALLOWED_TAGS, (payload, out)
        for attr in out["attrs"]:
            name, _, value = attr.partition("=")
            assert not name.split(".")[1].startswith("on"), (payload, attr)
            if name.endswith(".href"):
                assert value.startswith(("https://", "http://", "mailto:")), (payload, attr)
    # What was written stays readable as text.
    assert "<script>alert(1)</script>" in found[0]["text"]
    assert "snake_case_name and a__b__c" in found[-1]["text"]
    assert "a_(b)" not in found[-1]["text"]  # the whole URL, parentheses and all, went into the link
    assert page.evaluate("window.__xss") is None
    assert console.dialogs == []
    console.check_clean()


def test_a_run_is_cancelled_and_attachments_ride_along(
    console: Console, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    page = console.page
    page.goto(console.base + "/#/playground")
    page.locator("#a-model option", has_text=MODEL).wait_for(state="attached")
    page.click("#new-thread")
    notes = tmp_path / "notes.txt"
    notes.write_text("The quarterly review is on Thursday.\n")
    # The model writes one word, then waits (held) until the test lets it go.
    upstream.script(MODEL, {"text": "Thinking about it for a long while", "hold": True})
    page.set_input_files("#chat-attach", str(notes))
    send(page, "Read my notes, slowly.")
    wait_text(page, "#messages .msg.user", "Attached: notes.txt")
    page.locator("#messages .msg.assistant", has_text="Thinking").wait_for()
    page.locator("#cancel-run:not([disabled])").click()
    wait_text(page, "#run-info", "cancelled")
    wait_idle(page)
    upstream.release(MODEL)
    assert page.locator("#cancel-run[disabled]").count() == 1
    page.click("#tabbtn-log")
    wait_text(page, "#event-log", "thread.run.cancelled")
    page.click("#tabbtn-run")
    console.shoot("12-cancelled")
    console.check_clean()


def test_in_open_mode_no_key_is_asked_for(
    browser: Any, open_console_server: RemoteServer, upstream: ScriptedUpstream, artifacts: Path
) -> None:
    upstream.script(MODEL)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        c = Console(page, open_console_server.url, artifacts)
        page.goto(open_console_server.url + "/")
        page.fill("#a-name", "Open helper")
        choose(page, "#a-model", MODEL)
        page.click("#save-assistant")
        page.locator("#assistant-select option", has_text="Open helper").wait_for(state="attached")
        assert page.locator("#key-dialog[open]").count() == 0
        assert page.evaluate("localStorage.getItem('assistantd.apiKey')") is None
        # Keyboard only: the skip link comes first, the navigation is reachable with Tab, the
        # inspector's tabs move with the arrow keys.
        page.reload()
        page.locator("#assistant-select option", has_text="Open helper").wait_for(state="attached")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        for _ in range(10):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.textContent") == "Threads":
                break
        page.keyboard.press("Enter")
        page.wait_for_url("**/#/threads")
        page.locator("#filter-assistant option", has_text="Open helper").wait_for(state="attached")
        page.goto(open_console_server.url + "/#/playground")
        page.focus("#tabbtn-run")
        page.keyboard.press("ArrowRight")
        assert page.evaluate("document.activeElement.id") == "tabbtn-log"
        assert page.locator("#tab-log").is_visible() and not page.locator("#tab-run").is_visible()
        page.keyboard.press("ArrowRight")
        assert page.evaluate("document.activeElement.id") == "tabbtn-run"
        c.check_clean()
    finally:
        context.close()
