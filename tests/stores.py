"""Ledgers for the tests that must hold on every store: SQLite, and PostgreSQL when enabled.

PostgreSQL tests run when ``$CHARTER_TEST_POSTGRES`` names a server (``.ci/run`` sets it to
``postgresql://postgres@127.0.0.1:5432/test``); each test gets a schema of its own, created
empty and dropped afterwards, so tests cannot see each other's runs. Without the variable
they skip, saying which variable enables them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest

from charter.ledger.store import Store, open_store

PG_ENV = "CHARTER_TEST_POSTGRES"
PG_SKIP = (
    f"PostgreSQL tests are off: set {PG_ENV}=postgresql://postgres@127.0.0.1:5432/test "
    "(a server the tests may create and drop schemas in) to run them"
)
STORES = ["sqlite", "postgres"]


def pg_server() -> str:
    """The server URL from the environment, or skip the calling test."""
    url = os.environ.get(PG_ENV, "")
    if not url:
        pytest.skip(PG_SKIP)
    return url


def with_schema(server: str, schema: str) -> str:
    parts = urlsplit(server)
    query = parts.query + ("&" if parts.query else "") + urlencode({"schema": schema})
    return urlunsplit(parts._replace(query=query))


def _admin(server: str) -> Any:
    import psycopg

    base = urlsplit(server)._replace(query="")
    return psycopg.connect(urlunsplit(base), autocommit=True)


@contextlib.contextmanager
def pg_schema(prefix: str = "t") -> Iterator[str]:
    """A ledger URL in a fresh schema, dropped (with whatever is in it) afterwards."""
    server = pg_server()
    schema = f"charter_{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield with_schema(server, schema)
    finally:
        with _admin(server) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def ledger_url(kind: str, tmp_path: Path, prefix: str = "t") -> Iterator[str]:
    """A URL of an empty ledger of ``kind`` (``sqlite`` or ``postgres``)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        with pg_schema(prefix) as url:
            yield url


def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a ledger behind Charter's back (tampering, inspection)."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []
        finally:
            conn.close()
    from charter.ledger.postgres import parse_url

    conninfo, schema, _ = parse_url(url)
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        cur = conn.execute(statement.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


def terminate_backends(url: str) -> int:
    """``pg_terminate_backend`` every other connection of Charter to the test database."""
    with _admin(url) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'charter' AND pid <> pg_backend_pid() "
            "AND datname = current_database()"
        ).fetchall()
    return len(rows)


# -- fixtures (imported by the conftest of each test package that runs on every store) ---
@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "postgres":
        pg_server()
    return kind


@pytest.fixture
def ledger(store_kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty ledger on each store (a fresh PostgreSQL schema per test)."""
    with ledger_url(store_kind, tmp_path) as url:
        yield url


@pytest.fixture
def store(ledger: str) -> Iterator[Store]:
    opened = open_store(ledger)
    yield opened
    opened.close()
