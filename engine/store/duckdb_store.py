"""The DuckDB backend: an embedded database file (the default store) or ``:memory:``.

Bulk writes register the Arrow tables with the connection and run ``INSERT ... SELECT`` (no per-row
Python inserts). DuckDB allows one writing process per file: a second process opening the same file
gets a :class:`StoreError`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from engine.errors import StoreError
from engine.store.base import (
    ROW_KEYS,
    RUN_NUMERIC_COLUMNS,
    SUMMARY_COLUMNS,
    SWEEP_COLUMNS,
    TIMESTAMP_COLUMNS,
    PreparedRun,
    Store,
    cast_loaded,
    duplicate_run,
)
from engine.store.live import (
    LIVE_TABLES,
    broken_reference,
    insert_sql,
    invariant_checks,
    pre_write_checks,
    reference_checks,
)
from engine.store.migrations import MigrationConnection
from engine.store.portfolios import (
    PORTFOLIO_COLUMNS,
    PORTFOLIO_JSON_COLUMNS,
    PORTFOLIO_NUMERIC_COLUMNS,
    PORTFOLIO_ROW_SUMMARY_COLUMNS,
    PORTFOLIO_TIMESTAMP_COLUMNS,
    PreparedPortfolio,
)
from engine.store.sweeps import SWEEP_FLOAT_METRICS, SWEEP_JSON_COLUMNS, SWEEP_RUN_COLUMNS
from engine.store.url import StoreURL

_RUN_COLUMNS = (
    "run_id",
    "created_at",
    "strategy_type",
    "params",
    "symbols",
    "timeframe",
    "data_path",
    "start_ts",
    "end_ts",
    "initial_cash",
    "final_equity",
    "total_return_pct",
    "sharpe",
    "max_drawdown_pct",
    "trades",
    "fees_paid",
    "funding_paid",
    "trade_hash",
    "metrics",
    "settings",
)
_NUMERIC = "DECIMAL(38, 18)"
_RUN_CASTS = {"params": "JSON", "metrics": "JSON", "settings": "JSON", "symbols": "VARCHAR[]"}


def _to_decimal(column: str) -> str:
    """DOUBLE → DECIMAL through the shortest round-trip text: exact, unlike DuckDB's direct cast
    (which scales in floating point and can land one unit off in the last stored digit)."""
    return f"CAST(CAST({column} AS VARCHAR) AS {_NUMERIC})"


class _DuckDBMigrationConn:
    """Adapts a DuckDB connection to :class:`~engine.store.migrations.MigrationConnection`."""

    dialect = "duckdb"
    placeholder = "?"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with _transaction(self._con):
            yield

    def lock(self) -> None:
        # DuckDB lets one process write a database file; within the process the store's lock serialises.
        return None

    def execute_script(self, sql: str) -> None:
        self._con.execute(sql)  # DuckDB runs every statement of a multi-statement string

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._con.execute(sql, list(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._con.execute(sql, list(params)).fetchall()

    def table_exists(self, name: str) -> bool:
        return bool(
            self._con.execute(
                "SELECT 1 FROM duckdb_tables() WHERE table_name = ? AND schema_name = current_schema() "
                "AND database_name = current_database()",
                [name],
            ).fetchall()
        )

    def epoch_us_sql(self, column: str) -> str:
        return f"epoch_us({column})"

    def bootstrap_sql(self) -> str:
        return (
            "CREATE SEQUENCE IF NOT EXISTS _migrations_id_seq;\n"
            "CREATE TABLE IF NOT EXISTS _migrations (\n"
            "    id BIGINT PRIMARY KEY DEFAULT nextval('_migrations_id_seq'),\n"
            "    name VARCHAR(255) NOT NULL UNIQUE,\n"
            "    applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp\n"
            ");"
        )


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.begin()
    try:
        yield
    except BaseException:
        with suppress(duckdb.Error):
            con.rollback()
        raise
    try:
        con.commit()
    except BaseException:
        with suppress(duckdb.Error):
            con.rollback()
        raise


class DuckDBStore(Store):
    """A store in a DuckDB file (or in memory). Open it with :func:`engine.store.open_store`.

    Raises:
        StoreError: when the file cannot be opened (missing directory, locked by another process,
            not a DuckDB file).
    """

    dialect = "duckdb"

    def __init__(self, url: StoreURL, migrations_dir: str | Path | None = None) -> None:
        super().__init__(url, migrations_dir)
        path = url.target
        if not url.is_memory:
            parent = Path(path).parent
            if url.is_default:
                try:
                    parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create data directory {parent}: {exc}") from exc
            elif not parent.is_dir():
                raise StoreError(f"cannot open DuckDB store {path}: directory {parent} does not exist")
        try:
            self._con = duckdb.connect(path)
        except duckdb.Error as exc:
            raise StoreError(f"cannot open DuckDB store {path}: {exc}") from exc
        self._mconn = _DuckDBMigrationConn(self._con)

    def _close(self) -> None:
        self._con.close()

    def _migration_conn(self) -> MigrationConnection:
        return self._mconn

    def _table_names(self) -> list[str]:
        rows = self._con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = current_schema() "
            "AND database_name = current_database()"
        ).fetchall()
        return [str(r[0]) for r in rows]

    # ---------------------------------------------------------------- writes

    def _write_run(self, prepared: PreparedRun) -> None:
        with _transaction(self._con):
            self._insert_run(prepared)

    def _insert_run(self, prepared: PreparedRun) -> None:
        """Insert a run row and its child tables (inside the caller's transaction)."""
        exists = self._con.execute("SELECT 1 FROM backtest_runs WHERE run_id = ?", [prepared.run_id]).fetchall()
        if exists:
            raise duplicate_run(prepared.run_id)
        self._insert_row("backtest_runs", _RUN_COLUMNS, prepared.row, RUN_NUMERIC_COLUMNS, _RUN_CASTS)
        for db_table, table in prepared.tables.items():
            self._insert_table(db_table, prepared.run_id, table)

    def _insert_row(
        self,
        db_table: str,
        columns: Sequence[str],
        row: dict[str, Any],
        numeric: Sequence[str],
        casts: dict[str, str],
    ) -> None:
        """Insert one row; ``numeric`` columns go through their shortest round-trip text (exact)."""
        values = ", ".join(
            f"CAST(? AS {_NUMERIC})" if c in numeric else f"?::{casts[c]}" if c in casts else "?" for c in columns
        )
        params = [(None if row[c] is None else repr(float(row[c]))) if c in numeric else row[c] for c in columns]
        self._con.execute(f"INSERT INTO {db_table} ({', '.join(columns)}) VALUES ({values})", params)

    def _insert_table(self, db_table: str, run_id: str, table: pa.Table) -> None:
        """Bulk-insert one Arrow child table of a run."""
        self._insert_rows(db_table, "run_id", run_id, table)

    def _insert_rows(self, db_table: str, key_column: str, key: str, table: pa.Table) -> None:
        """Bulk-insert an Arrow table (registered as a view) with ``key_column`` = ``key`` on every row;
        float columns become DECIMAL through their shortest round-trip text."""
        if table.num_rows == 0:
            return
        view = f"_tradengine_{db_table}_{uuid.uuid4().hex}"
        cols = ", ".join(table.column_names)
        exprs = ", ".join(_to_decimal(f.name) if pa.types.is_floating(f.type) else f.name for f in table.schema)
        self._con.register(view, table)
        try:
            self._con.execute(f"INSERT INTO {db_table} ({key_column}, {cols}) SELECT ?, {exprs} FROM {view}", [key])
        finally:
            self._con.unregister(view)

    def _write_portfolio(self, prepared: PreparedPortfolio) -> None:
        pid = prepared.portfolio_id
        with _transaction(self._con):
            for run in prepared.runs:
                self._insert_run(run)
            self._insert_row(
                "backtest_portfolios",
                PORTFOLIO_COLUMNS,
                prepared.row,
                PORTFOLIO_NUMERIC_COLUMNS,
                dict.fromkeys(PORTFOLIO_JSON_COLUMNS, "JSON"),
            )
            self._insert_rows("backtest_portfolio_strategies", "portfolio_id", pid, prepared.strategies)
            for db_table, table in prepared.tables.items():
                self._insert_rows(db_table, "portfolio_id", pid, table)

    # ---------------------------------------------------------------- reads

    def _fetch_run(self, run_id: str) -> dict[str, Any] | None:
        select = []
        for c in _RUN_COLUMNS:
            if c in TIMESTAMP_COLUMNS:
                select.append(f"epoch_us({c}) AS {c}")
            elif c in RUN_NUMERIC_COLUMNS:
                select.append(f"CAST({c} AS DOUBLE) AS {c}")
            elif c in ("params", "metrics", "settings"):
                select.append(f"CAST({c} AS VARCHAR) AS {c}")
            else:
                select.append(c)
        rows = self._con.execute(f"SELECT {', '.join(select)} FROM backtest_runs WHERE run_id = ?", [run_id]).fetchall()
        if not rows:
            return None
        return dict(zip(_RUN_COLUMNS, rows[0], strict=True))

    def _fetch_table(self, table: str, schema: pa.Schema, run_id: str) -> pa.Table:
        return self._fetch_rows(table, schema, "run_id", run_id, ROW_KEYS[table])

    def _fetch_rows(self, table: str, schema: pa.Schema, key_column: str, key: str, order_by: str) -> pa.Table:
        select = []
        for f in schema:
            if pa.types.is_floating(f.type):
                select.append(f"CAST({f.name} AS DOUBLE)")
            elif pa.types.is_int8(f.type):
                select.append(f"CAST({f.name} AS TINYINT)")
            elif pa.types.is_string(f.type):
                select.append(f"CAST({f.name} AS VARCHAR)")  # JSON columns as their text
            else:
                select.append(f.name)
        rel = self._con.sql(
            f"SELECT {', '.join(select)} FROM {table} WHERE {key_column} = ? ORDER BY {order_by}",
            params=[key],
        )
        return cast_loaded(rel.to_arrow_table(), schema)

    def _fetch_summaries(self, limit: int) -> list[dict[str, Any]]:
        select = [
            f"CAST({c} AS DOUBLE) AS {c}"
            if c in RUN_NUMERIC_COLUMNS
            else f"epoch_us({c}) AS {c}"
            if c in TIMESTAMP_COLUMNS
            else c
            for c in SUMMARY_COLUMNS
        ]
        rows = self._con.execute(
            f"SELECT {', '.join(select)} FROM backtest_runs ORDER BY created_at DESC, run_id DESC LIMIT ?",
            [limit],
        ).fetchall()
        return [dict(zip(SUMMARY_COLUMNS, r, strict=True)) for r in rows]

    # ---------------------------------------------------------------- portfolio backtests

    def _portfolio_select(self, columns: Sequence[str]) -> str:
        select = []
        for c in columns:
            if c in PORTFOLIO_TIMESTAMP_COLUMNS:
                select.append(f"epoch_us({c}) AS {c}")
            elif c in PORTFOLIO_NUMERIC_COLUMNS:
                select.append(f"CAST({c} AS DOUBLE) AS {c}")
            elif c in PORTFOLIO_JSON_COLUMNS:
                select.append(f"CAST({c} AS VARCHAR) AS {c}")
            else:
                select.append(c)
        return ", ".join(select)

    def _fetch_portfolio(self, portfolio_id: str) -> dict[str, Any] | None:
        rows = self._con.execute(
            f"SELECT {self._portfolio_select(PORTFOLIO_COLUMNS)} FROM backtest_portfolios WHERE portfolio_id = ?",
            [portfolio_id],
        ).fetchall()
        return dict(zip(PORTFOLIO_COLUMNS, rows[0], strict=True)) if rows else None

    def _fetch_portfolio_strategies(self, portfolio_ids: list[str]) -> list[dict[str, Any]]:
        if not portfolio_ids:
            return []
        columns = ("portfolio_id", "strategy", "run_id", "strategy_type", "allocation_pct", "seq")
        rows = self._con.execute(
            "SELECT portfolio_id, strategy, run_id, strategy_type, CAST(allocation_pct AS DOUBLE), seq "
            "FROM backtest_portfolio_strategies WHERE list_contains(?::VARCHAR[], portfolio_id) "
            "ORDER BY portfolio_id, seq",
            [portfolio_ids],
        ).fetchall()
        return [dict(zip(columns, r, strict=True)) for r in rows]

    def _fetch_portfolio_summaries(self, limit: int) -> list[dict[str, Any]]:
        rows = self._con.execute(
            f"SELECT {self._portfolio_select(PORTFOLIO_ROW_SUMMARY_COLUMNS)} FROM backtest_portfolios "
            "ORDER BY created_at DESC, portfolio_id DESC LIMIT ?",
            [limit],
        ).fetchall()
        return [dict(zip(PORTFOLIO_ROW_SUMMARY_COLUMNS, r, strict=True)) for r in rows]

    # ---------------------------------------------------------------- sweeps

    def _upsert_sweep(self, row: dict[str, Any], now: datetime) -> None:
        with _transaction(self._con):
            exists = self._con.execute("SELECT 1 FROM sweeps WHERE sweep_id = ?", [row["sweep_id"]]).fetchall()
            if exists:
                self._con.execute(
                    "UPDATE sweeps SET status = ?, runs_planned = ?, updated_at = ? WHERE sweep_id = ?",
                    [row["status"], row["runs_planned"], now, row["sweep_id"]],
                )
                return
            self._con.execute(
                "INSERT INTO sweeps (sweep_id, name, kind, method, seed, config, status, runs_planned, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?::JSON, ?, ?, ?, ?)",
                [
                    row["sweep_id"],
                    row["name"],
                    row["kind"],
                    row["method"],
                    row["seed"],
                    row["config"],
                    row["status"],
                    row["runs_planned"],
                    now,
                    now,
                ],
            )

    def _update_sweep_status(self, sweep_id: str, status: str, now: datetime) -> bool:
        # No RETURNING here: DuckDB then rewrites the row as delete + insert, which its foreign keys refuse.
        with _transaction(self._con):
            if not self._con.execute("SELECT 1 FROM sweeps WHERE sweep_id = ?", [sweep_id]).fetchall():
                return False
            counts = self._con.execute(
                "SELECT count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status = 'failed') "
                "FROM sweep_runs WHERE sweep_id = ?",
                [sweep_id],
            ).fetchall()[0]
            self._con.execute(
                "UPDATE sweeps SET status = ?, updated_at = ?, runs_ok = ?, runs_failed = ? WHERE sweep_id = ?",
                [status, now, int(counts[0]), int(counts[1]), sweep_id],
            )
        return True

    def _write_sweep_runs(self, sweep_id: str, table: pa.Table, now: datetime) -> None:
        exprs = []
        for name in SWEEP_RUN_COLUMNS:
            if name in SWEEP_FLOAT_METRICS:
                exprs.append(_to_decimal(name))
            elif name in SWEEP_JSON_COLUMNS:
                exprs.append(f"CAST({name} AS JSON)")
            else:
                exprs.append(name)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*SWEEP_RUN_COLUMNS, "finished_at") if c != "run_key")
        view = f"_tradengine_sweep_runs_{uuid.uuid4().hex}"
        self._con.register(view, table)
        try:
            with _transaction(self._con):
                self._con.execute(
                    f"INSERT INTO sweep_runs (sweep_id, {', '.join(SWEEP_RUN_COLUMNS)}, finished_at) "
                    f"SELECT ?, {', '.join(exprs)}, ? FROM {view} "
                    f"ON CONFLICT (sweep_id, run_key) DO UPDATE SET {updates}",
                    [sweep_id, now],
                )
        finally:
            self._con.unregister(view)

    def _sweep_select(self) -> str:
        select = []
        for c in SWEEP_COLUMNS:
            if c in ("created_at", "updated_at"):
                select.append(f"epoch_us({c}) AS {c}")
            elif c == "config":
                select.append("CAST(config AS VARCHAR) AS config")
            else:
                select.append(c)
        return ", ".join(select)

    def _fetch_sweep(self, sweep_id: str) -> dict[str, Any] | None:
        rows = self._con.execute(f"SELECT {self._sweep_select()} FROM sweeps WHERE sweep_id = ?", [sweep_id]).fetchall()
        return dict(zip(SWEEP_COLUMNS, rows[0], strict=True)) if rows else None

    def _fetch_sweeps(self, limit: int) -> list[dict[str, Any]]:
        rows = self._con.execute(
            f"SELECT {self._sweep_select()} FROM sweeps ORDER BY created_at DESC, sweep_id DESC LIMIT ?", [limit]
        ).fetchall()
        return [dict(zip(SWEEP_COLUMNS, r, strict=True)) for r in rows]

    def _fetch_sweep_runs(self, sweep_id: str, status: str | None) -> pa.Table:
        select = []
        for name in SWEEP_RUN_COLUMNS:
            if name in SWEEP_FLOAT_METRICS:
                select.append(f"CAST({name} AS DOUBLE) AS {name}")
            elif name in SWEEP_JSON_COLUMNS:
                select.append(f"CAST({name} AS VARCHAR) AS {name}")
            else:
                select.append(name)
        where, params = "sweep_id = ?", [sweep_id]
        if status is not None:
            where += " AND status = ?"
            params.append(status)
        rel = self._con.sql(
            f"SELECT {', '.join(select)} FROM sweep_runs WHERE {where} ORDER BY seq, run_key", params=params
        )
        return rel.to_arrow_table()

    # ---------------------------------------------------------------- live runtime

    def _write_live(self, tables: Mapping[str, pa.Table]) -> dict[str, int]:
        written = dict.fromkeys(tables, 0)
        views: dict[str, str] = {}
        try:
            with _transaction(self._con):
                for name, table in tables.items():
                    if table.num_rows == 0:
                        continue
                    spec = LIVE_TABLES[name]
                    views[name] = view = f"_tradengine_live_{name}_{uuid.uuid4().hex}"
                    self._con.register(view, table)
                    exprs = [
                        _to_decimal(f.name)
                        if pa.types.is_floating(f.type)
                        else f"CAST({f.name} AS JSON)"
                        if f.name in spec.json
                        else f.name
                        for f in table.schema
                    ]
                    for query, error in pre_write_checks(spec, view):
                        row = self._con.execute(query).fetchone()
                        if row is not None:
                            raise error(row)
                    result = self._con.execute(insert_sql(spec, view, exprs)).fetchall()
                    written[name] = int(result[0][0]) if result else 0
                for name, view in views.items():  # after every insert: rows of this batch count
                    spec = LIVE_TABLES[name]
                    for ref, query in reference_checks(spec, view):
                        row = self._con.execute(query).fetchone()
                        if row is not None:
                            raise broken_reference(spec, ref, row)
                    for query, error in invariant_checks(spec, view):
                        row = self._con.execute(query).fetchone()
                        if row is not None:
                            raise error(row)
        finally:
            for view in views.values():
                self._con.unregister(view)
        return written

    def _read_live(self, table: str, schema: pa.Schema, clause: str, params: list[Any]) -> pa.Table:
        select = []
        for f in schema:
            if pa.types.is_floating(f.type):
                select.append(f"CAST({f.name} AS DOUBLE)")
            elif pa.types.is_int8(f.type):
                select.append(f"CAST({f.name} AS TINYINT)")
            elif pa.types.is_string(f.type):
                select.append(f"CAST({f.name} AS VARCHAR)")  # JSON columns as their text
            else:
                select.append(f.name)
        return self._con.sql(f"SELECT {', '.join(select)} FROM {table} {clause}", params=params).to_arrow_table()
