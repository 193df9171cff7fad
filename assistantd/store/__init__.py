"""Persistence: one schema on SQLite or PostgreSQL behind the ``Database`` interface."""

from assistantd.store.base import Conn, Database, open_database

__all__ = ["Conn", "Database", "open_database"]
