"""deploy/: the nginx site in front of a real server through a real nginx, the unit file, the example settings.

nginx comes from the OS packages (`.ci/run` installs it): under CI=true a missing nginx fails the test.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import assistantd_serve, free_port, scripted_model

from assistantd.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SITE = DEPLOY / "nginx" / "assistantd.conf"


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed: .ci/run must apt-get install nginx")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return found


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"nginx did not listen: {log.read_text()}")


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[str, Any, Any]]:
    """scripted model -> assistantd -> nginx with deploy's site file (only ports and name changed)."""
    nginx = _nginx()
    with scripted_model(tmp_path) as model, assistantd_serve(
        tmp_path, "--upstream-base-url", model.url, "--code-interpreter-pool-size", "0"
    ) as server:
        backend_port = server.url.rsplit(":", 1)[1]
        port = free_port()
        site = SITE.read_text()
        site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{backend_port};")
        site = re.sub(r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{port};", site, flags=re.M)
        assert f"127.0.0.1:{backend_port}" in site and f"listen 127.0.0.1:{port}" in site
        prefix = tmp_path / "nginx"
        (prefix / "logs").mkdir(parents=True)
        (prefix / "site.conf").write_text(site)
        user = "user root;\n" if os.geteuid() == 0 else ""
        (prefix / "nginx.conf").write_text(
            f"{user}worker_processes 1;\nerror_log {prefix}/logs/error.log info;\npid {prefix}/nginx.pid;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"  access_log {prefix}/logs/access.log;\n"
            # assistantd's streams also say X-Accel-Buffering: no; ignoring it here tests the site's own
            # proxy_buffering off (other servers behind the same config may not send the header).
            "  proxy_ignore_headers X-Accel-Buffering;\n"
            f"  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;\n"
            f"  fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;\n"
            f"  include {prefix}/site.conf;\n"
            "}\n"
        )
        log = prefix / "logs" / "stdout.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            _wait_port(port, proc, prefix / "logs" / "error.log")
            yield f"http://127.0.0.1:{port}", model, server
        finally:
            proc.terminate()
            proc.wait(30)


def _events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    event = ""
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield event, line.removeprefix("data: ")


def test_streamed_deltas_pass_nginx_one_by_one(proxied: tuple[str, Any, Any]) -> None:
    url, model, _server = proxied
    base = model.url.removesuffix("/v1")
    # The model sends its first word, then holds until released: seeing that first delta before the
    # release shows the proxy passes each event through as it comes, not when the answer is complete.
    httpx.post(f"{base}/_script", json={"model": "proxied", "turns": [{"text": "first second third", "hold": True}]})
    with httpx.Client(base_url=url + "/v1", headers={"Authorization": "Bearer any"}, timeout=30) as client:
        assistant = client.post("/assistants", json={"model": "proxied"}).json()
        body = {"assistant_id": assistant["id"], "stream": True,
                "thread": {"messages": [{"role": "user", "content": "go"}]}}  # fmt: skip
        with client.stream("POST", "/threads/runs", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _events(response.iter_lines())
            deltas = []
            for name, data in events:
                if name == "thread.message.delta":
                    deltas.append(json.loads(data)["delta"]["content"][0]["text"]["value"])
                    break
            assert deltas == ["first"]  # arrived while the model is still holding the rest
            httpx.post(f"{base}/_release", params={"model": "proxied"}).raise_for_status()
            for name, data in events:
                if name == "thread.message.delta":
                    deltas.append(json.loads(data)["delta"]["content"][0]["text"]["value"])
                if name == "thread.run.completed":
                    break
    assert deltas == ["first", " second", " third"]


def test_a_large_upload_passes_nginx(proxied: tuple[str, Any, Any]) -> None:
    url, _model, _server = proxied
    size = 48 * 1024 * 1024  # far past nginx's default 1 MB limit; the site allows assistantd's 512 MB
    digest = hashlib.sha256()
    block = os.urandom(1024 * 1024)
    for _ in range(size // len(block)):
        digest.update(block)

    boundary = "assistantd-upload-test"

    def body() -> Iterator[bytes]:
        yield (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for _ in range(size // len(block)):
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Authorization": "Bearer any", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    with httpx.Client(base_url=url + "/v1", timeout=300) as client:
        uploaded = client.post("/files", content=body(), headers=headers)
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json()["bytes"] == size
        back = hashlib.sha256()
        with client.stream("GET", f"/files/{uploaded.json()['id']}/content", headers=headers) as response:
            for chunk in response.iter_bytes():
                back.update(chunk)
    assert back.hexdigest() == digest.hexdigest()


def test_the_site_allows_what_assistantd_accepts() -> None:
    site = SITE.read_text()
    limit = re.search(r"client_max_body_size (\d+)m;", site)
    assert limit and int(limit.group(1)) * 1024 * 1024 >= Settings().max_upload_bytes
    assert re.search(r"proxy_buffering off;", site)
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", site)
    assert read_timeout and int(read_timeout.group(1)) >= Settings().upstream_timeout


def test_systemd_unit_runs_migrate_then_serve_with_the_config() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "systemd" / "assistantd.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("/.venv/bin/assistantd serve")
    assert service["ExecStartPre"].endswith("/.venv/bin/assistantd migrate")
    assert service["Environment"] == "ASSISTANTD_CONFIG=/etc/assistantd/assistantd.toml"
    assert service["Restart"] == "on-failure" and service["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_example_settings_load_strictly() -> None:
    settings = load_settings(environ={}, config_file=str(DEPLOY / "assistantd.toml"))
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.metrics_port == 9464 and settings.log_format == "json"
    assert settings.extra["upstreams"][0]["name"] == "local"
