"""API keys: which project a bearer key belongs to, whether the server is open, and the key commands.

Open mode (any key accepted, everything in project ``default``) is decided once, when the server
starts: only when no key has ever existed in the database and none is configured, and only on a
loopback address unless ``--allow-no-auth`` is given. It can end while the server runs (the first key
created switches it to enforcing for good, logged loudly) but never begin: revoking every key leaves
a server that nobody can use until a key is created, because revoked keys stay in the table and
"a key has existed" is read from there.

Lookups are cached for ``key_cache_seconds``. The key commands also replace a marker file (beside a
SQLite database, in the data dir otherwise), which a server sharing that file checks (one ``stat``)
on every request, so a key created or revoked there takes effect on its next request; servers that
do not share it see the change within ``key_cache_seconds``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from assistantd.clock import now
from assistantd.errors import InvalidRequest
from assistantd.ids import new_id
from assistantd.store import Database
from assistantd.store import keys as key_rows
from assistantd.store import runs as run_rows
from assistantd.store.base import Conn

log = logging.getLogger("assistantd.keys")

OPEN, ENFORCING, REFUSED = "open", "enforcing", "refused"


@dataclass(frozen=True)
class CreatedKey:
    id: str
    key: str
    project: str


def is_loopback(host: str) -> bool:
    """Whether a listen address (or a name it resolves to) is loopback only."""
    if host == "":
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def change_marker_path(database_url: str, data_dir: Path) -> Path:
    """The file the key commands replace on every change, next to the database when it is a file."""
    if database_url.startswith("sqlite:"):
        path = database_url.removeprefix("sqlite:").removeprefix("//")
        if path not in ("", ":memory:"):
            return Path(path).expanduser().resolve().with_name(Path(path).name + ".keys-changed")
    return data_dir / "keys-changed"


def _signal_change(marker: Path) -> None:
    """Replace the marker (a new inode every time, so a same-second change is still seen)."""
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{time.time_ns()}\n")
        os.replace(tmp, marker)
    except OSError as exc:
        # The change is in the database regardless; servers then see it within key_cache_seconds.
        log.warning("could not update %s (%s): servers see this key change within key_cache_seconds", marker, exc)


def _marker_signature(marker: Path | None) -> tuple[int, int] | None:
    if marker is None:
        return None
    try:
        st = os.stat(marker)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns)


class KeyService:
    def __init__(
        self,
        db: Database,
        static_keys: dict[str, str],
        *,
        open_allowed: bool,
        cache_seconds: float,
        marker: Path | None = None,
    ) -> None:
        self.db = db
        self.static = static_keys
        self.cache_seconds = cache_seconds
        self.marker = marker
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._seen_marker = _marker_signature(marker)
        self._open_checked = time.monotonic()
        # Decided once, here (the server is built before it listens).
        keys_exist: bool = bool(static_keys) or db.write_sync(key_rows.any_ever)
        if keys_exist:
            self.startup_mode = ENFORCING
        else:
            self.startup_mode = OPEN if open_allowed else REFUSED
        # A refused server never serves (the CLI exits); in process it fails closed.
        self._open = self.startup_mode == OPEN

    @property
    def is_open(self) -> bool:
        return self._open

    def _marker_changed(self) -> bool:
        signature = _marker_signature(self.marker)
        if signature == self._seen_marker:
            return False
        self._seen_marker = signature
        self._cache.clear()
        self._open_checked = float("-inf")  # and open mode is looked at again on its next check
        return True

    async def authenticate(self, key: str) -> tuple[str | None, bool]:
        """A request's one check: the project of ``key`` (None for no key, an unknown or a revoked one) and,
        when it has none, whether the server is open. The marker is read once for both."""
        if key in self.static:
            return self.static[key], False
        self._marker_changed()
        project = await self._project(key) if key else None
        if project is not None:
            return project, False
        return None, await self._open_mode()

    async def open_mode(self) -> bool:
        """True while the server accepts any key. Once false, false for the life of the process."""
        if not self._open:
            return False
        self._marker_changed()
        return await self._open_mode()

    async def _open_mode(self) -> bool:
        if not self._open:
            return False
        moment = time.monotonic()
        if moment - self._open_checked > self.cache_seconds:
            self._open_checked = moment
            if await self.db.read(key_rows.any_ever):
                self._open = False
                self._cache.clear()
                log.warning(
                    "an API key now exists: this server requires a valid key on every request from now on. "
                    "Objects created without a key stay in project 'default'; move them to a key's project "
                    "with `assistantd keys adopt-default --project PROJECT`"
                )
        return self._open

    async def _project(self, key: str) -> str | None:
        moment = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and moment - hit[0] < self.cache_seconds:
            return hit[1]
        project = await self.db.read(lambda conn: key_rows.project_for(conn, key))
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: a flood of wrong keys cannot grow memory
        self._cache[key] = (moment, project)
        return project


# --- the key commands (the CLI, outside the event loop) --------------------------------------------


def create_key(db: Database, project: str, name: str, marker: Path | None = None) -> CreatedKey:
    """Make a new key for a project."""
    key = "sk-ad-" + secrets.token_urlsafe(32)
    key_id = new_id("key")
    db.write_sync(
        lambda conn: key_rows.insert(conn, key_id=key_id, key=key, project=project, name=name, created_at=now())
    )
    if marker is not None:
        _signal_change(marker)
    return CreatedKey(id=key_id, key=key, project=project)


def revoke_key(db: Database, key_id: str, marker: Path | None = None) -> bool:
    """Revoke a key (its row stays, so the database remembers that keys exist). False if none was active."""
    revoked = db.write_sync(lambda conn: key_rows.revoke(conn, key_id, now()))
    if revoked and marker is not None:
        _signal_change(marker)
    return revoked


def adopt_default(db: Database, project: str) -> dict[str, int]:
    """Move every object of project ``default`` (made while the server was open) into ``project``."""
    if not project or project == "default":
        raise InvalidRequest("Name the project to move project 'default' objects into (not 'default' itself).")

    def move(conn: Conn) -> dict[str, int]:
        active = run_rows.active_in_project(conn, "default")
        if active:
            raise InvalidRequest(
                f"{active} run(s) of project 'default' are still active; wait for them to end (or cancel them) "
                "and run this again"
            )
        return key_rows.move_project(conn, "default", project)

    return db.write_sync(move)
