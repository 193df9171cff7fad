"""Every setting, declared once: name, type, default and help text.

Settings are read once at start-up, from (lowest to highest precedence) the defaults below, an optional
TOML file (``ASSISTANTD_CONFIG`` or ``--config``), ``ASSISTANTD_*`` environment variables, and command-line
flags. ``assistantd serve --help`` and the README's settings table are generated from ``SETTINGS`` so the
docs cannot drift from the code (a test checks the README).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "ASSISTANTD_"


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


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "127.0.0.1", "Address to listen on."),
    Setting("port", int, 8000, "Port to listen on."),
    Setting("data_dir", str, "./data", "Folder for the SQLite database and uploaded file bytes."),
    Setting(
        "database_url",
        str,
        "",
        "Database to use: empty for SQLite in the data dir, sqlite:///path/to.db, or "
        "postgresql://user:pass@host/db.",
    ),
    Setting(
        "api_keys",
        str,
        "",
        "Comma-separated API keys accepted in addition to keys created with `assistantd keys create`. "
        "Each entry is KEY or KEY:PROJECT (a bare key belongs to project 'default').",
    ),
    Setting(
        "allow_no_auth",
        bool,
        False,
        "Accept any API key even when listening on a non-loopback address. Without keys configured the "
        "server accepts any key on loopback only, and refuses to start elsewhere unless this is set.",
    ),
    Setting("max_body_bytes", int, 16 * 1024 * 1024, "Largest JSON request body accepted, in bytes."),
    Setting("max_upload_bytes", int, 512 * 1024 * 1024, "Largest file upload accepted, in bytes."),
    Setting("db_pool_size", int, 8, "Database connections for reads (and PostgreSQL writes)."),
    Setting(
        "upstream_base_url",
        str,
        "",
        "An OpenAI-compatible Chat Completions endpoint (e.g. http://localhost:11434/v1) that serves every "
        "model. More upstreams, model patterns and aliases go in the config file.",
    ),
    Setting("upstream_api_key", str, "", "The key sent to the upstream endpoint (never logged)."),
    Setting("upstream_timeout", float, 600.0, "Seconds a model call may wait for the upstream's next bytes (idle) "
            "before the run fails."),
    Setting("upstream_total_timeout", float, 1800.0, "Seconds one model call may take in all, retries included, "
            "before the run fails (an upstream that trickles tokens or only keep-alive comments ends too); "
            "0: no limit."),
    Setting("run_expiry_seconds", int, 600, "A run still waiting for tool outputs this long after "
            "creation becomes expired."),
    Setting("run_lease_seconds", float, 30.0, "How long a server's claim on a run lasts without renewal; "
            "a run whose server died is ended this long after its last renewal."),
    Setting("reap_interval_seconds", float, 5.0, "How often each server looks for expired runs and runs "
            "whose server died."),
    Setting("context_tokens", int, 128_000, "The context window assumed for truncation_strategy auto, "
            "in tokens."),
    Setting(
        "log_level", str, "info", "Log level: debug, info, warning or error.", ("debug", "info", "warning", "error")
    ),
    Setting("access_log", bool, False, "Log one line per HTTP request."),
    Setting("code_interpreter_pool_size", int, 2, "Code interpreter sandboxes kept started ahead of need, so "
            "a thread's first execution does not wait for a kernel (0: start on demand)."),
    Setting("code_interpreter_idle_seconds", int, 3600, "A code interpreter session (one per thread) unused this "
            "long is closed; its variables and files are gone."),
    Setting("code_interpreter_timeout", float, 60.0, "Wall-clock seconds one code execution may take before it "
            "is stopped; the session then restarts fresh (files kept)."),
    Setting("code_interpreter_cpu_seconds", int, 60, "CPU seconds one code execution may use."),
    Setting("code_interpreter_memory_mb", int, 1024, "Memory limit of each code interpreter sandbox, in MB."),
    Setting("code_interpreter_max_processes", int, 128, "Processes and threads each code interpreter sandbox "
            "may run at once."),
    Setting("code_interpreter_max_file_mb", int, 256, "Largest file code may write, in MB."),
    Setting("code_interpreter_max_output_bytes", int, 32768, "Output (logs) kept per code execution; the rest is "
            "dropped with a note."),
    Setting("code_interpreter_max_sessions", int, 64, "Live code interpreter sessions; past this the least "
            "recently used idle one is closed."),
    Setting("code_interpreter_python", str, "", "The Python the code interpreter runs (needs ipykernel and the "
            "data-science packages); empty for the server's own."),
    Setting("code_interpreter_allow_unsandboxed", bool, False, "DANGEROUS: where no sandbox is available "
            "(no bubblewrap, not root), run model-written code without isolation instead of failing."),
    Setting("embedding_base_url", str, "", "An OpenAI-compatible /embeddings endpoint (e.g. http://localhost:11434/v1) "
            "for file search; empty for the local model."),
    Setting("embedding_model", str, "text-embedding-3-small", "The model asked for at the embedding endpoint."),
    Setting("embedding_api_key", str, "", "The key sent to the embedding endpoint (never logged)."),
    Setting("local_embeddings", bool, True, "Embed with the bundled all-MiniLM-L6-v2 (no network) when no endpoint "
            "is set; off: file search on keywords alone."),
    Setting("ingest_workers", int, 1, "Files processed for vector stores at once (each takes about one CPU core); "
            "0: this server processes none (another replica does)."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./data"
    database_url: str = ""
    api_keys: str = ""
    allow_no_auth: bool = False
    max_body_bytes: int = 16 * 1024 * 1024
    max_upload_bytes: int = 512 * 1024 * 1024
    db_pool_size: int = 8
    upstream_base_url: str = ""
    upstream_api_key: str = ""
    upstream_timeout: float = 600.0
    upstream_total_timeout: float = 1800.0
    run_expiry_seconds: int = 600
    run_lease_seconds: float = 30.0
    reap_interval_seconds: float = 5.0
    context_tokens: int = 128_000
    log_level: str = "info"
    access_log: bool = False
    code_interpreter_pool_size: int = 2
    code_interpreter_idle_seconds: int = 3600
    code_interpreter_timeout: float = 60.0
    code_interpreter_cpu_seconds: int = 60
    code_interpreter_memory_mb: int = 1024
    code_interpreter_max_processes: int = 128
    code_interpreter_max_file_mb: int = 256
    code_interpreter_max_output_bytes: int = 32768
    code_interpreter_max_sessions: int = 64
    code_interpreter_python: str = ""
    code_interpreter_allow_unsandboxed: bool = False
    embedding_base_url: str = ""
    embedding_model: str = "text-embedding-3-small"
    embedding_api_key: str = ""
    local_embeddings: bool = True
    ingest_workers: int = 1
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
        with open(config_file, "rb") as fh:
            doc = tomllib.load(fh)
        for key, raw in doc.items():
            if key in _BY_NAME:
                values[key] = _coerce(_BY_NAME[key], raw, f"{config_file}: {key}")
            else:
                # Sections later issues own (e.g. [upstreams]) ride along untouched.
                extra[key] = raw
    for s in SETTINGS:
        if s.env in environ:
            values[s.name] = _coerce(s, environ[s.env], s.env)
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _coerce(_BY_NAME[key], raw, _BY_NAME[key].flag)
    known = {f.name for f in fields(Settings)}
    assert set(_BY_NAME) <= known, "every Setting needs a Settings field"
    return Settings(**values, extra=extra)
