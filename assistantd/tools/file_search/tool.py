"""File search as a run tool: queries over the assistant's and thread's vector stores, cited results.

The search itself belongs to the vector-store service; the composition root hands its two functions in,
so this layer never imports the service layer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from assistantd.tools.base import BuiltinTool, ToolContext, ToolOutcome, resource_ids

INCLUDE_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"
DEFAULT_RESULTS = 20
GPT35_RESULTS = 5  # OpenAI's default for gpt-3.5 models, whose context is small
DEFAULT_RANKER = "default_2024_08_21"

DESCRIPTION = (
    "Search the files the user provided. Give one or more search queries, each a full question or phrase. "
    "Every result starts with a marker like 【3:1†report.pdf】; when you use a result in your answer, put its "
    "marker right after the sentence it supports."
)


class SearchFn(Protocol):
    def __call__(
        self,
        project: str,
        vector_store_ids: list[str],
        queries: list[str],
        *,
        max_num_results: int,
        score_threshold: float = 0.0,
    ) -> Awaitable[list[Any]]: ...


WaitFn = Callable[[str, list[str]], Awaitable[None]]


class FileSearchTool(BuiltinTool):
    type = "file_search"

    def __init__(self, search: SearchFn, wait_ready: WaitFn) -> None:
        self.search = search
        self.wait_ready = wait_ready

    def definition(self, tool: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.type,
                "description": DESCRIPTION,
                "parameters": {
                    "type": "object",
                    "properties": {
                        "queries": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "Search queries, most specific first.",
                        }
                    },
                    "required": ["queries"],
                },
            },
        }

    def first_details(self) -> dict[str, Any]:
        return {}

    async def invoke(self, ctx: ToolContext, arguments: str) -> ToolOutcome:
        options = _options(ctx.run)
        ranking = {"ranker": options["ranker"], "score_threshold": options["score_threshold"]}
        try:
            parsed = json.loads(arguments)
            queries = parsed.get("queries") if isinstance(parsed, dict) else None
            if isinstance(parsed, dict) and isinstance(parsed.get("query"), str):
                queries = [parsed["query"]]
        except ValueError:
            queries = None
        if not queries or not all(isinstance(q, str) for q in queries):
            return ToolOutcome(
                output='Error: call file_search with {"queries": ["..."]}.',
                details={"ranking_options": ranking, "results": []},
            )
        ids = resource_ids(ctx, "file_search", "vector_store_ids")
        if not ids:
            return ToolOutcome(
                output="No files are attached to this assistant or thread, so there is nothing to search.",
                details={"ranking_options": ranking, "results": []},
            )
        await self.wait_ready(ctx.project, ids)
        hits = await self.search(
            ctx.project,
            ids,
            list(queries),
            max_num_results=options["max_num_results"],
            score_threshold=options["score_threshold"],
        )
        # The chunk text is always recorded in the step; the API leaves it out of what it sends unless
        # the client's include[] names INCLUDE_CONTENT (at run create or on steps list/retrieve).
        results = []
        for hit in hits:
            result: dict[str, Any] = {"file_id": hit.file_id, "file_name": hit.filename, "score": hit.score}
            result["content"] = [{"type": "text", "text": hit.content}]
            results.append(result)
        sources = [{"file_id": h.file_id, "filename": h.filename, "content": h.content} for h in hits]
        return ToolOutcome(
            output=render(ctx.call_number, sources),
            details={"ranking_options": ranking, "results": results},
            citations={f"{ctx.call_number}:{i}": s["file_id"] for i, s in enumerate(sources)},
        )

    def check_arguments(self, tool: dict[str, Any], arguments: str) -> str | None:
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("query"), str) and "queries" not in parsed:
            return None  # some models name the field in the singular; invoke takes that too
        return super().check_arguments(tool, arguments)

    def rejected(self, run: dict[str, Any], problem: str) -> ToolOutcome:
        options = _options(run)
        ranking = {"ranker": options["ranker"], "score_threshold": options["score_threshold"]}
        return ToolOutcome(output=problem, details={"ranking_options": ranking, "results": []})


def _options(run: dict[str, Any]) -> dict[str, Any]:
    tool: dict[str, Any] = next((t for t in run.get("tools", []) if t.get("type") == "file_search"), {})
    config = tool.get("file_search") or {}
    default = GPT35_RESULTS if str(run.get("model", "")).startswith("gpt-3.5") else DEFAULT_RESULTS
    ranking = config.get("ranking_options") or {}
    ranker = ranking.get("ranker") or "auto"
    return {
        "max_num_results": config.get("max_num_results") or default,
        "score_threshold": float(ranking.get("score_threshold") or 0.0),
        "ranker": DEFAULT_RANKER if ranker == "auto" else ranker,
    }


def render(call_number: int, sources: list[dict[str, str]]) -> str:
    """The tool output the model reads: each result under the marker it should cite it with."""
    if not sources:
        return "No results matched the queries."
    parts = [f"【{call_number}:{i}†{s['filename']}】\n{s['content']}" for i, s in enumerate(sources)]
    return "\n\n".join(parts)
