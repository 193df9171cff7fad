"""Logs, metrics and traces: the instrumentation lives here, the call sites hold one-line hooks.

- ``logs``: one format for every logger (ours, uvicorn's), text ``key=value`` or JSON lines.
- ``metrics``: the Prometheus metrics (``prometheus_client``, one registry per process).
- ``tracing``: OpenTelemetry spans when the ``otel`` extra is installed and an exporter is set.
- ``hooks``: what the engine, the model adapter and the tools call (run ended, model call, tool call).
- ``web``: the HTTP middleware, ``/metrics`` and the gauges read at scrape time (imports the app's parts).

``logs``, ``metrics``, ``tracing`` and ``hooks`` import nothing of ours, so any layer may call them.
"""
