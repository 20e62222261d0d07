"""Store URLs: which backend a URL selects, and where the default store lives.

Accepted forms:

* ``postgresql://user:pass@host:5432/dbname?options=...`` or ``postgres://...`` → PostgreSQL (the URL is
  handed to libpq unchanged, so every libpq URI parameter works).
* ``duckdb://<path>`` (``duckdb:///abs/file.duckdb``, ``duckdb://rel/file.duckdb``, ``duckdb://:memory:``)
  → DuckDB.
* A plain filesystem path (``data/engine.duckdb``, ``/var/lib/trade/engine.duckdb``, ``~/x.duckdb``) or
  ``:memory:`` → DuckDB.

Anything else (``mysql://``, ``sqlite://``, an empty string) is rejected with
:class:`~engine.errors.ParameterError` on the field ``db``.

When no URL is given, :func:`resolve_store_url` falls back to the environment variable ``TRADE_DB_URL``
and then to the DuckDB file ``<data_dir>/engine.duckdb``, where ``data_dir`` is the argument, else
``TRADE_DATA_DIR``, else ``./data``. Empty environment variables count as unset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from engine.errors import ParameterError

ENV_DB_URL = "TRADE_DB_URL"
ENV_DATA_DIR = "TRADE_DATA_DIR"
DEFAULT_DATA_DIR = "data"
DEFAULT_DB_FILENAME = "engine.duckdb"
MEMORY = ":memory:"

Dialect = Literal["duckdb", "postgres"]

# A URL scheme needs at least two characters so that a Windows drive ("C:\\x") stays a path.
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]+)://")
_PG_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL.

    Attributes:
        dialect: ``"duckdb"`` or ``"postgres"``.
        target: for DuckDB the database file path (``~`` expanded) or ``":memory:"``; for PostgreSQL
            the libpq connection URL, unchanged.
        is_default: True when no URL was configured and the default ``<data_dir>/engine.duckdb`` was
            chosen (its directory is then created on open).
    """

    dialect: Dialect
    target: str
    is_default: bool = False

    @property
    def is_memory(self) -> bool:
        """True for an in-memory DuckDB database (nothing is persisted)."""
        return self.dialect == "duckdb" and self.target == MEMORY

    def redacted(self) -> str:
        """The URL as safe to print: a PostgreSQL password is replaced by ``***``."""
        if self.dialect == "duckdb":
            return f"duckdb://{self.target}"
        return redact_url(self.target)


def redact_url(url: str) -> str:
    """Return ``url`` with any password in its authority part replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def parse_store_url(url: str) -> StoreURL:
    """Parse an explicit store URL or path (see the module docstring for the accepted forms).

    Raises:
        ParameterError: on field ``db`` when the URL is empty, has an unsupported scheme, names no
            DuckDB path, or is not a valid libpq URL.
    """
    if not isinstance(url, str):
        raise ParameterError("db", f"must be a URL string, got {type(url).__name__}")
    text = url.strip()
    if not text:
        raise ParameterError("db", "must not be empty (use postgresql://..., duckdb://<path> or a file path)")
    m = _SCHEME.match(text)
    if m is None:
        # A plain filesystem path (or ":memory:").
        return StoreURL("duckdb", _duckdb_path(text))
    scheme = m.group("scheme").lower()
    if scheme in _PG_SCHEMES:
        text = scheme + text[len(scheme) :]  # libpq only knows the lower-case schemes
        _check_libpq_url(text)
        return StoreURL("postgres", text)
    if scheme == "duckdb":
        rest = text[m.end() :]
        if not rest:
            raise ParameterError(
                "db", "duckdb:// URL names no database path (use duckdb://<path> or duckdb://:memory:)"
            )
        return StoreURL("duckdb", _duckdb_path(rest))
    raise ParameterError(
        "db",
        f"unsupported URL scheme '{scheme}://' in {redact_url(text)!r}: use postgresql://, postgres://, "
        "duckdb://<path> or a plain file path",
    )


def resolve_data_dir(data_dir: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$TRADE_DATA_DIR``, else ``./data``.

    The directory is not created here.
    """
    environ = os.environ if env is None else env
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    from_env = environ.get(ENV_DATA_DIR, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    return Path(DEFAULT_DATA_DIR)


def resolve_store_url(
    url: str | None = None,
    data_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> StoreURL:
    """Choose the store: ``url`` if given, else ``$TRADE_DB_URL``, else ``<data_dir>/engine.duckdb``.

    ``data_dir`` follows :func:`resolve_data_dir`. ``env`` defaults to ``os.environ`` (tests pass a
    dict). Nothing is created or opened.

    Raises:
        ParameterError: on field ``db`` for an invalid URL (see :func:`parse_store_url`).
    """
    if url is not None:
        return parse_store_url(url)
    environ = os.environ if env is None else env
    from_env = environ.get(ENV_DB_URL, "").strip()
    if from_env:
        return parse_store_url(from_env)
    path = resolve_data_dir(data_dir, environ) / DEFAULT_DB_FILENAME
    return StoreURL("duckdb", str(path), is_default=True)


def _duckdb_path(text: str) -> str:
    if text == MEMORY:
        return MEMORY
    return str(Path(text).expanduser())


def _check_libpq_url(url: str) -> None:
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError as exc:  # pragma: no cover - psycopg is a hard dependency
        raise ParameterError("db", "PostgreSQL URLs need the 'psycopg' package") from exc
    try:
        conninfo_to_dict(url)
    except Exception as exc:
        raise ParameterError("db", f"invalid PostgreSQL URL {redact_url(url)!r}: {exc}") from exc
