"""Shipped plugins on hand-built bars (each entry and exit rule) and on real data (they trade, the
accounting reconciles at every bar, runs are deterministic); multi-timeframe alignment; warm-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from reconcile import assert_equity_reconciles

from engine.backtest.config import BacktestRequest, run_request
from engine.backtest.runner import Backtest, BacktestSettings
from engine.errors import ParameterError, StrategyRuntimeError
from engine.instruments import Instrument
from engine.strategy.registry import StrategyRegistry

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PANEL = DATA / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"
FUNDING = DATA / "binance_usdm_funding_rates_40sym_2019_2026.parquet"
MARKS = DATA / "binance_usdm_mark_1h_10sym_2025-05-01_2026-05-07.parquet"
HOUR = 3_600_000_000_000
REGISTRY = StrategyRegistry().discover()


def bars_from_closes(closes: list[float], start: int = 1_700_000_000 * 10**9, step: int = HOUR) -> dict[str, Any]:
    """Bars whose open is the previous close and whose range is ±0.5 around the body."""
    c = np.asarray(closes, dtype=np.float64)
    o = np.concatenate(([c[0]], c[:-1]))
    return {
        "X": {
            "ts": start + np.arange(len(c), dtype=np.int64) * step,
            "open": o,
            "high": np.maximum(o, c) + 0.5,
            "low": np.minimum(o, c) - 0.5,
            "close": c,
            "volume": np.ones(len(c)),
        }
    }


def run_bars(
    strategy: str,
    params: dict[str, Any],
    bars: dict[str, Any],
    kind: str = "spot",
    leverage: float = 1,
    **settings: Any,
) -> Any:
    inst = {s: Instrument(symbol=s, kind=kind, leverage=leverage) for s in bars}  # type: ignore[arg-type]
    bt = Backtest(REGISTRY.get(strategy), params, bars, "1h", inst, BacktestSettings(**settings))
    result = bt.run()
    closes = {s: (a["ts"], a["close"]) for s, a in bars.items()}
    assert_equity_reconciles(result, closes, perpetual=kind == "perpetual")
    return result


def fills(result: Any) -> list[tuple[int, float]]:
    """(side, price) per fill."""
    return list(zip(result.fills.column("side").to_pylist(), result.fills.column("price").to_pylist(), strict=True))


def test_sma_crossover_rules_on_hand_built_bars() -> None:
    # fast 2 / slow 4. closes: flat 10 ×4, rise to 14 (cross up at bar 4), fall to 6 (cross down at bar 8)
    closes = [10, 10, 10, 10, 12, 14, 14, 12, 8, 6, 6, 6]
    result = run_bars("sma_crossover", {"fast": 2, "slow": 4}, bars_from_closes(closes))
    # bar 4: sma2 = 11 > sma4 = 10.5 and bar 3 had d = 0 → buy at bar 5's open (= close of bar 4 = 12)
    # bar 8: sma2 = 10 < sma4 = 12 (d ≥ 0 at bar 7: 13 vs 13) → sell at bar 9's open = 8
    assert fills(result) == [(1, 12.0), (-1, 8.0)]
    assert result.metrics["trades"] == 1


def test_rsi_reversion_entry_and_exit() -> None:
    # the expected signal bars come from TA-Lib's RSI: entry on the first cross below 30, exit on the
    # first later bar above 50; market fills happen at the next open (= that bar's close here)
    import talib

    closes = [20, 21, 22, 23, 22, 21, 19, 17, 18, 20, 22, 22, 21, 18, 15, 16, 19, 23]
    rsi = talib.RSI(np.asarray(closes, dtype=np.float64), 2)
    expected = []
    holding = False
    for i in range(1, len(closes) - 1):
        if not holding and rsi[i] < 30 <= rsi[i - 1]:
            expected.append((1, float(closes[i])))
            holding = True
        elif holding and rsi[i] > 50:
            expected.append((-1, float(closes[i])))
            holding = False
    result = run_bars(
        "rsi_reversion",
        {"period": 2, "oversold": 30, "exit_level": 50, "overbought": 70},
        bars_from_closes([float(c) for c in closes]),
    )
    assert len(expected) >= 4
    assert fills(result) == expected


def test_breakout_entry_stop_and_channel_exit() -> None:
    # entry 3 / exit 2: flat 10s then a close of 12 breaks the prior 3-bar high (10.5) → buy next open
    closes = [10, 10, 10, 10, 12, 13, 14, 13, 11, 10, 10]
    result = run_bars(
        "breakout",
        {"entry_period": 3, "exit_period": 2, "atr_period": 2, "atr_stop": 0},
        bars_from_closes(closes),
    )
    sides = [s for s, _ in fills(result)]
    assert sides == [1, -1]
    assert fills(result)[0][1] == 12.0
    # with a tight ATR stop the bracket stop fills instead of the channel exit
    tight = run_bars(
        "breakout",
        {"entry_period": 3, "exit_period": 2, "atr_period": 2, "atr_stop": 0.5},
        bars_from_closes(closes),
    )
    assert [f.split(":")[-1] for f in tight.fills.column("tag").to_pylist()] == ["entry", "sl"]


def test_crossover_short_side_on_perpetual() -> None:
    closes = [10, 10, 10, 10, 12, 14, 14, 12, 8, 6, 6, 6, 8, 12, 14]
    result = run_bars(
        "ema_crossover",
        {"fast": 2, "slow": 4, "allow_short": True, "size_pct": 50},
        bars_from_closes(closes),
        kind="perpetual",
    )
    sides = [s for s, _ in fills(result)]
    assert sides[:3] == [1, -1, -1]  # long, close on the cross down, then the short entry
    assert -1 in result.trades.column("side").to_pylist()


def test_leveraged_long_is_liquidated_in_a_crash() -> None:
    # all-in at 10x after the cross up; a 15 % crash goes through the liquidation price
    closes = [10, 10, 10, 10, 12, 14, 14.5, 12, 11, 11, 11]
    result = run_bars("sma_crossover", {"fast": 2, "slow": 4}, bars_from_closes(closes), kind="perpetual", leverage=10)
    tags = result.fills.column("tag").to_pylist()
    assert tags == ["entry", "liquidation"]
    assert result.metrics["final_equity"] < 0.1 * 100_000  # only about the maintenance margin is left


@pytest.mark.parametrize("strategy", ["sma_crossover", "ema_crossover", "rsi_reversion", "breakout"])
def test_shipped_plugins_trade_real_perpetual_data(strategy: str) -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    request = BacktestRequest.parse(
        {
            "strategy_type": strategy,
            "data": PANEL,
            "symbols": symbols,
            "funding": FUNDING,
            "marks": MARKS,
            "params": {"allow_short": True, "size_pct": 30},
            "fee_bps": 4,
            "slippage_bps": 1,
            "lot_size": 0.001,
            "start": "2025-06-01",
            "end": "2026-01-01",
        }
    )
    result = run_request(request, REGISTRY)
    assert result.metrics["trades"] >= 5
    assert result.metrics["fees_paid"] > 0
    assert result.funding is not None and result.funding.num_rows > 0
    assert result.equity.column("ts").cast(pa.int64())[0].as_py() >= np.datetime64("2025-06-01", "ns").astype(np.int64)
    from engine.data import load_bars

    table = load_bars(PANEL, symbols=symbols)
    closes = {}
    for s in symbols:
        t = table.filter(pa.compute.equal(table.column("symbol"), s))
        closes[s] = (t.column("ts").cast(pa.int64()).to_numpy(), t.column("close").to_numpy())
    assert_equity_reconciles(result, closes, perpetual=True)
    again = run_request(request, REGISTRY)
    assert again.trade_hash == result.trade_hash


def test_funding_settles_only_while_a_position_is_open() -> None:
    request = BacktestRequest.parse(
        {
            "strategy_type": "sma_crossover",
            "data": PANEL,
            "symbols": ["BTCUSDT"],
            "funding": FUNDING,
            "params": {"fast": 24, "slow": 120},
            "fee_bps": 4,
            "lot_size": 0.001,
        }
    )
    result = run_request(request, REGISTRY)
    funding = result.funding.to_pydict()
    assert all(q != 0 for q in funding["qty"])
    # the mark price falls back to the last close before the funding time (no mark file given)
    eq_ts = result.equity.column("ts").cast(pa.int64()).to_numpy()
    assert len(funding["ts"]) > 50 and eq_ts[0] < funding["ts"][0].value
    total = sum(-q * m * r for q, m, r in zip(funding["qty"], funding["mark_price"], funding["rate"], strict=True))
    assert result.metrics["funding_paid"] == pytest.approx(-total, abs=1e-9)


def write_plugin(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(body)


MTF_PLUGIN = """
from engine.strategy import Bar, Strategy, StrategyParams

class Probe(Strategy):
    type = "mtf_probe"
    display_name = "probe"
    description = "records the 4h close and SMA it sees at each 1h bar"
    version = "0.0.1"
    author = "tests"
    seen = []

    def on_init(self):
        self.close4h = self.market_data.series("close", timeframe="4h")
        self.sma4h = self.market_data.indicator("sma", timeframe="4h", period=3)

    def on_bar(self, bar: Bar):
        type(self).seen.append((bar.ts, self.close4h.value, self.sma4h.value))
"""


def test_higher_timeframe_values_are_those_of_closed_bars(tmp_path: Path) -> None:
    write_plugin(tmp_path, "mtf_probe", MTF_PLUGIN)
    registry = StrategyRegistry([tmp_path]).discover()
    cls = registry.get("mtf_probe")
    cls.seen.clear()  # type: ignore[attr-defined]
    closes = [float(100 + i) for i in range(40)]
    bars = bars_from_closes(closes, start=1_700_006_400 * 10**9)  # 2023-11-15 00:00 UTC, a 4h boundary
    Backtest(cls, {}, bars, "1h", {"X": Instrument(symbol="X")}, BacktestSettings()).run()
    seen = cls.seen  # type: ignore[attr-defined]
    # the 1h bar k (open at k hours) sees the 4h bar that closed by its close: bars 0-3 form 4h bar 0,
    # available from 1h bar 3 on, whose close is closes[3]; 4h SMA(3) first exists at 1h bar 11
    by_index = {i: (c4, s4) for i, (_, c4, s4) in enumerate(seen)}
    first = 11  # the runner waits until every requested series has a value
    assert seen[0][0] == bars["X"]["ts"][first]
    for i in range(first, 40):
        closed = (i + 1) // 4 - 1  # index of the last 4h bar closed at the end of 1h bar i
        c4, s4 = by_index[i - first]
        assert c4 == closes[4 * closed + 3]
        assert s4 == pytest.approx(np.mean([closes[4 * j + 3] for j in range(closed - 2, closed + 1)]))


def test_strategy_exception_names_callback_and_time(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        "boom",
        """
from engine.strategy import Strategy

class Boom(Strategy):
    type = "boom"
    display_name = "boom"
    description = "raises on the third bar"
    version = "0.0.1"
    author = "tests"

    def on_bar(self, bar):
        if bar.index == 2:
            raise ValueError("bad state")
""",
    )
    cls = StrategyRegistry([tmp_path]).discover().get("boom")
    with pytest.raises(StrategyRuntimeError, match=r"boom.*on_bar \(X at .*ValueError: bad state"):
        Backtest(cls, {}, bars_from_closes([1.0, 2.0, 3.0, 4.0]), "1h", {"X": Instrument(symbol="X")}).run()


def test_incompatible_market_is_rejected(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        "perp_only",
        """
from engine.strategy import Compatibility, Strategy

class PerpOnly(Strategy):
    type = "perp_only"
    display_name = "perp only"
    description = "perpetuals only"
    version = "0.0.1"
    author = "tests"
    compatibility = Compatibility(market_types=("perpetual",), timeframes=("1h",))

    def on_bar(self, bar):
        pass
""",
    )
    cls = StrategyRegistry([tmp_path]).discover().get("perp_only")
    with pytest.raises(ParameterError, match="market"):
        Backtest(cls, {}, bars_from_closes([1.0, 2.0]), "1h", {"X": Instrument(symbol="X")})
    with pytest.raises(ParameterError, match="timeframe"):
        Backtest(cls, {}, bars_from_closes([1.0, 2.0]), "4h", {"X": Instrument(symbol="X", kind="perpetual")})
