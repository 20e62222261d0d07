"""``tradectl``: strategies list/show, backtests on real data into DuckDB and PostgreSQL, ``db``
migrate/status, and bad input (exit 2, one ``error:`` line on stderr, no traceback, nothing stored).

The CLI runs in-process through ``engine.cli.main`` (captured with capsys); a few cases go through
``python -m engine.cli`` in a subprocess to prove that stderr holds no traceback."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from engine.cli import main
from engine.store import discover_migrations, open_store

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GOOG = DATA / "backtestingpy_GOOG_daily_2004_2013.csv"
PERP_1H = DATA / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"
FUNDING = DATA / "binance_usdm_funding_rates_40sym_2019_2026.parquet"
MARKS_1H = DATA / "binance_usdm_mark_1h_10sym_2025-05-01_2026-05-07.parquet"

GOOG_ARGS = [
    "backtest", "sma_crossover", "--data", str(GOOG), "--symbols", "GOOG", "--param", "fast=10",
    "--param", "slow=30", "--lot-size", "1", "--fee-bps", "10", "--json",
]
METRIC_KEYS = {
    "final_equity", "total_return_pct", "annual_return_pct", "sharpe", "sortino", "max_drawdown_pct",
    "trades", "win_rate", "profit_factor", "fees_paid", "funding_paid",
}
ENV_VARS = ("TRADE_STRATEGY_PATHS", "TRADE_DB_URL", "TRADE_DATA_DIR")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No plugin folders or store from the caller's environment; the default store lives in tmp_path."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRADE_DATA_DIR", str(tmp_path / "default_data"))


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_subprocess(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["TRADE_DATA_DIR"] = str(cwd / "default_data")
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *argv], capture_output=True, text=True, env=env, cwd=cwd,
        timeout=120, check=False,
    )


def stored_runs(url: str) -> list[dict[str, Any]]:
    with open_store(url) as store:
        return store.list_backtests(limit=1000)


def assert_one_error_line(code: int, out: str, err: str, *fragments: str) -> str:
    assert code == 2, (code, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert out == ""
    return lines[0]


def check_metrics(payload: dict[str, Any]) -> None:
    assert payload.keys() >= METRIC_KEYS | {"run_id"}
    for key in METRIC_KEYS - {"trades"}:
        assert isinstance(payload[key], float) and math.isfinite(payload[key]), key
    assert isinstance(payload["trades"], int) and payload["trades"] > 0
    assert 0.0 <= payload["win_rate"] <= 100.0
    assert payload["max_drawdown_pct"] >= 0.0
    assert payload["total_return_pct"] == pytest.approx((payload["final_equity"] / 100_000.0 - 1.0) * 100.0)


# ---------------------------------------------------------------------- strategies
def test_strategies_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "strategies", "list", "--json")
    assert code == 0 and err == ""
    catalog = orjson.loads(out)
    assert isinstance(catalog, list)
    types = [entry["type"] for entry in catalog]
    assert {"sma_crossover", "ema_crossover"} <= set(types)
    assert types == sorted(types)
    for entry in catalog:
        assert isinstance(entry, dict)
        assert entry.keys() >= {"type", "display_name", "version", "description", "parameters_schema"}
        assert entry["parameters_schema"]["type"] == "object"
        assert entry["parameters_schema"]["properties"]


def test_strategies_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "strategies", "list")
    assert code == 0 and err == ""
    assert "strategy plugins" in out and "SMA" in out


def test_strategies_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "strategies", "show", "sma_crossover")
    assert code == 0 and err == ""
    meta = orjson.loads(out)
    assert meta["type"] == "sma_crossover"
    assert meta["version"] and meta["display_name"] and meta["description"]
    assert Path(meta["file"]).name == "sma_crossover.py"
    props = meta["parameters_schema"]["properties"]
    assert props["fast"]["type"] == "integer" and props["fast"]["default"] == 10
    assert props["slow"]["default"] == 30


def test_strategies_show_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "strategies", "show", "nope")
    assert_one_error_line(code, out, err, "unknown strategy type 'nope'", "sma_crossover", "ema_crossover")


def test_strategies_show_unknown_subprocess(tmp_path: Path) -> None:
    proc = run_subprocess("strategies", "show", "nope", cwd=tmp_path)
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, "unknown strategy type 'nope'")


def test_strategies_dir_option_loads_extra_plugins_and_warns(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "extra.py").write_text(
        "from engine.strategy.base import Strategy\n\n\n"
        "class Extra(Strategy):\n"
        "    type = 'extra_plugin'\n    display_name = 'Extra'\n    description = 'd'\n"
        "    version = '0.1.0'\n    author = 'tests'\n\n"
        "    def on_bar(self, bar):\n        pass\n"
    )
    (folder / "broken.py").write_text("raise ValueError('nope')\n")
    code, out, err = cli(capsys, "--strategies-dir", str(folder), "strategies", "list", "--json")
    assert code == 0
    assert "extra_plugin" in {e["type"] for e in orjson.loads(out)}
    assert err.splitlines() == [f"warning: plugin {folder / 'broken.py'}: import failed: ValueError: nope (line 1)"]


# ---------------------------------------------------------------------- backtests
def test_backtest_goog_duckdb_and_outputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "runs.duckdb"
    out_dir = tmp_path / "report"
    code, out, err = cli(capsys, *GOOG_ARGS, "--db", str(db), "--out", str(out_dir))
    assert code == 0, err
    assert "Traceback" not in err
    lines = out.splitlines()
    assert len(lines) == 1
    payload = orjson.loads(lines[0])
    assert isinstance(payload, dict)
    check_metrics(payload)
    assert payload["funding_paid"] == 0.0
    assert payload["fees_paid"] > 0.0
    run_id = payload["run_id"]
    assert isinstance(run_id, str) and run_id

    runs = stored_runs(str(db))
    assert [r["run_id"] for r in runs] == [run_id]
    row = runs[0]
    assert row["strategy_type"] == "sma_crossover"
    assert row["symbols"] == ["GOOG"]
    assert row["trades"] == payload["trades"]
    assert row["final_equity"] == pytest.approx(payload["final_equity"], rel=1e-12)
    assert row["fees_paid"] == pytest.approx(payload["fees_paid"], rel=1e-12)
    assert row["trade_hash"] == payload["trade_hash"]

    for name in ("trades.parquet", "equity.parquet", "metrics.json", "report.png"):
        assert (out_dir / name).stat().st_size > 0, name
    assert (out_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = orjson.loads((out_dir / "metrics.json").read_bytes())
    assert metrics["run_id"] == run_id
    assert metrics["metrics"]["final_equity"] == payload["final_equity"]
    assert pq.read_table(out_dir / "trades.parquet").num_rows == payload["trades"]
    equity = pq.read_table(out_dir / "equity.parquet")
    assert equity.num_rows == payload["bars"]


def test_backtest_goog_is_deterministic_and_appends_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "runs.duckdb"
    first = orjson.loads(cli(capsys, *GOOG_ARGS, "--db", str(db))[1])
    second = orjson.loads(cli(capsys, *GOOG_ARGS, "--db", f"duckdb://{db}")[1])
    assert first["trade_hash"] == second["trade_hash"]
    assert first["final_equity"] == second["final_equity"]
    assert first["run_id"] != second["run_id"]
    assert {r["run_id"] for r in stored_runs(str(db))} == {first["run_id"], second["run_id"]}


def test_backtest_params_json_equals_param_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = [a for a in GOOG_ARGS if a not in ("--param", "fast=10", "slow=30")]
    code, out, err = cli(capsys, *args, "--params", '{"fast": 10, "slow": 30}', "--no-store")
    assert code == 0, err
    via_json = orjson.loads(out)
    flags = orjson.loads(cli(capsys, *GOOG_ARGS, "--no-store")[1])
    assert via_json["trade_hash"] == flags["trade_hash"]
    assert via_json["run_id"] is None and flags["run_id"] is None


def test_backtest_default_store_is_under_trade_data_dir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = cli(capsys, *GOOG_ARGS)
    assert code == 0, err
    run_id = orjson.loads(out)["run_id"]
    default = tmp_path / "default_data" / "engine.duckdb"
    assert [r["run_id"] for r in stored_runs(str(default))] == [run_id]


def test_backtest_table_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = [a for a in GOOG_ARGS if a != "--json"]
    code, out, err = cli(capsys, *args, "--db", str(tmp_path / "t.duckdb"))
    assert code == 0, err
    assert "final equity" in out and "stored as run" in out


def test_backtest_subprocess_no_traceback(tmp_path: Path) -> None:
    db = tmp_path / "sub.duckdb"
    proc = run_subprocess(*GOOG_ARGS, "--db", str(db), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    payload = orjson.loads(proc.stdout)
    check_metrics(payload)
    assert [r["run_id"] for r in stored_runs(str(db))] == [payload["run_id"]]


def test_backtest_goog_postgres(capsys: pytest.CaptureFixture[str], pg_url: str) -> None:
    code, out, err = cli(capsys, *GOOG_ARGS, "--db", pg_url)
    assert code == 0, err
    payload = orjson.loads(out)
    check_metrics(payload)
    runs = {r["run_id"]: r for r in stored_runs(pg_url)}
    assert payload["run_id"] in runs
    row = runs[payload["run_id"]]
    assert row["strategy_type"] == "sma_crossover" and row["symbols"] == ["GOOG"]
    assert row["trades"] == payload["trades"]
    assert row["final_equity"] == pytest.approx(payload["final_equity"], rel=1e-12)
    with open_store(pg_url) as store:
        loaded = store.load_backtest(payload["run_id"])
    assert loaded.trade_hash == payload["trade_hash"]
    assert loaded.trades.num_rows == payload["trades"]


def test_backtest_perpetual_with_funding(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = cli(
        capsys, "backtest", "sma_crossover", "--data", str(PERP_1H), "--symbols", "BTCUSDT",
        "--funding", str(FUNDING), "--marks", str(MARKS_1H), "--param", "fast=24", "--param", "slow=120",
        "--fee-bps", "4", "--lot-size", "0.001", "--json", "--no-store", "--out", str(tmp_path / "perp"),
    )
    assert code == 0, err
    payload = orjson.loads(out)
    check_metrics(payload)
    assert payload["funding_paid"] != 0.0
    assert payload["fees_paid"] > 0.0
    assert payload["run_id"] is None
    assert payload["periods_per_year"] == pytest.approx(8766.0)
    funding = pq.read_table(tmp_path / "perp" / "funding.parquet")
    assert funding.num_rows > 0
    assert not (tmp_path / "default_data").exists()  # --no-store: no store opened


# ---------------------------------------------------------------------- db
def test_db_migrate_and_status_duckdb(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = str(tmp_path / "m.duckdb")
    code, out, err = cli(capsys, "db", "status", "--db", db)
    assert code == 0 and err == ""
    assert "001_backtests\tpending" in out.splitlines()

    code, out, err = cli(capsys, "db", "migrate", "--db", db)
    assert code == 0 and err == ""
    assert out.strip() == "applied: " + ", ".join(f.name for f in discover_migrations("duckdb"))

    code, out, err = cli(capsys, "db", "status", "--db", db)
    assert code == 0 and err == ""
    rows = dict(line.split("\t") for line in out.splitlines())
    assert "001_backtests" in rows and rows["001_backtests"] != "pending"
    assert all(state != "pending" for state in rows.values())

    code, out, err = cli(capsys, "db", "migrate", "--db", db)
    assert code == 0 and err == ""
    assert "nothing" in out and "001_backtests" not in out
    assert stored_runs(db) == []


def test_db_migrate_and_status_postgres(capsys: pytest.CaptureFixture[str], pg_schema_url: str) -> None:
    code, out, _ = cli(capsys, "db", "migrate", "--db", pg_schema_url)
    assert code == 0 and "001_backtests" in out
    code, out, _ = cli(capsys, "db", "status", "--db", pg_schema_url)
    assert code == 0
    assert out.splitlines()[0].startswith("001_backtests\t") and "pending" not in out
    code, out, _ = cli(capsys, "db", "migrate", "--db", pg_schema_url)
    assert code == 0 and "nothing" in out


def test_db_bad_url(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "db", "status", "--db", "mysql://host/db")
    assert_one_error_line(code, out, err, "'db'")


# ---------------------------------------------------------------------- bad input
def goog_rows(n: int = 60) -> list[list[str]]:
    with GOOG.open(newline="") as fh:
        return list(csv.reader(fh))[: n + 1]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def high_below_low(tmp: Path) -> Path:
    rows = goog_rows()
    header = rows[0]
    hi, lo = header.index("High"), header.index("Low")
    row = rows[25]
    assert float(row[hi]) > float(row[lo])
    row[hi], row[lo] = row[lo], row[hi]
    return write_csv(tmp / "high_below_low.csv", rows)


def missing_column(tmp: Path) -> Path:
    rows = goog_rows()
    lo = rows[0].index("Low")
    return write_csv(tmp / "no_low.csv", [r[:lo] + r[lo + 1 :] for r in rows])


def non_numeric(tmp: Path) -> Path:
    rows = goog_rows()
    rows[10][rows[0].index("Close")] = "abc"
    return write_csv(tmp / "non_numeric.csv", rows)


def duplicate_ts(tmp: Path) -> Path:
    rows = goog_rows()
    rows.insert(31, list(rows[30]))
    return write_csv(tmp / "duplicate.csv", rows)


def nan_close_parquet(tmp: Path) -> Path:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pq.read_table(PERP_1H, filters=[("symbol", "=", "BTCUSDT")]).slice(0, 300)
    close = table.column("close").to_pylist()
    close[150] = float("nan")
    table = table.set_column(table.schema.get_field_index("close"), "close", pa.array(close, pa.float64()))
    assert pc.sum(pc.is_nan(table.column("close"))).as_py() == 1
    path = tmp / "nan_close.parquet"
    pq.write_table(table, path)
    return path


FILE_CASES = {
    "high_below_low": (high_below_low, ("high", "low")),
    "missing_column": (missing_column, ("'low'", "missing")),
    "non_numeric": (non_numeric, ("'close'", "numeric")),
    "duplicate_ts": (duplicate_ts, ("duplicate timestamp",)),
    "nan_close": (nan_close_parquet, ("'close'",)),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_malformed_data_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str) -> None:
    make, fragments = FILE_CASES[case]
    path = make(tmp_path)
    db = tmp_path / "bad.duckdb"
    code, out, err = cli(
        capsys, "backtest", "sma_crossover", "--data", str(path), "--param", "fast=2", "--param", "slow=5",
        "--json", "--db", str(db), "--out", str(tmp_path / "out"),
    )
    assert_one_error_line(code, out, err, str(path), *fragments)
    assert_nothing_stored(db)
    assert not (tmp_path / "out").exists()


def assert_nothing_stored(db: Path) -> None:
    assert not db.exists() or stored_runs(str(db)) == []


GOOG_BASE = ["backtest", "sma_crossover", "--data", str(GOOG), "--json"]
BAD_ARGS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "missing_file": (
        ["backtest", "sma_crossover", "--data", str(DATA / "no_such_file.csv")], ("no_such_file.csv", "not found"),
    ),
    "unknown_type": (["backtest", "nope", "--data", str(GOOG)], ("unknown strategy type 'nope'", "sma_crossover")),
    "fast_zero": ([*GOOG_BASE, "--param", "fast=0"], ("'fast'", "greater than or equal to 1")),
    "fast_abc": ([*GOOG_BASE, "--param", "fast=abc"], ("'fast'", "integer")),
    "bogus_param": ([*GOOG_BASE, "--param", "bogus=1"], ("'bogus'", "unknown parameter")),
    "fast_not_below_slow": ([*GOOG_BASE, "--param", "fast=40"], ("fast (40) must be smaller than slow (30)",)),
    "param_without_value": ([*GOOG_BASE, "--param", "fast"], ("--param", "key=value")),
    "params_not_json": ([*GOOG_BASE, "--params", "{fast: 1"], ("--params", "JSON object")),
    "params_not_object": ([*GOOG_BASE, "--params", "[1, 2]"], ("--params", "JSON object")),
    "start_after_end": ([*GOOG_BASE, "--start", "2010-01-01", "--end", "2009-01-01"], ("start", "before end")),
    "start_after_last_bar": ([*GOOG_BASE, "--start", "2020-01-01"], ("'start'", "after the last bar")),
    "bad_start": ([*GOOG_BASE, "--start", "not-a-date"], ("'start'",)),
    "unknown_symbol": (
        ["backtest", "sma_crossover", "--data", str(PERP_1H), "--symbols", "BTCUSDT,NOPEUSDT"],
        ("'symbol'", "NOPEUSDT"),
    ),
    "bad_timeframe": ([*GOOG_BASE, "--timeframe", "7x"], ("'timeframe'", "7x")),
    "timeframe_below_source": ([*GOOG_BASE, "--timeframe", "1h"], ("'timeframe'",)),
    "negative_cash": ([*GOOG_BASE, "--cash", "-5"], ("'cash'",)),
    "negative_fee": ([*GOOG_BASE, "--fee-bps", "-1"], ("'fee_bps'",)),
    "leverage_below_one": ([*GOOG_BASE, "--leverage", "0.5"], ("'leverage'",)),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str) -> None:
    argv, fragments = BAD_ARGS[case]
    db = tmp_path / "bad.duckdb"
    code, out, err = cli(capsys, *argv, "--db", str(db), "--out", str(tmp_path / "out"))
    assert_one_error_line(code, out, err, *fragments)
    assert_nothing_stored(db)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "default_data").exists()


@pytest.mark.parametrize("case", ["high_below_low", "missing_column"])
def test_malformed_data_file_subprocess(tmp_path: Path, case: str) -> None:
    make, fragments = FILE_CASES[case]
    path = make(tmp_path)
    db = tmp_path / "bad.duckdb"
    proc = run_subprocess("backtest", "sma_crossover", "--data", str(path), "--db", str(db), cwd=tmp_path)
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, str(path), *fragments)
    assert_nothing_stored(db)


def test_bad_params_subprocess(tmp_path: Path) -> None:
    db = tmp_path / "bad.duckdb"
    proc = run_subprocess(*GOOG_BASE, "--param", "fast=0", "--db", str(db), cwd=tmp_path)
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, "'fast'")
    assert_nothing_stored(db)


def test_out_is_an_existing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "not_a_dir"
    target.write_text("x")
    db = tmp_path / "runs.duckdb"
    try:
        code, out, err = cli(capsys, *GOOG_ARGS, "--db", str(db), "--out", str(target))
    except OSError as exc:
        pytest.fail(f"uncaught {type(exc).__name__}: {exc}")
    assert_one_error_line(code, out, err, "not_a_dir")
    assert_nothing_stored(db)
