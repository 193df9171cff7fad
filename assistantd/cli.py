"""The ``assistantd`` command: serve, migrate, and manage API keys."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from assistantd import __version__
from assistantd.settings import SETTINGS, Settings, load_settings

log = logging.getLogger("assistantd")


def _add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    for s in SETTINGS:
        if names is not None and s.name not in names:
            continue
        help_text = f"{s.help} [env {s.env}; default {s.default!r}]"
        if s.type is bool:
            parser.add_argument(
                s.flag, dest=s.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(
                s.flag, dest=s.name, type=s.type, default=None, metavar=s.name.upper(), help=help_text
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistantd",
        description="A self-hosted server that speaks the OpenAI Assistants API v2.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"assistantd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="Run the HTTP server.",
        description="Run the HTTP server. Every flag can also be set by its environment "
        "variable or in a TOML file given with --config.",
    )
    serve.add_argument("--config", help="A TOML file of settings (env ASSISTANTD_CONFIG).")
    _add_setting_flags(serve)

    migrate = sub.add_parser("migrate", help="Create or upgrade the database schema, then exit.")
    migrate.add_argument("--config")
    _add_setting_flags(migrate, ["data_dir", "database_url"])

    keys = sub.add_parser("keys", help="Manage API keys (stored hashed in the database).")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="Create a key for a project and print it once.")
    create.add_argument("--project", default="default", help="The project the key belongs to.")
    create.add_argument("--name", default="", help="A label to recognise the key by.")
    listing = keys_sub.add_parser("list", help="List keys (ids, projects, names; never the keys).")
    revoke = keys_sub.add_parser(
        "revoke",
        help="Revoke a key by its id (at once on a server sharing this data dir; within key_cache_seconds "
        "elsewhere). Revoking every key locks the server: it never reopens to keyless requests.",
    )
    revoke.add_argument("key_id")
    adopt = keys_sub.add_parser(
        "adopt-default",
        help="Move every object of project 'default' (made while the server had no keys) into a project.",
    )
    adopt.add_argument("--project", required=True, help="The project to move them into.")
    for p in (create, listing, revoke, adopt):
        p.add_argument("--config")
        _add_setting_flags(p, ["data_dir", "database_url"])
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    return load_settings(overrides, config_file=getattr(args, "config", None))


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every upstream request at INFO; one line per run transition is ours to write.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _serve(settings: Settings) -> int:
    import uvicorn

    from assistantd.api.http_edge import EdgeLimits, protocol_class
    from assistantd.app import build_services, create_app
    from assistantd.service.keys import OPEN, REFUSED
    from assistantd.store import keys as key_rows
    from assistantd.store.lock import DataDirLock, DataDirLocked, sqlite_lock_path

    lock_path = sqlite_lock_path(settings.resolved_database_url)
    lock = DataDirLock(lock_path) if lock_path is not None else None
    if lock is not None:
        # Before the database is opened: a second server must not even migrate or reap runs.
        try:
            lock.acquire()
        except DataDirLocked as exc:
            log.error("refusing to start: %s", exc)
            return 2
    services = build_services(settings)
    mode = services.keys.startup_mode
    if mode == REFUSED:
        log.error(
            "refusing to listen on %s without API keys: create one with `assistantd keys create`, "
            "set ASSISTANTD_API_KEYS, or pass --allow-no-auth to accept any key",
            settings.host,
        )
        asyncio.run(services.db.close())
        return 2
    if mode == OPEN:
        log.warning(
            "no API key has ever been created: any key is accepted (project 'default'), only for requests "
            "addressed to a loopback name, from this server's own origin, with JSON (or multipart) bodies. "
            "The first key created switches this server to requiring keys."
        )
    elif not settings.static_keys and not services.db.write_sync(key_rows.any_active):
        log.warning(
            "every API key has been revoked: no request will be accepted until one is created "
            "(`assistantd keys create`); the server does not reopen to keyless requests"
        )
    log.info(
        "starting assistantd %s on http://%s:%d/v1 database=%s",
        __version__,
        settings.host,
        settings.port,
        services.db.dialect,
    )
    app = create_app(settings, services)
    limits = EdgeLimits(
        max_url_bytes=settings.max_url_bytes,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_connections_per_client=settings.max_connections_per_client,
    )
    uvicorn.run(
        app,
        http=protocol_class(limits),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
    )
    return 0


def _marker(settings: Settings) -> Any:
    from assistantd.service.keys import change_marker_path

    return change_marker_path(settings.resolved_database_url, settings.data_path)


def _adopt_default(db: Any, settings: Settings, project: str) -> int:
    from assistantd.errors import APIError
    from assistantd.service.keys import adopt_default
    from assistantd.store.lock import DataDirLock, DataDirLocked, sqlite_lock_path

    # A live server caches objects and runs of its projects: move them only while none serves this
    # SQLite file (on PostgreSQL, stop the replicas first; active runs are refused either way).
    lock_path = sqlite_lock_path(settings.resolved_database_url)
    lock = DataDirLock(lock_path) if lock_path is not None else None
    try:
        if lock is not None:
            lock.acquire()
        moved = adopt_default(db, project)
    except DataDirLocked as exc:
        print(f"assistantd: stop the server first: {exc}", file=sys.stderr)
        return 1
    except APIError as exc:
        print(f"assistantd: {exc.message}", file=sys.stderr)
        return 1
    finally:
        if lock is not None:
            lock.release()
    total = sum(moved.values())
    detail = ", ".join(f"{table} {count}" for table, count in moved.items() if count)
    print(f"moved {total} rows from project 'default' to {project!r}" + (f" ({detail})" if detail else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except (ValueError, OSError) as exc:
        print(f"assistantd: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    if args.command == "serve":
        return _serve(settings)

    from assistantd.store import open_database

    db = open_database(settings.resolved_database_url, pool_size=2)
    try:
        if args.command == "migrate":
            print(f"database schema is up to date ({db.dialect})")
        elif args.keys_command == "create":
            from assistantd.service.keys import create_key

            created = create_key(db, args.project, args.name, marker=_marker(settings))
            print(f"id:      {created.id}\nproject: {created.project}\nkey:     {created.key}")
            print("Store the key now: only its hash is kept.", file=sys.stderr)
        elif args.keys_command == "list":
            from assistantd.store import keys as key_rows

            for rec in db.write_sync(key_rows.list_all):
                state = "revoked" if rec.revoked_at else "active"
                print(f"{rec.id}\t{rec.project_id}\t{state}\t{rec.name}")
        elif args.keys_command == "revoke":
            from assistantd.service.keys import revoke_key

            if not revoke_key(db, args.key_id, marker=_marker(settings)):
                print(f"assistantd: no active key with id {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
        elif args.keys_command == "adopt-default":
            return _adopt_default(db, settings, args.project)
    finally:
        asyncio.run(db.close())
    return 0
