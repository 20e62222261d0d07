"""Saving and loading portfolio backtests (migration 003) on DuckDB and a real PostgreSQL database."""

from __future__ import annotations

import dataclasses
import math
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.errors import ParameterError, StoreError
from engine.portfolio.backtest import PortfolioResult
from engine.portfolio.config import run_portfolio_file
from engine.store import Store, StoreValueError, default_migrations_dir, discover_migrations, open_store
from engine.store.portfolios import PORTFOLIO_SUMMARY_COLUMNS, StoredPortfolio

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BACKTEST_TABLES = ("backtest_runs", "backtest_trades", "backtest_fills", "backtest_equity")
PORTFOLIO_TABLES = (
    "backtest_portfolios",
    "backtest_portfolio_strategies",
    "backtest_portfolio_equity",
    "backtest_portfolio_events",
    "backtest_portfolio_rejections",
    "backtest_portfolio_snapshots",
)
ALL_TABLES = BACKTEST_TABLES + PORTFOLIO_TABLES
MIGRATION = "003_portfolio_backtests"

CONFIG = f"""\
name: t
capital: 100000
end: 2025-07-01
venue: {{fee_bps: 4}}
datasets:
  panel:
    bars: {DATA / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"}
    funding: {DATA / "binance_usdm_funding_rates_40sym_2019_2026.parquet"}
breakers: {{snapshot_interval: 1h}}
strategies:
  - {{name: sma, type: sma_crossover, dataset: panel, symbols: [BTCUSDT, ETHUSDT], allocation: 50, leverage: 2,
      params: {{fast: 12, slow: 48, size_pct: 50}}}}
  - {{name: brk, type: breakout, dataset: panel, timeframe: 4h, symbols: [SOLUSDT, XRPUSDT], allocation: 50,
      leverage: 2, params: {{allow_short: true, size_pct: 30}}}}
"""


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> PortfolioResult:
    """A real two-strategy portfolio run (2 months of 1h/4h bars); tests must not mutate it."""
    path = tmp_path_factory.mktemp("portfolio") / "t.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    res = run_portfolio_file(path)
    assert res.fills.num_rows and res.rejections.num_rows and res.snapshots.num_rows  # the tests need them
    assert set(res.strategies) == {"sma", "brk"}
    return res


@pytest.fixture
def migrated(store: Store) -> Store:
    store.migrate()
    return store


def count(store: Store, table: str) -> int:
    conn = store._migration_conn()  # test-only peek at raw row counts
    return int(conn.query(f"SELECT count(*) FROM {table}")[0][0])


def counts(store: Store) -> dict[str, int]:
    return {t: count(store, t) for t in ALL_TABLES}


def assert_same_table(got: pa.Table, want: pa.Table) -> None:
    """Equal schemas and values; NaN equals NaN."""
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    for f in want.schema:
        if pa.types.is_floating(f.type):
            np.testing.assert_array_equal(got[f.name].to_numpy(), want[f.name].to_numpy(), err_msg=f.name)
        else:
            assert got[f.name].to_pylist() == want[f.name].to_pylist(), f.name


def json_like(value: Any) -> Any:
    """``value`` as it comes back from a JSON column: non-finite floats become None."""
    if isinstance(value, dict):
        return {k: json_like(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_like(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def with_value(table: pa.Table, column: str, row: int, value: Any) -> pa.Table:
    i = table.schema.get_field_index(column)
    field = table.schema.field(i)
    if pa.types.is_timestamp(field.type):  # edit timestamps as int64 nanoseconds
        values = table[column].cast(pa.int64()).to_pylist()
        values[row] = value
        return table.set_column(i, field, pa.array(values, pa.int64()).cast(field.type))
    values = table[column].to_pylist()
    values[row] = value
    return table.set_column(i, field, pa.array(values, field.type))


def first_row_of(table: pa.Table, strategy: str) -> int:
    return int(np.flatnonzero(pc.equal(table["strategy"], strategy).to_numpy(zero_copy_only=False))[0])


# ------------------------------------------------------------------ round trip


def test_round_trip(migrated: Store, result: PortfolioResult) -> None:
    pid = migrated.save_portfolio(result)
    assert len(pid) == 36 and uuid.UUID(pid)

    loaded = migrated.load_portfolio(pid)
    assert isinstance(loaded, StoredPortfolio) and loaded.portfolio_id == pid
    assert (loaded.name, loaded.capital, loaded.trade_hash) == (result.name, result.capital, result.trade_hash)
    assert loaded.metrics == json_like(result.metrics)
    assert loaded.strategy_metrics == json_like(result.strategy_metrics)
    assert loaded.correlation == result.correlation
    assert loaded.allocations == result.allocations
    assert loaded.settings == json_like(result.settings)
    assert loaded.strategies == list(result.strategies)  # portfolio order, not alphabetical
    assert loaded.strategy_types == {n: s["type"] for n, s in result.strategies.items()}
    assert loaded.final_equity == result.metrics["final_equity"]  # exact: NUMERIC gets the shortest repr
    assert loaded.total_return_pct == result.metrics["total_return_pct"]
    assert loaded.sharpe == result.metrics["sharpe"]
    assert loaded.max_drawdown_pct == result.metrics["max_drawdown_pct"]
    assert loaded.trades == result.trades.num_rows
    assert loaded.risk_rejections == result.metrics["risk_rejections"]
    assert loaded.breaker_trips == result.metrics["breaker_trips"]
    assert loaded.start_ts is not None and loaded.end_ts is not None
    assert int(loaded.start_ts.timestamp()) * 10**9 == result.equity["ts"][0].value
    assert int(loaded.end_ts.timestamp()) * 10**9 == result.equity["ts"][-1].value
    assert loaded.created_at.tzinfo is not None

    for name in ("equity", "events", "rejections", "snapshots"):
        got, want = getattr(loaded, name), getattr(result, name)
        assert got.schema == want.schema, name
        assert got.equals(want), name  # exact, order included
    assert "" in loaded.snapshots["strategy"].to_pylist()  # '' (the portfolio) is not turned into NULL

    for name, run_id in loaded.run_ids.items():
        run = migrated.load_backtest(run_id)
        sleeve = result.sleeve_result(name)
        assert run.trade_hash == sleeve.trade_hash
        assert run.fills.equals(sleeve.fills) and run.fills.num_rows
        assert run.trades.equals(sleeve.trades)
        assert run.equity.equals(sleeve.equity)
        assert (run.strategy_type, run.params, run.symbols, run.timeframe) == (
            sleeve.strategy_type,
            sleeve.params,
            sleeve.symbols,
            sleeve.timeframe,
        )
        assert (run.initial_cash, run.start_ns, run.end_ns) == (sleeve.initial_cash, sleeve.start_ns, sleeve.end_ns)
        assert run.metrics == json_like(sleeve.metrics)
        assert run.settings == sleeve.settings | {"portfolio_id": pid}
    assert {r["run_id"] for r in migrated.list_backtests()} == set(loaded.run_ids.values())

    (summary,) = migrated.list_portfolios()
    assert tuple(summary) == PORTFOLIO_SUMMARY_COLUMNS
    assert summary == loaded.summary()
    assert summary["strategies"] == ["sma", "brk"]


def test_undefined_figures_round_trip_as_nan_or_null(migrated: Store, result: PortfolioResult) -> None:
    nan, inf = math.nan, math.inf
    rejections = result.rejections
    rejections = with_value(rejections, "price", 0, nan)  # a market order rejected by the venue
    rejections = with_value(rejections, "value", 0, nan)
    rejections = with_value(rejections, "limit", 0, nan)
    rejections = with_value(rejections, "value", 1, inf)  # leverage against zero equity
    variant = dataclasses.replace(
        result,
        correlation={"sma": {"sma": 1.0, "brk": nan}, "brk": {"sma": nan, "brk": nan}},
        metrics=result.metrics | {"sharpe": nan, "calmar": inf},
        strategy_metrics=result.strategy_metrics | {"brk": result.strategy_metrics["brk"] | {"sortino": nan}},
        rejections=rejections,
    )
    loaded = migrated.load_portfolio(migrated.save_portfolio(variant))
    assert loaded.correlation["sma"]["sma"] == 1.0
    assert math.isnan(loaded.correlation["sma"]["brk"]) and math.isnan(loaded.correlation["brk"]["brk"])
    assert loaded.metrics["sharpe"] is None and loaded.metrics["calmar"] is None and loaded.sharpe is None
    assert loaded.strategy_metrics["brk"]["sortino"] is None
    want = with_value(rejections, "value", 1, nan)  # ±inf has no NUMERIC: stored as NULL like NaN
    assert_same_table(loaded.rejections, want)
    raw = migrated._migration_conn().query(  # test-only peek: NULL in the database, not a sentinel
        "SELECT price, value, limit_value FROM backtest_portfolio_rejections WHERE seq = 1"
    )
    assert raw == [(None, None, None)]


def test_summary_falls_back_to_the_tables(migrated: Store, result: PortfolioResult) -> None:
    dropped = ("final_equity", "total_return_pct", "trades", "risk_rejections", "breaker_trips")
    variant = dataclasses.replace(result, metrics={k: v for k, v in result.metrics.items() if k not in dropped})
    summary = migrated.load_portfolio(migrated.save_portfolio(variant)).summary()
    final = result.equity["equity"][-1].as_py()
    assert summary["final_equity"] == final
    assert summary["total_return_pct"] == pytest.approx((final / result.capital - 1) * 100, abs=1e-9)
    assert summary["trades"] == result.trades.num_rows
    assert summary["risk_rejections"] == result.metrics["risk_rejections"]  # venue rejections excluded
    assert summary["breaker_trips"] == result.metrics["breaker_trips"]


# ------------------------------------------------------------------ rejected results leave nothing behind


def _bad(result: PortfolioResult, case: str) -> PortfolioResult:
    r = result
    if case == "nan_equity":
        return dataclasses.replace(r, equity=with_value(r.equity, "equity", 5, math.nan))
    if case == "capital_over_numeric":
        return dataclasses.replace(r, capital=1e21)
    if case == "rejection_qty_over_numeric":
        return dataclasses.replace(r, rejections=with_value(r.rejections, "qty", 0, 1e20))
    if case == "snapshot_ts_not_us":
        ts = r.snapshots["ts"][3].value + 1
        return dataclasses.replace(r, snapshots=with_value(r.snapshots, "ts", 3, ts))
    if case == "duplicate_snapshot":
        return dataclasses.replace(r, snapshots=pa.concat_tables([r.snapshots, r.snapshots.slice(7, 1)]))
    if case == "event_not_json":
        return dataclasses.replace(r, events=with_value(r.events, "data", 2, "{oops"))
    if case == "nan_fill_price_second_sleeve":  # the first sleeve's run is valid: it must not be written either
        return dataclasses.replace(r, fills=with_value(r.fills, "price", first_row_of(r.fills, "brk"), math.nan))
    if case == "fill_of_unknown_strategy":
        return dataclasses.replace(r, fills=with_value(r.fills, "strategy", 0, "ghost"))
    if case == "missing_allocation":
        return dataclasses.replace(r, allocations={"sma": 50.0})
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "table", "column", "match"),
    [
        ("nan_equity", "backtest_portfolio_equity", "equity", "row 5 is nan"),
        ("capital_over_numeric", "backtest_portfolios", "capital", "exceeds NUMERIC"),
        ("rejection_qty_over_numeric", "backtest_portfolio_rejections", "qty", "beyond NUMERIC"),
        ("snapshot_ts_not_us", "backtest_portfolio_snapshots", "ts", "whole microsecond"),
        ("duplicate_snapshot", "backtest_portfolio_snapshots", "ts, strategy", "unique"),
        ("event_not_json", "backtest_portfolio_events", "data", "row 2 is not valid JSON"),
        ("nan_fill_price_second_sleeve", "backtest_fills", "price", "strategy 'brk': row 0 is nan"),
        ("fill_of_unknown_strategy", "backtest_portfolio_strategies", "strategy", "ghost"),
        ("missing_allocation", "backtest_portfolio_strategies", "allocation_pct", "'brk' has no allocation"),
    ],
)
def test_rejected_save_writes_nothing(
    migrated: Store, result: PortfolioResult, case: str, table: str, column: str, match: str
) -> None:
    with pytest.raises(StoreValueError, match=match) as info:
        migrated.save_portfolio(_bad(result, case))
    assert (info.value.table, info.value.column) == (table, column)
    assert "nothing was saved" in str(info.value)
    assert counts(migrated) == dict.fromkeys(ALL_TABLES, 0)


def test_database_failure_mid_save_rolls_back_sleeves_too(
    migrated: Store, result: PortfolioResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = migrated._insert_rows  # type: ignore[attr-defined]

    def failing(db_table: str, key_column: str, key: str, table: pa.Table) -> None:
        original(db_table, key_column, key, table)  # the rows really reach the database...
        if db_table == "backtest_portfolio_snapshots":
            raise RuntimeError("disk full")  # ...then the last table fails

    monkeypatch.setattr(migrated, "_insert_rows", failing)
    with pytest.raises(StoreError, match=r"nothing was saved.*disk full"):
        migrated.save_portfolio(result)
    assert counts(migrated) == dict.fromkeys(ALL_TABLES, 0)

    monkeypatch.undo()
    pid = migrated.save_portfolio(result)  # the store is usable afterwards
    assert migrated.load_portfolio(pid).snapshots.num_rows == result.snapshots.num_rows


def test_not_a_portfolio_result(migrated: Store) -> None:
    with pytest.raises(StoreError, match="needs a PortfolioResult"):
        migrated.save_portfolio(object())  # type: ignore[arg-type]


# ------------------------------------------------------------------ listing and lookup


def test_list_portfolios_newest_first_and_limit(migrated: Store, result: PortfolioResult) -> None:
    ids = [migrated.save_portfolio(dataclasses.replace(result, name=f"p{i}")) for i in range(3)]
    listed = migrated.list_portfolios()
    assert [r["portfolio_id"] for r in listed] == ids[::-1]
    assert [r["name"] for r in listed] == ["p2", "p1", "p0"]
    assert [r["portfolio_id"] for r in migrated.list_portfolios(limit=2)] == ids[:0:-1]
    assert len(migrated.list_backtests(limit=100)) == 6  # two sleeve runs per portfolio
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ParameterError) as info:
            migrated.list_portfolios(limit=bad)  # type: ignore[arg-type]
        assert info.value.field == "limit"


def test_unknown_portfolio_id(migrated: Store) -> None:
    assert migrated.list_portfolios() == []
    with pytest.raises(StoreError, match="no portfolio backtest with portfolio_id 'does-not-exist'"):
        migrated.load_portfolio("does-not-exist")
    with pytest.raises(StoreError, match="no portfolio backtest"):
        migrated.load_portfolio("")


# ------------------------------------------------------------------ migration 003


def test_migration_003_on_a_fresh_store(store: Store, result: PortfolioResult) -> None:
    assert MIGRATION in [s.name for s in store.status()]
    with pytest.raises(StoreError, match="tradectl db migrate"):
        store.save_portfolio(result)
    with pytest.raises(StoreError, match=MIGRATION):
        store.list_portfolios()

    assert MIGRATION in store.migrate()
    status = {s.name: s for s in store.status()}
    assert status[MIGRATION].applied and not status[MIGRATION].file_missing
    assert set(PORTFOLIO_TABLES) <= set(store.tables())


def test_migration_003_upgrades_a_store_with_backtests(store_url: str, tmp_path: Path, result: PortfolioResult) -> None:
    old = tmp_path / "migrations"
    for dialect in ("duckdb", "postgres"):
        (old / dialect).mkdir(parents=True)
        for name in ("001_backtests.sql", "002_sweeps.sql"):
            shutil.copy(default_migrations_dir() / dialect / name, old / dialect / name)
    with open_store(store_url, migrate=True, migrations_dir=old) as before:
        run_id = before.save_backtest(result.sleeve_result("sma"))
    with open_store(store_url) as s:
        later = [f.name for f in discover_migrations(s.dialect) if f.number >= 3]  # 003 and after
        assert later[0] == MIGRATION
        assert [st.name for st in s.status() if not st.applied] == later
        with pytest.raises(StoreError, match=MIGRATION):
            s.save_portfolio(result)
        assert s.migrate() == later
        s.load_portfolio(s.save_portfolio(result))
        assert s.load_backtest(run_id).trade_hash == result.sleeve_result("sma").trade_hash


def test_pg_portfolio_equity_table_and_index(pg_schema_url: str) -> None:
    with open_store(pg_schema_url, migrate=True):
        pass
    with psycopg.connect(pg_schema_url, autocommit=True) as conn:
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
        ts_index = conn.execute(
            "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() "
            "AND indexname = 'backtest_portfolio_equity_ts_idx'"
        ).fetchone()
        data_type = conn.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'backtest_portfolio_events' AND column_name = 'data'"
        ).fetchone()
    assert data_type == ("json",)  # not jsonb: the event's text is kept exactly
    if available is None:
        assert ts_index is not None  # the plain-table fallback indexes ts
