"""``tradectl backtest-portfolio``: JSON shape, report files, bad input."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from engine.backtest.metrics import METRIC_KEYS
from engine.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PANEL = DATA / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"
FUNDING = DATA / "binance_usdm_funding_rates_40sym_2019_2026.parquet"

CONFIG = f"""
name: cli
capital: 50000
end: 2025-08-01
venue: {{fee_bps: 4}}
datasets:
  panel: {{bars: {PANEL}, funding: {FUNDING}}}
strategies:
  - {{name: fast, type: ema_crossover, dataset: panel, symbols: [BTCUSDT], allocation: 50,
      params: {{fast: 8, slow: 34}}}}
  - {{name: slow, type: sma_crossover, dataset: panel, symbols: [ETHUSDT], allocation: 50,
      params: {{fast: 24, slow: 96}}}}
"""


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(CONFIG)
    return path


def test_json_has_the_backtest_metric_keys(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "report"
    code, out, err = cli(capsys, "backtest-portfolio", str(config), "--no-store", "--json", "--out", str(out_dir))
    assert code == 0, err
    doc = orjson.loads(out)
    assert set(doc) >= {"portfolio", "strategies"}
    assert set(METRIC_KEYS) <= set(doc["portfolio"])
    assert set(doc["strategies"]) == {"fast", "slow"}
    for metrics in doc["strategies"].values():
        assert set(METRIC_KEYS) <= set(metrics)
    total = sum(m["final_equity"] for m in doc["strategies"].values())
    assert total == pytest.approx(doc["portfolio"]["final_equity"])
    written = {p.name for p in out_dir.iterdir()}
    assert {"report.png", "metrics.json", "equity.parquet", "events.parquet", "rejections.parquet"} <= written
    saved = orjson.loads((out_dir / "metrics.json").read_bytes())
    assert saved["portfolio"] == doc["portfolio"] and set(saved["correlation"]) == {"fast", "slow"}


def test_table_output(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, _ = cli(capsys, "backtest-portfolio", str(config), "--no-store")
    assert code == 0
    assert "portfolio cli" in out and "fast (50%)" in out and "trade hash" in out


HEAD = f"datasets: {{panel: {{bars: {PANEL}}}}}\n"
GOOD = "strategies: [{name: a, type: sma_crossover, dataset: panel, symbols: [BTCUSDT]}]\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEAD + GOOD + "capital: 0\n", "capital"),
        (HEAD + "strategies: [{name: a, type: nope, dataset: panel}]\n", "nope"),
        (HEAD + "strategies: [{name: a, type: sma_crossover, dataset: panel, params: {fast: 0}}]\n", "fast"),
        (HEAD + GOOD + "name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_is_one_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    db = tmp_path / "store.duckdb"
    code, out, err = cli(capsys, "backtest-portfolio", str(path), "--db", str(db))
    assert code == 2 and out == ""
    assert err.startswith("error:") and err.count("\n") == 1 and message in err
    assert not db.exists()


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "backtest-portfolio", str(tmp_path / "none.yaml"), "--no-store")
    assert code == 2 and "file not found" in err


def test_run_is_stored(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    from engine.store import open_store

    db = tmp_path / "store.duckdb"
    code, out, err = cli(capsys, "backtest-portfolio", str(config), "--db", str(db), "--json")
    assert code == 0, err
    doc = orjson.loads(out)
    with open_store(str(db)) as store:
        stored = store.load_portfolio(doc["run_id"])
        assert stored.metrics == doc["portfolio"]
        assert set(stored.run_ids) == {"fast", "slow"}
        sleeve = store.load_backtest(stored.run_ids["fast"])
        assert sleeve.metrics == doc["strategies"]["fast"]
