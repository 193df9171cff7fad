"""The web console's files at / and /console/<name>: served from the package, with a strict CSP."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from assistantd.api.console import CSP, assets


def test_the_console_page_is_served_at_the_root_without_a_key(make_api: Any) -> None:
    client: TestClient = make_api(key=None, api_keys="key-a:proj_a").client
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/console/main.js">' in r.text
    # Every file the page names is served, with its type.
    for name, kind in (("main.js", "text/javascript"), ("console.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        asset = client.get(f"/console/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].startswith(kind)
        again = client.get(f"/console/{name}", headers={"If-None-Match": asset.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    # The API behind it still wants the key.
    assert client.get("/v1/threads").status_code == 401


def test_the_csp_allows_nothing_from_elsewhere_and_no_inline_script() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["img-src"] == "'self' blob:"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CSP


def test_unknown_console_files_are_404_envelopes(shared_client: TestClient, expect_error: Any) -> None:
    for path in ("/console/nope.js", "/console/..%2Fapp.py", "/console/", "/console/index.html/x"):
        r = shared_client.get(path)
        expect_error(r, 404)


def test_every_module_the_console_imports_is_packaged() -> None:
    import re

    names = set(assets())
    for name, asset in assets().items():
        if name.endswith(".js"):
            for imported in re.findall(rb"from '\./([\w.]+)'", asset.body):
                assert imported.decode() in names, (name, imported)
    assert {"index.html", "main.js", "console.css"} <= names


def test_the_page_preloads_every_module_so_first_load_has_no_waterfall() -> None:
    page = assets()["index.html"].body.decode()
    for name in assets():
        if name.endswith(".js"):
            assert f'href="/console/{name}"' in page or f'src="/console/{name}"' in page, name
