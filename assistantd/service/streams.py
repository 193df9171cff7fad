"""What the API layer streams: a run's events as the engine's bus delivers them, seen through the
services so the API never imports the engine."""

from __future__ import annotations

from assistantd.engine.bus import Event, EventQueue, Sink, Subscription

__all__ = ["Event", "EventQueue", "Sink", "Subscription"]
