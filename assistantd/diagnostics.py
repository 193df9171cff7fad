"""What the server is about to do, said once at start-up, and ``assistantd check``'s probes.

The start-up summary answers the questions a new operator has before the first request: where it
listens, who may call it, where objects and file bytes live, which upstream serves which model names
(or that runs will fail, or that ``OPENAI_API_KEY`` quietly routes them to OpenAI), and whether the
code interpreter and file search work. ``check`` goes further and talks to each dependency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from assistantd import __version__
from assistantd.llm.router import OPENAI_BASE_URL, ModelRouter
from assistantd.service.keys import is_loopback
from assistantd.service.registry import Services
from assistantd.settings import Settings

NO_MODEL_HINT = (
    "no model provider is configured: every run will fail. Set ASSISTANTD_UPSTREAM_BASE_URL "
    "(e.g. http://localhost:11434/v1 for Ollama, or `python -m assistantd.llm.scripted` for a demo model), "
    "add [[upstreams]] to the config file, or set OPENAI_API_KEY to use OpenAI"
)


def redact_url(url: str) -> str:
    """A database URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def openai_from_environment(settings: Settings, router: ModelRouter) -> bool:
    """True when nothing was configured and OPENAI_API_KEY alone made OpenAI the upstream."""
    return (
        not settings.upstream_base_url
        and not settings.extra.get("upstreams")
        and len(router.upstreams) == 1
        and router.upstreams[0].base_url == OPENAI_BASE_URL
    )


def model_lines(settings: Settings, router: ModelRouter) -> list[str]:
    if not router.upstreams:
        return [f"models: {NO_MODEL_HINT}"]
    lines = []
    for upstream in router.upstreams:
        lines.append(f"upstream {upstream.name}: {upstream.base_url} serves {', '.join(upstream.models)}")
    if openai_from_environment(settings, router):
        lines.append(
            "  (OPENAI_API_KEY is set and no upstream is configured: every model goes to OpenAI; set "
            "ASSISTANTD_UPSTREAM_BASE_URL or [[upstreams]] to use another provider)"
        )
    for alias, target in router.aliases.items():
        owner = next((u.name for u in router.upstreams if u.matches(target)), None)
        lines.append(f"alias {alias} -> {target} ({owner or 'no upstream serves it: runs will fail'})")
    return lines


def startup_summary(
    settings: Settings,
    router: ModelRouter,
    *,
    dialect: str,
    auth: str,
    blobs: str,
    code_interpreter: str,
    file_search: str,
) -> str:
    """The one block logged when the server is ready."""
    lines = [
        f"assistantd {__version__} ready",
        f"listen: http://{settings.host}:{settings.port}/v1",
        f"auth: {auth}",
        f"database: {dialect} {redact_url(settings.resolved_database_url)}",
        f"blob store: {blobs}",
        *model_lines(settings, router),
        f"code interpreter: {code_interpreter}",
        file_search,
    ]
    return "\n  ".join(lines)


async def startup_block(settings: Settings, services: Services) -> str:
    """The summary for a built app, once its parts have started."""
    interpreter = services.code_interpreter
    if settings.code_interpreter_pool_size <= 0:
        code = "sandboxes start on first use (`assistantd check` tests one now)"
    elif not interpreter.available:
        code = f"UNAVAILABLE: {interpreter.unavailable_reason}"
    elif not interpreter.sandboxed:
        code = "UNSANDBOXED: model-written code runs without isolation (code_interpreter_allow_unsandboxed)"
    else:
        code = f"sandboxed (bubblewrap), {settings.code_interpreter_pool_size} started ahead of need"
    blobs = services.files.blobs
    root = getattr(blobs, "root", None)
    return startup_summary(
        settings,
        services.router,
        dialect=services.db.dialect,
        auth=auth_description(settings.static_keys, await services.keys.open_mode(), is_loopback(settings.host)),
        blobs=f"files in {root}" if root is not None else type(blobs).__name__,
        code_interpreter=code,
        file_search=services.vector_stores.mode,
    )


def auth_description(static_keys: Mapping[str, str], open_mode: bool, loopback: bool) -> str:
    if not open_mode:
        return f"API keys required ({len(static_keys)} from ASSISTANTD_API_KEYS, others from `assistantd keys`)"
    where = "on loopback only" if loopback else "ON A NON-LOOPBACK ADDRESS (--allow-no-auth)"
    return (
        f"open: no API key is configured, any key is accepted {where} (project 'default'); the first key "
        "created with `assistantd keys create` makes keys required"
    )


# --- assistantd check ---------------------------------------------------------------------------------


@dataclass
class Probe:
    name: str
    status: str  # "ok", "warn" or "FAIL"
    detail: str


async def _probe_database(settings: Settings) -> Probe:
    from assistantd.store import open_database
    from assistantd.store.schema import LATEST

    url = settings.resolved_database_url
    try:
        db = await asyncio.to_thread(open_database, url, pool_size=1)
    except Exception as exc:
        return Probe("database", "FAIL", f"{redact_url(url)}: {type(exc).__name__}: {exc}")
    try:
        version = await db.read(lambda conn: conn.fetchval("SELECT MAX(version) FROM schema_migrations"))
    finally:
        await db.close()
    return Probe("database", "ok", f"{db.dialect} {redact_url(url)}, schema version {version} (latest {LATEST})")


async def _probe_upstreams(settings: Settings, router: ModelRouter) -> list[Probe]:
    import httpx

    if not router.upstreams:
        return [Probe("models", "FAIL", NO_MODEL_HINT)]
    probes = []
    for upstream in router.upstreams:
        name = f"upstream {upstream.name}"
        headers = {"Authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}
        url = upstream.base_url.rstrip("/") + "/models"
        started = time.perf_counter()
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                response = await client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            probes.append(Probe(name, "FAIL", f"GET {url}: {type(exc).__name__}: {exc}".rstrip(": ")))
            continue
        ms = (time.perf_counter() - started) * 1000
        if response.status_code in (401, 403):
            probes.append(Probe(name, "FAIL", f"GET {url} answered {response.status_code}: check its API key"))
        elif response.status_code != 200:
            probes.append(Probe(name, "FAIL", f"GET {url} answered {response.status_code}"))
        else:
            try:
                count = len(response.json().get("data") or [])
            except ValueError:
                count = 0
            probes.append(
                Probe(name, "ok", f"{url} answered in {ms:.0f} ms, {count} models; serves {', '.join(upstream.models)}")
            )
    return probes


async def _discard(name: str, chunks: AsyncIterator[bytes]) -> str:
    # The check's print(6 * 7) writes no files; anything it did write is not kept.
    async for _ in chunks:
        pass
    return ""


async def _probe_sandbox(settings: Settings) -> Probe:
    from assistantd.tools.code_interpreter import CodeInterpreter, sandbox_config_from_settings

    interpreter = CodeInterpreter(sandbox_config_from_settings(settings))
    try:
        await interpreter.start()
        if not interpreter.available:
            return Probe("code interpreter", "FAIL", interpreter.unavailable_reason or "unavailable")
        result = await interpreter.execute("assistantd-check", "print(6 * 7)", save=_discard, timeout=60)
        if result.error or result.logs.strip() != "42":
            return Probe("code interpreter", "FAIL", f"a test execution gave {result.error or result.logs!r}")
        how = "sandboxed (bubblewrap)" if interpreter.sandboxed else "UNSANDBOXED (allow_unsandboxed is on)"
        return Probe("code interpreter", "ok" if interpreter.sandboxed else "warn", f"ran print(6 * 7): {how}")
    except Exception as exc:
        return Probe("code interpreter", "FAIL", f"{type(exc).__name__}: {exc}")
    finally:
        await interpreter.stop()


def _probe_embeddings(settings: Settings) -> Probe:
    from assistantd.tools.file_search.embed import build_embedder

    try:
        embedder, sentence = build_embedder(
            base_url=settings.embedding_base_url,
            model=settings.embedding_model,
            api_key=settings.embedding_api_key,
            local=settings.local_embeddings,
            runtime=settings.local_embedding_runtime,
        )
    except Exception as exc:
        return Probe("file search", "FAIL", f"{type(exc).__name__}: {exc}")
    if embedder is None:
        return Probe("file search", "warn", sentence.removeprefix("file search: "))
    try:
        vectors = embedder.embed(["assistantd check"])
        return Probe("file search", "ok", f"{sentence.removeprefix('file search: ')}; {vectors.shape[1]} dimensions")
    except Exception as exc:
        return Probe("file search", "FAIL", f"embedding a test sentence failed: {exc}")
    finally:
        embedder.close()


async def run_checks(settings: Settings, source: str) -> list[Probe]:
    """Every probe, in the order the report shows them."""
    probes = [Probe("config", "ok", source)]
    try:
        router = ModelRouter.from_config(
            base_url=settings.upstream_base_url,
            api_key=settings.upstream_api_key,
            timeout=settings.upstream_timeout,
            extra=settings.extra,
        )
    except ValueError as exc:
        return [*probes, Probe("models", "FAIL", str(exc))]
    probes.append(await _probe_database(settings))
    probes += await _probe_upstreams(settings, router)
    if openai_from_environment(settings, router):
        probes.append(Probe("models", "warn", "only OPENAI_API_KEY is set: every model goes to OpenAI"))
    for alias, target in router.aliases.items():
        if not router.routable(alias):
            probes.append(Probe(f"alias {alias}", "FAIL", f"-> {target}: no upstream pattern matches it"))
    probes.append(await _probe_sandbox(settings))
    probes.append(await asyncio.to_thread(_probe_embeddings, settings))
    await router.aclose()
    return probes


def format_report(probes: list[Probe]) -> str:
    width = max(len(p.name) for p in probes)
    lines = [f"{p.status:<4}  {p.name:<{width}}  {p.detail}" for p in probes]
    failed = [p.name for p in probes if p.status == "FAIL"]
    lines.append(f"\n{len(failed)} problem(s): {', '.join(failed)}" if failed else "\nall checks passed")
    return "\n".join(lines)
