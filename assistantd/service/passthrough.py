"""Pass-through of ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` to the routed upstream.

Apps built on the Assistants API call these with the same client; they go through the same keys,
projects, router and aliases as runs. The request body is forwarded as sent (only ``model`` is
rewritten when an alias renames it), streamed answers are relayed byte for byte, and upstream errors
keep their status and body. Each call's usage, as the upstream reports it, is logged with the caller's
project (``passthrough usage project=...``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from assistantd.errors import APIError, InvalidRequest, NotFound
from assistantd.llm.base import UpstreamError
from assistantd.llm.openai_compat import OpenAICompatModel, ReadWatch
from assistantd.llm.router import ModelRouter, NoRoute

log = logging.getLogger("assistantd.passthrough")

_ERROR_SHOWN = 2000  # characters of a non-JSON upstream error quoted in the envelope


class UpstreamUnavailable(APIError):
    """The upstream could not be reached or took too long (502/504)."""

    status = 502
    type = "server_error"


@dataclass
class Forwarded:
    """What goes back to the client: the upstream's status and media type, and its body (whole or streamed)."""

    status: int
    media_type: str
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


class PassthroughService:
    def __init__(self, router: ModelRouter, *, total_timeout: float | None) -> None:
        self.router = router
        self.total_timeout = total_timeout

    async def forward(self, project: str, path: str, raw: bytes) -> Forwarded:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("model"), str) or not doc["model"]:
            raise InvalidRequest(
                "The request needs a 'model' (a string).", param="model", code="missing_required_parameter"
            )
        try:
            route = self.router.resolve(doc["model"])
        except NoRoute as exc:
            raise NotFound(str(exc), param="model", code="model_not_found") from None
        if not isinstance(route.model, OpenAICompatModel):
            raise InvalidRequest(f"The model '{doc['model']}' is not served over HTTP here.", param="model")
        if route.upstream_model != doc["model"]:
            doc["model"] = route.upstream_model
            raw = orjson.dumps(doc)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_timeout if self.total_timeout else None
        try:
            async with asyncio.timeout_at(deadline):
                response = await route.model.relay(path, raw)
        except TimeoutError:
            raise _too_slow(route.upstream, self.total_timeout) from None
        except UpstreamError as exc:
            raise UpstreamUnavailable(exc.message) from None
        media_type = response.headers.get("content-type", "application/json")
        label = {"project": project, "path": path, "model": doc["model"], "upstream": route.upstream}
        if response.status_code == 200 and media_type.startswith("text/event-stream"):
            return Forwarded(200, media_type, stream=_relay(response, deadline, label, route.model.read_timeout))
        try:
            async with asyncio.timeout_at(deadline):
                body = await response.aread()
        except TimeoutError:
            raise _too_slow(route.upstream, self.total_timeout) from None
        finally:
            await response.aclose()
        if response.status_code != 200:
            return Forwarded(response.status_code, "application/json", _error_body(response.status_code, body))
        _log_usage(label, _usage_of(body))
        return Forwarded(200, media_type, body)


def _too_slow(upstream: str, seconds: float | None) -> UpstreamUnavailable:
    error = UpstreamUnavailable(
        f"The model provider '{upstream}' did not answer within {seconds:g}s (upstream_total_timeout)."
    )
    error.status = 504
    return error


async def _relay(response: Any, deadline: float | None, label: dict[str, str], idle: float) -> AsyncIterator[bytes]:
    """The upstream's stream as it sent it, until it ends, the call's deadline passes or it goes quiet for
    ``idle`` seconds. One timer per stream watches both (``ReadWatch``), not one per chunk."""
    tail = b""  # the last bytes, where the usage chunk is
    chunks = response.aiter_raw().__aiter__()
    loop = asyncio.get_running_loop()
    watch = ReadWatch(idle, deadline)  # in the task that reads: the one it cancels when time is up
    try:
        while True:
            if deadline is not None and loop.time() >= deadline:
                # Passed while the client was written to: checked here, as the watch would cancel the
                # task at once, and that cancel could land outside this read.
                log.warning("passthrough stream cut at the total deadline %s", label)
                return
            watch.reading()
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except asyncio.CancelledError:
                if not watch.fired or watch.task.uncancel() > 0:
                    raise
                if watch.fired == "deadline":
                    log.warning("passthrough stream cut at the total deadline %s", label)
                else:
                    log.warning("passthrough stream broke %s: ReadTimeout", label)
                return
            watch.idle()
            tail = (tail + chunk)[-8192:]
            yield chunk
    except Exception as exc:  # the upstream broke off: the client sees its stream end, the log says why
        log.warning("passthrough stream broke %s: %s", label, type(exc).__name__)
        return
    finally:
        watch.stop()
        await response.aclose()
    usage = None
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data:") and b'"usage"' in line:
            usage = _usage_of(line[5:].strip())
            if usage:
                break
    _log_usage(label, usage)


def _usage_of(body: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    usage = doc.get("usage") if isinstance(doc, dict) else None
    return usage if isinstance(usage, dict) else None


def _log_usage(label: dict[str, str], usage: dict[str, Any] | None) -> None:
    if usage is None:
        log.info("passthrough usage project=%s path=%s model=%s upstream=%s not reported", *label.values())
        return
    log.info(
        "passthrough usage project=%s path=%s model=%s upstream=%s prompt_tokens=%s completion_tokens=%s",
        *label.values(),
        usage.get("prompt_tokens"),
        usage.get("completion_tokens", 0),
    )


def _error_body(status: int, body: bytes) -> bytes:
    """The upstream's error as the OpenAI envelope: its own if it sent one, else its text inside one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict) and "message" in doc["error"]:
        return body
    message = body.decode(errors="replace").strip()[:_ERROR_SHOWN] or f"The model provider answered {status}."
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        message = doc["error"]
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})
