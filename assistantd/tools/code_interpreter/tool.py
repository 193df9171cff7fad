"""The code interpreter as a run tool: the function the model calls, and what a call records."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from assistantd.store import Database
from assistantd.store.blobs import BlobStore
from assistantd.tools.base import BuiltinTool, ToolContext, ToolOutcome, resource_ids
from assistantd.tools.code_interpreter.interpreter import CodeInterpreter, CodeInterpreterError, InputFile, session_key
from assistantd.tools.partial_json import string_field
from assistantd.tools.stored_files import lookup, store_output

DESCRIPTION = (
    "Run Python code in a stateful Jupyter session (variables persist between calls). The user's files are "
    "in /mnt/data. numpy, pandas, scipy, matplotlib, sympy and scikit-learn are installed; there is no "
    "internet access. Figures shown with plt.show() are returned to the user as images. To give the user a "
    "file, save it under /mnt/data and link it as sandbox:/mnt/data/<name>."
)


def _input_file_ids(ctx: ToolContext) -> list[str]:
    ids = resource_ids(ctx, "code_interpreter", "file_ids")
    for attachment in ctx.attachments:
        if any(t.get("type") == "code_interpreter" for t in attachment.get("tools", [])):
            ids.append(attachment["file_id"])
    return ids


class CodeInterpreterTool(BuiltinTool):
    type = "code_interpreter"
    repeatable = False  # an execution changes its session's files and kernel state

    def __init__(self, interpreter: CodeInterpreter, db: Database, blobs: BlobStore, *, max_file_bytes: int) -> None:
        self.interpreter = interpreter
        self.db = db
        self.blobs = blobs
        self.max_file_bytes = max_file_bytes

    def definition(self, tool: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.type,
                "description": DESCRIPTION,
                "parameters": {
                    "type": "object",
                    "properties": {"code": {"type": "string", "description": "The Python code to run."}},
                    "required": ["code"],
                },
            },
        }

    def first_details(self) -> dict[str, Any]:
        return {"input": "", "outputs": []}

    def input_delta(self, arguments: str, fragment: str) -> dict[str, Any] | None:
        before = string_field(arguments[: len(arguments) - len(fragment)], "code")
        now = string_field(arguments, "code")
        return {"input": now[len(before) :]} if len(now) > len(before) else None

    async def invoke(self, ctx: ToolContext, arguments: str) -> ToolOutcome:
        try:
            code = str(json.loads(arguments).get("code", ""))
        except (ValueError, AttributeError):
            code = arguments  # some models send the code itself rather than {"code": ...}
        await self.interpreter.start()  # at once when a pool is configured at start-up; else on first use
        if not self.interpreter.available:
            return self._failed(
                ctx,
                code,
                f"The code interpreter is not available on this server: {self.interpreter.unavailable_reason}",
            )
        async def save(filename: str, chunks: AsyncIterator[bytes]) -> str:
            # Streamed from the sandbox into the blob store as the code interpreter reads it.
            stored = await store_output(
                self.db, self.blobs, ctx.project, filename, chunks, max_bytes=self.max_file_bytes
            )
            return str(stored["id"])

        async with contextlib.AsyncExitStack() as copies:  # the input files' local copies, until copied in
            files = [
                InputFile(fid, name, path)
                for fid, name, path in await lookup(self.db, self.blobs, ctx.project, _input_file_ids(ctx), copies)
            ]
            try:
                execution = await self.interpreter.execute(
                    session_key(ctx.project, ctx.thread["id"]), code, save=save, files=files
                )
            except CodeInterpreterError as exc:
                return self._failed(ctx, code, str(exc))
        outputs: list[dict[str, Any]] = []
        if execution.logs:
            outputs.append({"type": "logs", "logs": execution.logs})
        images = execution.images
        outputs += [{"type": "image", "image": {"file_id": file_id}} for file_id in images]
        links = {f"sandbox:/mnt/data/{out.name}": out.file_id for out in execution.files}
        if outputs:
            ctx.stream({"outputs": [{"index": i, **o} for i, o in enumerate(outputs)]})
        said = [execution.logs or "(no output)"]
        if execution.error in ("timeout", "crashed"):
            said.append(
                f"[the execution {'timed out' if execution.error == 'timeout' else 'crashed'}; "
                "the session was restarted, so variables are gone but files in /mnt/data remain]"
            )
        if images:
            said.append(f"[{len(images)} image(s) shown to the user]")
        for link in links:
            said.append(f"[saved {link.removeprefix('sandbox:')}; link it as {link}]")
        return ToolOutcome(
            output="\n".join(said), details={"input": code, "outputs": outputs}, images=images, files=links
        )

    def _failed(self, ctx: ToolContext, code: str, message: str) -> ToolOutcome:
        outputs = [{"type": "logs", "logs": message}]
        ctx.stream({"outputs": [{"index": 0, **outputs[0]}]})
        return ToolOutcome(output=f"Error: {message}", details={"input": code, "outputs": outputs})
