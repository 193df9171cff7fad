"""A scripted Chat Completions server: the LLM double for tests, demos and benchmarks.

It speaks the real wire protocol over HTTP, so everything between assistantd and a model provider is
exercised. Scripts are queued per model name (tests use their own model names and never collide):

    POST /_script    {"model": "m", "turns": [turn, ...]}     queue turns for model m
    GET  /_requests?model=m                                    the request bodies m received
    POST /_release?model=m                                     let a held turn go on

A turn: ``text`` (streamed word by word, or as given in ``chunks``), ``tool_calls``
(``[{"name", "arguments"}]``), ``usage`` (``{"prompt_tokens", "completion_tokens"}``), ``finish_reason``,
``status`` + ``error`` (answer with that HTTP error; ``headers`` adds e.g. ``Retry-After``),
``fail_after`` (send that many chunks then
break the stream), ``hold`` (after the first chunk, wait for /_release), ``ttft_ms`` / ``delay_ms``.
Faults a real server may send: ``raw`` (``{"body", "content_type"}``: a 200 with that body instead of a
stream) and ``raw_stream`` (an event stream of exactly these strings, ``repeat`` times over, ``delay_ms``
apart: a stream with no ``data:`` lines, only comments, cut off, or with chunks of the wrong shape).
With no turn queued the model echoes the last user message; ``--ttft-ms``, ``--delay-ms`` and
``--tokens`` shape that default answer for benchmarks.

Run it with ``python -m assistantd.llm.scripted --port 9000``; ``--help`` documents the script format.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


class Script:
    def __init__(self, *, ttft_ms: float = 0.0, delay_ms: float = 0.0, tokens: int = 0) -> None:
        self.turns: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self.requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.release: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.default = {"ttft_ms": ttft_ms, "delay_ms": delay_ms, "tokens": tokens}

    def next_turn(self, body: dict[str, Any]) -> dict[str, Any]:
        model = str(body.get("model", ""))
        queue = self.turns.get(model)
        if queue:
            return queue.popleft()
        last_user = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), None)
        said = last_user.get("content") if last_user else ""
        if isinstance(said, list):
            said = " ".join(p.get("text", "") for p in said if isinstance(p, dict))
        if self.default["tokens"]:
            words = [f"w{i}" for i in range(int(self.default["tokens"]))]
            return {
                "chunks": [(" " if i else "") + w for i, w in enumerate(words)],
                "ttft_ms": self.default["ttft_ms"],
                "delay_ms": self.default["delay_ms"],
            }
        return {"text": f"You said: {said}", "ttft_ms": self.default["ttft_ms"], "delay_ms": self.default["delay_ms"]}


def _chunks_of(turn: dict[str, Any]) -> list[str]:
    if "chunks" in turn:
        return list(turn["chunks"])
    text = turn.get("text") or ""
    if not text:
        return []
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _usage(turn: dict[str, Any], body: dict[str, Any], pieces: list[str]) -> dict[str, int]:
    usage = turn.get("usage") or {}
    prompt = usage.get("prompt_tokens", sum(len(str(m.get("content") or "")) // 4 + 4 for m in body["messages"]))
    completion = usage.get("completion_tokens", max(1, len(pieces)))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _raw_stream(turn: dict[str, Any]) -> AsyncIterator[bytes]:
    for n in range(int(turn.get("repeat", 1))):
        for i, piece in enumerate(turn["raw_stream"]):
            if (n or i) and turn.get("delay_ms"):
                await asyncio.sleep(turn["delay_ms"] / 1000)
            yield piece.encode()


def create_app(script: Script | None = None) -> Starlette:
    script = script or Script()

    async def completions(request: Request) -> Response:
        body = orjson.loads(await request.body())
        model = str(body.get("model", ""))
        script.requests[model].append(body)
        turn = script.next_turn(body)
        if "status" in turn:
            error = {"error": {"message": turn.get("error", "scripted failure"), "type": "server_error"}}
            return Response(
                orjson.dumps(error),
                status_code=int(turn["status"]),
                media_type="application/json",
                headers=turn.get("headers") or {},
            )
        if "raw" in turn:
            return Response(turn["raw"]["body"].encode(), media_type=turn["raw"].get("content_type"))
        if "raw_stream" in turn:
            return StreamingResponse(_raw_stream(turn), media_type="text/event-stream")
        pieces = _chunks_of(turn)
        calls = turn.get("tool_calls") or []
        finish = turn.get("finish_reason") or ("tool_calls" if calls else "stop")
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces) or None}
            if calls:
                message["tool_calls"] = [
                    {
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]},
                    }
                    for i, c in enumerate(calls)
                ]
            return Response(
                orjson.dumps(
                    {
                        "id": "chatcmpl-scripted",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                        "usage": _usage(turn, body, pieces),
                    }
                ),
                media_type="application/json",
            )

        async def stream() -> AsyncIterator[bytes]:
            cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
            if turn.get("ttft_ms"):
                await asyncio.sleep(turn["ttft_ms"] / 1000)
            yield _chunk(cid, model, {"role": "assistant", "content": ""})
            for i, piece in enumerate(pieces):
                if i and turn.get("delay_ms"):
                    await asyncio.sleep(turn["delay_ms"] / 1000)
                if turn.get("fail_after") is not None and i >= turn["fail_after"]:
                    raise RuntimeError("scripted mid-stream failure")
                yield _chunk(cid, model, {"content": piece})
                if turn.get("hold") and i == 0:
                    await script.release[model].wait()
                    script.release[model].clear()
            for i, call in enumerate(calls):
                args = call.get("arguments", "")
                fragments = call.get("fragments") or [args[j : j + 8] for j in range(0, len(args), 8)] or [""]
                yield _chunk(
                    cid,
                    model,
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": f"call_up_{i}",
                                "type": "function",
                                "function": {"name": call["name"], "arguments": fragments[0]},
                            }
                        ]
                    },
                )
                for fragment in fragments[1:]:
                    yield _chunk(cid, model, {"tool_calls": [{"index": i, "function": {"arguments": fragment}}]})
            if turn.get("hold") and not pieces:
                await script.release[model].wait()
                script.release[model].clear()
            yield _chunk(cid, model, {}, finish)
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [],
                    "usage": _usage(turn, body, pieces),
                }
                yield b"data: " + orjson.dumps(usage) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def legacy_completions(request: Request) -> Response:
        """``/v1/completions``: the prompt echoed back (streamed when asked), or a queued error turn."""
        body = orjson.loads(await request.body())
        model = str(body.get("model", ""))
        script.requests[model].append(body)
        queue = script.turns.get(model)
        turn = queue.popleft() if queue else {"text": f"You said: {body.get('prompt', '')}"}
        if "status" in turn:
            error = {"error": {"message": turn.get("error", "scripted failure"), "type": "server_error"}}
            return Response(orjson.dumps(error), status_code=int(turn["status"]), media_type="application/json")
        pieces = _chunks_of(turn)
        usage = {"prompt_tokens": 3, "completion_tokens": len(pieces), "total_tokens": 3 + len(pieces)}

        def choice(text: str, finish: str | None) -> dict[str, Any]:
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

        doc = {"id": "cmpl-scripted", "object": "text_completion", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            full = {**doc, "choices": [choice("".join(pieces), "stop")], "usage": usage}
            return Response(orjson.dumps(full), media_type="application/json")

        async def stream() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield b"data: " + orjson.dumps({**doc, "choices": [choice(piece, None)]}) + b"\n\n"
            yield b"data: " + orjson.dumps({**doc, "choices": [choice("", "stop")], "usage": usage}) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        """``/v1/embeddings``: a small deterministic vector per input (its bytes' first values), for tests."""
        body = orjson.loads(await request.body())
        model = str(body.get("model", ""))
        script.requests[model].append(body)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = [
            {"object": "embedding", "index": i, "embedding": [float(b) / 255 for b in (str(t).encode() + bytes(4))[:4]]}
            for i, t in enumerate(texts)
        ]
        tokens = sum(len(str(t).split()) for t in texts)
        doc = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(orjson.dumps(doc), media_type="application/json")

    async def add_script(request: Request) -> Response:
        doc = orjson.loads(await request.body())
        script.turns[str(doc["model"])].extend(doc.get("turns", []))
        return Response(b"{}", media_type="application/json")

    async def requests_seen(request: Request) -> Response:
        return Response(
            orjson.dumps(script.requests.get(request.query_params["model"], [])), media_type="application/json"
        )

    async def release(request: Request) -> Response:
        script.release[request.query_params["model"]].set()
        return Response(b"{}", media_type="application/json")

    async def models(request: Request) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in script.turns]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/completions", legacy_completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/_script", add_script, methods=["POST"]),
            Route("/_requests", requests_seen, methods=["GET"]),
            Route("/_release", release, methods=["POST"]),
        ]
    )


HELP_EPILOG = """\
what it answers:
  With no script queued for a model, every model answers by echoing the last user message
  ("You said: ..."), streamed word by word. Point assistantd at it with
  --upstream-base-url http://HOST:PORT/v1 and use any model name.

scripts (queue answers for one model name, used in order, one per model call):
  curl -s http://127.0.0.1:9000/_script -d '{"model": "demo", "turns": [TURN, ...]}'
  GET  /_requests?model=demo     the request bodies that model received
  POST /_release?model=demo      let a turn with "hold" go on

a TURN is a JSON object with any of:
  "text": "..."                  the answer, streamed word by word ("chunks": [...] to split it yourself)
  "tool_calls": [{"name": N, "arguments": "{...}"}]
                                 call tools; N is a function tool of the assistant, or a built-in:
                                 "code_interpreter" (arguments {"code": "print(1+1)"}) or
                                 "file_search" (arguments {"queries": ["..."]})
  "usage": {"prompt_tokens": P, "completion_tokens": C}
  "finish_reason": "stop" | "length" | "tool_calls"
  "status": 429, "error": "..."  answer with that HTTP error instead
  "fail_after": N                break the stream after N chunks
  "hold": true                   pause after the first chunk until /_release
  "ttft_ms": MS, "delay_ms": MS  delay before the first chunk, and between chunks

example: a run whose model first runs code, then answers:
  {"model": "demo", "turns": [
     {"tool_calls": [{"name": "code_interpreter", "arguments": "{\\"code\\": \\"print(6*7)\\"}"}]},
     {"text": "The answer is 42."}]}
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m assistantd.llm.scripted",
        description="A scripted OpenAI-compatible Chat Completions server (streaming, tool calls, errors): the "
        "test double for assistantd's model, handy for demos. It prints the address it listens on.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    parser.add_argument("--port", type=int, default=9000, help="Port to listen on (default 9000; 0: any free port).")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="Delay before the first token (default answer).")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="Delay between tokens (default answer).")
    parser.add_argument("--tokens", type=int, default=0, help="Answer with this many tokens instead of an echo.")
    return parser


def main(argv: list[str] | None = None) -> None:
    import socket
    import sys

    import uvicorn

    args = build_parser().parse_args(argv)
    app = create_app(Script(ttft_ms=args.ttft_ms, delay_ms=args.delay_ms, tokens=args.tokens))
    # Bound here, not by uvicorn, so the real port (with --port 0) is known and printed before serving.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"scripted model listening on http://{shown}:{port}/v1 (--help for the script format)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
