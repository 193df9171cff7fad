"""Which upstream serves a model name.

The simple case is one upstream for every model (``ASSISTANTD_UPSTREAM_BASE_URL``). A config file can
declare several, each serving names matching its glob patterns, plus aliases that rename a requested
model before routing (e.g. ``gpt-4o`` served by a local ``llama3.1``). With nothing configured but
``OPENAI_API_KEY`` in the environment, OpenAI's own Chat Completions API serves everything.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from assistantd.llm.base import ChatModel
from assistantd.llm.openai_compat import OpenAICompatModel

log = logging.getLogger("assistantd.llm")

OPENAI_BASE_URL = "https://api.openai.com/v1"

NO_UPSTREAM = (
    "No model provider is configured for model '{model}'. Set ASSISTANTD_UPSTREAM_BASE_URL (and "
    "ASSISTANTD_UPSTREAM_API_KEY) to any OpenAI-compatible Chat Completions endpoint, route model names "
    "with [[upstreams]] in the config file, or set OPENAI_API_KEY to use OpenAI."
)


NO_MATCH = (
    "No model provider serves model '{model}': the configured upstreams serve {patterns}. Add a pattern that "
    "matches it to an [[upstreams]] entry's models, or map it to a served model in [aliases] (config file)."
)


class NoRoute(Exception):
    pass


@dataclass
class Upstream:
    name: str
    base_url: str
    api_key: str = ""
    models: list[str] = field(default_factory=lambda: ["*"])
    timeout: float = 600.0
    total_timeout: float | None = None
    merge_roles: bool = True  # merge consecutive turns of one role (strict chat templates need alternation)
    reasoning_models: list[str] | None = None  # globs of reasoning models; None: the built-in families
    stream_with_tools: bool = True  # false: calls that offer tools ask for whole answers (llama-cpp-python)
    tool_results_as_user: bool = False  # true: tool results go as user turns (servers that drop tool turns)
    _client: ChatModel | None = None

    def matches(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    @property
    def client(self) -> ChatModel:
        if self._client is None:
            self._client = OpenAICompatModel(
                self.base_url,
                self.api_key,
                timeout=self.timeout,
                total_timeout=self.total_timeout,
                name=self.name,
                merge_roles=self.merge_roles,
                reasoning_models=self.reasoning_models,
                stream_with_tools=self.stream_with_tools,
                tool_results_as_user=self.tool_results_as_user,
            )
        return self._client


@dataclass(frozen=True)
class Route:
    model: ChatModel
    upstream_model: str
    upstream: str


class ModelRouter:
    def __init__(self, upstreams: list[Upstream], aliases: Mapping[str, str] | None = None) -> None:
        self.upstreams = upstreams
        self.aliases = dict(aliases or {})
        self._listed: tuple[float, list[dict[str, Any]]] | None = None

    @classmethod
    def from_config(
        cls,
        *,
        base_url: str,
        api_key: str,
        timeout: float,
        extra: Mapping[str, Any],
        total_timeout: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ModelRouter:
        environ = os.environ if environ is None else environ
        upstreams: list[Upstream] = []
        for i, entry in enumerate(extra.get("upstreams") or []):
            if not isinstance(entry, dict) or "base_url" not in entry:
                raise ValueError(f"[[upstreams]] entry {i} needs a base_url")
            key = str(entry.get("api_key") or environ.get(str(entry.get("api_key_env") or ""), ""))
            models = entry.get("models") or ["*"]
            reasoning = entry.get("reasoning_models")
            if reasoning is not None and not isinstance(reasoning, list):
                raise ValueError(f"[[upstreams]] entry {i}: reasoning_models must be a list of model name patterns")
            entry_total = entry.get("total_timeout", total_timeout)
            upstreams.append(
                Upstream(
                    name=str(entry.get("name") or f"upstream{i}"),
                    base_url=str(entry["base_url"]),
                    api_key=key,
                    models=[str(m) for m in models],
                    timeout=float(entry.get("timeout", timeout)),
                    total_timeout=float(entry_total) if entry_total else None,
                    merge_roles=bool(entry.get("merge_roles", True)),
                    reasoning_models=[str(m) for m in reasoning] if reasoning is not None else None,
                    stream_with_tools=bool(entry.get("stream_with_tools", True)),
                    tool_results_as_user=bool(entry.get("tool_results_as_user", False)),
                )
            )
        if base_url:
            default = Upstream(name="default", base_url=base_url, api_key=api_key, timeout=timeout)
            default.total_timeout = total_timeout
            upstreams.append(default)
        if not upstreams and environ.get("OPENAI_API_KEY"):
            upstreams.append(
                Upstream(
                    name="openai",
                    base_url=OPENAI_BASE_URL,
                    api_key=environ["OPENAI_API_KEY"],
                    timeout=timeout,
                    total_timeout=total_timeout,
                )
            )
        aliases = {str(k): str(v) for k, v in (extra.get("aliases") or {}).items()}
        return cls(upstreams, aliases)

    def resolve(self, model: str) -> Route:
        target = self.aliases.get(model, model)
        for upstream in self.upstreams:
            if upstream.matches(target):
                return Route(upstream.client, target, upstream.name)
        if not self.upstreams:
            raise NoRoute(NO_UPSTREAM.format(model=model))
        patterns = "; ".join(f"{u.name}: {', '.join(u.models)}" for u in self.upstreams)
        shown = model if target == model else f"{model}' (alias of '{target}"
        raise NoRoute(NO_MATCH.format(model=shown, patterns=patterns))

    def routable(self, model: str) -> bool:
        try:
            self.resolve(model)
        except NoRoute:
            return False
        return True

    async def list_models(self) -> list[dict[str, Any]]:
        """Models this server can route: aliases, literal names, and what catch-all upstreams list."""
        if self._listed and time.monotonic() - self._listed[0] < 60:
            return self._listed[1]
        seen: dict[str, dict[str, Any]] = {}
        for alias in self.aliases:
            if self.routable(alias):
                seen[alias] = _model(alias, self.resolve(alias).upstream)
        for upstream in self.upstreams:
            literal = [m for m in upstream.models if not any(c in m for c in "*?[")]
            for name in literal:
                seen.setdefault(name, _model(name, upstream.name))
            if len(literal) == len(upstream.models):
                continue
            client = upstream.client
            if not isinstance(client, OpenAICompatModel):
                continue
            try:
                names = await client.list_models()
            except Exception as exc:  # an upstream without /models still routes by pattern
                log.info("upstream %s did not list its models: %s", upstream.name, type(exc).__name__)
                continue
            for name in names:
                if upstream.matches(name):
                    seen.setdefault(name, _model(name, upstream.name))
        listed = sorted(seen.values(), key=lambda m: m["id"])
        self._listed = (time.monotonic(), listed)
        return listed

    def prepare(self) -> None:
        """Build every upstream's client now, at start-up: its pools and TLS context cost ~20-45 ms (the
        first also imports httpcore), which the first run to need it would otherwise wait for."""
        for upstream in self.upstreams:
            _ = upstream.client

    async def aclose(self) -> None:
        for upstream in self.upstreams:
            if upstream._client is not None:
                await upstream._client.aclose()


def _model(name: str, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}
