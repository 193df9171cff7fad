"""The ``assistantd`` command: serve, check, migrate, back up and restore, and manage API keys."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from assistantd import __version__
from assistantd.observability import tracing
from assistantd.observability.logs import configure_logging
from assistantd.settings import SETTINGS, Settings, load_settings
from assistantd.store.base import Database

log = logging.getLogger("assistantd")


def _add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    for s in SETTINGS:
        if names is not None and s.name not in names:
            continue
        help_text = f"{s.help} [env {s.env}; default {s.default!r}]"
        if s.type is bool:
            parser.add_argument(
                s.flag, dest=s.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            parser.add_argument(
                s.flag, dest=s.name, type=s.type, default=argparse.SUPPRESS, metavar=s.name.upper(), help=help_text
            )


CONFIG_HELP = (
    "A TOML file of settings (env ASSISTANTD_CONFIG); keys are the settings' names, e.g. port = 8080. "
    "Unknown keys are errors."
)


def _common(parser: argparse.ArgumentParser, storage_only: bool = True) -> None:
    """--config, --version and the storage flags every subcommand that opens the database takes."""
    # SUPPRESS: a flag given before a nested subcommand (keys --config F list) is not reset by the inner parser.
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP)
    parser.add_argument("--version", action="version", version=f"assistantd {__version__}")
    _add_setting_flags(parser, ["data_dir", "database_url"] if storage_only else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistantd",
        description="A self-hosted server that speaks the OpenAI Assistants API v2. Start it with "
        "`assistantd serve`; `assistantd check` tests the configuration and every dependency.",
    )
    parser.add_argument("--version", action="version", version=f"assistantd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="Run the HTTP server.",
        description="Run the HTTP server. Every flag can also be set by its environment "
        "variable or in a TOML file given with --config.",
    )
    _common(serve, storage_only=False)

    check = sub.add_parser(
        "check",
        help="Validate the settings and probe every dependency; exit 1 if something is wrong.",
        description="Validate the settings (flags, environment, --config file) and probe each dependency: the "
        "database (and its schema version), each upstream's /models, the code interpreter sandbox (runs "
        "print(6 * 7)), and the embeddings. Prints one line per probe; exits 1 if any failed, 2 if the "
        "settings themselves are invalid.",
    )
    _common(check, storage_only=False)

    migrate = sub.add_parser(
        "migrate",
        help="Create or upgrade the database schema, then exit.",
        description="Create or upgrade the database schema and say which migrations ran and the schema "
        "version. `serve` does the same at start-up; run this to migrate ahead of a rollout.",
    )
    _common(migrate)

    backup = sub.add_parser(
        "backup",
        help="Back up the database and the file bytes into one .tar file, while the server runs.",
        description="Back up the database (SQLite: a consistent online snapshot; PostgreSQL: pg_dump) and "
        "every file's bytes into one .tar file, while the server runs. Restore it with `assistantd restore`.",
    )
    backup.add_argument("dest", metavar="FILE.tar", help="The backup file to write (replaced if it exists).")
    backup.add_argument(
        "--pg-dump", default="pg_dump", metavar="PATH",
        help="The pg_dump to use for PostgreSQL (its major version must be at least the server's).",
    )  # fmt: skip
    _common(backup)

    restore = sub.add_parser(
        "restore",
        help="Restore a backup into the configured (fresh) database and data dir.",
        description="Restore a backup made by `assistantd backup` into the configured database and data dir, "
        "which must hold no objects yet (--force overwrites), then migrate it to this version's schema. "
        "Stop the server first.",
    )
    restore.add_argument("src", metavar="FILE.tar", help="The backup file to read.")
    restore.add_argument(
        "--pg-restore", default="pg_restore", metavar="PATH", help="The pg_restore to use for PostgreSQL."
    )
    restore.add_argument("--force", action="store_true", help="Overwrite a database that already holds objects.")
    _common(restore)

    blobs = sub.add_parser(
        "blobs",
        help="Manage stored file bytes.",
        description="Manage stored file bytes: on PostgreSQL they live in the database, shared by every replica.",
    )
    _common(blobs)
    blobs_sub = blobs.add_subparsers(dest="blobs_command", metavar="BLOBS_COMMAND")
    move = blobs_sub.add_parser(
        "migrate",
        help="Move the data folder's file bytes into the PostgreSQL database (idempotent, resumable).",
        description="Copy every file's bytes from the data folder into the PostgreSQL database, where all "
        "replicas read them. Safe to interrupt and run again: files already moved are skipped, a file cut "
        "short is written again. The folder is left as it was; remove it once nothing is left to move.",
    )
    move.add_argument("--limit", type=int, default=None, help="Move at most this many files in this run.")
    _common(move)

    keys = sub.add_parser(
        "keys",
        help="Manage API keys (stored hashed in the database).",
        description="Manage API keys. Keys are stored hashed; each belongs to a project, and a project's "
        "objects are invisible to other projects' keys.",
    )
    _common(keys)
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND")
    create = keys_sub.add_parser(
        "create", help="Create a key for a project and print it once.", description="Create a key for a "
        "project and print it once (only its hash is stored)."
    )
    create.add_argument("--project", default="default", help="The project the key belongs to (default: default).")
    create.add_argument("--name", default="", help="A label to recognise the key by.")
    listing = keys_sub.add_parser(
        "list", help="List keys (ids, projects, names; never the keys).",
        description="List keys: id, project, active or revoked, name (never the keys).",
    )
    revoke_help = (
        "Revoke a key by its id (at once on a server sharing this data dir; within key_cache_seconds "
        "elsewhere). Revoking every key locks the server: it never reopens to keyless requests."
    )
    revoke = keys_sub.add_parser("revoke", help=revoke_help, description=revoke_help)
    revoke.add_argument("key_id", help="The key's id, as `assistantd keys list` shows it (key_...).")
    adopt_help = "Move every object of project 'default' (made while the server had no keys) into a project."
    adopt = keys_sub.add_parser("adopt-default", help=adopt_help, description=adopt_help)
    adopt.add_argument("--project", required=True, help="The project to move them into.")
    for p in (create, listing, revoke, adopt):
        _common(p)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    return load_settings(overrides, config_file=getattr(args, "config", None))


def _serve(settings: Settings) -> int:
    from assistantd.api import lifecycle
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
    # What it serves, where, and with which models is said in one block once the app has started
    # (diagnostics.startup_block, logged from the app's lifespan).
    app = create_app(settings, services)
    limits = EdgeLimits(
        max_url_bytes=settings.max_url_bytes,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_connections_per_client=settings.max_connections_per_client,
    )
    # uvicorn.run, but open streams are ended by the app when a signal arrives (api/lifecycle.py).
    lifecycle.run(
        app,
        grace_seconds=settings.shutdown_grace_seconds,
        http=protocol_class(limits),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        log_config=None,  # uvicorn's loggers go through ours (observability/logs.py): one format
    )
    return 0


def _migrate_blobs(db: Any, settings: Settings, limit: int | None) -> int:
    from assistantd.store.blob_migration import move_folder_to_database
    from assistantd.store.blobs import LocalBlobStore, PostgresBlobStore

    if db.dialect != "postgres":
        print(
            "assistantd: the database is SQLite, whose file bytes stay in the data folder; "
            "give --database-url postgresql://... to move them into PostgreSQL",
            file=sys.stderr,
        )
        return 2
    folder = settings.data_path / "files"
    if not folder.is_dir():
        print(f"assistantd: no file folder at {folder}: nothing to move")
        return 0
    source = LocalBlobStore(folder)
    target = PostgresBlobStore(db, settings.data_path / "blob-spool")

    def progress(key: str, size: int) -> None:
        print(f"moved {key} ({size} bytes)", flush=True)

    report = asyncio.run(move_folder_to_database(source, target, limit=limit, progress=progress))
    print(
        f"moved {report.moved} file(s), {report.moved_bytes} bytes; {report.already} already in the database; "
        f"{report.left} left to move"
    )
    if report.orphans:
        print(
            f"{len(report.orphans)} file(s) in the folder have no file record and were not moved: "
            f"{', '.join(report.orphans[:10])}"
        )
    if report.missing:
        print(
            f"warning: {len(report.missing)} file record(s) have bytes in neither place: "
            f"{', '.join(report.missing[:10])}",
            file=sys.stderr,
        )
    return 0


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from assistantd.diagnostics import format_report, run_checks

    source = getattr(args, "config", None) or os.environ.get("ASSISTANTD_CONFIG")
    described = f"valid ({source} + environment + flags)" if source else "valid (defaults + environment + flags)"
    probes = asyncio.run(run_checks(settings, described))
    print(format_report(probes))
    return 1 if any(p.status == "FAIL" for p in probes) else 0


def _migrate(db: Database) -> None:
    from assistantd.store.schema import LATEST

    rows = db.write_sync(
        lambda conn: conn.fetchall("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    )
    # open_database migrated already, and noted which versions it applied.
    applied = [f"{version} {name}" for version, name, _at in rows if version in db.migrated]
    version = max((row[0] for row in rows), default=0)
    if applied:
        print(f"applied {len(applied)} migration(s) on {db.dialect}: " + "; ".join(applied))
    else:
        print(f"nothing to migrate on {db.dialect}")
    print(f"schema version {version} (this assistantd's latest: {LATEST})")


def _backup_or_restore(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from assistantd.backup import BackupError, backup, restore

    try:
        if args.command == "backup":
            done = backup(settings, Path(args.dest), pg_dump=args.pg_dump)
            print(
                f"backed up {done.dialect} (schema version {done.schema_version}), {done.files} files, "
                f"{done.blobs} file contents to {args.dest}"
            )
        else:
            done = restore(settings, Path(args.src), pg_restore=args.pg_restore, force=args.force)
            print(
                f"restored {done.dialect} (now schema version {done.schema_version}), {done.files} files, "
                f"{done.blobs} file contents from {args.src}"
            )
    except BackupError as exc:
        print(f"assistantd {args.command}: {exc}", file=sys.stderr)
        return 1
    if done.missing_blobs:
        print(
            f"warning: {len(done.missing_blobs)} files were deleted while the backup ran and have no contents: "
            + ", ".join(done.missing_blobs[:20]),
            file=sys.stderr,
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "keys" and args.keys_command is None:
        parser.parse_args(["keys", "--help"])  # prints the keys help and exits 0
    if args.command == "blobs" and args.blobs_command is None:
        parser.parse_args(["blobs", "--help"])
    try:
        settings = _settings(args)
    except (ValueError, OSError) as exc:
        print(f"assistantd: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        try:
            tracing.setup(settings.otel_exporter)
        except ValueError as exc:
            print(f"assistantd: otel_exporter = {settings.otel_exporter}: {exc}", file=sys.stderr)
            return 2
        return _serve(settings)
    if args.command == "check":
        return _check(settings, args)
    if args.command in ("backup", "restore"):
        return _backup_or_restore(settings, args)

    from assistantd.store import open_database

    db = open_database(settings.resolved_database_url, pool_size=2)
    try:
        if args.command == "migrate":
            _migrate(db)
        elif args.command == "blobs":
            return _migrate_blobs(db, settings, args.limit)
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
