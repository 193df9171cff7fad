"""Shared fixtures: real databases (a SQLite file, a PostgreSQL started from ``pgserver``), the app in
process through Starlette's TestClient, and checks for the OpenAI error envelope and the spec's schemas.

Every API test that takes ``api`` runs once per backend. SQLite gets a new file per test; PostgreSQL is
one server per session and one database per module whose tables are emptied before each test, so tests
never see each other's rows. Tests that need a never-migrated database take ``fresh_pg_database``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import sqlean
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from starlette.applications import Starlette
from starlette.testclient import TestClient

from assistantd.app import create_app
from assistantd.llm.base import ChatModel
from assistantd.settings import Settings, load_settings
from assistantd.store import Database, open_database

# A copy of shared/reference/openai-assistants-openapi.yaml (the wire contract, MIT notice in its header),
# kept in the repo so a fresh clone can run the schema checks.
SPEC_PATH = Path(__file__).resolve().parent / "data" / "openai-assistants-openapi.yaml"
SPEC_URI = "urn:openai-assistants-openapi"
BACKENDS = ["sqlite", "postgres"]
DEFAULT_KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module", autouse=True)
def _garbage_of_each_module_collected_at_its_end() -> Iterator[None]:
    """A client a test drops unclosed (the seed programs, as users write them, never close theirs) sits in
    a reference cycle until a collector pass; it warns as it is freed, and under ``filterwarnings =
    error`` that fails whichever test the pass happens to run in, modules later. Collected here, at the
    end of the module that left it, its warning is not an error; leaks the product must not have are
    asserted where they could happen (a sandbox's output pipe, tests/test_code_interpreter_sessions.py)."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


# --- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """One real PostgreSQL for the whole session; yields the URI of its maintenance database."""
    with warnings.catch_warnings():
        # pgserver computes a runtime dir at import time and platformdirs warns when XDG_RUNTIME_DIR
        # is unset (as in CI containers). That warning is about the environment, not our code.
        warnings.simplefilter("ignore")
        import pgserver

    # Not under pytest's basetemp: as root, pgserver runs postgres as another user and opens up the
    # directory's parents for it, and every pytest session start (including a concurrent one) resets
    # /tmp/pytest-of-<user> to 0700, which would pull the data dir out from under a running server.
    pgdata = Path(tempfile.mkdtemp(prefix="assistantd-test-pg-"))
    srv = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        uri = srv.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            # A throwaway server: durability buys nothing here, and every CREATE/DROP DATABASE per test
            # would otherwise wait for fsyncs. Transactions and isolation are unchanged.
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(f"ALTER SYSTEM SET {name} = off")
            conn.execute("SELECT pg_reload_conf()")
        yield uri
    finally:
        srv.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


def _with_database(uri: str, name: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + name))


def create_pg_database(server_uri: str) -> str:
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(server_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return _with_database(server_uri, name)


def drop_pg_database(server_uri: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server_uri, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def fresh_pg_database(pg_server: str) -> Iterator[str]:
    """A newly created PostgreSQL database (never migrated) for one test; dropped afterwards."""
    url = create_pg_database(pg_server)
    try:
        yield url
    finally:
        drop_pg_database(pg_server, url)


@pytest.fixture(scope="module")
def module_pg_database(pg_server: str) -> Iterator[str]:
    url = create_pg_database(pg_server)
    try:
        yield url
    finally:
        drop_pg_database(pg_server, url)


@pytest.fixture
def pg_database(module_pg_database: str) -> str:
    """The module's PostgreSQL database with every table emptied: each test starts with no rows.

    CREATE DATABASE per test costs a file copy of the template (tenths of a second); emptying the
    tables costs milliseconds and leaves the same state: schema in place, no rows, sequences reset.
    """
    with psycopg.connect(module_pg_database, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
            ).fetchall()
        ]
        if tables:
            conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    return module_pg_database


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A URL for an empty database of the parametrized backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'assistantd.db'}"
    return str(request.getfixturevalue("pg_database"))


def query(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the database behind the API directly (SQL with ``?`` placeholders), to check what is stored."""
    if database_url.startswith("sqlite:"):
        path = database_url.removeprefix("sqlite:").removeprefix("//")
        # The same SQLite library as the server: two copies of SQLite in one process do not see each
        # other's POSIX locks, and closing one copy's connection drops the other's (stale reads).
        with contextlib.closing(sqlean.connect(path)) as conn:
            return conn.execute(sql, params).fetchall()
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql.replace("?", "%s"), params).fetchall()


# --- the app -----------------------------------------------------------------------------------


@dataclass
class Api:
    """A running app (lifespan entered) and what a test needs to look behind it."""

    client: TestClient
    app: Starlette
    settings: Settings
    database_url: str
    backend: str

    def sql(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return query(self.database_url, sql, params)

    def count(self, table: str, **where: Any) -> int:
        clause = " AND ".join(f"{k} = ?" for k in where) or "1 = 1"
        return int(self.sql(f"SELECT count(*) FROM {table} WHERE {clause}", tuple(where.values()))[0][0])


MakeApi = Callable[..., Api]


def _api_factory(stack: contextlib.ExitStack, backend: str, database_url: str, data_dir: Path) -> MakeApi:
    def make(
        *,
        key: str | None = DEFAULT_KEY,
        raise_server_exceptions: bool = True,
        extend: Callable[[Starlette], None] | None = None,
        chat_model: ChatModel | None = None,
        **overrides: Any,
    ) -> Api:
        # No pre-started sandboxes: hundreds of apps come and go here; the tool starts one when used.
        values = {"data_dir": str(data_dir), "database_url": database_url, "code_interpreter_pool_size": 0,
                  **overrides}
        settings = load_settings(overrides=values, environ={})
        app = create_app(settings, chat_model=chat_model)
        if extend is not None:
            extend(app)
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        # A loopback name, as a local client would send: an open server refuses other Host headers.
        client = TestClient(
            app, base_url="http://localhost", headers=headers, raise_server_exceptions=raise_server_exceptions
        )
        stack.enter_context(client)
        return Api(client=client, app=app, settings=settings, database_url=database_url, backend=backend)

    return make


@pytest.fixture
def make_api(backend: str, database_url: str, tmp_path: Path) -> Iterator[MakeApi]:
    """Build apps on this test's database. Keyword arguments are setting overrides; ``key`` sets the
    client's bearer key (``None`` for no Authorization header); ``extend`` may add routes before the
    app starts; ``chat_model`` answers every model instead of the configured upstreams;
    ``raise_server_exceptions`` goes to the TestClient. Apps made in one test share the database and
    the data dir, and are shut down (lifespan exit) when the test ends."""
    with contextlib.ExitStack() as stack:
        yield _api_factory(stack, backend, database_url, tmp_path / "data")


@pytest.fixture
def api(make_api: MakeApi) -> Api:
    """The app in its default configuration (no keys configured: any key is accepted)."""
    return make_api()


@pytest.fixture
def client(api: Api) -> TestClient:
    return api.client


@pytest.fixture(scope="module", params=BACKENDS)
def shared_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app per backend for a whole module, for tests that only read or only get rejected.

    Tests using it must not depend on what other tests in the module wrote."""
    backend = str(request.param)
    tmp = tmp_path_factory.mktemp(f"shared-{backend}")
    pg_server = request.getfixturevalue("pg_server") if backend == "postgres" else ""
    url = f"sqlite:///{tmp / 'assistantd.db'}" if backend == "sqlite" else create_pg_database(pg_server)
    try:
        with contextlib.ExitStack() as stack:
            yield _api_factory(stack, backend, url, tmp / "data")()
    finally:
        if backend == "postgres":
            drop_pg_database(pg_server, url)


@pytest.fixture
def shared_client(shared_api: Api) -> TestClient:
    return shared_api.client


# --- checks ------------------------------------------------------------------------------------


def check_error(
    response: Any,
    status: int,
    *,
    code: Any = ...,
    param: Any = ...,
    type_: str = "invalid_request_error",
    message: str | None = None,
    contains: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Assert an OpenAI error envelope with the given status; ``...`` leaves a field unchecked."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert err["type"] == type_, err
    if code is not ...:
        assert err["code"] == code, err
    if param is not ...:
        assert err["param"] == param, err
    if message is not None:
        assert err["message"] == message, err
    for fragment in contains:
        assert fragment in err["message"], (fragment, err)
    return err


@pytest.fixture(scope="session")
def expect_error() -> Callable[..., dict[str, Any]]:
    return check_error


@pytest.fixture(scope="session")
def openapi_spec() -> dict[str, Any]:
    with SPEC_PATH.open() as fh:
        spec: dict[str, Any] = yaml.safe_load(fh)
    return spec


@pytest.fixture(scope="session")
def spec_registry(openapi_spec: dict[str, Any]) -> Registry:
    return Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(openapi_spec))


def schema_validator(registry: Registry, schema: dict[str, Any] | str) -> Draft202012Validator:
    """A validator for a component schema by name (``$ref`` within the spec), or for a schema dict."""
    if isinstance(schema, str):
        schema = {"$ref": f"{SPEC_URI}#/components/schemas/{schema}"}
    return Draft202012Validator(schema, registry=registry)


@pytest.fixture(scope="session")
def conforms(spec_registry: Registry) -> Callable[[Any, dict[str, Any] | str], None]:
    """``conforms(obj, "AssistantObject")`` fails the test with every schema violation listed."""

    def check(obj: Any, schema: dict[str, Any] | str) -> None:
        validator = schema_validator(spec_registry, schema)
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)

    return check


T = TypeVar("T")


def run(awaitable: Awaitable[T]) -> T:
    """Run one awaitable to completion from a synchronous test."""

    async def wrap() -> T:
        return await awaitable

    return asyncio.run(wrap())


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """An open database of the test's backend (see ``database_url``), closed after the test."""
    database = open_database(database_url, pool_size=4)
    try:
        yield database
    finally:
        run(database.close())
