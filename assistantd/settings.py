"""Every setting, declared once: a field of ``Settings`` with its type, default and help text.

Settings are read once at start-up, from (lowest to highest precedence) the defaults below, an optional
TOML file (``ASSISTANTD_CONFIG`` or ``--config``), ``ASSISTANTD_*`` environment variables, and command-line
flags. ``SETTINGS`` (each field's name, env var, flag and help) is derived from the dataclass, so
``assistantd serve --help`` cannot drift from the code, and a test keeps README's settings table in step.

To add a setting, add one line to ``Settings``: ``name: type = setting(default, "help")``.

The TOML file is strict: a key that is neither a setting nor one of ``SECTIONS`` is an error naming the
file, its line and the nearest valid key, so a typo (``log-level``, ``[[upstream]]``) cannot pass silently.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "ASSISTANTD_"

# Tables the config file may hold besides settings, with the keys each entry may have (None: any key,
# e.g. [aliases] maps model names). The model router reads them (llm/router.py).
SECTIONS: dict[str, tuple[str, ...] | None] = {
    "upstreams": (
        "name", "base_url", "api_key", "api_key_env", "models", "timeout", "total_timeout", "merge_roles",
        "reasoning_models", "stream_with_tools", "tool_results_as_user",
    ),
    "aliases": None,
}

_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()  # for str settings: the accepted values (compared case-insensitively)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def toml_key(self) -> str:
        return self.name


def setting(default: Any, help: str, *, choices: tuple[str, ...] = ()) -> Any:
    """A ``Settings`` field: its default, and the help text shown by --help and README."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class Settings:
    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(8000, "Port to listen on.")
    data_dir: str = setting("./data", "Folder for the SQLite database and uploaded file bytes.")
    database_url: str = setting(
        "",
        "Database to use: empty for SQLite in the data dir, sqlite:///path/to.db, or "
        "postgresql://user:pass@host/db.",
    )
    api_keys: str = setting(
        "",
        "Comma-separated API keys accepted in addition to keys created with `assistantd keys create`. Each "
        "entry is KEY or KEY:PROJECT (a bare key belongs to project 'default').",
    )
    allow_no_auth: bool = setting(
        False,
        "Accept any API key even when listening on a non-loopback address. While no key has ever been created "
        "the server accepts any key on loopback only, and refuses to start elsewhere unless this is set. Once "
        "a key has existed it never accepts keyless requests again.",
    )
    max_body_bytes: int = setting(16 * 1024 * 1024, "Largest JSON request body accepted, in bytes.")
    max_upload_bytes: int = setting(512 * 1024 * 1024, "Largest file upload accepted, in bytes.")
    db_pool_size: int = setting(8, "Database connections for reads (and PostgreSQL writes).")
    ready_timeout_seconds: float = setting(
        5.0,
        "How long GET /health/ready waits for each dependency (the database, the file store) before it reports "
        "it down.",
    )
    upstream_base_url: str = setting(
        "",
        "An OpenAI-compatible Chat Completions endpoint (e.g. http://localhost:11434/v1) that serves every "
        "model. More upstreams, model patterns and aliases go in the config file.",
    )
    upstream_api_key: str = setting("", "The key sent to the upstream endpoint (never logged).")
    upstream_timeout: float = setting(
        600.0, "Seconds a model call may wait for the upstream's next bytes (idle) before the run fails."
    )
    run_expiry_seconds: int = setting(
        600,
        "A run still waiting for tool outputs this long after creation becomes expired.",
    )
    run_lease_seconds: float = setting(
        30.0,
        "How long a server's claim on a run lasts without renewal; a dead server's runs are taken over by another"
        " server (or the restarted one) this long after its last renewal.",
    )
    shutdown_grace_seconds: float = setting(
        10.0,
        "On SIGTERM (or Ctrl-C), how long runs executing here may go on to finish, their streams with them; then"
        " the rest are handed over (to another replica, or this server when it starts again), their open"
        " streams end with `done`, and the process exits.",
    )
    reap_interval_seconds: float = setting(
        5.0,
        "How often each server looks for expired runs and takes over runs whose server died.",
    )
    context_tokens: int = setting(128_000, "The context window assumed for truncation_strategy auto, in tokens.")
    log_level: str = setting(
        "info",
        "Log level: debug, info, warning or error.",
        choices=("debug", "info", "warning", "error"),
    )
    access_log: bool = setting(False, "Log one line per HTTP request.")
    log_format: str = setting(
        "text",
        "Log line format for every logger (ours and uvicorn's): text (time level=... logger=... message "
        "key=value) or json (one object per line).",
        choices=("text", "json"),
    )
    metrics_port: int = setting(
        0,
        "Also serve /metrics without auth on this port (0: only on the API's address, where it takes an API "
        "key). Meant for a private network.",
    )
    metrics_host: str = setting("127.0.0.1", "The address of the metrics_port listener.")
    otel_exporter: str = setting(
        "none",
        "OpenTelemetry traces (needs the otel extra): none, otlp (to OTEL_EXPORTER_OTLP_ENDPOINT, default "
        "http://localhost:4318) or console.",
        choices=("none", "otlp", "console"),
    )
    code_interpreter_pool_size: int = setting(
        2,
        "Code interpreter sandboxes kept started ahead of need, so a thread's first execution does not wait "
        "for a kernel (0: start on demand).",
    )
    code_interpreter_idle_seconds: int = setting(
        3600,
        "A code interpreter session (one per thread) unused this long is closed; its variables and files are "
        "gone.",
    )
    code_interpreter_timeout: float = setting(
        60.0,
        "Wall-clock seconds one code execution may take before it is stopped; the session then restarts fresh"
        " (files kept).",
    )
    code_interpreter_cpu_seconds: int = setting(60, "CPU seconds one code execution may use.")
    code_interpreter_memory_mb: int = setting(1024, "Memory limit of each code interpreter sandbox, in MB.")
    code_interpreter_max_processes: int = setting(
        128,
        "Processes and threads each code interpreter sandbox may run at once.",
    )
    code_interpreter_max_file_mb: int = setting(256, "Largest file code may write, in MB.")
    code_interpreter_max_output_bytes: int = setting(
        32768,
        "Output (logs) kept per code execution; the rest is dropped with a note.",
    )
    code_interpreter_max_sessions: int = setting(
        64,
        "Live code interpreter sessions; past this the least recently used idle one is closed.",
    )
    code_interpreter_python: str = setting(
        "",
        "The Python the code interpreter runs (needs ipykernel and the data-science packages); empty for the "
        "server's own.",
    )
    code_interpreter_allow_unsandboxed: bool = setting(
        False,
        "DANGEROUS: where no sandbox is available (no bubblewrap, not root), run model-written code without "
        "isolation instead of failing.",
    )
    embedding_base_url: str = setting(
        "",
        "An OpenAI-compatible /embeddings endpoint (e.g. http://localhost:11434/v1) for file search; empty "
        "for the local model.",
    )
    embedding_model: str = setting("text-embedding-3-small", "The model asked for at the embedding endpoint.")
    embedding_api_key: str = setting("", "The key sent to the embedding endpoint (never logged).")
    local_embeddings: bool = setting(
        True,
        "Embed with the bundled all-MiniLM-L6-v2 (no network) when no endpoint is set; off: file search on "
        "keywords alone.",
    )
    local_embedding_runtime: str = setting(
        "onnxruntime-int8",
        "What runs the local model: onnxruntime-int8 (int8 weights: ingestion ~3x numpy's, ranked the same in "
        "bench/README.md), onnxruntime (float32, vectors equal to numpy's, ~1.6x numpy) or numpy "
        "(the reference). All store vectors under one name, so a store ingested with one is searched with any.",
        choices=("onnxruntime-int8", "onnxruntime", "numpy"),
    )
    ingest_workers: int = setting(
        2,
        "Files processed for vector stores at once, each read in a process of its own (each takes about one CPU "
        "core); 0: this server processes none (another replica does).",
    )
    code_interpreter_disk_mb: int = setting(
        512,
        'Disk of each code interpreter session, in MB: /mnt/data and /tmp together, hidden files included (a '
        'tmpfs, so it counts towards the memory limit too).',
    )
    code_interpreter_max_image_mb: int = setting(
        16,
        'Largest image (PNG) one code execution may show, in MB; larger ones are dropped with a note.',
    )
    code_interpreter_max_output_mb: int = setting(
        256,
        'Images and files saved from one code execution, in MB together; past it they are not saved, with a '
        'note.',
    )
    code_interpreter_memory_budget_mb: int = setting(
        0,
        'Memory all code interpreter sandboxes together may reserve (each reserves '
        'code_interpreter_memory_mb), in MB; 0: half of the host\'s memory (at least one sandbox); -1: no '
        'budget.',
    )
    code_interpreter_memory_wait_seconds: float = setting(
        30.0,
        'How long a new code interpreter session waits for the memory budget before the tool reports that the'
        ' server is busy.',
    )
    stream_save_seconds: float = setting(
        1.0,
        'How often the text a run is streaming is saved into its open message; a process killed mid-answer '
        'loses at most this much of it.',
    )
    ingest_worker_memory_mb: int = setting(
        1024,
        'Address space of each process that reads (parses and chunks) a file for file search, in MB; a file '
        'that needs more fails with invalid_file.',
    )
    ingest_file_timeout_seconds: float = setting(
        300.0,
        'Wall-clock seconds reading (parsing and chunking) one file may take; past it the reader is killed '
        'and the file fails with invalid_file.',
    )
    ingest_max_chars: int = setting(
        8000000,
        "Characters of text one file may hold (about 2M tokens, OpenAI's limit); checked while the file is "
        'read, so a larger file fails early with invalid_file.',
    )
    ingest_max_chunks: int = setting(
        100000,
        'Chunks one file may be split into; past it the file fails with invalid_file.',
    )
    ingest_max_unzipped_mb: int = setting(
        256,
        'What the parts of a .docx or .pptx may unpack to in all, in MB, read from its zip directory before '
        'anything is unpacked.',
    )
    ingest_max_zip_ratio: int = setting(
        100,
        'How many times its packed size a part (over 1 MB) of a .docx or .pptx may unpack to; a higher ratio '
        'marks a zip bomb.',
    )
    key_cache_seconds: float = setting(
        5.0,
        'How long a server trusts an API key lookup. A key created or revoked with `assistantd keys` takes '
        'effect at once on a server sharing its data dir (or SQLite file), and within this many seconds on '
        'every other replica.',
    )
    max_json_depth: int = setting(
        64,
        'Deepest nesting of arrays and objects accepted in a JSON request body (deeper: 400).',
    )
    max_url_bytes: int = setting(
        8192,
        'Longest request URL (path and query) accepted, in bytes (longer: 414).',
    )
    max_header_bytes: int = setting(
        32768,
        'Largest request head (request line and all headers) accepted, in bytes (larger: 431).',
    )
    max_headers: int = setting(
        100,
        'Most header fields accepted in one request (more: 431).',
    )
    header_timeout: float = setting(
        15.0,
        'Seconds a client has to send a whole request head, from its first byte or from connecting (then 408 '
        'and the connection is closed).',
    )
    body_timeout: float = setting(
        30.0,
        'Seconds a request body may go without a byte arriving (then 408 and the connection is closed).',
    )
    max_connections_per_client: int = setting(
        256,
        'Connections one client address may hold open at once (more: 429 and closed); 0: no cap. Behind a '
        'reverse proxy every client shares its address.',
    )
    upstream_total_timeout: float = setting(
        1800.0,
        'Seconds one model call may take in all, retries included, before the run fails (an upstream that '
        'trickles tokens or only keep-alive comments ends too); 0: no limit.',
    )

    # The config file's [[upstreams]] and [aliases] tables (see SECTIONS), for the model router.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_path / 'assistantd.db'}"

    @property
    def static_keys(self) -> dict[str, str]:
        """Keys from ASSISTANTD_API_KEYS as {key: project}."""
        keys: dict[str, str] = {}
        for entry in self.api_keys.split(","):
            entry = entry.strip()
            if not entry:
                continue
            key, _, project = entry.partition(":")
            keys[key.strip()] = project.strip() or "default"
        return keys


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, _TYPES[str(f.type)], f.default, f.metadata["help"], f.metadata["choices"])
    for f in fields(Settings)
    if "help" in f.metadata
)

_BY_NAME = {s.name: s for s in SETTINGS}


def _coerce(setting: Setting, raw: Any, source: str) -> Any:
    if setting.choices:
        choice = str(raw).strip().lower()
        if choice not in setting.choices:
            raise ValueError(f"{source}: expected one of {', '.join(setting.choices)}, got {str(raw).strip()!r}")
        return choice
    if isinstance(raw, setting.type) and not (setting.type is int and isinstance(raw, bool)):
        return raw
    text = str(raw).strip()
    if setting.type is bool:
        if text.lower() in {"1", "true", "yes", "on"}:
            return True
        if text.lower() in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"{source}: expected true or false, got {text!r}")
    if setting.type is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{source}: expected an integer, got {text!r}") from None
    if setting.type is float:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{source}: expected a number, got {text!r}") from None
    return text


def _line_of(text: str, key: str, after: int = 0) -> int:
    """The 1-based line where ``key`` is set or opened as a table (searching from line ``after``), or 0."""
    quoted = re.escape(key)
    pattern = re.compile(rf"""^\s*(\[\[?\s*)?(["']?){quoted}\2\s*(=|\]|\.)""")
    for number, line in enumerate(text.splitlines(), start=1):
        if number > after and pattern.match(line):
            return number
    return 0


def _unknown(path: str, text: str, key: str, valid: list[str], where: str = "", after: int = 0) -> ValueError:
    line = _line_of(text, key, after)
    at = f"{path}:{line}" if line else path
    near = difflib.get_close_matches(key.replace("-", "_").lower(), valid, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return ValueError(f"{at}: unknown {where}key {key!r}{hint}")


def read_config_file(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings and the SECTIONS tables of a TOML file; every unknown key is an error."""
    with open(path, "rb") as fh:
        raw = fh.read()
    text = raw.decode("utf-8", errors="replace")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    valid = sorted([*_BY_NAME, *SECTIONS])
    for key, value in doc.items():
        if key in _BY_NAME:
            if isinstance(value, dict):
                raise ValueError(f"{path}:{_line_of(text, key)}: {key} is a setting, not a table")
            values[key] = _coerce(_BY_NAME[key], value, f"{path}: {key}")
        elif key in SECTIONS:
            sections[key] = _check_section(path, text, key, value)
        else:
            raise _unknown(path, text, key, valid)
    return values, sections


def _check_section(path: str, text: str, name: str, value: Any) -> Any:
    allowed = SECTIONS[name]
    start = _line_of(text, name)
    if allowed is None:
        if not isinstance(value, dict):
            raise ValueError(f"{path}:{start}: [{name}] must be a table of names to names")
        return value
    entries = value if isinstance(value, list) else None
    if entries is None or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path}:{start}: {name} must be an array of tables, written [[{name}]]")
    for entry in entries:
        for key in entry:
            if key not in allowed:
                raise _unknown(path, text, key, list(allowed), where=f"[[{name}]] ", after=start)
    return value


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Build Settings from defaults, a TOML file, the environment and explicit overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    extra: dict[str, Any] = {}
    if config_file:
        values, extra = read_config_file(config_file)
    for s in SETTINGS:
        if s.env in environ:
            values[s.name] = _coerce(s, environ[s.env], s.env)
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _coerce(_BY_NAME[key], raw, _BY_NAME[key].flag)
    return Settings(**values, extra=extra)
