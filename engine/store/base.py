"""The ``Store`` interface shared by the DuckDB and PostgreSQL backends, and :func:`open_store`.

A store persists :class:`~engine.backtest.result.BacktestResult` objects: one ``backtest_runs`` row per
run plus its trades, fills and equity curve, written in one transaction. Money, prices and quantities
are stored as NUMERIC(38, 18) (so at most 20 integer digits and 18 decimals; values come back as
float64), timestamps as TIMESTAMPTZ with microsecond precision (engine timestamps are int64 ns, so a
timestamp that is not a whole number of microseconds is rejected rather than silently rounded).

The schema is created by numbered SQL migrations (see :mod:`engine.store.migrations`). Opening a store
never migrates implicitly unless asked (``open_store(..., migrate=True)``); reading or writing backtests
on a store with pending migrations raises :class:`StoreError` asking to run ``tradectl db migrate``.

It also persists sweeps (batches of backtests run as Ray tasks by ``actors.sweep``): one ``sweeps`` row
per sweep (:class:`~engine.store.sweeps.SweepRecord`) and one ``sweep_runs`` row per run, written from
and read back as Arrow tables with :data:`~engine.store.sweeps.SWEEP_RUNS_SCHEMA`.

And portfolio backtests (:class:`~engine.portfolio.backtest.PortfolioResult`): one
``backtest_portfolios`` row, the portfolio's equity curve, event log, risk rejections and snapshots,
and every strategy instance as an ordinary backtest run, all in one transaction (see
:mod:`engine.store.portfolios`).

And the live runtime's state (migration ``004_live``): accounts, strategy instances, bots, orders,
fills, positions, signals, portfolio snapshots and events, risk rejections and bot checkpoints,
written in batches by :meth:`Store.write_live` (one transaction per batch; insert-or-ignore or
upsert per table; nanosecond timestamps floored to the microsecond) and read by
:meth:`Store.read_live` / :meth:`Store.load_checkpoint` (see :mod:`engine.store.live`).

And the strategies' M2M (migration ``005_m2m``): legs and their exits, 1-minute M2M candles (with a
5-minute rollup), daily performance rows, written by :meth:`Store.write_live` like the live tables and
read, always scoped by account, by :mod:`engine.store.m2m` (which also exports a strategy's P&L report).
"""

from __future__ import annotations

import math
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from engine.backtest.result import EQUITY_SCHEMA, FILLS_SCHEMA, TRADES_SCHEMA, BacktestResult
from engine.errors import ParameterError, StoreError
from engine.store.errors import StoreValueError
from engine.store.migrations import (
    MigrationConnection,
    MigrationStatus,
    apply_migrations,
    migration_status,
    pending_migrations,
)
from engine.store.sweeps import (
    RUN_STATUSES,
    SWEEP_JSON_COLUMNS,
    SWEEP_RUN_COLUMNS,
    SWEEP_RUNS_SCHEMA,
    SWEEP_STATUSES,
    SweepRecord,
    prepare_sweep,
    prepare_sweep_runs,
    recanonical_json,
)
from engine.store.url import StoreURL, resolve_store_url

if TYPE_CHECKING:  # engine.store.portfolios imports this module (and the portfolio engine): loaded lazily
    from engine.portfolio.backtest import PortfolioResult
    from engine.store.portfolios import PreparedPortfolio, StoredPortfolio

#: Largest magnitude a NUMERIC(38, 18) column holds (20 integer digits).
NUMERIC_LIMIT = 1e20

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TS_US = pa.timestamp("us", tz="UTC")

#: Arrow table → (database table, Arrow schema, nullable columns).
CHILD_TABLES: dict[str, tuple[str, pa.Schema, frozenset[str]]] = {
    "trades": ("backtest_trades", TRADES_SCHEMA, frozenset()),
    "fills": ("backtest_fills", FILLS_SCHEMA, frozenset({"liquidity", "tag"})),
    "equity": ("backtest_equity", EQUITY_SCHEMA, frozenset()),
}
#: The columns that identify a row within a run (the primary key without run_id).
ROW_KEYS = {"backtest_trades": "trade_id", "backtest_fills": "fill_id", "backtest_equity": "ts"}

#: Summary columns returned by ``list_backtests`` (in order).
SUMMARY_COLUMNS = (
    "run_id",
    "created_at",
    "strategy_type",
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
)
#: TIMESTAMPTZ columns of backtest_runs (backends read them as epoch microseconds).
TIMESTAMP_COLUMNS = ("created_at", "start_ts", "end_ts")
#: NUMERIC columns of backtest_runs, read back as float.
RUN_NUMERIC_COLUMNS = (
    "initial_cash",
    "final_equity",
    "total_return_pct",
    "sharpe",
    "max_drawdown_pct",
    "fees_paid",
    "funding_paid",
)
_MIGRATE_HINT = "run `tradectl db migrate` (or open_store(..., migrate=True))"


@dataclass(frozen=True)
class PreparedRun:
    """A validated result, ready to write: the ``backtest_runs`` row and the three child tables.

    ``row`` maps column → Python value (JSON columns as JSON text, timestamps as aware datetimes,
    NUMERIC columns as float or None). Child tables hold the result.py schemas with timestamps cast
    to ``timestamp[us, UTC]``.
    """

    run_id: str
    row: dict[str, Any]
    tables: dict[str, pa.Table]  # database table name -> Arrow table


class Store(ABC):
    """A backtest store. Use :func:`open_store` to get one; close it (or use ``with``) when done.

    Methods are serialised by a lock, so one store may be shared by threads, but writes happen one at
    a time. Every method raises :class:`StoreError` once the store is closed.
    """

    dialect: ClassVar[str]

    def __init__(self, url: StoreURL, migrations_dir: str | Path | None = None) -> None:
        self._url = url
        self._migrations_dir = migrations_dir
        self._lock = threading.RLock()
        self._closed = False
        self._schema_ok = False

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> StoreURL:
        """The parsed URL this store was opened with."""
        return self._url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._url.redacted()!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self._url.redacted()} is closed")

    # ---------------------------------------------------------------- migrations

    def migrate(self) -> list[str]:
        """Apply pending migrations (each in its own transaction); return the names applied now.

        Raises:
            StoreError: naming the failing migration file and the database's error (that file is
                rolled back, earlier ones stay applied, later ones are not attempted).
        """
        with self._lock:
            self._check_open()
            try:
                return apply_migrations(self._migration_conn(), self._migrations_dir)
            finally:
                self._schema_ok = False

    def status(self) -> list[MigrationStatus]:
        """Every migration file with its applied time (None = pending), then rows whose file is gone.

        Raises:
            StoreError: if the migrations folder is invalid or the database cannot be read.
        """
        with self._lock:
            self._check_open()
            return migration_status(self._migration_conn(), self._migrations_dir)

    def tables(self) -> list[str]:
        """Names of the tables in the store's schema, sorted (handy for checks and ``db status``)."""
        with self._lock:
            self._check_open()
            try:
                return sorted(self._table_names())
            except Exception as exc:
                raise StoreError(f"listing tables failed: {_describe(exc)}") from exc

    def _require_schema(self) -> None:
        if self._schema_ok:
            return
        pending = pending_migrations(self._migration_conn(), self._migrations_dir)
        if pending:
            raise StoreError(
                f"store {self._url.redacted()} has pending migrations ({', '.join(pending)}): {_MIGRATE_HINT}"
            )
        self._schema_ok = True

    # ---------------------------------------------------------------- backtests

    def save_backtest(self, result: BacktestResult) -> str:
        """Persist ``result`` (run row, trades, fills, equity) in one transaction; return its run_id.

        A ``run_id`` (uuid4 string) is assigned to ``result.run_id`` after a successful save if it was
        None. Summary columns come from ``result.metrics`` (``final_equity``, ``total_return_pct``,
        ``sharpe`` (or ``sharpe_ratio``), ``max_drawdown_pct``, ``fees_paid``, ``funding_paid``) where
        present; otherwise final_equity is the last equity row, total_return_pct is derived from it,
        fees_paid is Σ fills.fee and funding_paid is −Σ trades.funding (positive = net paid). A
        non-finite metric is stored as NULL (and as JSON null inside ``metrics``).

        Raises:
            StoreValueError: (a StoreError) naming table and column when a value cannot be stored:
                NaN/inf or null in a money/quantity column, a magnitude ≥ 1e20, a timestamp that is not
                a whole microsecond, a duplicate id, a side other than ±1, a missing column.
            StoreError: if the schema is not migrated, the run_id already exists, or the database
                fails. In every error case nothing is written.
        """
        with self._lock:
            self._check_open()
            self._require_schema()
            prepared = prepare_run(result)
            try:
                self._write_run(prepared)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(
                    f"saving backtest {prepared.run_id} failed, nothing was saved: {_describe(exc)}"
                ) from exc
            if result.run_id is None:
                result.run_id = prepared.run_id
            return prepared.run_id

    def load_backtest(self, run_id: str) -> BacktestResult:
        """Load a saved run; tables come back with the result.py Arrow schemas (NUMERIC → float64).

        Raises:
            StoreError: if no run has this id, the schema is not migrated, or the database fails.
        """
        with self._lock:
            self._check_open()
            if not isinstance(run_id, str) or not run_id:
                raise StoreError(f"no backtest with run_id {run_id!r}")
            self._require_schema()
            try:
                row = self._fetch_run(run_id)
                if row is None:
                    raise StoreError(f"no backtest with run_id '{run_id}' in {self._url.redacted()}")
                tables = {
                    name: self._fetch_table(db_table, schema, run_id)
                    for name, (db_table, schema, _) in CHILD_TABLES.items()
                }
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"loading backtest {run_id} failed: {_describe(exc)}") from exc
            return _build_result(row, tables)

    def list_backtests(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` runs (newest first) as dicts of :data:`SUMMARY_COLUMNS`.

        Timestamps are aware UTC datetimes, NUMERIC columns floats (None when NULL), ``symbols`` a list.

        Raises:
            ParameterError: ``limit`` is not an int between 1 and 100000.
            StoreError: the schema is not migrated or the database fails.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise ParameterError("limit", f"must be an integer between 1 and 100000, got {limit!r}")
        with self._lock:
            self._check_open()
            self._require_schema()
            try:
                rows = self._fetch_summaries(limit)
            except Exception as exc:
                raise StoreError(f"listing backtests failed: {_describe(exc)}") from exc
            return [_summary(r) for r in rows]

    # ---------------------------------------------------------------- portfolio backtests

    def save_portfolio(self, result: PortfolioResult) -> str:
        """Persist a portfolio backtest in one transaction; return its new ``portfolio_id`` (uuid4 string).

        Writes the ``backtest_portfolios`` row (summary: capital, final equity in quote currency,
        total return and max drawdown in percent, Sharpe ratio, counts; metrics, strategy metrics,
        correlation (NaN → null), allocations (percent) and settings as JSON), one backtest run per
        strategy instance (``result.sleeve_result(name)``, readable with :meth:`load_backtest`) linked
        by ``backtest_portfolio_strategies``, and the equity curve, events, risk rejections and
        snapshots. Everything is validated before anything is written (the rules of
        :meth:`save_backtest`; see :func:`engine.store.portfolios.prepare_portfolio`).

        Raises:
            StoreValueError: (a StoreError) naming table and column when a value cannot be stored.
            StoreError: if the schema is not migrated or the database fails. In every error case
                nothing is written: no portfolio row, no child rows, no sleeve backtest run.
        """
        from engine.store.portfolios import prepare_portfolio

        with self._lock:
            self._check_open()
            self._require_schema()
            prepared = prepare_portfolio(result)
            try:
                self._write_portfolio(prepared)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(
                    f"saving portfolio backtest {prepared.portfolio_id} failed, nothing was saved: {_describe(exc)}"
                ) from exc
            return prepared.portfolio_id

    def load_portfolio(self, portfolio_id: str) -> StoredPortfolio:
        """Load a saved portfolio backtest: summary, JSON documents, the sleeves' ``run_ids`` and the
        equity, events, rejections and snapshots tables with the result's Arrow schemas
        (NUMERIC → float64, NULL rejection figures → NaN, ``events.data`` as its JSON text).

        Raises:
            StoreError: if no portfolio backtest has this id, the schema is not migrated, or the
                database fails.
        """
        from engine.store.portfolios import PORTFOLIO_TABLES, stored_portfolio

        with self._lock:
            self._check_open()
            if not isinstance(portfolio_id, str) or not portfolio_id:
                raise StoreError(f"no portfolio backtest with portfolio_id {portfolio_id!r}")
            self._require_schema()
            try:
                row = self._fetch_portfolio(portfolio_id)
                if row is None:
                    raise StoreError(
                        f"no portfolio backtest with portfolio_id '{portfolio_id}' in {self._url.redacted()}"
                    )
                strategies = self._fetch_portfolio_strategies([portfolio_id])
                tables = {
                    spec.attr: self._fetch_rows(
                        spec.db_table, spec.db_schema, "portfolio_id", portfolio_id, spec.order_by
                    )
                    for spec in PORTFOLIO_TABLES
                }
                return stored_portfolio(row, strategies, tables)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"loading portfolio backtest {portfolio_id} failed: {_describe(exc)}") from exc

    def list_portfolios(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` portfolio backtests (newest first) as dicts of
        :data:`~engine.store.portfolios.PORTFOLIO_SUMMARY_COLUMNS` (timestamps aware UTC datetimes,
        NUMERIC columns floats or None, ``strategies`` the instance names in portfolio order).

        Raises:
            ParameterError: ``limit`` is not an int between 1 and 100000.
            StoreError: the schema is not migrated or the database fails.
        """
        from engine.store.portfolios import portfolio_summary

        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise ParameterError("limit", f"must be an integer between 1 and 100000, got {limit!r}")
        with self._lock:
            self._check_open()
            self._require_schema()
            try:
                rows = self._fetch_portfolio_summaries(limit)
                names: dict[str, list[str]] = {}
                for s in self._fetch_portfolio_strategies([r["portfolio_id"] for r in rows]):
                    names.setdefault(s["portfolio_id"], []).append(s["strategy"])
            except Exception as exc:
                raise StoreError(f"listing portfolio backtests failed: {_describe(exc)}") from exc
            return [portfolio_summary(r, names.get(r["portfolio_id"], [])) for r in rows]

    # ---------------------------------------------------------------- sweeps

    def save_sweep(self, sweep: SweepRecord) -> SweepRecord:
        """Insert a sweep's row, or, when ``sweep_id`` is already stored (the same name and config),
        set its ``status`` and ``runs_planned`` and touch ``updated_at``; return the stored record.

        Raises:
            StoreValueError: naming the column when a value cannot be stored (nothing is written).
            StoreError: if the schema is not migrated or the database fails.
        """
        with self._lock:
            self._check_open()
            self._require_schema()
            row = prepare_sweep(sweep)
            try:
                self._upsert_sweep(row, datetime.now(UTC))
            except Exception as exc:
                raise StoreError(f"saving sweep {sweep.sweep_id} failed, nothing was saved: {_describe(exc)}") from exc
            return self.load_sweep(sweep.sweep_id)

    def save_sweep_runs(self, sweep_id: str, runs: pa.Table) -> int:
        """Upsert runs (a table with :data:`~engine.store.sweeps.SWEEP_RUNS_SCHEMA`) of a stored sweep in
        one transaction; a run whose ``run_key`` is already stored is replaced. Return the rows written.

        Raises:
            StoreValueError: naming the column and row when a value cannot be stored.
            StoreError: if the sweep is not stored, the schema is not migrated or the database fails.
                In every error case nothing is written.
        """
        with self._lock:
            self._check_open()
            self._require_schema()
            _text_arg("sweep_id", sweep_id)
            table = prepare_sweep_runs(runs)
            if table.num_rows == 0:
                return 0
            try:
                if self._fetch_sweep(sweep_id) is None:
                    raise StoreError(f"no sweep with sweep_id '{sweep_id}': save_sweep first; nothing was saved")
                self._write_sweep_runs(sweep_id, table, datetime.now(UTC))
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(
                    f"saving runs of sweep {sweep_id} failed, nothing was saved: {_describe(exc)}"
                ) from exc
            return table.num_rows

    def finish_sweep(self, sweep_id: str, status: str = "finished") -> SweepRecord:
        """Set a sweep's ``status`` ("finished", "interrupted" or "running"), recount ``runs_ok`` and
        ``runs_failed`` from its stored runs, touch ``updated_at``; return the updated record.

        Raises:
            StoreValueError: an unknown status.
            StoreError: if no sweep has this id, the schema is not migrated or the database fails.
        """
        if status not in SWEEP_STATUSES:
            raise StoreValueError("sweeps", "status", f"must be one of {', '.join(SWEEP_STATUSES)}, got {status!r}")
        with self._lock:
            self._check_open()
            self._require_schema()
            _text_arg("sweep_id", sweep_id)
            try:
                found = self._update_sweep_status(sweep_id, status, datetime.now(UTC))
            except Exception as exc:
                raise StoreError(f"updating sweep {sweep_id} failed: {_describe(exc)}") from exc
            if not found:
                raise StoreError(f"no sweep with sweep_id '{sweep_id}' in {self._url.redacted()}")
            return self.load_sweep(sweep_id)

    def load_sweep(self, sweep_id: str) -> SweepRecord:
        """The stored sweep record (config as a dict, timestamps as aware UTC datetimes).

        Raises:
            StoreError: if no sweep has this id, the schema is not migrated or the database fails.
        """
        with self._lock:
            self._check_open()
            self._require_schema()
            _text_arg("sweep_id", sweep_id)
            try:
                row = self._fetch_sweep(sweep_id)
            except Exception as exc:
                raise StoreError(f"loading sweep {sweep_id} failed: {_describe(exc)}") from exc
            if row is None:
                raise StoreError(f"no sweep with sweep_id '{sweep_id}' in {self._url.redacted()}")
            return _sweep_record(row)

    def find_sweep(self, sweep_id: str) -> SweepRecord | None:
        """Like :meth:`load_sweep`, but None when no sweep has this id."""
        with self._lock:
            self._check_open()
            self._require_schema()
            _text_arg("sweep_id", sweep_id)
            try:
                row = self._fetch_sweep(sweep_id)
            except Exception as exc:
                raise StoreError(f"loading sweep {sweep_id} failed: {_describe(exc)}") from exc
            return None if row is None else _sweep_record(row)

    def load_sweep_runs(self, sweep_id: str, status: str | None = None) -> pa.Table:
        """A sweep's stored runs ordered by ``seq`` then ``run_key``, as a table with
        :data:`~engine.store.sweeps.SWEEP_RUNS_SCHEMA` (NUMERIC → float64, JSON as canonical text);
        only runs with ``status`` ("ok" or "failed") when given. Empty for an unknown sweep.

        Raises:
            StoreValueError: an unknown status.
            StoreError: if the schema is not migrated or the database fails.
        """
        if status is not None and status not in RUN_STATUSES:
            raise StoreValueError("sweep_runs", "status", f"must be 'ok' or 'failed', got {status!r}")
        with self._lock:
            self._check_open()
            self._require_schema()
            _text_arg("sweep_id", sweep_id)
            try:
                table = self._fetch_sweep_runs(sweep_id, status)
            except Exception as exc:
                raise StoreError(f"loading runs of sweep {sweep_id} failed: {_describe(exc)}") from exc
            return _canonical_runs(table)

    def list_sweeps(self, limit: int = 20) -> list[SweepRecord]:
        """The newest ``limit`` sweeps (by ``created_at``, newest first).

        Raises:
            ParameterError: ``limit`` is not an int between 1 and 100000.
            StoreError: the schema is not migrated or the database fails.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise ParameterError("limit", f"must be an integer between 1 and 100000, got {limit!r}")
        with self._lock:
            self._check_open()
            self._require_schema()
            try:
                rows = self._fetch_sweeps(limit)
            except Exception as exc:
                raise StoreError(f"listing sweeps failed: {_describe(exc)}") from exc
            return [_sweep_record(r) for r in rows]

    # ---------------------------------------------------------------- live runtime

    def write_live(self, tables: Mapping[str, pa.Table]) -> dict[str, int]:
        """Write a batch of live tables (name → Arrow table with the schema of
        :data:`~engine.store.live.LIVE_TABLES`) in ONE transaction, each by its conflict mode:
        ``"ignore"`` tables skip rows whose key is stored (fills, signals, snapshots, events and
        rejections are idempotent by id), ``"upsert"`` tables replace the stored row unless it is
        newer (see :mod:`engine.store.live`). Timestamps are floored to the microsecond; money,
        prices and quantities (float64, quote currency / base units) are stored as NUMERIC(38, 18).

        Returns, for every table of the batch, the rows actually inserted or updated (rows skipped as
        duplicates or stale states are not counted; 0 for an empty table).

        Raises:
            StoreValueError: (a StoreError) naming table, column, row and rule when a value cannot be
                stored (see :func:`~engine.store.live.prepare_live`), or when a row references an
                account, strategy instance or bot that is not stored (in this batch or before).
            StoreError: if the schema is not migrated or the database fails (a unique
                ``(account_id, name)`` taken by another id, for example). In every error case nothing
                of the batch is written, in any table.
        """
        from engine.store.live import prepare_live

        with self._lock:
            self._check_open()
            self._require_schema()
            prepared = prepare_live(tables)
            try:
                return self._write_live(prepared)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(
                    f"writing live tables ({', '.join(prepared)}) failed, nothing was written: {_describe(exc)}"
                ) from exc

    def read_live(
        self,
        table: str,
        *,
        account_id: str | None = None,
        where: Mapping[str, Any] | None = None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> pa.Table:
        """Rows of a live table as an Arrow table with its spec's schema (NUMERIC → float64,
        timestamps ``timestamp[ns, UTC]`` as stored, i.e. floored to the microsecond; JSON as text).

        ``account_id`` keeps one account's rows; ``where`` maps column → value (equality), ``None``
        (IS NULL) or a list/tuple/set (IN); timestamp values are int ns (floored to the µs) or aware
        datetimes. ``order_by`` is a column name, optionally followed by ``ASC``/``DESC``; ties (and the
        default order) follow the primary key. ``limit`` caps the rows returned.

        Raises:
            ParameterError: an unknown table, a column that is not in the table or cannot be compared
                (JSON, list, binary), a value of the wrong type, a malformed ``order_by`` or ``limit``.
            StoreError: if the schema is not migrated or the database fails.
        """
        from engine.store.live import live_spec, read_clause, restore_live

        spec = live_spec(table)
        placeholder = self._migration_conn().placeholder
        clause, params = read_clause(
            spec, account_id=account_id, where=where, order_by=order_by, limit=limit, placeholder=placeholder
        )
        with self._lock:
            self._check_open()
            self._require_schema()
            try:
                raw = self._read_live(spec.name, spec.schema, clause, params)
            except Exception as exc:
                raise StoreError(f"reading {spec.name} failed: {_describe(exc)}") from exc
            return restore_live(spec, raw)

    def _select_live(self, relation: str, schema: pa.Schema, clause: str, params: list[Any]) -> pa.Table:
        """For :mod:`engine.store` modules (:mod:`engine.store.m2m`): ``SELECT`` the columns of ``schema``
        from a live table or view with ``clause`` (WHERE / ORDER BY / LIMIT made of column names the
        caller's code chose, never a user's text; values bound as ``params`` with
        :attr:`placeholder`), as an Arrow table with ``schema``.

        Raises:
            StoreError: if the schema is not migrated or the database fails.
        """
        with self._lock:
            self._check_open()
            self._require_schema()
            try:
                raw = self._read_live(relation, schema, clause, params)
            except Exception as exc:
                raise StoreError(f"reading {relation} failed: {_describe(exc)}") from exc
            return raw.rename_columns(schema.names).cast(schema)

    def _query_rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """For :mod:`engine.store` modules: run a read-only query (catalog look-ups), return its rows."""
        with self._lock:
            self._check_open()
            try:
                return self._migration_conn().query(sql, params)
            except Exception as exc:
                raise StoreError(f"query failed: {_describe(exc)}") from exc

    @property
    def placeholder(self) -> str:
        """The parameter marker of this backend's SQL (``?`` or ``%s``)."""
        return self._migration_conn().placeholder

    def load_checkpoint(self, bot_id: str) -> tuple[int, int, bytes] | None:
        """The latest checkpoint of a bot as ``(watermark_ns, seq, state)`` (watermark in ns since the
        epoch), or None when the bot has none.

        Raises:
            ParameterError: ``bot_id`` is not a non-empty string.
            StoreError: if the schema is not migrated or the database fails.
        """
        _text_arg("bot_id", bot_id)
        rows = self.read_live("bot_checkpoints", where={"bot_id": bot_id}).to_pylist()
        if not rows:
            return None
        row = rows[0]
        return int(row["watermark_ns"]), int(row["seq"]), bytes(row["state"])

    # ---------------------------------------------------------------- backend hooks

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def _migration_conn(self) -> MigrationConnection: ...

    @abstractmethod
    def _table_names(self) -> list[str]: ...

    @abstractmethod
    def _write_run(self, prepared: PreparedRun) -> None:
        """Insert the run row and the child tables in one transaction (roll back on any error)."""

    @abstractmethod
    def _fetch_run(self, run_id: str) -> dict[str, Any] | None:
        """The run row: columns of backtest_runs with start_ts/end_ts as epoch microseconds (int),
        NUMERIC columns as float, JSON columns as text, symbols as a list."""

    @abstractmethod
    def _fetch_table(self, table: str, schema: pa.Schema, run_id: str) -> pa.Table:
        """One child table of a run, ordered by its key, cast to ``schema``."""

    @abstractmethod
    def _fetch_summaries(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` runs as dicts of SUMMARY_COLUMNS (raw database values)."""

    @abstractmethod
    def _fetch_rows(self, table: str, schema: pa.Schema, key_column: str, key: str, order_by: str) -> pa.Table:
        """The rows of ``table`` whose ``key_column`` is ``key``, ordered by ``order_by``, with the
        columns of ``schema`` (same names, in order) cast to it."""

    @abstractmethod
    def _write_portfolio(self, prepared: PreparedPortfolio) -> None:
        """Insert the sleeves' runs, the portfolio row, its strategies and its tables in ONE
        transaction (roll back on any error)."""

    @abstractmethod
    def _fetch_portfolio(self, portfolio_id: str) -> dict[str, Any] | None:
        """The ``backtest_portfolios`` row: PORTFOLIO_COLUMNS with timestamps as epoch microseconds
        (int or None), NUMERIC columns as float, JSON columns as text."""

    @abstractmethod
    def _fetch_portfolio_strategies(self, portfolio_ids: list[str]) -> list[dict[str, Any]]:
        """The ``backtest_portfolio_strategies`` rows of these portfolios (all columns,
        allocation_pct as float), ordered by portfolio_id then seq."""

    @abstractmethod
    def _fetch_portfolio_summaries(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` portfolios as dicts of PORTFOLIO_ROW_SUMMARY_COLUMNS, as
        :meth:`_fetch_portfolio` reads them."""

    @abstractmethod
    def _upsert_sweep(self, row: dict[str, Any], now: datetime) -> None:
        """Insert the ``sweeps`` row (created_at = updated_at = ``now``), or update status,
        runs_planned and updated_at of the stored one."""

    @abstractmethod
    def _update_sweep_status(self, sweep_id: str, status: str, now: datetime) -> bool:
        """Set status, updated_at and recount runs_ok / runs_failed; False when the sweep is not stored."""

    @abstractmethod
    def _write_sweep_runs(self, sweep_id: str, table: pa.Table, now: datetime) -> None:
        """Upsert validated runs (SWEEP_RUNS_SCHEMA) with finished_at = ``now``, in one transaction."""

    @abstractmethod
    def _fetch_sweep(self, sweep_id: str) -> dict[str, Any] | None:
        """The ``sweeps`` row: config as JSON text, created_at/updated_at as epoch microseconds (int)."""

    @abstractmethod
    def _fetch_sweeps(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` ``sweeps`` rows, as :meth:`_fetch_sweep` returns them."""

    @abstractmethod
    def _fetch_sweep_runs(self, sweep_id: str, status: str | None) -> pa.Table:
        """The sweep's runs ordered by seq, run_key, cast to SWEEP_RUNS_SCHEMA."""

    @abstractmethod
    def _write_live(self, tables: Mapping[str, pa.Table]) -> dict[str, int]:
        """Write prepared live tables (:func:`~engine.store.live.prepare_live` output, in write order)
        in ONE transaction by their conflict modes, check their references (raising
        :func:`~engine.store.live.broken_reference`), roll back on any error; return the rows
        inserted or updated per table."""

    @abstractmethod
    def _read_live(self, table: str, schema: pa.Schema, clause: str, params: list[Any]) -> pa.Table:
        """``SELECT`` the columns of ``schema`` from live ``table`` with ``clause`` (WHERE / ORDER BY /
        LIMIT, bound ``params``): same names and order, NUMERIC as float64, JSON as text, timestamps
        as timestamps (µs), lists as lists, binary as binary."""


# -------------------------------------------------------------------- open_store


def open_store(
    url: str | None = None,
    data_dir: str | Path | None = None,
    *,
    migrate: bool = False,
    migrations_dir: str | Path | None = None,
) -> Store:
    """Open the store selected by ``url``, else ``$TRADE_DB_URL``, else ``<data_dir>/engine.duckdb``.

    ``data_dir`` defaults to ``$TRADE_DATA_DIR``, else ``./data``; it is created when the default file
    is used. ``postgresql://``/``postgres://`` selects PostgreSQL, ``duckdb://<path>`` or a plain path
    DuckDB (``duckdb://:memory:`` for a throw-away store). With ``migrate=True`` pending migrations are
    applied before returning; otherwise nothing is created until :meth:`Store.migrate`.
    ``migrations_dir`` overrides the repository's ``migrations/`` folder (it holds one sub-folder per
    dialect).

    Raises:
        ParameterError: on field ``db`` for an unsupported or malformed URL.
        StoreError: if the database cannot be opened/connected, or a migration fails.
    """
    target = resolve_store_url(url, data_dir)
    store: Store
    if target.dialect == "postgres":
        from engine.store.postgres_store import PostgresStore

        store = PostgresStore(target, migrations_dir)
    else:
        from engine.store.duckdb_store import DuckDBStore

        store = DuckDBStore(target, migrations_dir)
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store


# -------------------------------------------------------------------- validation


def prepare_run(result: BacktestResult) -> PreparedRun:
    """Validate ``result`` and turn it into a :class:`PreparedRun` (pure; touches no database).

    Raises:
        StoreValueError / StoreError: as :meth:`Store.save_backtest`.
    """
    if not isinstance(result, BacktestResult):
        raise StoreError(f"save_backtest needs a BacktestResult, got {type(result).__name__}")
    run_id = result.run_id if result.run_id is not None else str(uuid.uuid4())
    _require_text("backtest_runs", "run_id", run_id)
    _require_text("backtest_runs", "strategy_type", result.strategy_type)
    _require_text("backtest_runs", "timeframe", result.timeframe)
    _require_text("backtest_runs", "trade_hash", result.trade_hash, allow_empty=True)
    _require_text("backtest_runs", "data_path", str(result.data_path), allow_empty=True)
    symbols = list(result.symbols)
    for s in symbols:
        _require_text("backtest_runs", "symbols", s)

    tables: dict[str, pa.Table] = {}
    for attr, (db_table, schema, nullable) in CHILD_TABLES.items():
        tables[db_table] = _validate_table(db_table, getattr(result, attr), schema, nullable)

    initial_cash = _finite("backtest_runs", "initial_cash", result.initial_cash)
    metrics = dict(result.metrics or {})
    equity = tables["backtest_equity"]
    last_equity = float(equity["equity"][-1].as_py()) if equity.num_rows else None

    final_equity = _metric(metrics, "final_equity")
    if final_equity is None:
        final_equity = last_equity
    total_return = _metric(metrics, "total_return_pct")
    if total_return is None and final_equity is not None and initial_cash > 0:
        total_return = _bounded((final_equity / initial_cash - 1.0) * 100.0)
    sharpe = _metric(metrics, "sharpe")
    if sharpe is None:
        sharpe = _metric(metrics, "sharpe_ratio")
    fees_paid = _metric(metrics, "fees_paid")
    if fees_paid is None:
        fees_paid = _column_sum(tables["backtest_fills"], "fee")
    funding_paid = _metric(metrics, "funding_paid")
    if funding_paid is None:
        funding_paid = -_column_sum(tables["backtest_trades"], "funding")

    row: dict[str, Any] = {
        "run_id": run_id,
        "created_at": datetime.now(UTC),
        "strategy_type": result.strategy_type,
        "params": _json("params", result.params),
        "symbols": symbols,
        "timeframe": result.timeframe,
        "data_path": str(result.data_path),
        "start_ts": _ns_to_datetime("backtest_runs", "start_ts", result.start_ns),
        "end_ts": _ns_to_datetime("backtest_runs", "end_ts", result.end_ns),
        "initial_cash": initial_cash,
        "final_equity": final_equity,
        "total_return_pct": total_return,
        "sharpe": sharpe,
        "max_drawdown_pct": _metric(metrics, "max_drawdown_pct"),
        "trades": int(tables["backtest_trades"].num_rows),
        "fees_paid": _finite("backtest_runs", "fees_paid", fees_paid),
        "funding_paid": _finite("backtest_runs", "funding_paid", funding_paid),
        "trade_hash": result.trade_hash,
        "metrics": _json("metrics", metrics),
        "settings": _json("settings", result.settings or {}),
    }
    return PreparedRun(run_id, row, tables)


def _require_text(table: str, column: str, value: object, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise StoreValueError(table, column, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value:
        raise StoreValueError(table, column, "must not be empty")
    if "\x00" in value:
        raise StoreValueError(table, column, "must not contain NUL characters")


def _finite(table: str, column: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise StoreValueError(table, column, f"must be a number, got {value!r}")
    f = float(value)
    if not math.isfinite(f):
        raise StoreValueError(table, column, f"is {f}, NUMERIC columns need finite values")
    if abs(f) >= NUMERIC_LIMIT:
        raise StoreValueError(table, column, f"{f} exceeds NUMERIC(38, 18) (|x| < 1e20)")
    return f


def _bounded(value: float) -> float | None:
    return value if math.isfinite(value) and abs(value) < NUMERIC_LIMIT else None


def _metric(metrics: Mapping[str, Any], key: str) -> float | None:
    """A summary metric as a storable float, or None when absent, non-numeric or non-finite."""
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return _bounded(float(value))


def _column_sum(table: pa.Table, column: str) -> float:
    if table.num_rows == 0:
        return 0.0
    return float(np.sum(table[column].to_numpy()))


def _json(field: str, value: Any) -> str:
    try:
        return orjson.dumps(
            value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS
        ).decode()
    except TypeError as exc:
        raise StoreValueError("backtest_runs", field, f"is not JSON-serialisable ({exc})") from exc


def _ns_to_datetime(table: str, column: str, ns: object) -> datetime:
    if isinstance(ns, bool) or not isinstance(ns, (int, np.integer)):
        raise StoreValueError(table, column, f"must be int nanoseconds since the epoch, got {ns!r}")
    ns = int(ns)
    if ns % 1000:
        raise StoreValueError(
            table, column, f"{ns} ns is not a whole microsecond (TIMESTAMPTZ has microsecond precision)"
        )
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _validate_table(db_table: str, given: object, schema: pa.Schema, nullable: frozenset[str]) -> pa.Table:
    out = _validate_columns(db_table, given, schema, nullable)
    key = ROW_KEYS[db_table]
    if out.num_rows and pc.count_distinct(out[key]).as_py() != out.num_rows:
        raise StoreValueError(db_table, key, "values must be unique within a run")
    return out


def _validate_columns(
    db_table: str,
    given: object,
    schema: pa.Schema,
    nullable: frozenset[str],
    non_finite_as_null: frozenset[str] = frozenset(),
    floor_us: bool = False,
) -> pa.Table:
    """``given`` checked against ``schema`` (exactly its columns, castable, no null outside ``nullable``,
    floats finite and within NUMERIC(38, 18), timestamps whole microseconds, ``side`` ±1 where not
    null), with its columns in schema order and timestamps cast to ``timestamp[us, UTC]``. Float
    columns named in ``non_finite_as_null`` turn NaN/±inf into null (and may hold nulls). With
    ``floor_us`` nanosecond timestamps are floored to the microsecond instead of rejected.

    Raises:
        StoreValueError: naming ``db_table``, the column and the first offending row.
    """
    if not isinstance(given, pa.Table):
        raise StoreValueError(db_table, "*", f"must be a pyarrow.Table, got {type(given).__name__}")
    table: pa.Table = given
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise StoreValueError(db_table, missing[0], "column is missing")
    extra = [c for c in table.column_names if c not in schema.names]
    if extra:
        raise StoreValueError(db_table, extra[0], "unknown column (not in the result schema)")
    table = table.select(schema.names)
    columns = []
    for f in schema:
        col = table[f.name]
        try:
            col = col.cast(f.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise StoreValueError(db_table, f.name, f"cannot be read as {f.type}: {exc}") from exc
        if f.name in non_finite_as_null:
            col = pc.if_else(pc.is_finite(col), col, pa.scalar(None, f.type))
        elif col.null_count and f.name not in nullable:
            first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise StoreValueError(
                db_table, f.name, f"{col.null_count} null value(s) in a NOT NULL column (first at row {first})"
            )
        if pa.types.is_floating(f.type):
            values = col.to_numpy(zero_copy_only=False)
            if col.null_count:  # nulls allowed here (checked above) are not values to bound
                values = np.where(col.is_null().to_numpy(zero_copy_only=False), 0.0, values)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                i = int(bad[0])
                raise StoreValueError(db_table, f.name, f"row {i} is {values[i]}; NUMERIC columns need finite values")
            big = np.flatnonzero(np.abs(values) >= NUMERIC_LIMIT)
            if big.size:
                i = int(big[0])
                raise StoreValueError(db_table, f.name, f"row {i} is {values[i]}, beyond NUMERIC(38, 18)")
        elif pa.types.is_timestamp(f.type):
            if floor_us:
                col = pc.floor_temporal(col, unit="microsecond")
            ints = pc.fill_null(col.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)  # nulls: allowed above
            bad = np.flatnonzero(ints % 1000)
            if bad.size:
                i = int(bad[0])
                raise StoreValueError(
                    db_table,
                    f.name,
                    f"row {i} ({ints[i]} ns) is not a whole microsecond (TIMESTAMPTZ has microsecond precision)",
                )
            col = col.cast(_TS_US)
        elif f.name == "side":
            values = (pc.fill_null(col, 1) if col.null_count else col).to_numpy()
            bad = np.flatnonzero((values != 1) & (values != -1))
            if bad.size:
                i = int(bad[0])
                raise StoreValueError(db_table, f.name, f"row {i} is {values[i]}, must be +1 or -1")
        columns.append(col)
    return pa.table(columns, names=schema.names)


# -------------------------------------------------------------------- loading


def _build_result(row: Mapping[str, Any], tables: Mapping[str, pa.Table]) -> BacktestResult:
    return BacktestResult(
        strategy_type=row["strategy_type"],
        params=orjson.loads(row["params"]),
        symbols=list(row["symbols"]),
        timeframe=row["timeframe"],
        start_ns=int(row["start_ts"]) * 1000,
        end_ns=int(row["end_ts"]) * 1000,
        data_path=row["data_path"],
        initial_cash=float(row["initial_cash"]),
        metrics=orjson.loads(row["metrics"]),
        fills=tables["fills"],
        trades=tables["trades"],
        equity=tables["equity"],
        trade_hash=row["trade_hash"],
        settings=orjson.loads(row["settings"]),
        run_id=row["run_id"],
    )


def duplicate_run(run_id: str) -> StoreError:
    """The error for saving a run_id that is already stored."""
    return StoreError(f"a backtest with run_id '{run_id}' is already stored; nothing was saved")


def cast_loaded(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast a table read from the database (timestamps in µs, small ints, doubles) to ``schema``."""
    return table.rename_columns(schema.names).cast(schema)


def _summary(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in SUMMARY_COLUMNS:
        value = raw[name]
        if name in RUN_NUMERIC_COLUMNS and value is not None:
            value = float(value)
        elif name in TIMESTAMP_COLUMNS:
            value = _EPOCH + timedelta(microseconds=int(value))
        elif name == "symbols":
            value = list(value)
        elif name == "trades":
            value = int(value)
        out[name] = value
    return out


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -------------------------------------------------------------------- sweeps helpers

#: Columns of the ``sweeps`` table as backends return them from ``_fetch_sweep``.
SWEEP_COLUMNS = (
    "sweep_id",
    "name",
    "kind",
    "method",
    "seed",
    "config",
    "status",
    "runs_planned",
    "runs_ok",
    "runs_failed",
    "created_at",
    "updated_at",
)


def _text_arg(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ParameterError(name, f"must be a non-empty string, got {value!r}")


def _sweep_record(row: Mapping[str, Any]) -> SweepRecord:
    return SweepRecord(
        sweep_id=row["sweep_id"],
        name=row["name"],
        kind=row["kind"],
        method=row["method"],
        seed=int(row["seed"]),
        config=orjson.loads(row["config"]),
        runs_planned=int(row["runs_planned"]),
        status=row["status"],
        runs_ok=int(row["runs_ok"]),
        runs_failed=int(row["runs_failed"]),
        created_at=_EPOCH + timedelta(microseconds=int(row["created_at"])),
        updated_at=_EPOCH + timedelta(microseconds=int(row["updated_at"])),
    )


def _canonical_runs(table: pa.Table) -> pa.Table:
    """Cast a runs table read from a database to SWEEP_RUNS_SCHEMA with canonical JSON text."""
    table = table.select(list(SWEEP_RUN_COLUMNS)).cast(SWEEP_RUNS_SCHEMA)
    for name in SWEEP_JSON_COLUMNS:
        i = table.schema.get_field_index(name)
        values = [recanonical_json(v) for v in table[name].to_pylist()]
        table = table.set_column(i, SWEEP_RUNS_SCHEMA.field(name), pa.array(values, pa.string()))
    return table
