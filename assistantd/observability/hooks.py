"""What the call sites call: one line each in the engine, the model adapter and the ingestion worker.

Each hook writes the log line, updates the metrics and closes the span for one event, so the call
sites stay one line long and the instrumentation can change here alone.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from assistantd.observability import collector, metrics, tracing

run_log = logging.getLogger("assistantd.runs")
model_log = logging.getLogger("assistantd.model")

_run_span: ContextVar[Any] = ContextVar("assistantd_run_span", default=None)

# --- runs ---------------------------------------------------------------------------------------------


class RunCalls:
    """What a run's model calls did, told in the run's one log line (``run ended``) rather than a line per
    call: at a thousand concurrent runs each INFO line costs a visible share of the server's CPU. A call
    that fails still logs its own WARNING line."""

    def __init__(self, since: float | None = None, setup: collector.Hold | None = None) -> None:
        self.since = since  # perf_counter() when the run was asked for (or picked up), for the wait below
        self.setup = setup  # released when the first call goes out: the run's setup is over
        self.wait_ms: int | None = None  # from ``since`` to the first model call going out
        self.calls = 0
        self.upstream: str | None = None
        self.ttft_ms: int | None = None  # the first call's time to its first token
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    def calling(self, at: float) -> None:
        """A model call of this run goes out now (``at``, perf_counter); the first one ends its wait."""
        if self.setup is not None:
            self.setup.release()
        if self.since is not None and self.wait_ms is None:
            waited = max(0.0, at - self.since)
            self.wait_ms = round(waited * 1000)
            metrics.RUN_MODEL_WAIT.observe(waited)

    def add(self, call: ModelCall) -> None:
        self.calls += 1
        self.upstream = call.upstream
        if self.ttft_ms is None and call.ttft is not None:
            self.ttft_ms = round(call.ttft * 1000)
        if call.prompt_tokens is not None:
            self.prompt_tokens = (self.prompt_tokens or 0) + call.prompt_tokens
            self.completion_tokens = (self.completion_tokens or 0) + (call.completion_tokens or 0)

    def fields(self) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "model_calls": self.calls,
            "wait_ms": self.wait_ms,
            "ttft_ms": self.ttft_ms,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


_run_calls: ContextVar[RunCalls | None] = ContextVar("assistantd_run_calls", default=None)


@contextlib.contextmanager
def run_span(
    *,
    project: str,
    thread_id: str,
    run_id: str,
    model: str,
    since: float | None = None,
    setup: collector.Hold | None = None,
) -> Iterator[RunCalls]:
    """Wrap a run's execution: its model and tool call spans become children of one ``run`` span, and its
    model calls are tallied in the ``RunCalls`` yielded, for ``log_run_ended``. ``since``: perf_counter()
    when the run was asked for, from which its wait for its first model call is measured; ``setup``: the
    run's hold on the collector (``collector.hold``), released when its first model call goes out."""
    calls = RunCalls(since, setup)
    with tracing.span("run", _run_attributes(project, thread_id, run_id, model)) as current:
        token = _run_span.set(current)
        counting = _run_calls.set(calls)
        try:
            yield calls
        finally:
            _run_calls.reset(counting)
            _run_span.reset(token)


def _run_attributes(project: str, thread_id: str, run_id: str, model: str) -> dict[str, Any]:
    return {
        "assistantd.project": project,
        "assistantd.thread_id": thread_id,
        "assistantd.run_id": run_id,
        "gen_ai.request.model": model,
    }


def log_run_ended(
    *,
    project: str,
    thread_id: str,
    run_id: str,
    model: str,
    status: str,
    started_at: float | None,
    last_error: Mapping[str, Any] | None = None,
    calls: RunCalls | None = None,
) -> None:
    """A run reached a final status: one log line (WARNING when it failed or expired), metrics, its span.

    ``started_at``: epoch seconds the run started (or was created), for its duration; ``calls``: its model
    calls (from ``run_span``), whose upstream, count, first time to first token and tokens the line gives.
    """
    ended = time.time()
    duration = max(0.0, ended - started_at) if started_at else None
    metrics.labeled(metrics.RUNS_ENDED, status).inc()
    if duration is not None:
        metrics.labeled(metrics.RUN_DURATION, status).observe(duration)
    error_code = (last_error or {}).get("code")
    error_message = (last_error or {}).get("message")
    fields = {
        "project": project,
        "thread_id": thread_id,
        "run_id": run_id,
        "model": model,
        "status": status,
        "duration_ms": None if duration is None else round(duration * 1000),
        "last_error_code": error_code,
        "last_error": error_message,
        **(calls or RunCalls()).fields(),
    }
    level = logging.WARNING if status in ("failed", "expired") else logging.INFO
    run_log.log(level, "run ended", extra={"fields": fields})
    attributes = {**_run_attributes(project, thread_id, run_id, model), "assistantd.run.status": status}
    error = f"{error_code}: {error_message}" if error_code else None
    current = _run_span.get()
    if current is not None:
        current.set_attributes(attributes)
        if error:
            from opentelemetry.trace import Status, StatusCode

            current.set_status(Status(StatusCode.ERROR, error))
    elif tracing.enabled():
        # The engine did not wrap the run in run_span: record it whole now, from its start time.
        start_ns = int(started_at * 1e9) if started_at else None
        tracing.finish(tracing.start("run", attributes, start_time=start_ns), error=error)


# --- model calls --------------------------------------------------------------------------------------


class ModelCall:
    """One Chat Completions call: ``saw`` each event it yields, then ``end`` (with the error, if any)."""

    def __init__(self, upstream: str, model: str) -> None:
        self.upstream = upstream
        self.model = model
        self.started = time.perf_counter()
        run = _run_calls.get()
        if run is not None:
            run.calling(self.started)
        self.ttft: float | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.span = tracing.start(
            f"chat {model}", {"gen_ai.system": "openai", "gen_ai.request.model": model, "assistantd.upstream": upstream}
        )

    def saw(self, event: Any) -> None:
        prompt = getattr(event, "prompt_tokens", None)
        if prompt is not None:
            self.prompt_tokens = int(prompt)
            self.completion_tokens = int(getattr(event, "completion_tokens", 0) or 0)
        elif self.ttft is None and type(event).__name__ != "Finish":
            self.ttft = time.perf_counter() - self.started

    def end(self, error: BaseException | None = None) -> None:
        seconds = time.perf_counter() - self.started
        outcome = "ok"
        if error is not None:
            outcome = str(getattr(error, "code", "") or type(error).__name__)
        metrics.labeled(metrics.MODEL_CALLS, self.upstream, outcome).inc()
        metrics.labeled(metrics.MODEL_LATENCY, self.upstream).observe(seconds)
        if self.ttft is not None:
            metrics.labeled(metrics.MODEL_TTFT, self.upstream).observe(self.ttft)
        if self.prompt_tokens is not None:
            metrics.labeled(metrics.MODEL_TOKENS, self.upstream, "prompt").inc(self.prompt_tokens)
            metrics.labeled(metrics.MODEL_TOKENS, self.upstream, "completion").inc(self.completion_tokens or 0)
        run = _run_calls.get()
        if run is not None:
            run.add(self)
        # A run's successful calls are summed up in its ``run ended`` line; a failed call says why itself.
        level = logging.WARNING if error is not None else (logging.DEBUG if run is not None else logging.INFO)
        if model_log.isEnabledFor(level):
            self._log(level, seconds, outcome, error)
        tracing.finish(
            self.span,
            {
                "gen_ai.usage.input_tokens": self.prompt_tokens,
                "gen_ai.usage.output_tokens": self.completion_tokens,
                "assistantd.ttft_ms": None if self.ttft is None else round(self.ttft * 1000),
            },
            error=None if error is None else outcome,
        )

    def _log(self, level: int, seconds: float, outcome: str, error: BaseException | None) -> None:
        fields = {
            "upstream": self.upstream,
            "model": self.model,
            "outcome": outcome,
            "ms": round(seconds * 1000),
            "ttft_ms": None if self.ttft is None else round(self.ttft * 1000),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
        if error is not None:
            fields["error"] = str(error)[:300]
        model_log.log(level, "model call", extra={"fields": fields})


def model_call(upstream: str, model: str) -> ModelCall:
    return ModelCall(upstream, model)


# --- ingestion ----------------------------------------------------------------------------------------


def file_ingested(outcome: str, seconds: float | None = None, chunks: int = 0) -> None:
    """A vector store file finished processing here (``outcome``: completed or an error code)."""
    metrics.INGESTED.labels(outcome).inc()
    if seconds is not None:
        metrics.INGEST_SECONDS.observe(seconds)
    metrics.INGEST_CHUNKS.inc(chunks)
