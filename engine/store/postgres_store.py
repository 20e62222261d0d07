"""The PostgreSQL backend (TimescaleDB hypertable for equity curves when the extension is available).

Bulk writes stream each Arrow table as CSV through ``COPY ... FROM STDIN`` (Arrow formats floats with
their shortest round-trip representation, so NUMERIC receives exactly the float's decimal value);
reads stream ``COPY (SELECT ...) TO STDOUT`` back into Arrow. Concurrent migrators are serialised by
a transaction-scoped advisory lock.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

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
from engine.store.sweeps import SWEEP_FLOAT_METRICS, SWEEP_JSON_COLUMNS, SWEEP_RUN_COLUMNS, SWEEP_RUNS_SCHEMA
from engine.store.url import StoreURL

#: Advisory lock key taken by every migration transaction (any constant unique to this application).
MIGRATION_LOCK_KEY = 0x7472_6164_6500  # "trade"
CONNECT_TIMEOUT_S = 10

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
_RUN_CASTS = {"params": "jsonb", "metrics": "jsonb", "settings": "jsonb", "symbols": "text[]"}
_EPOCH_US = "(extract(epoch FROM {c}) * 1000000)::int8"
_TS_US = pa.timestamp("us", tz="UTC")


def _pg_array_literal(values: list[str] | None) -> str | None:
    """A text[] literal (every element quoted and escaped) for COPY."""
    if values is None:
        return None
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _copy_ready(table: pa.Table) -> pa.Table:
    """``table`` with the columns CSV cannot carry as PostgreSQL reads them turned into text:
    lists as array literals, binary as ``\\x<hex>`` (bytea's hex format)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_list(f.type):
            values = [_pg_array_literal(v) for v in table[f.name].to_pylist()]
        elif pa.types.is_binary(f.type):
            values = [None if v is None else "\\x" + v.hex() for v in table[f.name].to_pylist()]
        else:
            continue
        table = table.set_column(i, pa.field(f.name, pa.string()), pa.array(values, pa.string()))
    return table


class _PgMigrationConn:
    """Adapts a psycopg (autocommit) connection to :class:`~engine.store.migrations.MigrationConnection`."""

    dialect = "postgres"
    placeholder = "%s"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def transaction(self) -> AbstractContextManager[Any]:
        return self._conn.transaction()

    def lock(self) -> None:
        self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))

    def execute_script(self, sql: str) -> None:
        # Without parameters psycopg uses the simple query protocol: many statements, no '%' parsing.
        self._conn.execute(sql.encode())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(sql.encode(), tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cur:
            cur.execute(sql.encode(), tuple(params))
            return list(cur.fetchall())

    def table_exists(self, name: str) -> bool:
        return bool(
            self.query(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = %s",
                (name,),
            )
        )

    def epoch_us_sql(self, column: str) -> str:
        return _EPOCH_US.format(c=column)

    def bootstrap_sql(self) -> str:
        return (
            "CREATE TABLE IF NOT EXISTS _migrations (\n"
            "    id SERIAL PRIMARY KEY,\n"
            "    name VARCHAR(255) NOT NULL UNIQUE,\n"
            "    applied_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP\n"
            ");"
        )


class PostgresStore(Store):
    """A store in a PostgreSQL database. Open it with :func:`engine.store.open_store`.

    The connection is in autocommit mode; every multi-statement operation runs in an explicit
    transaction. Tables live in the connection's current schema (set ``options=-csearch_path=...`` in
    the URL to use another).

    Raises:
        StoreError: when the server cannot be reached or refuses the connection.
    """

    dialect = "postgres"

    def __init__(self, url: StoreURL, migrations_dir: str | Path | None = None) -> None:
        super().__init__(url, migrations_dir)
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in conninfo_to_dict(url.target):
            kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
        try:
            self._conn: psycopg.Connection[Any] = psycopg.connect(url.target, **kwargs)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {url.redacted()}: {str(exc).strip()}") from exc
        self._mconn = _PgMigrationConn(self._conn)

    def _close(self) -> None:
        self._conn.close()

    def _migration_conn(self) -> MigrationConnection:
        return self._mconn

    def _table_names(self) -> list[str]:
        rows = self._mconn.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        return [str(r[0]) for r in rows]

    # ---------------------------------------------------------------- writes

    def _write_run(self, prepared: PreparedRun) -> None:
        with self._conn.transaction():
            self._insert_run(prepared)

    def _insert_run(self, prepared: PreparedRun) -> None:
        """Insert a run row and its child tables (inside the caller's transaction)."""
        exists = self._conn.execute("SELECT 1 FROM backtest_runs WHERE run_id = %s", (prepared.run_id,)).fetchone()
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
        """Insert one row. ``numeric`` columns are sent as their shortest round-trip text: a float8
        parameter would reach NUMERIC through PostgreSQL's 15-significant-digit conversion."""
        values = ", ".join(
            "%s::numeric" if c in numeric else f"%s::{casts[c]}" if c in casts else "%s" for c in columns
        )
        params = [(None if row[c] is None else repr(float(row[c]))) if c in numeric else row[c] for c in columns]
        self._conn.execute(f"INSERT INTO {db_table} ({', '.join(columns)}) VALUES ({values})".encode(), params)

    def _insert_table(self, db_table: str, run_id: str, table: pa.Table) -> None:
        """``COPY`` one Arrow child table of a run."""
        self._insert_rows(db_table, "run_id", run_id, table)

    def _insert_rows(self, db_table: str, key_column: str, key: str, table: pa.Table) -> None:
        """``COPY`` an Arrow table (as CSV) with ``key_column`` = ``key`` on every row."""
        if table.num_rows == 0:
            return
        table = table.add_column(0, key_column, pa.array([key] * table.num_rows, pa.string()))
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
        data = sink.getvalue()
        with (
            self._conn.cursor() as cur,
            cur.copy(f"COPY {db_table} ({', '.join(table.column_names)}) FROM STDIN (FORMAT csv)".encode()) as copy,
        ):
            copy.write(memoryview(data))

    # ---------------------------------------------------------------- reads

    def _fetch_run(self, run_id: str) -> dict[str, Any] | None:
        select = []
        for c in _RUN_COLUMNS:
            if c in TIMESTAMP_COLUMNS:
                select.append(f"{_EPOCH_US.format(c=c)} AS {c}")
            elif c in RUN_NUMERIC_COLUMNS:
                select.append(f"{c}::float8 AS {c}")
            elif c in ("params", "metrics", "settings"):
                select.append(f"{c}::text AS {c}")
            else:
                select.append(c)
        with self._conn.cursor(row_factory=dict_row) as cur:
            query = f"SELECT {', '.join(select)} FROM backtest_runs WHERE run_id = %s"
            cur.execute(query.encode(), (run_id,))
            return cur.fetchone()

    def _fetch_table(self, table: str, schema: pa.Schema, run_id: str) -> pa.Table:
        return self._fetch_rows(table, schema, "run_id", run_id, ROW_KEYS[table])

    def _fetch_rows(self, table: str, schema: pa.Schema, key_column: str, key: str, order_by: str) -> pa.Table:
        select, types = _copy_columns(schema)
        query = (
            f"COPY (SELECT {', '.join(select)} FROM {table} WHERE {key_column} = %s "
            f"ORDER BY {order_by}) TO STDOUT (FORMAT csv)"
        )
        raw = self._copy_out(query, (key,), schema, types)
        if raw is None:
            return schema.empty_table()
        columns = []
        for f in schema:
            col = raw[f.name]
            if pa.types.is_timestamp(f.type):
                col = col.cast(_TS_US).cast(f.type)
            columns.append(col)
        return cast_loaded(pa.table(columns, names=schema.names), schema)

    def _fetch_summaries(self, limit: int) -> list[dict[str, Any]]:
        select = [
            f"{c}::float8 AS {c}"
            if c in RUN_NUMERIC_COLUMNS
            else f"{_EPOCH_US.format(c=c)} AS {c}"
            if c in TIMESTAMP_COLUMNS
            else c
            for c in SUMMARY_COLUMNS
        ]
        with self._conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"SELECT {', '.join(select)} FROM backtest_runs "
                f"ORDER BY created_at DESC, run_id DESC LIMIT %s".encode(),
                (limit,),
            )
            return list(cur.fetchall())

    # ---------------------------------------------------------------- portfolio backtests

    def _write_portfolio(self, prepared: PreparedPortfolio) -> None:
        pid = prepared.portfolio_id
        with self._conn.transaction():
            for run in prepared.runs:
                self._insert_run(run)
            self._insert_row(
                "backtest_portfolios",
                PORTFOLIO_COLUMNS,
                prepared.row,
                PORTFOLIO_NUMERIC_COLUMNS,
                dict.fromkeys(PORTFOLIO_JSON_COLUMNS, "jsonb"),
            )
            self._insert_rows("backtest_portfolio_strategies", "portfolio_id", pid, prepared.strategies)
            for db_table, table in prepared.tables.items():
                self._insert_rows(db_table, "portfolio_id", pid, table)

    def _portfolio_select(self, columns: Sequence[str]) -> str:
        select = []
        for c in columns:
            if c in PORTFOLIO_TIMESTAMP_COLUMNS:
                select.append(f"{_EPOCH_US.format(c=c)} AS {c}")
            elif c in PORTFOLIO_NUMERIC_COLUMNS:
                select.append(f"{c}::float8 AS {c}")
            elif c in PORTFOLIO_JSON_COLUMNS:
                select.append(f"{c}::text AS {c}")
            else:
                select.append(c)
        return ", ".join(select)

    def _fetch_portfolio(self, portfolio_id: str) -> dict[str, Any] | None:
        with self._conn.cursor(row_factory=dict_row) as cur:
            query = (
                f"SELECT {self._portfolio_select(PORTFOLIO_COLUMNS)} FROM backtest_portfolios WHERE portfolio_id = %s"
            )
            cur.execute(query.encode(), (portfolio_id,))
            return cur.fetchone()

    def _fetch_portfolio_strategies(self, portfolio_ids: list[str]) -> list[dict[str, Any]]:
        if not portfolio_ids:
            return []
        with self._conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT portfolio_id, strategy, run_id, strategy_type, allocation_pct::float8 AS allocation_pct, seq "
                "FROM backtest_portfolio_strategies WHERE portfolio_id = ANY(%s) ORDER BY portfolio_id, seq",
                (portfolio_ids,),
            )
            return list(cur.fetchall())

    def _fetch_portfolio_summaries(self, limit: int) -> list[dict[str, Any]]:
        with self._conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"SELECT {self._portfolio_select(PORTFOLIO_ROW_SUMMARY_COLUMNS)} FROM backtest_portfolios "
                f"ORDER BY created_at DESC, portfolio_id DESC LIMIT %s".encode(),
                (limit,),
            )
            return list(cur.fetchall())

    # ---------------------------------------------------------------- sweeps

    def _upsert_sweep(self, row: dict[str, Any], now: datetime) -> None:
        with self._conn.transaction():
            self._conn.execute(
                "INSERT INTO sweeps (sweep_id, name, kind, method, seed, config, status, runs_planned, "
                "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s) "
                "ON CONFLICT (sweep_id) DO UPDATE SET status = EXCLUDED.status, "
                "runs_planned = EXCLUDED.runs_planned, updated_at = EXCLUDED.updated_at",
                (
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
                ),
            )

    def _update_sweep_status(self, sweep_id: str, status: str, now: datetime) -> bool:
        with self._conn.transaction():
            found = self._conn.execute(
                "UPDATE sweeps SET status = %s, updated_at = %s, "
                "runs_ok = (SELECT count(*) FROM sweep_runs r WHERE r.sweep_id = sweeps.sweep_id "
                "AND r.status = 'ok'), "
                "runs_failed = (SELECT count(*) FROM sweep_runs r WHERE r.sweep_id = sweeps.sweep_id "
                "AND r.status = 'failed') "
                "WHERE sweep_id = %s RETURNING sweep_id",
                (status, now, sweep_id),
            ).fetchone()
        return found is not None

    def _write_sweep_runs(self, sweep_id: str, table: pa.Table, now: datetime) -> None:
        cols = ", ".join(SWEEP_RUN_COLUMNS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*SWEEP_RUN_COLUMNS, "finished_at") if c != "run_key")
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
        data = sink.getvalue()
        with self._conn.transaction():
            self._conn.execute(
                f"CREATE TEMP TABLE _sweep_runs_stage ON COMMIT DROP AS SELECT {cols} FROM sweep_runs WITH NO DATA"
            )
            with (
                self._conn.cursor() as cur,
                cur.copy(f"COPY _sweep_runs_stage ({cols}) FROM STDIN (FORMAT csv)".encode()) as copy,
            ):
                copy.write(memoryview(data))
            self._conn.execute(
                f"INSERT INTO sweep_runs (sweep_id, {cols}, finished_at) "
                f"SELECT %s, {cols}, %s FROM _sweep_runs_stage "
                f"ON CONFLICT (sweep_id, run_key) DO UPDATE SET {updates}".encode(),
                (sweep_id, now),
            )

    def _sweep_select(self) -> str:
        select = []
        for c in SWEEP_COLUMNS:
            if c in ("created_at", "updated_at"):
                select.append(f"{_EPOCH_US.format(c=c)} AS {c}")
            elif c == "config":
                select.append("config::text AS config")
            else:
                select.append(c)
        return ", ".join(select)

    def _fetch_sweep(self, sweep_id: str) -> dict[str, Any] | None:
        with self._conn.cursor(row_factory=dict_row) as cur:
            cur.execute(f"SELECT {self._sweep_select()} FROM sweeps WHERE sweep_id = %s".encode(), (sweep_id,))
            return cur.fetchone()

    def _fetch_sweeps(self, limit: int) -> list[dict[str, Any]]:
        with self._conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"SELECT {self._sweep_select()} FROM sweeps ORDER BY created_at DESC, sweep_id DESC LIMIT %s".encode(),
                (limit,),
            )
            return list(cur.fetchall())

    def _fetch_sweep_runs(self, sweep_id: str, status: str | None) -> pa.Table:
        select = []
        for name in SWEEP_RUN_COLUMNS:
            if name in SWEEP_FLOAT_METRICS:
                select.append(f"{name}::float8")
            elif name in SWEEP_JSON_COLUMNS:
                select.append(f"{name}::text")
            else:
                select.append(name)
        where, params = "sweep_id = %s", [sweep_id]
        if status is not None:
            where += " AND status = %s"
            params.append(status)
        query = (
            f"COPY (SELECT {', '.join(select)} FROM sweep_runs WHERE {where} "
            "ORDER BY seq, run_key) TO STDOUT (FORMAT csv)"
        )
        buf = io.BytesIO()
        with self._conn.cursor() as cur, cur.copy(query.encode(), params) as copy:
            for chunk in copy:
                buf.write(chunk)
        if buf.tell() == 0:
            return SWEEP_RUNS_SCHEMA.empty_table()
        buf.seek(0)
        return pacsv.read_csv(
            buf,
            read_options=pacsv.ReadOptions(column_names=list(SWEEP_RUN_COLUMNS)),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: f.type for f in SWEEP_RUNS_SCHEMA},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )

    # ---------------------------------------------------------------- live runtime

    def _write_live(self, tables: Mapping[str, pa.Table]) -> dict[str, int]:
        written = dict.fromkeys(tables, 0)
        stages: dict[str, str] = {}
        with self._conn.transaction():
            for name, table in tables.items():
                if table.num_rows == 0:
                    continue
                spec = LIVE_TABLES[name]
                cols = ", ".join(spec.columns)
                stages[name] = stage = f"_live_stage_{name}"
                self._conn.execute(
                    f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {name} WITH NO DATA".encode()
                )
                sink = pa.BufferOutputStream()
                pacsv.write_csv(_copy_ready(table), sink, pacsv.WriteOptions(include_header=False))
                with (
                    self._conn.cursor() as cur,
                    cur.copy(f"COPY {stage} ({cols}) FROM STDIN (FORMAT csv)".encode()) as copy,
                ):
                    copy.write(memoryview(sink.getvalue()))
                for query, error in pre_write_checks(spec, stage):
                    row = self._conn.execute(query.encode()).fetchone()
                    if row is not None:
                        raise error(row)
                with self._conn.cursor() as cur:
                    cur.execute(insert_sql(spec, stage, spec.columns).encode())
                    written[name] = max(cur.rowcount, 0)
            for name, stage in stages.items():  # after every insert: rows of this batch count
                spec = LIVE_TABLES[name]
                for ref, query in reference_checks(spec, stage):
                    row = self._conn.execute(query.encode()).fetchone()
                    if row is not None:
                        raise broken_reference(spec, ref, row)
                for query, error in invariant_checks(spec, stage):
                    row = self._conn.execute(query.encode()).fetchone()
                    if row is not None:
                        raise error(row)
        return written

    def _copy_out(
        self, query: str, params: Any, schema: pa.Schema, types: dict[str, pa.DataType]
    ) -> pa.Table | None:
        """Run a ``COPY (SELECT …) TO STDOUT (FORMAT csv)`` and parse it with Arrow's CSV reader into
        the columns of ``schema`` typed by ``types`` (see :func:`_copy_columns`); None when no rows."""
        buf = io.BytesIO()
        with self._conn.cursor() as cur, cur.copy(query.encode(), params) as copy:
            for chunk in copy:
                buf.write(chunk)
        if buf.tell() == 0:
            return None
        buf.seek(0)
        return pacsv.read_csv(
            buf,
            read_options=pacsv.ReadOptions(column_names=schema.names),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )

    def _read_live(self, table: str, schema: pa.Schema, clause: str, params: list[Any]) -> pa.Table:
        select, types = _copy_columns(schema)
        query = f"COPY (SELECT {', '.join(select)} FROM {table} {clause}) TO STDOUT (FORMAT csv)"
        raw = self._copy_out(query, params, schema, types)
        if raw is None:
            return schema.empty_table()
        columns: list[pa.Array | pa.ChunkedArray] = []
        for f in schema:
            col = raw[f.name]
            if pa.types.is_timestamp(f.type):
                col = col.cast(_TS_US)
            elif pa.types.is_list(f.type):
                col = pa.array([None if v is None else orjson.loads(v) for v in col.to_pylist()], f.type)
            elif pa.types.is_binary(f.type):
                col = pa.array([None if v is None else bytes.fromhex(v) for v in col.to_pylist()], f.type)
            columns.append(col)
        return pa.table(columns, names=schema.names)


def _copy_columns(schema: pa.Schema) -> tuple[list[str], dict[str, pa.DataType]]:
    """SELECT expressions that COPY writes as CSV Arrow reads back exactly, and the CSV column types:
    timestamps as int64 µs since the epoch, NUMERIC as float8, lists as JSON text, binary as hex,
    JSON columns as their text."""
    select: list[str] = []
    types: dict[str, pa.DataType] = {}
    for f in schema:
        if pa.types.is_timestamp(f.type):
            select.append(_EPOCH_US.format(c=f.name))
            types[f.name] = pa.int64()
        elif pa.types.is_floating(f.type):
            select.append(f"{f.name}::float8")
            types[f.name] = pa.float64()
        elif pa.types.is_list(f.type):
            select.append(f"array_to_json({f.name})::text")
            types[f.name] = pa.string()
        elif pa.types.is_binary(f.type):
            select.append(f"encode({f.name}, 'hex')")
            types[f.name] = pa.string()
        elif pa.types.is_string(f.type):
            select.append(f"{f.name}::text")  # JSON columns as their text
            types[f.name] = f.type
        else:
            select.append(f.name)
            types[f.name] = f.type
    return select, types
