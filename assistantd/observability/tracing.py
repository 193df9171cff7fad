"""OpenTelemetry spans, when the ``otel`` extra is installed and ``otel_exporter`` names an exporter.

With tracing off (the default) every helper here is a no-op costing one attribute check, and
``opentelemetry`` is never imported. Spans: ``HTTP <method> <route>`` (the middleware), ``run`` (the
engine), ``chat <model>`` (each model call, with its upstream, tokens and time to first token) and
``tool <type>`` (each server-side tool call). The exporter is the SDK's: ``otlp`` sends to
``OTEL_EXPORTER_OTLP_ENDPOINT`` (default http://localhost:4318) over HTTP, ``console`` prints spans.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

INSTALL_HINT = "tracing needs the otel extra: pip install '.[otel]' (from an assistantd checkout)"

_tracer: Any = None


def enabled() -> bool:
    return _tracer is not None


def setup(exporter: str, service_name: str = "assistantd") -> None:
    """Start exporting spans (``exporter``: none, console or otlp). Raises ValueError when not installed."""
    if exporter == "none":
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        raise ValueError(INSTALL_HINT) from None
    chosen: SpanExporter
    if exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ValueError(INSTALL_HINT) from None
        chosen = OTLPSpanExporter()
    else:
        chosen = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(chosen))
    use_provider(provider)


def use_provider(provider: Any) -> None:
    """Send spans to this ``TracerProvider`` (``setup`` builds one; tests pass one with an in-memory exporter)."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("assistantd")


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None, *, start_time: int | None = None) -> Iterator[Any]:
    """A span that is current for the block (None when tracing is off); an exception marks it as an error."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name, attributes=_clean(attributes or {}), start_time=start_time) as current:
        yield current


def start(name: str, attributes: Mapping[str, Any] | None = None, *, start_time: int | None = None) -> Any:
    """A span that is not made current (for work spread over callbacks); end it with ``finish``."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, attributes=_clean(attributes or {}), start_time=start_time)


def finish(current: Any, attributes: Mapping[str, Any] | None = None, error: str | None = None) -> None:
    if current is None:
        return
    from opentelemetry.trace import Status, StatusCode

    current.set_attributes(_clean(attributes or {}))
    if error:
        current.set_status(Status(StatusCode.ERROR, error))
    current.end()
