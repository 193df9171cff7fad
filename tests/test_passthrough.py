"""Pass-through /v1/chat/completions, /v1/completions and /v1/embeddings, in process, to the scripted upstream:
same keys and projects, same router and aliases, byte-faithful streams, upstream errors relayed."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from scripted_support import free_port, script, sent, upstream  # noqa: F401 - upstream is a fixture
from starlette.testclient import TestClient

from assistantd.app import create_app
from assistantd.settings import load_settings

KEY = "sk-pass-alpha-0123456789abcdef"


@pytest.fixture
def client(upstream: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(
        overrides={
            "data_dir": str(tmp_path),
            "code_interpreter_pool_size": 0,
            "api_keys": f"{KEY}:proj-alpha",
            "upstream_base_url": f"{upstream}/v1",
        },
        environ={},
    )
    settings = dataclasses.replace(settings, extra={"aliases": {"gpt-4o": "pass-aliased"}})
    with TestClient(
        create_app(settings), base_url="http://localhost", headers={"Authorization": f"Bearer {KEY}"}
    ) as test_client:
        yield test_client


def test_chat_completions_not_streamed(client: TestClient, upstream: str, caplog: pytest.LogCaptureFixture) -> None:
    script(upstream, "pass-chat", {"text": "Hello there", "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    with caplog.at_level(logging.INFO, logger="assistantd.passthrough"):
        response = client.post(
            "/v1/chat/completions",
            json={"model": "pass-chat", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3},
        )
    assert response.status_code == 200
    doc = response.json()
    assert doc["object"] == "chat.completion" and doc["choices"][0]["message"]["content"] == "Hello there"
    assert sent(upstream, "pass-chat")[0] == {
        "model": "pass-chat",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
    }  # forwarded as sent
    assert "project=proj-alpha path=/chat/completions model=pass-chat" in caplog.text
    assert "prompt_tokens=5 completion_tokens=2" in caplog.text


def test_chat_completions_streamed_byte_for_byte(client: TestClient, upstream: str) -> None:
    script(upstream, "pass-stream", {"text": "one two three"})
    body = {"model": "pass-stream", "messages": [{"role": "user", "content": "go"}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        relayed = b"".join(response.iter_bytes())
    script(upstream, "pass-stream", {"text": "one two three"})
    direct = httpx.post(f"{upstream}/v1/chat/completions", json=body).content

    # Same events in the same framing; only ids and timestamps differ between the two calls.
    def shape(raw: bytes) -> list[object]:
        events = []
        for block in raw.split(b"\n\n"):
            if block.startswith(b"data: {"):
                doc = orjson.loads(block[6:])
                events.append([c["delta"] for c in doc["choices"]])
            elif block:
                events.append(block)
        return events

    assert shape(relayed) == shape(direct) and relayed.endswith(b"data: [DONE]\n\n")
    assert "".join(d[0].get("content") or "" for d in shape(relayed)[:-1]) == "one two three"  # type: ignore[index]


def test_aliases_route_and_rename(client: TestClient, upstream: str) -> None:
    script(upstream, "pass-aliased", {"text": "aliased"})
    messages = [{"role": "user", "content": "x"}]
    response = client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": messages})
    assert response.json()["choices"][0]["message"]["content"] == "aliased"
    assert sent(upstream, "pass-aliased")[-1]["model"] == "pass-aliased"


def test_upstream_errors_keep_their_status_and_body(client: TestClient, upstream: str) -> None:
    script(upstream, "pass-err", {"status": 422, "error": "messages[0] is odd"})
    response = client.post("/v1/chat/completions", json={"model": "pass-err", "messages": []})
    assert response.status_code == 422
    assert response.json() == {"error": {"message": "messages[0] is odd", "type": "server_error"}}
    script(upstream, "pass-err-stream", {"status": 503, "error": "overloaded"})
    response = client.post("/v1/chat/completions", json={"model": "pass-err-stream", "messages": [], "stream": True})
    assert response.status_code == 503 and response.json()["error"]["message"] == "overloaded"


def test_embeddings_and_completions(client: TestClient, upstream: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="assistantd.passthrough"):
        response = client.post("/v1/embeddings", json={"model": "pass-embed", "input": ["ab", "cd"]})
    assert response.status_code == 200
    assert [d["index"] for d in response.json()["data"]] == [0, 1]
    assert "project=proj-alpha path=/embeddings model=pass-embed" in caplog.text
    response = client.post("/v1/completions", json={"model": "pass-legacy", "prompt": "Say"})
    assert response.json()["choices"][0]["text"] == "You said: Say"
    with client.stream("POST", "/v1/completions", json={"model": "pass-legacy", "prompt": "a b", "stream": True}) as r:
        streamed = b"".join(r.iter_bytes())
    assert streamed.count(b"data: ") == 6 and streamed.endswith(b"data: [DONE]\n\n")


def test_bad_requests_are_openai_errors(client: TestClient) -> None:
    assert client.post("/v1/chat/completions", json={"messages": []}).json()["error"]["param"] == "model"
    bad = client.post("/v1/chat/completions", content=b"{nope", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    no_key = client.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers={"Authorization": "Bearer nope"})
    assert no_key.status_code == 401


def test_an_unreachable_upstream_is_a_502(tmp_path: Path) -> None:
    settings = load_settings(
        overrides={
            "data_dir": str(tmp_path),
            "code_interpreter_pool_size": 0,
            "upstream_base_url": f"http://127.0.0.1:{free_port()}/v1",
        },
        environ={},
    )
    with TestClient(create_app(settings), base_url="http://localhost") as test_client:
        response = test_client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == 502 and "could not be reached" in response.json()["error"]["message"]


def test_bounded_by_the_body_limit_and_the_total_deadline(upstream: str, tmp_path: Path) -> None:
    settings = load_settings(
        overrides={
            "data_dir": str(tmp_path),
            "code_interpreter_pool_size": 0,
            "upstream_base_url": f"{upstream}/v1",
            "max_body_bytes": 4096,
            "upstream_total_timeout": 1.0,
        },
        environ={},
    )
    with TestClient(create_app(settings), base_url="http://localhost") as test_client:
        big = test_client.post(
            "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
        )
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
        script(upstream, "pass-trickle", {"text": " ".join(["tok"] * 40), "delay_ms": 100})
        body = {"model": "pass-trickle", "messages": [{"role": "user", "content": "go"}], "stream": True}
        with test_client.stream("POST", "/v1/chat/completions", json=body) as response:
            relayed = b"".join(response.iter_bytes())
        assert b"tok" in relayed and b"[DONE]" not in relayed  # cut at the deadline, not run to the end
