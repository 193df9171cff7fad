"""The server's side of one kernel: run a cell over the Jupyter protocol and gather what it produced.

Talks to ipykernel through ``jupyter_client``'s async client over unix sockets. A cell's result is its
iopub traffic (stream text, results, displayed PNGs, the error) up to the ``execute_reply`` and the
kernel's return to idle. Three things can cut that short, and each is decided here rather than guessed
later: the kernel process dies (``crashed``), the wall-clock deadline passes (``timeout``: interrupt the
cell through the control channel, give it a moment to unwind so its traceback shows where it was stuck,
and report; the caller then discards the kernel), or the kernel floods us past what the kernel-side
output cap would ever let through (the code bypassed it on purpose: treated as a crash).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from queue import Empty
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import zmq.asyncio

# pyzmq and jupyter_client come with the code-interpreter extra; they are imported on first use so the
# server runs without it (the tool then reports itself unavailable).

# The largest single message we accept from a kernel (a big PNG); ZMQ drops the connection on larger ones
# instead of buffering them in the server.
MAX_MESSAGE_BYTES = 32 << 20  # at least; room for the largest image allowed (base64) if that is more


def message_limit(max_image_bytes: int) -> int:
    return max(MAX_MESSAGE_BYTES, max_image_bytes * 4 // 3 + (1 << 20))


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_PNG = b"\x89PNG\r\n\x1a\n"


def new_context(max_message_bytes: int = MAX_MESSAGE_BYTES) -> zmq.asyncio.Context:
    import zmq
    import zmq.asyncio

    ctx = zmq.asyncio.Context()
    ctx.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    ctx.setsockopt(zmq.LINGER, 0)
    # Never reconnect. The socket paths live inside the sandbox (reached through /proc/PID/root), and once
    # its code runs it could swap them for symlinks to host sockets: a reconnect, made by root from the
    # server's side, would then follow them. We connect once, before any sandboxed code has run.
    ctx.setsockopt(zmq.RECONNECT_IVL, -1)
    return ctx


# Takes each PNG as it arrives, so a cell's images are never all in memory at once.
ImageSink = Callable[[bytes], Awaitable[None]]


@dataclass
class CellResult:
    logs: str = ""
    error: str | None = None  # "ExcType: message", "timeout" or "crashed"


class _Collector:
    """Logs in arrival order, capped at ``limit`` bytes with a note; the traceback always kept whole."""

    def __init__(self, limit: int, max_images: int, max_image_bytes: int) -> None:
        self.limit = limit
        self.max_images = max_images
        self.max_image_bytes = max_image_bytes
        self.pending: list[bytes] = []  # decoded, not yet handed to the sink
        self.images_seen = 0
        self.too_big: list[int] = []
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False
        self.traceback = ""
        self.error: str | None = None
        self.images_dropped = 0
        self.received = 0  # bytes of payload seen, to notice a flood
        self.image_received = 0  # the same for images, which have a budget of their own

    def text(self, text: str) -> None:
        text = _ANSI.sub("", text)
        self.received += len(text)
        if self.truncated:
            return
        data = text.encode("utf-8", errors="replace")
        if self.size + len(data) > self.limit:
            keep = data[: self.limit - self.size].decode("utf-8", errors="ignore")
            self.parts.append(keep)
            self.size = self.limit
            self.truncated = True
            return
        self.parts.append(text)
        self.size += len(data)

    def data(self, bundle: dict[str, Any]) -> None:
        png = bundle.get("image/png")
        if isinstance(png, str):
            self.image_received += len(png)
            if self.images_seen >= self.max_images:
                self.images_dropped += 1
                return
            if len(png) // 4 * 3 > self.max_image_bytes:  # judged before decoding it
                self.images_seen += 1
                self.too_big.append(len(png) // 4 * 3)
                return
            with contextlib.suppress(binascii.Error, ValueError):
                raw = base64.b64decode(png, validate=False)
                if raw.startswith(_PNG):
                    self.images_seen += 1
                    self.pending.append(raw)
                    return
        plain = bundle.get("text/plain")
        if isinstance(plain, str):
            self.text(plain if plain.endswith("\n") else plain + "\n")

    def handle(self, msg: dict[str, Any]) -> bool:
        """Take one iopub message of our cell; True when it says the kernel is idle again."""
        kind = msg.get("msg_type")
        content = msg.get("content")
        if not isinstance(content, dict):
            return False
        if kind == "stream":
            self.text(str(content.get("text", "")))
        elif kind in {"execute_result", "display_data"}:
            data = content.get("data")
            if isinstance(data, dict):
                self.data(data)
        elif kind == "error":
            ename, evalue = str(content.get("ename", "Error")), str(content.get("evalue", ""))
            self.error = f"{ename}: {evalue}" if evalue else ename
            raw = content.get("traceback")
            lines = [str(line) for line in raw] if isinstance(raw, list) else []
            tb = _ANSI.sub("", "\n".join(lines)) or self.error
            self.received += len(tb)
            self.traceback = tb[: self.limit // 2] + ("\n[traceback truncated]" if len(tb) > self.limit // 2 else "")
        elif kind == "status":
            return content.get("execution_state") == "idle"
        return False

    def result(self, error: str | None, note: str = "") -> CellResult:
        logs = "".join(self.parts)
        if self.truncated:
            logs += f"\n[output truncated: only the first {self.limit} bytes are shown]\n"
        if self.traceback:
            logs += ("" if not logs or logs.endswith("\n") else "\n") + self.traceback + "\n"
        for size in self.too_big:
            logs += (
                f"[an image of {size / (1 << 20):.1f} MB was not kept: images are limited to "
                f"{self.max_image_bytes / (1 << 20):.0f} MB]\n"
            )
        if self.images_dropped:
            logs += f"[{self.images_dropped} more images were not kept]\n"
        if note:
            logs += ("" if not logs or logs.endswith("\n") else "\n") + note + "\n"
        return CellResult(logs=logs, error=error)


class KernelConnection:
    def __init__(self, context: zmq.asyncio.Context, info: dict[str, Any]) -> None:
        from jupyter_client.asynchronous import AsyncKernelClient

        self.client = AsyncKernelClient(context=context)
        self.client.load_connection_info(info)  # type: ignore[arg-type]
        self.client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.stop_channels()

    async def wait_ready(self, died: asyncio.Future[Any], seconds: float) -> None:
        """Return once every channel is connected: iopub delivers (a SUB socket only receives after its
        subscription reached the kernel, and a cell's output published before that would be lost), and
        shell and control each answer a request (so no connection is still pending once code runs)."""
        kc = self.client
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            if died.done():
                raise RuntimeError("the kernel exited while starting")
            if loop.time() > deadline:
                raise TimeoutError("the kernel did not answer")
            kc.kernel_info()
            try:
                await kc.get_iopub_msg(timeout=0.1)
            except Empty:
                continue
            break
        # Leftover replies and status messages are told apart from a cell's by their parent msg_id.
        await kc.get_shell_msg(timeout=max(0.1, deadline - loop.time()))
        kc.control_channel.send(kc.session.msg("kernel_info_request", {}))
        await kc.get_control_msg(timeout=max(0.1, deadline - loop.time()))

    async def run(
        self,
        code: str,
        *,
        wall_seconds: float,
        died: asyncio.Future[Any],
        limit: int,
        max_images: int,
        max_image_bytes: int,
        on_image: ImageSink | None,
        grace: float,
        silent: bool = False,
    ) -> CellResult:
        kc = self.client
        loop = asyncio.get_running_loop()
        out = _Collector(limit, max_images, max_image_bytes)
        # What a well-behaved kernel can send: its capped text, and every image it may show at full size.
        flood = limit * 8 + 4 * MAX_MESSAGE_BYTES
        image_flood = (4 + max_images) * message_limit(max_image_bytes)
        msg_id = kc.execute(code, silent=silent, store_history=not silent, allow_stdin=False, stop_on_error=False)
        deadline = wall_end = loop.time() + wall_seconds
        interrupted = False
        idle = replied = False
        iopub: asyncio.Task[Any] | None = None
        shell: asyncio.Task[Any] | None = None
        try:
            while not (idle and replied):
                if iopub is None:
                    iopub = asyncio.ensure_future(kc.get_iopub_msg())
                if shell is None and not replied:
                    shell = asyncio.ensure_future(kc.get_shell_msg())
                waiting: set[asyncio.Future[Any]] = {iopub, died}
                if shell is not None:
                    waiting.add(shell)
                remaining = max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if iopub in done:
                    msg = _result(iopub)
                    iopub = None
                    if _parent_id(msg) == msg_id and out.handle(msg):
                        idle = True
                    del msg  # its base64 text is as big as the image: not kept while the image is saved
                    while out.pending:  # saved (or dropped) now, so no more than one is held at a time
                        png = out.pending.pop(0)
                        if on_image is not None:
                            await on_image(png)
                        del png
                    if replied and not interrupted:
                        # Output sent before the reply may still be queued behind it (big images take a
                        # while each to save): the grace runs from the last message handled, not from the
                        # reply, up to the wall deadline (and the flood caps bound the bytes).
                        deadline = max(deadline, min(wall_end, loop.time()) + grace)
                if shell is not None and shell in done:
                    msg = _result(shell)
                    shell = None
                    if _parent_id(msg) == msg_id and msg.get("msg_type") == "execute_reply":
                        replied = True
                        # Output comes before the reply on another socket; if idle never shows up (a message
                        # over MAX_MESSAGE_BYTES dropped the connection) do not wait for the full deadline.
                        deadline = min(deadline, loop.time() + grace)
                if out.received > flood or out.image_received > image_flood:
                    over = flood if out.received > flood else image_flood
                    return out.result("crashed", f"[the sandbox was stopped: it sent over {over} bytes of output]")
                if died in done and not (idle and replied):
                    return out.result("crashed")
                if not done:
                    if replied:
                        # A reply without the return to idle: iopub lost its connection (a message over
                        # MAX_MESSAGE_BYTES) and never comes back, so later output would vanish silently.
                        return out.result("crashed", "[the sandbox's output channel broke]")
                    if interrupted:
                        return out.result("timeout")
                    interrupted = True
                    kc.control_channel.send(kc.session.msg("interrupt_request", {}))
                    deadline = loop.time() + grace
        finally:
            for task in (iopub, shell):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
        return out.result("timeout" if interrupted else out.error)


def _result(task: asyncio.Task[Any]) -> dict[str, Any]:
    """A received message, or {} for one that does not even decode (bad JSON, bad signature)."""
    try:
        msg = task.result()
    except Exception:
        return {}
    return msg if isinstance(msg, dict) else {}


def _parent_id(msg: Any) -> Any:
    """The msg_id a message answers. Everything from the kernel is untrusted: the sandboxed code can send
    arbitrary (validly signed: it can read the key) messages, so no shape is assumed."""
    parent = msg.get("parent_header") if isinstance(msg, dict) else None
    return parent.get("msg_id") if isinstance(parent, dict) else None
