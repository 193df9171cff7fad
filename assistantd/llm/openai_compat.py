"""Any OpenAI-compatible Chat Completions endpoint (OpenAI, Azure, Ollama, vLLM, llama.cpp, ...)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from assistantd.llm.base import (
    ChatEvent,
    ChatModel,
    ChatRequest,
    Finish,
    TextDelta,
    ToolCallDelta,
    UpstreamError,
    Usage,
)
from assistantd.observability.hooks import model_call

log = logging.getLogger("assistantd.llm")

# Failures worth one more try, before any token has been received: nothing was shown to anyone yet.
_RETRY_STATUS = {500, 502, 503, 504}
_RETRIES = 2
# httpx's pool does work proportional to its open connections on every request start and end (see
# encode/httpcore#1035), quadratic over a burst of a thousand streams; several smaller pools keep that
# small. It also closes every connection that goes idle while it holds more than the keep-alive limit,
# so the limit is the pool's size: under load each run would otherwise open a new connection (and TLS).
_POOLS = 16


class OpenAICompatModel(ChatModel):
    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        *,
        timeout: float = 600.0,
        name: str = "upstream",
        max_connections: int = 2048,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.name = name
        self._read_timeout = timeout
        per_pool = max(1, -(-max_connections // _POOLS))
        tls = httpx.create_ssl_context()  # what each client would build itself (~50 ms each), built once
        self._clients = [
            httpx.AsyncClient(
                base_url=base_url.rstrip("/"),
                headers=headers,
                verify=tls,
                # Reads are timed by _ReadWatch: httpx arms and cancels a timer around every socket read.
                timeout=httpx.Timeout(timeout, connect=10.0, read=None),
                limits=httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool),
            )
            for _ in range(_POOLS if max_connections >= _POOLS else 1)
        ]
        self._client = self._clients[0]
        self._busy = [0] * len(self._clients)  # streams in flight per pool

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = request.tools
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        optional = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "response_format": request.response_format,
            "reasoning_effort": request.reasoning_effort,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return body

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        body = orjson.dumps(self._body(request))
        # The first least busy pool: one at a time, calls keep reusing the first pool's connections.
        pool = min(range(len(self._busy)), key=self._busy.__getitem__)
        self._busy[pool] += 1
        call = model_call(self.name, request.model)  # log line, metrics and span of this call
        error: BaseException | None = None
        try:
            async for event in self._stream(self._clients[pool], body):
                call.saw(event)
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._busy[pool] -= 1
            call.end(error)

    async def _stream(self, client: httpx.AsyncClient, body: bytes) -> AsyncIterator[ChatEvent]:
        for attempt in range(_RETRIES + 1):
            watch = _ReadWatch(self._read_timeout)
            streaming = False
            try:
                watch.reading()
                async with client.stream(
                    "POST", "/chat/completions", content=body, headers={"Content-Type": "application/json"}
                ) as response:
                    if response.status_code != 200:
                        error = await _error_from(response)
                        if response.status_code in _RETRY_STATUS and attempt < _RETRIES:
                            log.warning("upstream %s answered %s; retrying", self.name, response.status_code)
                            watch.idle()
                            await asyncio.sleep(0.5 * (attempt + 1))
                            continue
                        raise error
                    streaming = True
                    async for event in _parse(response, watch):
                        yield event
                    return
            except httpx.TransportError as exc:
                if streaming:
                    raise UpstreamError(
                        f"The model provider '{self.name}' broke off its answer: {type(exc).__name__}: {exc}".rstrip(
                            ": "
                        )
                    ) from exc
                # Only a failure to connect is retried: once a stream has begun, a retry would repeat it.
                if isinstance(exc, httpx.ConnectError) and attempt < _RETRIES:
                    watch.idle()
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                raise UpstreamError(
                    f"The model provider '{self.name}' could not be reached: {type(exc).__name__}: {exc}".rstrip(": ")
                ) from exc
            except asyncio.CancelledError:
                if not watch.fired or watch.task.uncancel() > 0:
                    raise
                # Same words as httpx's own read timeout gave.
                if streaming:
                    raise UpstreamError(f"The model provider '{self.name}' broke off its answer: ReadTimeout") from None
                raise UpstreamError(f"The model provider '{self.name}' could not be reached: ReadTimeout") from None
            finally:
                watch.stop()

    async def list_models(self) -> list[str]:
        response = await self._client.get("/models", timeout=5.0)
        response.raise_for_status()
        return [m["id"] for m in response.json().get("data", []) if isinstance(m, dict) and "id" in m]

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


async def _error_from(response: httpx.Response) -> UpstreamError:
    raw = await response.aread()
    message = raw.decode(errors="replace")[:2000]
    try:
        doc = orjson.loads(raw)
        if isinstance(doc, dict):
            err = doc.get("error")
            if isinstance(err, dict) and err.get("message"):
                message = str(err["message"])
            elif isinstance(err, str):
                message = err
    except orjson.JSONDecodeError:
        pass
    code = "rate_limit_exceeded" if response.status_code == 429 else "server_error"
    return UpstreamError(
        f"The model provider answered {response.status_code}: {message}", code=code, status=response.status_code
    )


class _ReadWatch:
    """httpx's read timeout (fail when the upstream sends nothing for ``seconds``), at one timer per period.

    httpx arms and cancels a timer around every socket read; with a thousand token streams that was a
    tenth of the server's CPU. Here a read only notes the time it started waiting; the one timer, when
    it fires, re-arms itself from that time, or cancels the task if it has waited ``seconds`` already.
    It only cancels while the task is waiting on the upstream, so the CancelledError surfaces there.
    """

    def __init__(self, seconds: float) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.seconds = seconds
        self.since: float | None = None  # when the current wait on the upstream began
        self.fired = False
        self.handle: asyncio.TimerHandle | None = None

    def reading(self) -> None:
        self.since = self.loop.time()
        if self.handle is None:
            self.handle = self.loop.call_at(self.since + self.seconds, self._fire)

    def idle(self) -> None:
        self.since = None

    def _fire(self) -> None:
        self.handle = None
        if self.since is None:
            return  # re-armed by the next read
        if self.loop.time() - self.since >= self.seconds:
            self.fired = True
            self.task.cancel()
        else:
            self.handle = self.loop.call_at(self.since + self.seconds, self._fire)

    def stop(self) -> None:
        self.since = None
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


async def _data_lines(response: httpx.Response, watch: _ReadWatch) -> AsyncIterator[bytes]:
    """The payloads of the stream's ``data:`` lines, split on bytes (no text decoding per chunk)."""
    pending = b""
    chunks = response.aiter_bytes().__aiter__()
    while True:
        watch.reading()
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            break
        watch.idle()
        pending += chunk
        if b"\n" not in chunk and b"\r" not in chunk:
            continue
        lines = pending.splitlines(keepends=True)
        pending = b"" if lines[-1].endswith((b"\n", b"\r")) else lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
    watch.idle()
    if pending.startswith(b"data:"):
        yield pending[5:].strip()


async def _parse(response: httpx.Response, watch: _ReadWatch) -> AsyncIterator[ChatEvent]:
    """Server-sent ``chat.completion.chunk`` events to our typed events."""
    finish: str | None = None
    async for data in _data_lines(response, watch):
        if data == b"[DONE]":
            break
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            shown = data[:200].decode(errors="replace")
            raise UpstreamError(f"The model provider sent a malformed stream chunk: {shown}") from None
        if isinstance(chunk, dict) and "error" in chunk:
            err = chunk["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            raise UpstreamError(f"The model provider failed mid-stream: {message}")
        usage = chunk.get("usage")
        if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
            yield Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                yield TextDelta(content)
            for call in delta.get("tool_calls") or []:
                fn = call.get("function") or {}
                yield ToolCallDelta(
                    index=int(call.get("index", 0)),
                    id=call.get("id"),
                    name=fn.get("name"),
                    arguments=fn.get("arguments") or "",
                )
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    yield Finish(finish or "stop")
