"""Shared pytest fixtures.

Store fixtures: ``pg_url`` (a throw-away PostgreSQL database for the session), ``pg_schema_url`` (a
fresh schema in it per test), ``duckdb_url`` (a DuckDB file under ``tmp_path``) and ``store_url`` /
``store`` (parametrized over both backends; the store is opened but NOT migrated).

The PostgreSQL server is taken from ``TRADE_TEST_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). If it is unreachable the PostgreSQL tests FAIL,
unless ``TRADE_SKIP_PG=1`` is set, in which case they are skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from engine.store import Store, open_store

PG_ADMIN_URL = os.environ.get("TRADE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _with_dbname(url: str, dbname: str) -> str:
    """``url`` (a postgresql:// URL) pointing at database ``dbname`` instead."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def _with_option(url: str, key: str, value: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=f"{query}{key}={quote(value)}"))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a uniquely named, empty PostgreSQL database, dropped (WITH FORCE) after the session."""
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        if os.environ.get("TRADE_SKIP_PG") == "1":
            pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL} and TRADE_SKIP_PG=1: {exc}")
        pytest.fail(
            f"PostgreSQL unreachable at {PG_ADMIN_URL} ({exc}); start it or set TRADE_SKIP_PG=1 to skip",
            pytrace=False,
        )
    name = f"tradengine_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield _with_dbname(PG_ADMIN_URL, name)
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_schema_url(pg_url: str) -> str:
    """``pg_url`` with ``search_path`` set to a fresh, empty schema: every test starts unmigrated."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return _with_option(pg_url, "options", f"-csearch_path={schema}")


@pytest.fixture
def duckdb_url(tmp_path: os.PathLike[str]) -> str:
    """URL of a new DuckDB file under the test's tmp_path."""
    return f"duckdb://{os.fspath(tmp_path)}/store.duckdb"


@pytest.fixture(params=["duckdb", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh store URL for each backend (an empty DuckDB file / an empty PostgreSQL schema)."""
    if request.param == "duckdb":
        return str(request.getfixturevalue("duckdb_url"))
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An opened, NOT migrated store over each backend; closed after the test."""
    with open_store(store_url) as s:
        yield s
