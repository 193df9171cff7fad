"""Server-side tools and the code interpreter, observed: built around the real ones in the composition root.

Wrapping (not editing) the tools keeps their modules free of instrumentation: ``observe_tools`` gives
each tool a subclass whose ``invoke`` is timed, counted and traced; ``ObservedCodeInterpreter`` counts
executions by outcome (ok, error, timeout, crashed, oom).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from assistantd.observability import metrics, tracing
from assistantd.tools.base import BuiltinTool, ToolContext, ToolOutcome
from assistantd.tools.code_interpreter.interpreter import CodeInterpreter, Execution, InputFile, Saver


class ObservedTool(BuiltinTool):
    type = "observed"

    def __init__(self, inner: BuiltinTool) -> None:
        self.inner = inner

    def definition(self, tool: dict[str, Any]) -> dict[str, Any]:
        return self.inner.definition(tool)

    def first_details(self) -> dict[str, Any]:
        return self.inner.first_details()

    def input_delta(self, arguments: str, fragment: str) -> dict[str, Any] | None:
        return self.inner.input_delta(arguments, fragment)

    def check_arguments(self, tool: dict[str, Any], arguments: str) -> str | None:
        return self.inner.check_arguments(tool, arguments)

    def rejected(self, run: dict[str, Any], problem: str) -> ToolOutcome:
        return self.inner.rejected(run, problem)

    async def invoke(self, ctx: ToolContext, arguments: str) -> ToolOutcome:
        attributes = {
            "assistantd.tool": self.type,
            "assistantd.project": ctx.project,
            "assistantd.run_id": ctx.run.get("id"),
            "assistantd.thread_id": ctx.run.get("thread_id"),
        }
        started = time.perf_counter()
        outcome = "error"
        try:
            with tracing.span(f"tool {self.type}", attributes):
                result = await self.inner.invoke(ctx, arguments)
            outcome = "ok"
            return result
        finally:
            metrics.TOOL_CALLS.labels(self.type, outcome).inc()
            metrics.TOOL_LATENCY.labels(self.type).observe(time.perf_counter() - started)


def observe_tools(tools: Mapping[str, BuiltinTool]) -> dict[str, BuiltinTool]:
    observed: dict[str, BuiltinTool] = {}
    for name, tool in tools.items():
        attributes = {"type": tool.type, "repeatable": tool.repeatable}
        cls = type(f"Observed{type(tool).__name__}", (ObservedTool,), attributes)
        observed[name] = cls(tool)
    return observed


class ObservedCodeInterpreter(CodeInterpreter):
    async def execute(
        self,
        session_key: str,
        code: str,
        *,
        save: Saver,
        files: Sequence[InputFile] = (),
        timeout: float | None = None,  # noqa: ASYNC109 - passed through
    ) -> Execution:
        result = await super().execute(session_key, code, save=save, files=files, timeout=timeout)
        if result.error is None:
            outcome = "ok"
        elif result.error == "crashed" and "ran out of memory" in result.logs:
            outcome = "oom"
        elif result.error in ("timeout", "crashed"):
            outcome = result.error
        else:
            outcome = "error"
        metrics.SANDBOX_EXECUTIONS.labels(outcome).inc()
        return result
