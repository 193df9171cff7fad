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

log = logging.getLogger("assistantd.llm")

# Failures worth one more try, before any token has been received: nothing was shown to anyone yet.
_RETRY_STATUS = {500, 502, 503, 504}
_RETRIES = 2


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
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=256),
        )

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
        for attempt in range(_RETRIES + 1):
            try:
                async with self._client.stream(
                    "POST", "/chat/completions", content=body, headers={"Content-Type": "application/json"}
                ) as response:
                    if response.status_code != 200:
                        error = await _error_from(response)
                        if response.status_code in _RETRY_STATUS and attempt < _RETRIES:
                            log.warning("upstream %s answered %s; retrying", self.name, response.status_code)
                            await asyncio.sleep(0.5 * (attempt + 1))
                            continue
                        raise error
                    async for event in _parse(response):
                        yield event
                    return
            except httpx.TransportError as exc:
                # Only a failure to connect is retried: once a stream has begun, a retry would repeat it.
                if isinstance(exc, httpx.ConnectError) and attempt < _RETRIES:
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                raise UpstreamError(
                    f"The model provider '{self.name}' could not be reached: {type(exc).__name__}: {exc}".rstrip(": ")
                ) from exc

    async def list_models(self) -> list[str]:
        response = await self._client.get("/models", timeout=5.0)
        response.raise_for_status()
        return [m["id"] for m in response.json().get("data", []) if isinstance(m, dict) and "id" in m]

    async def aclose(self) -> None:
        await self._client.aclose()


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


async def _parse(response: httpx.Response) -> AsyncIterator[ChatEvent]:
    """Server-sent ``chat.completion.chunk`` events to our typed events."""
    finish: str | None = None
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"The model provider sent a malformed stream chunk: {data[:200]}") from None
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
