"""Runs in the background: the state machine, context building, the model/tool loop, the event bus."""
