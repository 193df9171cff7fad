"""Use cases and their rules. No HTTP types: callers pass a project id and validated request models."""
