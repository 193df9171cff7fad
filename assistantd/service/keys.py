"""API keys: which project a bearer key belongs to, and the keys the CLI creates."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from assistantd.clock import now
from assistantd.ids import new_id
from assistantd.store import Database
from assistantd.store import keys as key_rows

# How long a lookup result is trusted. A key created with the CLI works at once (misses go to the
# database); a revoked key stops working within this many seconds.
CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class CreatedKey:
    id: str
    key: str
    project: str


class KeyService:
    def __init__(self, db: Database, static_keys: dict[str, str]) -> None:
        self.db = db
        self.static = static_keys
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._open_checked = 0.0
        self._any_db_keys = False

    async def open_mode(self) -> bool:
        """True when no key is configured at all: then any key is accepted (on loopback)."""
        if self.static:
            return False
        moment = time.monotonic()
        if moment - self._open_checked > CACHE_SECONDS:
            self._any_db_keys = await self.db.read(key_rows.any_active)
            self._open_checked = moment
        return not self._any_db_keys

    async def project_for(self, key: str) -> str | None:
        """The project a key belongs to, or None for an unknown or revoked key."""
        if key in self.static:
            return self.static[key]
        moment = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and moment - hit[0] < CACHE_SECONDS:
            return hit[1]
        project = await self.db.read(lambda conn: key_rows.project_for(conn, key))
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: a flood of wrong keys cannot grow memory
        self._cache[key] = (moment, project)
        return project


def create_key(db: Database, project: str, name: str) -> CreatedKey:
    """Make a new key for a project (used by the CLI, outside the event loop)."""
    key = "sk-ad-" + secrets.token_urlsafe(32)
    key_id = new_id("key")
    db.write_sync(
        lambda conn: key_rows.insert(
            conn, key_id=key_id, key=key, project=project, name=name, created_at=now()
        )
    )
    return CreatedKey(id=key_id, key=key, project=project)
