"""Persistence of backtests (and later live state) in DuckDB (default) or PostgreSQL.

Typical use::

    from engine.store import open_store

    with open_store(migrate=True) as store:  # TRADE_DB_URL, else <TRADE_DATA_DIR or ./data>/engine.duckdb
        run_id = store.save_backtest(result)
        again = store.load_backtest(run_id)

Sweeps (batches of runs, see ``actors.sweep``) are stored as a :class:`SweepRecord` plus a runs table with
:data:`SWEEP_RUNS_SCHEMA` (``save_sweep``, ``save_sweep_runs``, ``finish_sweep``, ``load_sweep_runs``).

Portfolio backtests (``save_portfolio``, ``load_portfolio``, ``list_portfolios``) are described in
:mod:`engine.store.portfolios` (imported with the backends, not by this package, since it loads the
portfolio engine), which also holds the loaded record :class:`~engine.store.portfolios.StoredPortfolio`.

The backend classes live in :mod:`engine.store.duckdb_store` and :mod:`engine.store.postgres_store`
and are imported lazily by :func:`open_store`.
"""

from engine.store.base import PreparedRun, Store, StoreValueError, open_store, prepare_run
from engine.store.migrations import (
    MigrationFile,
    MigrationStatus,
    apply_migrations,
    default_migrations_dir,
    discover_migrations,
    migration_status,
    pending_migrations,
)
from engine.store.sweeps import (
    SWEEP_FLOAT_METRICS,
    SWEEP_INT_METRICS,
    SWEEP_RUN_COLUMNS,
    SWEEP_RUNS_SCHEMA,
    SweepRecord,
    canonical_json,
    empty_sweep_runs,
    prepare_sweep_runs,
    sweep_run_row,
    sweep_runs_table,
)
from engine.store.url import (
    ENV_DATA_DIR,
    ENV_DB_URL,
    StoreURL,
    parse_store_url,
    resolve_data_dir,
    resolve_store_url,
)

__all__ = [
    "ENV_DATA_DIR",
    "ENV_DB_URL",
    "SWEEP_FLOAT_METRICS",
    "SWEEP_INT_METRICS",
    "SWEEP_RUNS_SCHEMA",
    "SWEEP_RUN_COLUMNS",
    "MigrationFile",
    "MigrationStatus",
    "PreparedRun",
    "Store",
    "StoreURL",
    "StoreValueError",
    "SweepRecord",
    "apply_migrations",
    "canonical_json",
    "default_migrations_dir",
    "discover_migrations",
    "empty_sweep_runs",
    "migration_status",
    "open_store",
    "parse_store_url",
    "pending_migrations",
    "prepare_run",
    "prepare_sweep_runs",
    "resolve_data_dir",
    "resolve_store_url",
    "sweep_run_row",
    "sweep_runs_table",
]
