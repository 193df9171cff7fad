"""Any OpenAI-compatible Chat Completions endpoint (OpenAI, Azure, Ollama, vLLM, llama.cpp, ...)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
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
from assistantd.llm.http_stream import Response, StreamClient, usable_for
from assistantd.llm.shape import is_reasoning_model, sampling_fields, upstream_messages, upstream_tool_choice
from assistantd.llm.tokens import count_prompt, count_text
from assistantd.observability.hooks import model_call

log = logging.getLogger("assistantd.llm")

# Failures worth another try, before any token has been received: nothing was shown to anyone yet.
# 408/409/429 and 5xx say "try again"; every other status is the request's own fault and would fail again.
_RETRY_STATUS = {408, 409, 429}
_RETRIES = 2
_BACKOFF = 0.5  # seconds before the first retry; doubled for each next one
_MAX_RETRY_AFTER = 20.0  # a Retry-After longer than this is not waited for (the run fails with the error)
_SHOWN = 200  # bytes of a malformed answer quoted in the error
# httpx's pool does work proportional to its open connections on every request start and end (see
# encode/httpcore#1035), quadratic over a burst of a thousand streams; several smaller pools keep that
# small. It also closes every connection that goes idle while it holds more than the keep-alive limit,
# so the limit is the pool's size: under load each run would otherwise open a new connection (and TLS).
_POOLS = 16
_CONNECT_TIMEOUT = 10.0

# A streamed answer's response: httpx's, or the streaming client's (llm/http_stream.py).
_Answer = httpx.Response | Response


class OpenAICompatModel(ChatModel):
    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        *,
        timeout: float = 600.0,
        total_timeout: float | None = None,
        name: str = "upstream",
        max_connections: int = 2048,
        merge_roles: bool = True,
        reasoning_models: list[str] | None = None,
        stream_with_tools: bool = True,
        tool_results_as_user: bool = False,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._read_timeout = timeout
        self._total_timeout = total_timeout
        self.merge_roles = merge_roles
        self.reasoning_models = reasoning_models
        # llama-cpp-python's function-calling chat format cannot stream a call where the model may choose
        # between text and tools ("Automatic streaming tool choice is not supported"): such upstreams
        # are asked for whole answers whenever tools are offered, which become the same events.
        self.stream_with_tools = stream_with_tools
        self.tool_results_as_user = tool_results_as_user  # see llm/shape.py: servers that drop tool turns
        per_pool = max(1, -(-max_connections // _POOLS))
        tls = httpx.create_ssl_context()  # what each client would build itself (~50 ms each), built once
        self._clients = [
            httpx.AsyncClient(
                base_url=self.base_url,
                headers=headers,
                verify=tls,
                # Reads are timed by ReadWatch: httpx arms and cancels a timer around every socket read.
                timeout=httpx.Timeout(timeout, connect=_CONNECT_TIMEOUT, read=None),
                limits=httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool),
            )
            for _ in range(_POOLS if max_connections >= _POOLS else 1)
        ]
        self._client = self._clients[0]
        self._busy = [0] * len(self._clients)  # streams in flight per pool
        # Model calls go through the small streaming client when it can reach the upstream as httpx
        # would (no proxy from the environment): it costs a fraction of httpx's CPU per token read.
        # httpx stays for the rest (pass-through, model lists) and for proxied upstreams.
        self._streamer = (
            StreamClient(
                self.base_url, headers, tls=tls, connect_timeout=_CONNECT_TIMEOUT, max_connections=max_connections
            )
            if usable_for(self.base_url)
            else None
        )

    @property
    def read_timeout(self) -> float:
        """Seconds a call may wait for the upstream's next bytes."""
        return self._read_timeout

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        streamed = self.stream_with_tools or not request.tools
        body: dict[str, Any] = {
            "model": request.model,
            "messages": upstream_messages(
                request.messages, merge_roles=self.merge_roles, tool_results_as_user=self.tool_results_as_user
            ),
            "stream": streamed,
        }
        if streamed:
            body["stream_options"] = {"include_usage": True}
        if request.tools:
            body["tools"] = request.tools
            if request.tool_choice is not None:
                body["tool_choice"] = upstream_tool_choice(request.tools, request.tool_choice)
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        body.update(
            sampling_fields(
                reasoning=is_reasoning_model(request.model, self.reasoning_models),
                temperature=request.temperature,
                top_p=request.top_p,
                max_tokens=request.max_tokens,
                reasoning_effort=request.reasoning_effort,
            )
        )
        if request.response_format is not None:
            body["response_format"] = request.response_format
        return body

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        payload = self._body(request)
        body = orjson.dumps(payload)
        # The first least busy pool: one at a time, calls keep reusing the first pool's connections.
        pool = min(range(len(self._busy)), key=self._busy.__getitem__)
        self._busy[pool] += 1
        call = model_call(self.name, request.model)  # log line, metrics and span of this call
        error: BaseException | None = None
        try:
            tally = _Tally()
            client = self._streamer or self._clients[pool]
            async for event in self._stream(client, body, streamed=payload["stream"]):
                if isinstance(event, Finish) and not tally.usage_seen:
                    # No usage from the upstream: count locally so usage and budgets still work.
                    usage = Usage(count_prompt(payload["messages"], payload.get("tools")), tally.completion())
                    log.info(
                        "usage estimated locally upstream=%s model=%s prompt_tokens=%d completion_tokens=%d",
                        self.name,
                        request.model,
                        usage.prompt_tokens,
                        usage.completion_tokens,
                    )
                    call.saw(usage)
                    yield usage
                tally.see(event)
                call.saw(event)
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._busy[pool] -= 1
            call.end(error)

    async def _stream(
        self, client: httpx.AsyncClient | StreamClient, body: bytes, *, streamed: bool = True
    ) -> AsyncIterator[ChatEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_timeout if self._total_timeout else None
        for attempt in range(_RETRIES + 1):
            watch = ReadWatch(self._read_timeout, deadline)
            streaming = False
            try:
                watch.reading()
                async with client.stream(
                    "POST", "/chat/completions", content=body, headers={"Content-Type": "application/json"}
                ) as response:
                    if response.status_code != 200:
                        error = await _error_from(response)
                        status = response.status_code
                        if (status in _RETRY_STATUS or status >= 500) and attempt < _RETRIES:
                            pause = _retry_pause(response, attempt)
                            if pause is not None and (deadline is None or loop.time() + pause < deadline):
                                log.warning("upstream %s answered %s; retrying in %.1fs", self.name, status, pause)
                                watch.idle()
                                await asyncio.sleep(pause)
                                continue
                        raise error
                    streaming = True
                    parse = _parse if streamed else _parse_whole
                    async for event in parse(response, watch, self.name):
                        yield event
                    return
            except httpx.TransportError as exc:
                if streaming:
                    raise UpstreamError(
                        f"The model provider '{self.name}' broke off its answer: {type(exc).__name__}: {exc}".rstrip(
                            ": "
                        )
                    ) from exc
                # A connection that failed before any answer is retried: nothing was received, nothing repeats.
                pause = _BACKOFF * 2**attempt
                if attempt < _RETRIES and (deadline is None or loop.time() + pause < deadline):
                    watch.idle()
                    await asyncio.sleep(pause)
                    continue
                raise UpstreamError(
                    f"The model provider '{self.name}' could not be reached: {type(exc).__name__}: {exc}".rstrip(": ")
                ) from exc
            except asyncio.CancelledError:
                if not watch.fired or watch.task.uncancel() > 0:
                    raise
                if watch.fired == "deadline":
                    raise UpstreamError(
                        f"The model provider '{self.name}' did not finish its answer within the "
                        f"{self._total_timeout:g}s limit for one model call (upstream_total_timeout)"
                    ) from None
                # Same words as httpx's own read timeout gave.
                if streaming:
                    raise UpstreamError(f"The model provider '{self.name}' broke off its answer: ReadTimeout") from None
                raise UpstreamError(f"The model provider '{self.name}' could not be reached: ReadTimeout") from None
            finally:
                watch.stop()

    async def relay(self, path: str, body: bytes) -> httpx.Response | Relayed:
        """POST ``body`` to ``path`` (e.g. ``/embeddings``) and return the response unread, for pass-through.

        The caller reads (``aiter_raw`` for byte-faithful streaming) and must ``aclose`` it. Connection
        failures are ``UpstreamError``; the upstream's own error answers come back as they are. It goes
        through the streaming client when that can reach the upstream (as model calls do): at a thousand
        streams httpx's pool made pass-through streams wait for a connection, then fail with a 502.
        """
        headers = {"Content-Type": "application/json"}
        if self._streamer is not None:
            exchange = self._streamer.stream("POST", path, content=body, headers=headers)
            try:
                # The wait for the answer's head is bounded by the read timeout, as httpx bounds it.
                async with asyncio.timeout(self._read_timeout):
                    response = await exchange.__aenter__()
            except TimeoutError:
                raise UpstreamError(f"The model provider '{self.name}' could not be reached: ReadTimeout") from None
            except httpx.TransportError as exc:
                raise UpstreamError(
                    f"The model provider '{self.name}' could not be reached: {type(exc).__name__}: {exc}".rstrip(": ")
                ) from exc
            return Relayed(response, exchange, self._read_timeout)
        request = self._client.build_request(
            "POST", path, content=body, headers=headers, timeout=httpx.Timeout(self._read_timeout, connect=10.0)
        )
        try:
            return await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"The model provider '{self.name}' could not be reached: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from exc

    async def list_models(self) -> list[str]:
        response = await self._client.get("/models", timeout=5.0)
        response.raise_for_status()
        return [m["id"] for m in response.json().get("data", []) if isinstance(m, dict) and "id" in m]

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        if self._streamer is not None:
            await self._streamer.aclose()


class Relayed:
    """A pass-through answer read through the streaming client, with ``httpx.Response``'s reading methods.

    ``aread`` is bounded by the read timeout, as httpx bounds each read; a streamed relay times its own
    reads (``ReadWatch``). ``aclose`` ends the exchange: the connection is pooled again once its body ended.
    """

    def __init__(self, response: Response, exchange: contextlib.AbstractAsyncContextManager[Response], timeout: float):
        self._response = response
        self._exchange: contextlib.AbstractAsyncContextManager[Response] | None = exchange
        self._timeout = timeout
        self.status_code = response.status_code
        self.headers = response.headers

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._response.aiter_bytes()  # no content decoding here: none was asked for

    async def aread(self) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._response.aread()
        except TimeoutError:
            raise httpx.ReadTimeout(f"no bytes within {self._timeout:g}s") from None

    async def aclose(self) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.__aexit__(None, None, None)


async def _error_from(response: _Answer) -> UpstreamError:
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


def _retry_pause(response: _Answer, attempt: int) -> float | None:
    """Seconds to wait before retrying: the upstream's ``Retry-After`` if it gave one, else doubling backoff.

    None when the upstream asks for longer than ``_MAX_RETRY_AFTER``: the call fails now with its error.
    """
    header = response.headers.get("retry-after-ms")
    try:
        if header is not None:
            wait = float(header) / 1000
        elif (header := response.headers.get("retry-after")) is not None:
            try:
                wait = float(header)
            except ValueError:
                when = email.utils.parsedate_to_datetime(header)
                wait = when.timestamp() - time.time()
        else:
            return _BACKOFF * 2**attempt
    except (TypeError, ValueError, OverflowError):
        return _BACKOFF * 2**attempt
    wait = max(0.0, wait)
    return wait if wait <= _MAX_RETRY_AFTER else None


class _Tally:
    """What one call produced, to count its tokens when the upstream reports none."""

    def __init__(self) -> None:
        self.usage_seen = False
        self.text: list[str] = []

    def see(self, event: ChatEvent) -> None:
        if isinstance(event, Usage):
            self.usage_seen = True
        elif isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            self.text.append((event.name or "") + event.arguments)

    def completion(self) -> int:
        return max(1, count_text("".join(self.text)))


class ReadWatch:
    """httpx's read timeout (fail when the upstream sends nothing for ``seconds``), at one timer per period,
    and the call's total deadline (an upstream trickling a byte at a time, or only SSE comments, ends too).

    httpx arms and cancels a timer around every socket read; with a thousand token streams that was a
    tenth of the server's CPU. Here a read only notes the time it started waiting; the one timer, when
    it fires, re-arms itself from that time, or cancels the task if it has waited ``seconds`` already
    or the deadline has passed. It only cancels while the task is waiting on the upstream, so the
    CancelledError surfaces there.
    """

    def __init__(self, seconds: float, deadline: float | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.seconds = seconds
        self.deadline = deadline
        self.since: float | None = None  # when the current wait on the upstream began
        self.fired: str = ""  # "idle" or "deadline" once it cancelled the task
        self.handle: asyncio.TimerHandle | None = None

    def _due(self, since: float) -> float:
        due = since + self.seconds
        return due if self.deadline is None else min(due, self.deadline)

    def reading(self) -> None:
        self.since = self.loop.time()
        if self.deadline is not None and self.since >= self.deadline:
            self.fired = "deadline"
            self.task.cancel()
            return
        if self.handle is None:
            self.handle = self.loop.call_at(self._due(self.since), self._fire)

    def idle(self) -> None:
        self.since = None

    def _fire(self) -> None:
        self.handle = None
        if self.since is None:
            return  # re-armed by the next read
        now = self.loop.time()
        if self.deadline is not None and now >= self.deadline:
            self.fired = "deadline"
            self.task.cancel()
        elif now - self.since >= self.seconds:
            self.fired = "idle"
            self.task.cancel()
        else:
            self.handle = self.loop.call_at(self._due(self.since), self._fire)

    def stop(self) -> None:
        self.since = None
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class _Body:
    """The first bytes of an answer, to quote when it turns out not to be a stream."""

    def __init__(self) -> None:
        self.head = b""
        self.data_lines = 0

    def keep(self, chunk: bytes) -> None:
        if len(self.head) < _SHOWN:
            self.head += chunk[: _SHOWN - len(self.head)]

    def shown(self) -> str:
        text = self.head.decode(errors="replace").strip()
        return repr(text) if text else "an empty body"


async def _data_lines(response: _Answer, watch: ReadWatch, body: _Body) -> AsyncIterator[bytes]:
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
        body.keep(chunk)
        pending += chunk
        if b"\n" not in chunk and b"\r" not in chunk:
            continue
        lines = pending.splitlines(keepends=True)
        pending = b"" if lines[-1].endswith((b"\n", b"\r")) else lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                body.data_lines += 1
                yield line[5:].strip()
    watch.idle()
    if pending.startswith(b"data:"):
        body.data_lines += 1
        yield pending[5:].strip()


def _malformed(name: str, what: str) -> UpstreamError:
    return UpstreamError(f"The model provider '{name}' sent a malformed answer: {what}")


def _quote(data: bytes) -> str:
    return repr(data[:_SHOWN].decode(errors="replace"))


async def _parse(response: _Answer, watch: ReadWatch, name: str = "upstream") -> AsyncIterator[ChatEvent]:
    """Server-sent ``chat.completion.chunk`` events to our typed events; anything else is an ``UpstreamError``.

    A 200 that is not a stream (an HTML page, a plain JSON completion), a stream with no ``data:`` lines,
    one that stops before both ``finish_reason`` and ``[DONE]``, or a chunk of the wrong shape: each
    would otherwise end the run ``completed`` with an empty or cut answer.
    """
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    body = _Body()
    if kind and kind != "text/event-stream" and not kind.startswith("text/plain"):
        watch.reading()
        raw = await response.aread()
        watch.idle()
        raise _malformed(name, f"a {kind} body instead of an event stream: {_quote(raw)}")
    finish: str | None = None
    done = False
    named: set[int] = set()  # tool calls whose id and name were passed on (llama-cpp-python repeats them)
    async for data in _data_lines(response, watch, body):
        if data == b"[DONE]":
            done = True
            break
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _malformed(name, f"a stream chunk that is not JSON: {_quote(data)}") from None
        if not isinstance(chunk, dict):
            raise _malformed(name, f"a stream chunk that is not a JSON object: {_quote(data)}")
        if "error" in chunk:
            err = chunk["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            raise UpstreamError(f"The model provider failed mid-stream: {message}")
        try:
            for event in _events(chunk):
                if isinstance(event, Finish):
                    finish = event.reason
                elif isinstance(event, ToolCallDelta) and event.index in named:
                    yield ToolCallDelta(event.index, None, None, event.arguments)
                else:
                    if isinstance(event, ToolCallDelta) and event.name:
                        named.add(event.index)
                    yield event
        except (TypeError, ValueError, AttributeError):
            raise _malformed(name, f"a stream chunk of the wrong shape: {_quote(data)}") from None
    if not body.data_lines:
        raise _malformed(name, f"no data: lines in its event stream, only {body.shown()}")
    if finish is None and not done:
        raise _malformed(name, "an event stream that ended without a finish_reason or [DONE] (cut off)")
    yield Finish(finish or "stop")


async def _parse_whole(response: _Answer, watch: ReadWatch, name: str = "upstream") -> AsyncIterator[ChatEvent]:
    """A non-streamed ``chat.completion`` as the same events a stream would have given."""
    watch.reading()
    raw = await response.aread()
    watch.idle()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _malformed(name, f"a body that is not JSON: {_quote(raw)}") from None
    if isinstance(doc, dict) and "error" in doc:
        err = doc["error"]
        raise UpstreamError(f"The model provider failed: {err.get('message') if isinstance(err, dict) else err}")
    if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list) or not doc["choices"]:
        raise _malformed(name, f"a completion without choices: {_quote(raw)}")
    try:
        choice = doc["choices"][0]
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"content": message.get("content")}
        delta["tool_calls"] = [{**call, "index": i} for i, call in enumerate(message.get("tool_calls") or [])]
        chunk = {"usage": doc.get("usage"), "choices": [{"delta": delta, "finish_reason": choice.get("finish_reason")}]}
        events = _events(chunk)
    except (TypeError, ValueError, AttributeError):
        raise _malformed(name, f"a completion of the wrong shape: {_quote(raw)}") from None
    finish = next((e for e in events if isinstance(e, Finish)), Finish("stop"))
    for event in events:
        if not isinstance(event, Finish):
            yield event
    yield finish


def _events(chunk: dict[str, Any]) -> list[ChatEvent]:
    """One chunk's events; raises TypeError/ValueError/AttributeError on a shape that is not a chunk's."""
    events: list[ChatEvent] = []
    usage = chunk.get("usage")
    if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
        events.append(Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)))
    choices = chunk.get("choices")
    if choices is None:
        choices = []
    if not isinstance(choices, list):
        raise TypeError("choices")
    for choice in choices:
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise TypeError("delta")
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError("content")
        if content:
            events.append(TextDelta(content))
        calls = delta.get("tool_calls") or []
        if not isinstance(calls, list):
            raise TypeError("tool_calls")
        for call in calls:
            fn = call.get("function") or {}
            arguments = fn.get("arguments") or ""
            if not isinstance(arguments, str):
                raise TypeError("arguments")
            index = int(call.get("index", 0))
            events.append(ToolCallDelta(index=index, id=call.get("id"), name=fn.get("name"), arguments=arguments))
        if choice.get("finish_reason"):
            events.append(Finish(str(choice["finish_reason"])))
    return events
