"""The Prometheus metrics, in one registry per process (``/metrics`` serves it).

Counters and histograms are updated where things happen (through ``hooks`` and the HTTP middleware);
gauges of shared state (runs by status, queue depth, ingestion backlog, sandbox sessions, database pool)
are read when scraped (``web.refresh``), so every replica reports the same database-wide figures.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_children: dict[tuple[int, tuple[str, ...]], Any] = {}
_MAX_CHILDREN = 4096


def labeled(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, resolved once: ``labels`` takes a lock and checks its values on every call,
    a few microseconds a run or request. Label values come from small sets (routes, statuses, upstreams,
    outcomes); should the cache ever hold more than ``_MAX_CHILDREN`` it starts over."""
    key = (id(metric), values)
    child = _children.get(key)
    if child is None:
        if len(_children) >= _MAX_CHILDREN:
            _children.clear()
        child = _children[key] = metric.labels(*values)
    return child


# Seconds: from a fast API call to a long run or model answer.
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

HTTP_REQUESTS = Counter(
    "assistantd_http_requests", "HTTP requests by route template and status.", ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "assistantd_http_request_duration_seconds", "HTTP request latency, to the end of the response body.",
    ["method", "route"], buckets=_LATENCY, registry=REGISTRY,
)
ACTIVE_STREAMS = Gauge(
    "assistantd_active_streams", "Server-sent event streams open on this server.", registry=REGISTRY
)

RUNS_ENDED = Counter("assistantd_runs_ended", "Runs this server ended, by final status.", ["status"], registry=REGISTRY)
RUN_DURATION = Histogram(
    "assistantd_run_duration_seconds", "From a run's start to its end, by final status.", ["status"],
    buckets=_LATENCY, registry=REGISTRY,
)
RUNS = Gauge("assistantd_runs", "Runs not yet ended, by status (database-wide).", ["status"], registry=REGISTRY)
# A run's wait for its first model call is milliseconds on an idle server, so its buckets start finer.
RUN_MODEL_WAIT = Histogram(
    "assistantd_run_model_wait_seconds",
    "From a run's request (its create or its tool outputs), or its pickup by a server, to its model call "
    "going out: the server's own share of the wait for the first token.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "assistantd_run_queue_depth", "Runs queued, waiting for a server (database-wide).", registry=REGISTRY
)

MODEL_CALLS = Counter(
    "assistantd_model_calls", "Chat Completions calls by upstream and outcome (ok or an error code).",
    ["upstream", "outcome"], registry=REGISTRY,
)
MODEL_LATENCY = Histogram(
    "assistantd_model_call_duration_seconds", "A model call from request to its last chunk.", ["upstream"],
    buckets=_LATENCY, registry=REGISTRY,
)
MODEL_TTFT = Histogram(
    "assistantd_model_time_to_first_token_seconds", "A model call from request to its first content or tool chunk.",
    ["upstream"], buckets=_LATENCY, registry=REGISTRY,
)
MODEL_TOKENS = Counter(
    "assistantd_model_tokens", "Tokens the upstream reported, by kind (prompt or completion).", ["upstream", "kind"],
    registry=REGISTRY,
)

TOOL_CALLS = Counter(
    "assistantd_tool_calls", "Server-side tool calls by tool and outcome.", ["tool", "outcome"], registry=REGISTRY
)
TOOL_LATENCY = Histogram(
    "assistantd_tool_call_duration_seconds", "Server-side tool call latency.", ["tool"], buckets=_LATENCY,
    registry=REGISTRY,
)
SANDBOX_EXECUTIONS = Counter(
    "assistantd_sandbox_executions", "Code interpreter executions by outcome (ok, error, timeout, crashed, oom).",
    ["outcome"], registry=REGISTRY,
)
SANDBOX_SESSIONS = Gauge(
    "assistantd_sandbox_sessions", "Live code interpreter sessions on this server.", registry=REGISTRY
)
SANDBOX_POOL = Gauge("assistantd_sandbox_pool_ready", "Sandboxes started ahead of need and idle.", registry=REGISTRY)

INGESTED = Counter(
    "assistantd_ingestion_files", "Vector store files this server finished processing, by outcome.", ["outcome"],
    registry=REGISTRY,
)
INGEST_SECONDS = Histogram(
    "assistantd_ingestion_duration_seconds", "Processing time of one vector store file.", buckets=_LATENCY,
    registry=REGISTRY,
)
INGEST_CHUNKS = Counter("assistantd_ingestion_chunks", "Chunks this server indexed.", registry=REGISTRY)
INGEST_BACKLOG = Gauge(
    "assistantd_ingestion_backlog", "Vector store files waiting or being processed (database-wide).", registry=REGISTRY
)

DB_POOL = Gauge("assistantd_db_pool", "Database pool figures (size, idle, waiting).", ["figure"], registry=REGISTRY)

# The cyclic garbage collector of the serving process (observability/collector.py): every pass stops the
# event loop, so its pauses add to every stream's latency.
GC_PAUSE = Histogram(
    "assistantd_gc_pause_seconds", "Garbage collector passes by generation (0 young, 2 full), with the loop stopped.",
    ["generation"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1), registry=REGISTRY,
)
LOOP_LAG = Histogram(
    "assistantd_event_loop_lag_seconds",
    "How much later than due the event loop ran a timer (sampled every 50 ms): the wait every stream shares.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
GC_DEFERRALS = Counter(
    "assistantd_gc_deferrals",
    "Spells of setup work during which collections waited, by how they ended (idle: nothing left being set "
    "up; limit: the bound on what may wait was reached).",
    ["ended"],
    registry=REGISTRY,
)
GC_THAWS = Counter(
    "assistantd_gc_thaws",
    "Full passes over every frozen object, made when more were frozen than the last thaw left (twice, and more).",
    registry=REGISTRY,
)
GC_FROZEN = Gauge(
    "assistantd_gc_frozen_objects",
    "Objects out of the collector's reach: what startup built, and what bursts of setup work made and still live.",
    registry=REGISTRY,
)
