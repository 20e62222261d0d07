"""Numbered SQL migrations, applied once each and tracked in a ``_migrations`` table.

Layout: ``migrations/<dialect>/NNN_short_name.sql`` (``dialect`` is ``duckdb`` or ``postgres``). Each
file starts with a header naming itself::

    -- Migration: 001_backtests
    -- Description: backtest runs, trades, fills and equity curves

Rules (the runner enforces what it can):

* Files are applied in the order of their numeric prefix; two files with the same number are an error.
* Every unapplied file runs in its own transaction together with its ``_migrations`` row. If it fails,
  that transaction is rolled back, later files are not attempted and :class:`StoreError` names the file
  and the database's error. Files must not contain their own ``BEGIN``/``COMMIT``.
* Migrations are append-only: never edit an applied file, write a new one. There are no down migrations.

The runner is dialect-agnostic: it talks to the database through a :class:`MigrationConnection`
adapter that each store provides.

A migration may have a Python step (:data:`MIGRATION_STEPS`), run right after its file in the same
transaction, for what plain SQL cannot decide well. ``005_m2m`` on PostgreSQL has one: when
TimescaleDB is available and loadable (:func:`timescaledb_available`) it turns ``strategy_m2m_candles``
into a compressed hypertable and ``strategy_m2m_5m`` into a continuous aggregate
(:func:`m2m_timescaledb_statements`); otherwise the plain table and view of the file stay.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import engine
from engine.errors import StoreError

MIGRATIONS_TABLE = "_migrations"
log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_FILE_NAME = re.compile(r"^(?P<number>\d+)_(?P<slug>[A-Za-z0-9_]+)\.sql$")
_HEADER = re.compile(r"^--\s*Migration:\s*(?P<name>\S+)\s*$")
_DESCRIPTION = re.compile(r"^--\s*Description:\s*\S")
_TXN_CONTROL = re.compile(
    r"^\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION|ABORT)\s*(TRANSACTION|WORK)?\s*;",
    re.IGNORECASE | re.MULTILINE,
)


class MigrationConnection(Protocol):
    """What the runner needs from a database connection.

    ``placeholder`` is the parameter marker of :meth:`execute`/:meth:`query` (``?`` or ``%s``).
    """

    dialect: str
    placeholder: str

    def transaction(self) -> AbstractContextManager[Any]:
        """A context manager: BEGIN on enter, COMMIT on normal exit, ROLLBACK (then re-raise) on error.
        On PostgreSQL, inside a transaction, a SAVEPOINT instead (released / rolled back to)."""
        ...

    def lock(self) -> None:
        """Inside a transaction: serialise concurrent migrators (a no-op where the database does)."""
        ...

    def execute_script(self, sql: str) -> None:
        """Run a whole file's text, which may hold many statements."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement with parameters."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one query and return all rows."""
        ...

    def table_exists(self, name: str) -> bool:
        """Whether a table of that name is visible (in the connection's current schema)."""
        ...

    def epoch_us_sql(self, column: str) -> str:
        """An SQL expression: the TIMESTAMPTZ ``column`` as int64 microseconds since the epoch."""
        ...

    def bootstrap_sql(self) -> str:
        """DDL creating the ``_migrations`` table if it does not exist (idempotent)."""
        ...


@dataclass(frozen=True)
class MigrationFile:
    """One migration file on disk: ``number`` (its prefix), ``name`` (the file stem) and ``path``."""

    number: int
    name: str
    path: Path

    def read(self) -> str:
        """The file's SQL text (UTF-8)."""
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class MigrationStatus:
    """The state of one migration.

    Attributes:
        name: the file stem, e.g. ``001_backtests``.
        applied_at: when it was applied (UTC), or None if it is pending.
        file_missing: True for a row in ``_migrations`` whose file is no longer on disk (someone
            deleted or renamed an applied migration: migrations are append-only).
    """

    name: str
    applied_at: datetime | None
    file_missing: bool = False

    @property
    def applied(self) -> bool:
        """True when the migration has been applied."""
        return self.applied_at is not None


def default_migrations_dir() -> Path:
    """The repository's ``migrations/`` folder (next to the ``engine`` package)."""
    return Path(engine.__file__).resolve().parent.parent / "migrations"


def discover_migrations(dialect: str, migrations_dir: str | Path | None = None) -> list[MigrationFile]:
    """List ``<migrations_dir>/<dialect>/*.sql`` in numeric order, checking names and headers.

    Raises:
        StoreError: if the folder is missing, a ``.sql`` file is misnamed, two files share a number,
            or a file lacks its ``-- Migration: <stem>`` / ``-- Description:`` header or contains its
            own transaction control statements.
    """
    root = Path(migrations_dir) if migrations_dir is not None else default_migrations_dir()
    folder = root / dialect
    if not folder.is_dir():
        raise StoreError(f"migrations folder {folder} does not exist")
    files: list[MigrationFile] = []
    for path in folder.glob("*.sql"):
        m = _FILE_NAME.match(path.name)
        if m is None:
            raise StoreError(
                f"migration file {path} is misnamed: expected NNN_short_name.sql (digits, underscore, "
                "letters/digits/underscores)"
            )
        files.append(MigrationFile(int(m.group("number")), path.stem, path))
    files.sort(key=lambda f: (f.number, f.name))
    for a, b in itertools.pairwise(files):
        if a.number == b.number:
            raise StoreError(f"migrations {a.path.name} and {b.path.name} share the number {a.number}")
    for f in files:
        _check_header(f)
    return files


def _check_header(f: MigrationFile) -> None:
    lines = [ln.strip() for ln in f.read().splitlines()]
    lines = [ln for ln in lines if ln]
    head = _HEADER.match(lines[0]) if lines else None
    if head is None:
        raise StoreError(f"migration {f.path.name}: first line must be '-- Migration: {f.name}'")
    if head.group("name") != f.name:
        raise StoreError(f"migration {f.path.name}: header says '{head.group('name')}', expected '{f.name}'")
    header_block = []
    for ln in lines:
        if not ln.startswith("--"):
            break
        header_block.append(ln)
    if not any(_DESCRIPTION.match(ln) for ln in header_block):
        raise StoreError(f"migration {f.path.name}: header needs a '-- Description: ...' line")
    if _TXN_CONTROL.search(_strip_dollar_quoted(f.read())):
        raise StoreError(
            f"migration {f.path.name}: must not contain BEGIN/COMMIT/ROLLBACK statements "
            "(the runner wraps each file in its own transaction)"
        )


def _strip_dollar_quoted(sql: str) -> str:
    """Drop ``$$ ... $$`` / ``$tag$ ... $tag$`` bodies (PL/pgSQL ``BEGIN ... END;`` lives there)."""
    return re.sub(r"(\$[A-Za-z_]*\$).*?\1", "", sql, flags=re.DOTALL)


def _applied(conn: MigrationConnection) -> dict[str, tuple[int, datetime]]:
    if not conn.table_exists(MIGRATIONS_TABLE):
        return {}
    at = conn.epoch_us_sql("applied_at")
    rows = conn.query(f"SELECT name, id, {at} FROM {MIGRATIONS_TABLE} ORDER BY id")
    return {str(name): (int(id_), _EPOCH + timedelta(microseconds=int(us))) for name, id_, us in rows}


def migration_status(conn: MigrationConnection, migrations_dir: str | Path | None = None) -> list[MigrationStatus]:
    """Every migration file on disk with its applied time (None = pending), in order, followed by any
    ``_migrations`` rows whose file is gone (``file_missing=True``). Read-only: creates nothing.

    Raises:
        StoreError: as :func:`discover_migrations`, or when the database cannot be read.
    """
    files = discover_migrations(conn.dialect, migrations_dir)
    try:
        applied = _applied(conn)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot read {MIGRATIONS_TABLE}: {exc}") from exc
    out = [MigrationStatus(f.name, applied[f.name][1] if f.name in applied else None) for f in files]
    on_disk = {f.name for f in files}
    orphans = sorted((v[0], k, v[1]) for k, v in applied.items() if k not in on_disk)
    out.extend(MigrationStatus(name, at, file_missing=True) for _, name, at in orphans)
    return out


def pending_migrations(conn: MigrationConnection, migrations_dir: str | Path | None = None) -> list[str]:
    """Names of the migration files not yet applied, in order.

    Raises:
        StoreError: as :func:`migration_status`.
    """
    return [s.name for s in migration_status(conn, migrations_dir) if not s.applied and not s.file_missing]


def apply_migrations(conn: MigrationConnection, migrations_dir: str | Path | None = None) -> list[str]:
    """Apply every pending migration in order, each in its own transaction; return the names applied.

    Idempotent: a second call applies nothing and returns ``[]``. Concurrent callers are serialised by
    :meth:`MigrationConnection.lock`, and each file is re-checked under the lock.

    Raises:
        StoreError: naming the failing file and the database's error. That file's transaction is rolled
            back; files applied before it stay applied; files after it are not attempted.
    """
    files = discover_migrations(conn.dialect, migrations_dir)
    try:
        with conn.transaction():
            conn.lock()
            conn.execute_script(conn.bootstrap_sql())
    except Exception as exc:
        raise StoreError(f"cannot create the {MIGRATIONS_TABLE} table: {exc}") from exc

    try:
        done = set(_applied(conn))
    except Exception as exc:
        raise StoreError(f"cannot read {MIGRATIONS_TABLE}: {exc}") from exc
    applied_now: list[str] = []
    p = conn.placeholder
    for f in _unapplied(files, done):
        sql = f.read()
        try:
            with conn.transaction():
                conn.lock()
                if conn.query(f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE name = {p}", (f.name,)):
                    continue  # another process applied it meanwhile
                conn.execute_script(sql)
                step = MIGRATION_STEPS.get((conn.dialect, f.name))
                if step is not None:
                    step(conn)
                conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} (name) VALUES ({p})", (f.name,))
        except Exception as exc:
            detail = str(exc).strip() or type(exc).__name__
            raise StoreError(
                f"migration {f.path.name} failed and was rolled back ({len(applied_now)} applied before it"
                f"{': ' + ', '.join(applied_now) if applied_now else ''}; later migrations not attempted): "
                f"{detail}"
            ) from exc
        applied_now.append(f.name)
    return applied_now


def _unapplied(files: list[MigrationFile], done: set[str]) -> Iterator[MigrationFile]:
    return (f for f in files if f.name not in done)


# -------------------------------------------------------------------- TimescaleDB (PostgreSQL)


def timescaledb_available(conn: MigrationConnection) -> bool:
    """Whether TimescaleDB can be used on ``conn`` (inside a migration's transaction): the extension is
    installed, or it is available and ``CREATE EXTENSION IF NOT EXISTS timescaledb`` succeeds (run in a
    savepoint: a server that lists the extension without preloading its library refuses it, and the
    migration goes on without it, logging a warning). Always False on DuckDB."""
    if conn.dialect != "postgres":
        return False
    if conn.query("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"):
        return True
    if not conn.query("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"):
        return False
    try:
        with conn.transaction():  # a savepoint
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except Exception as exc:
        log.warning("timescaledb is available but could not be loaded (%s): plain PostgreSQL is used", exc)
        return False
    return True


#: The 5-minute rollup as TimescaleDB computes it (``first``/``last`` by ts; ``time_bucket``'s default
#: origin, 2000-01-03 UTC, is a multiple of 5 minutes since the epoch, like the plain view's date_bin).
M2M_5M_TIMESCALEDB_SELECT = (
    "SELECT account_id, instance_id, time_bucket(INTERVAL '5 minutes', ts) AS ts, "
    "first(open, ts) AS open, max(high) AS high, min(low) AS low, last(close, ts) AS close, "
    "last(realized_pnl, ts) AS realized_pnl, last(total_pnl, ts) AS total_pnl, "
    "sum(updates)::integer AS updates, bool_or(model_mark) AS model_mark "
    "FROM strategy_m2m_candles "
    "GROUP BY account_id, instance_id, time_bucket(INTERVAL '5 minutes', ts)"
)

#: How far back the continuous aggregate's policy re-materializes buckets (late candles older than this
#: need ``CALL refresh_continuous_aggregate('strategy_m2m_5m', start, end)``; newer ones, and every
#: bucket after the last refresh, are read in real time).
M2M_5M_REFRESH_START = "2 days"
#: Chunks of strategy_m2m_candles are compressed once older than this.
M2M_COMPRESS_AFTER = "7 days"


def m2m_timescaledb_statements() -> list[str]:
    """The statements that turn migration 005's plain schema into its TimescaleDB form (in order):
    ``strategy_m2m_candles`` a hypertable on ts (1-day chunks), compressed segment by instance_id after
    :data:`M2M_COMPRESS_AFTER`; the view ``strategy_m2m_5m`` replaced by a real-time continuous aggregate
    of the same name and columns, refreshed every minute."""
    return [
        "SELECT create_hypertable('strategy_m2m_candles'::regclass, 'ts', "
        "chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE)",
        "ALTER TABLE strategy_m2m_candles SET (timescaledb.compress, timescaledb.compress_segmentby = 'instance_id')",
        f"SELECT add_compression_policy('strategy_m2m_candles'::regclass, INTERVAL '{M2M_COMPRESS_AFTER}', "
        "if_not_exists => TRUE)",
        "DROP VIEW strategy_m2m_5m",
        "CREATE MATERIALIZED VIEW strategy_m2m_5m "
        "WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
        f"{M2M_5M_TIMESCALEDB_SELECT} WITH NO DATA",
        f"SELECT add_continuous_aggregate_policy('strategy_m2m_5m'::regclass, "
        f"start_offset => INTERVAL '{M2M_5M_REFRESH_START}', end_offset => INTERVAL '5 minutes', "
        "schedule_interval => INTERVAL '1 minute', if_not_exists => TRUE)",
    ]


def m2m_timescaledb_step(conn: MigrationConnection) -> bool:
    """Migration 005's step on PostgreSQL: run :func:`m2m_timescaledb_statements` (in a savepoint) when
    :func:`timescaledb_available`; return whether they ran. If they fail, the plain table and view are
    kept and a warning is logged (as migrations 001, 003 and 004 fall back)."""
    if not timescaledb_available(conn):
        log.info("timescaledb is not available: strategy_m2m_candles is a plain table, strategy_m2m_5m a view")
        return False
    try:
        with conn.transaction():  # a savepoint
            for sql in m2m_timescaledb_statements():
                conn.execute(sql)
    except Exception as exc:
        log.warning(
            "timescaledb is available but the M2M hypertable / continuous aggregate failed (%s): "
            "strategy_m2m_candles stays a plain table and strategy_m2m_5m a view",
            exc,
        )
        return False
    return True


#: Python steps run right after a migration file, in its transaction: (dialect, name) → step.
MIGRATION_STEPS: dict[tuple[str, str], Callable[[MigrationConnection], object]] = {
    ("postgres", "005_m2m"): m2m_timescaledb_step,
}
