"""Store URLs, and saving/loading backtests on DuckDB and a real PostgreSQL database."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from engine.backtest.result import EQUITY_SCHEMA, FILLS_SCHEMA, TRADES_SCHEMA, TS, BacktestResult
from engine.errors import ParameterError, StoreError
from engine.store import Store, StoreURL, StoreValueError, open_store, parse_store_url, resolve_store_url
from engine.store.duckdb_store import DuckDBStore

HOUR_NS = 3_600_000_000_000
T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
TOL = 1e-9
ALL_TABLES = ("backtest_runs", "backtest_fills", "backtest_trades", "backtest_equity")


# ------------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    ("url", "dialect", "target"),
    [
        ("postgresql://u:p@db.example:5432/trade", "postgres", "postgresql://u:p@db.example:5432/trade"),
        ("postgres://localhost/trade", "postgres", "postgres://localhost/trade"),
        (
            "POSTGRESQL://localhost/trade?sslmode=disable",
            "postgres",
            "postgresql://localhost/trade?sslmode=disable",
        ),
        ("duckdb:///abs/dir/x.duckdb", "duckdb", "/abs/dir/x.duckdb"),
        ("duckdb://rel/x.duckdb", "duckdb", "rel/x.duckdb"),
        ("duckdb://:memory:", "duckdb", ":memory:"),
        (":memory:", "duckdb", ":memory:"),
        ("data/engine.duckdb", "duckdb", "data/engine.duckdb"),
        ("/var/lib/trade/engine.duckdb", "duckdb", "/var/lib/trade/engine.duckdb"),
        ("  spaced.duckdb  ", "duckdb", "spaced.duckdb"),
        ("~/x.duckdb", "duckdb", str(Path("~/x.duckdb").expanduser())),
        ("C:\\trade\\engine.duckdb", "duckdb", "C:\\trade\\engine.duckdb"),
    ],
)
def test_parse_store_url(url: str, dialect: str, target: str) -> None:
    parsed = parse_store_url(url)
    assert (parsed.dialect, parsed.target, parsed.is_default) == (dialect, target, False)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u@h/db",
        "sqlite:///x.db",
        "file:///x.duckdb",
        "",
        "   ",
        "duckdb://",
        "postgresql://h/db?bogus_option=1",
        "postgres://[::1/db",
    ],
)
def test_parse_store_url_rejects(url: str) -> None:
    with pytest.raises(ParameterError) as info:
        parse_store_url(url)
    assert info.value.field == "db"


def test_redacted_url_hides_password() -> None:
    assert parse_store_url("postgresql://me:s3cret@h:5/db").redacted() == "postgresql://me:***@h:5/db"
    assert parse_store_url("postgres://h/db").redacted() == "postgres://h/db"
    assert parse_store_url("x.duckdb").redacted() == "duckdb://x.duckdb"
    with pytest.raises(ParameterError) as info:
        parse_store_url("mysql://me:s3cret@h/db")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "data_dir", "env", "expected"),
    [
        (None, None, {}, StoreURL("duckdb", "data/engine.duckdb", is_default=True)),
        (
            None,
            None,
            {"TRADE_DATA_DIR": "/srv/d"},
            StoreURL("duckdb", "/srv/d/engine.duckdb", is_default=True),
        ),
        (
            None,
            "/arg",
            {"TRADE_DATA_DIR": "/srv/d"},
            StoreURL("duckdb", "/arg/engine.duckdb", is_default=True),
        ),
        (None, "/arg", {"TRADE_DB_URL": "postgres://h/db"}, StoreURL("postgres", "postgres://h/db")),
        ("x.duckdb", None, {"TRADE_DB_URL": "postgres://h/db"}, StoreURL("duckdb", "x.duckdb")),
        (
            None,
            None,
            {"TRADE_DB_URL": "", "TRADE_DATA_DIR": ""},
            StoreURL("duckdb", "data/engine.duckdb", True),
        ),
        (None, None, {"TRADE_DB_URL": "duckdb://:memory:"}, StoreURL("duckdb", ":memory:")),
    ],
)
def test_resolve_store_url_fallbacks(
    monkeypatch: pytest.MonkeyPatch,
    url: str | None,
    data_dir: str | None,
    env: dict[str, str],
    expected: StoreURL,
) -> None:
    monkeypatch.delenv("TRADE_DB_URL", raising=False)
    monkeypatch.delenv("TRADE_DATA_DIR", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert resolve_store_url(url, data_dir) == expected
    assert resolve_store_url(url, data_dir, env=env) == expected  # an explicit mapping works the same


def test_resolve_store_url_rejects_bad_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADE_DB_URL", "mysql://h/db")
    with pytest.raises(ParameterError, match="unsupported URL scheme 'mysql://'"):
        open_store()


def test_open_store_default_creates_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TRADE_DB_URL", raising=False)
    monkeypatch.delenv("TRADE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with open_store() as store:
        assert isinstance(store, DuckDBStore)
        assert store.url.is_default
    assert (tmp_path / "data" / "engine.duckdb").is_file()

    monkeypatch.setenv("TRADE_DATA_DIR", str(tmp_path / "env" / "nested"))
    with open_store() as store:
        assert store.url.target == str(tmp_path / "env" / "nested" / "engine.duckdb")
    with open_store(data_dir=tmp_path / "arg") as store:
        assert store.url.target == str(tmp_path / "arg" / "engine.duckdb")
    assert (tmp_path / "env" / "nested" / "engine.duckdb").is_file()
    assert (tmp_path / "arg" / "engine.duckdb").is_file()


def test_open_store_errors(tmp_path: Path) -> None:
    with pytest.raises(ParameterError) as info:
        open_store("mysql://root@localhost/trade")
    assert info.value.field == "db"
    with pytest.raises(StoreError, match="does not exist"):
        open_store(str(tmp_path / "missing" / "x.duckdb"))
    with pytest.raises(StoreError, match="cannot connect") as err:
        open_store("postgresql://me:s3cret@127.0.0.1:1/nope?connect_timeout=2")
    assert "s3cret" not in str(err.value)


def test_in_memory_store_and_close() -> None:
    store = open_store("duckdb://:memory:", migrate=True)
    with store:
        run_id = store.save_backtest(make_result())
        assert store.load_backtest(run_id).run_id == run_id
    assert store.closed
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.list_backtests()


# ------------------------------------------------------------------ a hand-built result


def make_result(n_equity: int = 4, **overrides: Any) -> BacktestResult:
    ts = [T0 + i * HOUR_NS for i in range(n_equity)]
    fills = pa.table(
        {
            "fill_id": [1, 2, 3],
            "order_id": [10, 11, 12],
            "ts": pa.array([ts[1], ts[2], ts[2]], TS),
            "symbol": ["BTCUSDT", "BTCUSDT", "ETHUSDT"],
            "side": pa.array([1, -1, -1], pa.int8()),
            "qty": [0.1 + 0.2, 0.30000000000000004, 1.5],
            "price": [12345.678901234567, 12400.5, 2000.25],
            "fee": [0.0037037036703703, 0.00372015, 0.0],
            "liquidity": ["taker", "maker", None],
            "realized_pnl": [0.0, 16.446329629629, 0.0],
            "tag": ["entry", "", None],
        },
        schema=FILLS_SCHEMA,
    )
    trades = pa.table(
        {
            "trade_id": [1],
            "symbol": ["BTCUSDT"],
            "side": pa.array([1], pa.int8()),
            "qty": [0.1 + 0.2],
            "entry_ts": pa.array([ts[1]], TS),
            "exit_ts": pa.array([ts[2]], TS),
            "entry_price": [12345.678901234567],
            "exit_price": [12400.5],
            "gross_pnl": [16.446329629629],
            "fees": [0.0074238536703703],
            "funding": [-0.0123],
            "net_pnl": [16.426605775958],
            "bars_held": [1],
        },
        schema=TRADES_SCHEMA,
    )
    cash = [10_000.0 - i * 0.1 for i in range(n_equity)]
    pos = [0.0, 0.1 + 0.2, -123.456789012345, 0.0] + [1e-9] * max(0, n_equity - 4)
    equity = pa.table(
        {
            "ts": pa.array(ts, TS),
            "cash": cash,
            "position_value": pos[:n_equity],
            "equity": [c + p for c, p in zip(cash, pos[:n_equity], strict=True)],
            "gross_exposure": ([0.0, 3703.7036703703, 12345.678901234567] + [0.0] * n_equity)[:n_equity],
        },
        schema=EQUITY_SCHEMA,
    )
    fields: dict[str, Any] = {
        "strategy_type": "sma_cross",
        "params": {
            "fast": 10,
            "slow": 30.5,
            "use_filter": True,
            "symbols": ["BTCUSDT"],
            "nested": {"x": None},
        },
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "timeframe": "1h",
        "start_ns": ts[0],
        "end_ns": ts[-1],
        "data_path": "/data/binance_usdm_perp_1h.parquet",
        "initial_cash": 10_000.0,
        "metrics": {
            "total_return_pct": 0.16426605775958,
            "sharpe": 1.2345678901234,
            "max_drawdown_pct": 3.5,
            "win_rate": 1.0,
            "n_trades": 1,
        },
        "fills": fills,
        "trades": trades,
        "equity": equity,
        "trade_hash": "9f" * 32,
        "settings": {"fee_rate": 0.0003, "slippage_bps": 1.5, "leverage": 3},
    }
    fields.update(overrides)
    return BacktestResult(**fields)


def assert_tables_close(got: pa.Table, want: pa.Table) -> None:
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    for field in want.schema:
        g, w = got[field.name], want[field.name]
        if pa.types.is_floating(field.type):
            np.testing.assert_allclose(g.to_numpy(), w.to_numpy(), rtol=0, atol=TOL, err_msg=field.name)
        else:
            assert g.to_pylist() == w.to_pylist(), field.name


def run_count(store: Store, table: str = "backtest_runs") -> int:
    conn = store._migration_conn()  # test-only peek at raw row counts
    return int(conn.query(f"SELECT count(*) FROM {table}")[0][0])


@pytest.fixture
def migrated(store: Store) -> Store:
    store.migrate()
    return store


# ------------------------------------------------------------------ round trip


def test_round_trip(migrated: Store) -> None:
    result = make_result()
    run_id = migrated.save_backtest(result)
    assert result.run_id == run_id and len(run_id) == 36  # uuid4 string assigned on success

    loaded = migrated.load_backtest(run_id)
    assert loaded.run_id == run_id
    assert_tables_close(loaded.fills, result.fills)
    assert_tables_close(loaded.trades, result.trades)
    assert_tables_close(loaded.equity, result.equity)
    assert loaded.fills["qty"][0].as_py() == pytest.approx(0.1 + 0.2, abs=TOL)
    assert loaded.trades["entry_price"][0].as_py() == pytest.approx(12345.678901234567, abs=TOL)
    for name in (
        "strategy_type", "params", "symbols", "timeframe", "start_ns", "end_ns",
        "data_path", "initial_cash", "metrics", "trade_hash", "settings",
    ):  # fmt: skip
        assert getattr(loaded, name) == getattr(result, name), name
    assert isinstance(loaded.params["fast"], int) and isinstance(loaded.params["use_filter"], bool)

    (summary,) = migrated.list_backtests()
    assert summary["run_id"] == run_id
    assert summary["strategy_type"] == "sma_cross"
    assert summary["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert summary["start_ts"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert summary["created_at"].tzinfo is not None
    assert summary["trades"] == 1
    assert summary["sharpe"] == pytest.approx(1.2345678901234, abs=TOL)
    assert summary["total_return_pct"] == pytest.approx(0.16426605775958, abs=TOL)
    assert summary["max_drawdown_pct"] == pytest.approx(3.5)
    assert summary["final_equity"] == pytest.approx(result.equity["equity"][-1].as_py(), abs=TOL)
    assert summary["fees_paid"] == pytest.approx(0.0037037036703703 + 0.00372015, abs=TOL)
    assert summary["funding_paid"] == pytest.approx(0.0123, abs=TOL)  # paid 0.0123 (trades.funding < 0)
    assert summary["initial_cash"] == 10_000.0


def test_round_trip_of_empty_tables(migrated: Store) -> None:
    result = make_result(
        fills=FILLS_SCHEMA.empty_table(),
        trades=TRADES_SCHEMA.empty_table(),
        equity=EQUITY_SCHEMA.empty_table(),
    )
    loaded = migrated.load_backtest(migrated.save_backtest(result))
    assert loaded.fills.schema == FILLS_SCHEMA and loaded.fills.num_rows == 0
    assert loaded.trades.schema == TRADES_SCHEMA and loaded.trades.num_rows == 0
    assert loaded.equity.schema == EQUITY_SCHEMA and loaded.equity.num_rows == 0
    (summary,) = migrated.list_backtests()
    assert summary["trades"] == 0 and summary["fees_paid"] == 0.0


def test_explicit_run_id_and_duplicates(migrated: Store) -> None:
    assert migrated.save_backtest(make_result(run_id="my-run")) == "my-run"
    with pytest.raises(StoreError, match="already stored"):
        migrated.save_backtest(make_result(run_id="my-run"))
    assert run_count(migrated) == 1
    assert run_count(migrated, "backtest_fills") == 3


def test_non_finite_metrics_are_stored_as_null(migrated: Store) -> None:
    metrics = {"sharpe": float("nan"), "max_drawdown_pct": float("inf"), "total_return_pct": None}
    result = make_result(metrics=metrics)
    loaded = migrated.load_backtest(migrated.save_backtest(result))
    assert loaded.metrics == {"sharpe": None, "max_drawdown_pct": None, "total_return_pct": None}
    (summary,) = migrated.list_backtests()
    assert summary["sharpe"] is None and summary["max_drawdown_pct"] is None
    # total_return_pct falls back to the equity curve.
    final = result.equity["equity"][-1].as_py()
    assert summary["total_return_pct"] == pytest.approx((final / 10_000.0 - 1) * 100, abs=TOL)


def test_list_backtests_newest_first_and_limit(migrated: Store) -> None:
    ids = [migrated.save_backtest(make_result(strategy_type=f"s{i}")) for i in range(3)]
    listed = migrated.list_backtests()
    assert [r["run_id"] for r in listed] == ids[::-1]
    assert [r["run_id"] for r in migrated.list_backtests(limit=2)] == ids[:0:-1]
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ParameterError) as info:
            migrated.list_backtests(limit=bad)  # type: ignore[arg-type]
        assert info.value.field == "limit"


def test_load_unknown_run(migrated: Store) -> None:
    with pytest.raises(StoreError, match="no backtest with run_id 'does-not-exist'"):
        migrated.load_backtest("does-not-exist")


# ------------------------------------------------------------------ rejected results leave nothing behind


def _with_value(table: pa.Table, column: str, row: int, value: Any) -> pa.Table:
    i = table.schema.get_field_index(column)
    field = table.schema.field(i)
    if pa.types.is_timestamp(field.type):  # edit timestamps as int64 nanoseconds
        values = table[column].cast(pa.int64()).to_pylist()
        values[row] = value
        return table.set_column(i, field, pa.array(values, pa.int64()).cast(field.type))
    values = table[column].to_pylist()
    values[row] = value
    return table.set_column(i, field, pa.array(values, field.type))


@pytest.mark.parametrize(
    ("attr", "db_table", "column", "value", "match"),
    [
        ("equity", "backtest_equity", "equity", math.nan, "row 2 is nan"),
        ("equity", "backtest_equity", "cash", math.inf, "row 2 is inf"),
        ("fills", "backtest_fills", "price", -math.inf, "row 2 is -inf"),
        ("trades", "backtest_trades", "net_pnl", math.nan, "row 0 is nan"),
        ("fills", "backtest_fills", "qty", None, "null"),
        ("fills", "backtest_fills", "qty", 1e21, "beyond NUMERIC"),
        ("fills", "backtest_fills", "side", 0, "must be \\+1 or -1"),
        ("fills", "backtest_fills", "fill_id", 1, "unique"),
        ("equity", "backtest_equity", "ts", T0 + 1, "whole microsecond"),
    ],
)
def test_invalid_values_save_nothing(
    migrated: Store, attr: str, db_table: str, column: str, value: Any, match: str
) -> None:
    migrated.save_backtest(make_result())
    before = {t: run_count(migrated, t) for t in ALL_TABLES}
    table = getattr(make_result(), attr)
    row = 0 if attr == "trades" else 2
    bad = make_result(**{attr: _with_value(table, column, min(row, table.num_rows - 1), value)})
    with pytest.raises(StoreValueError, match=match) as info:
        migrated.save_backtest(bad)
    assert (info.value.table, info.value.column) == (db_table, column)
    assert f"{db_table}.{column}" in str(info.value)
    assert bad.run_id is None
    after = {t: run_count(migrated, t) for t in before}
    assert after == before
    assert len(migrated.list_backtests()) == 1


@pytest.mark.parametrize(
    ("overrides", "column"),
    [
        ({"initial_cash": math.nan}, "initial_cash"),
        ({"start_ns": T0 + 5}, "start_ts"),
        ({"strategy_type": ""}, "strategy_type"),
        ({"params": {"f": object()}}, "params"),
        ({"symbols": ["BTCUSDT", 3]}, "symbols"),
    ],
)
def test_invalid_run_fields_save_nothing(migrated: Store, overrides: dict[str, Any], column: str) -> None:
    with pytest.raises(StoreValueError) as info:
        migrated.save_backtest(make_result(**overrides))
    assert (info.value.table, info.value.column) == ("backtest_runs", column)
    assert run_count(migrated) == 0


def test_missing_or_extra_columns_are_rejected(migrated: Store) -> None:
    fills = make_result().fills
    with pytest.raises(StoreValueError, match=r"backtest_fills\.tag: column is missing"):
        migrated.save_backtest(make_result(fills=fills.drop_columns(["tag"])))
    with pytest.raises(StoreValueError, match=r"backtest_fills\.oops: unknown column"):
        migrated.save_backtest(make_result(fills=fills.append_column("oops", pa.array([1, 2, 3]))))
    assert run_count(migrated) == 0


def test_database_failure_mid_save_rolls_back(migrated: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    original = migrated._insert_table  # type: ignore[attr-defined]

    def failing(db_table: str, run_id: str, table: pa.Table) -> None:
        original(db_table, run_id, table)  # the row really reaches the database...
        if db_table == "backtest_equity":
            raise RuntimeError("disk full")  # ...then the last table fails

    monkeypatch.setattr(migrated, "_insert_table", failing)
    result = make_result()
    with pytest.raises(StoreError, match=r"nothing was saved.*disk full"):
        migrated.save_backtest(result)
    assert result.run_id is None
    for table in ALL_TABLES:
        assert run_count(migrated, table) == 0, table

    monkeypatch.undo()
    run_id = migrated.save_backtest(result)  # the store is usable afterwards
    assert migrated.load_backtest(run_id).equity.num_rows == 4


def test_larger_tables_round_trip(migrated: Store) -> None:
    n = 5_000
    rng = np.random.default_rng(7)
    ts = pa.array(T0 + np.arange(n, dtype=np.int64) * 60_000_000_000, TS)
    values = np.round(rng.lognormal(8, 2, size=(4, n)), 8)
    equity = pa.table(
        {
            "ts": ts,
            "cash": values[0],
            "position_value": -values[1],
            "equity": values[2],
            "gross_exposure": values[3],
        },
        schema=EQUITY_SCHEMA,
    )
    result = make_result(equity=equity)
    loaded = migrated.load_backtest(migrated.save_backtest(result))
    assert_tables_close(loaded.equity, equity)
    assert loaded.equity.equals(equity)  # exact: shortest-repr text is how floats reach NUMERIC
