"""Portfolio backtests: accounting reconciles at every step on real data across timeframes; breakers
and risk checks fire inside a run with their events and rejections; configs are validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow.compute as pc
import pytest
from portfolio_replay import assert_portfolio_reconciles

from engine.errors import ParameterError
from engine.instruments import Instrument
from engine.portfolio.backtest import PortfolioBacktest, SleeveSpec
from engine.portfolio.config import build_backtest, load_portfolio_config
from engine.portfolio.manager import BreakerSettings
from engine.risk.limits import RiskLimits
from engine.strategy import Bar, Strategy
from engine.strategy.registry import StrategyRegistry

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PANEL = DATA / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"
M15 = DATA / "binance_usdm_perp_15m_4sym_2025-08_2026-05.parquet"
FUNDING = DATA / "binance_usdm_funding_rates_40sym_2019_2026.parquet"
MARKS = DATA / "binance_usdm_mark_1h_10sym_2025-05-01_2026-05-07.parquet"
H = 3_600_000_000_000
T0 = 1_700_006_400 * 10**9  # a UTC midnight
REGISTRY = StrategyRegistry().discover()


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "portfolio.yaml"
    path.write_text(text)
    return path


MIXED = f"""
name: mixed
capital: 100000
slippage_bps: 1
end: 2025-12-01
venue: {{fee_bps: 4}}
datasets:
  panel: {{bars: {PANEL}, funding: {FUNDING}, marks: {MARKS}}}
  m15: {{bars: {M15}, funding: {FUNDING}}}
risk: {{conflict_mode: net}}
breakers: {{snapshot_interval: 1h, cooldown: 7d}}
strategies:
  - {{name: sma, type: sma_crossover, dataset: panel, symbols: [BTCUSDT, ETHUSDT], allocation: 40, leverage: 2,
      params: {{fast: 24, slow: 120, size_pct: 50}}}}
  - {{name: brk, type: breakout, dataset: panel, timeframe: 4h, symbols: [BTCUSDT, SOLUSDT, XRPUSDT, DOGEUSDT],
      allocation: 30, leverage: 2, params: {{allow_short: true, size_pct: 20}}}}
  - {{name: rsi, type: rsi_reversion, dataset: m15, allocation: 30, leverage: 2}}
"""


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[PortfolioBacktest, Any]:
    path = write_config(tmp_path_factory.mktemp("mixed"), MIXED)
    bt = build_backtest(load_portfolio_config(path), REGISTRY)
    return bt, bt.run()


def test_real_data_reconciles_at_every_step(mixed: tuple[PortfolioBacktest, Any]) -> None:
    bt, result = mixed
    checked = assert_portfolio_reconciles(bt, result)
    assert checked == 3 * result.equity.num_rows > 3 * 5_000
    # every strategy traded, on three base timeframes (1h, 4h, 15m), with funding
    assert set(result.trades.column("strategy").to_pylist()) == {"sma", "brk", "rsi"}
    assert result.funding.num_rows > 0
    # portfolio metrics agree with the curve; per-strategy metrics with each sub-ledger
    assert result.metrics["final_equity"] == pytest.approx(result.equity.column("equity")[-1].as_py())
    per = {s: m["final_equity"] for s, m in result.strategy_metrics.items()}
    assert sum(per.values()) == pytest.approx(result.metrics["final_equity"])
    assert result.metrics["trades"] == result.trades.num_rows
    assert result.correlation["sma"]["sma"] == pytest.approx(1.0)
    assert result.correlation["sma"]["brk"] == pytest.approx(result.correlation["brk"]["sma"])


def test_real_data_is_deterministic(mixed: tuple[PortfolioBacktest, Any], tmp_path: Path) -> None:
    _, first = mixed
    second = build_backtest(load_portfolio_config(write_config(tmp_path, MIXED)), REGISTRY).run()
    assert second.trade_hash == first.trade_hash
    assert second.metrics == first.metrics
    assert second.events.equals(first.events)


def test_events_are_ordered_and_consistent(mixed: tuple[PortfolioBacktest, Any]) -> None:
    _, result = mixed
    ev = result.events
    seq = ev.column("seq").to_numpy()
    assert (np.diff(seq) == 1).all()
    opened = pc.sum(pc.equal(ev.column("kind"), "strategy:position_opened")).as_py()
    closed = pc.sum(pc.equal(ev.column("kind"), "strategy:position_closed")).as_py()
    assert closed == result.trades.num_rows
    held: dict[tuple[str, str], float] = {}
    for row in result.fills.select(["strategy", "symbol", "side", "qty"]).to_pylist():
        key = (row["strategy"], row["symbol"])
        held[key] = held.get(key, 0.0) + row["side"] * row["qty"]
    still_open = sum(1 for q in held.values() if abs(q) > 1e-9)
    assert opened - closed == still_open  # every position opened was closed, except those open at the end
    settlements = pc.sum(pc.equal(ev.column("kind"), "funding:settlement")).as_py()
    assert settlements == result.funding.num_rows


# ---------------------------------------------------------------------------------------------
# scripted strategies on hand-built bars


class Scripted(Strategy):
    """Submits the orders of ``script`` (bar index → list of (method, kwargs)) on its first symbol."""

    type = "scripted"
    display_name = "Scripted"
    description = "test"
    version = "0"
    author = "tests"
    script: ClassVar[dict[int, list[tuple[str, dict[str, Any]]]]] = {}

    def on_init(self) -> None:
        self.placed: list[Any] = []

    def on_bar(self, bar: Bar) -> None:
        for method, kw in self.script.get(bar.index, []):
            self.placed.append(getattr(self.orders, method)(bar.symbol, **kw))


def scripted(script: dict[int, list[tuple[str, dict[str, Any]]]]) -> type[Scripted]:
    return type("S", (Scripted,), {"script": script})


def bars(closes: list[float], start: int = T0, step: int = H) -> dict[str, np.ndarray]:
    c = np.asarray(closes, dtype=np.float64)
    o = np.concatenate(([c[0]], c[:-1]))
    return {
        "ts": start + np.arange(len(c), dtype=np.int64) * step,
        "open": o,
        "high": np.maximum(o, c),
        "low": np.minimum(o, c),
        "close": c,
        "volume": np.ones(len(c)),
    }


def spec(name: str, cls: type[Strategy], data: dict[str, dict[str, np.ndarray]], alloc: float, **kw: Any) -> SleeveSpec:
    inst = {s: Instrument(symbol=s, kind="perpetual", leverage=kw.pop("leverage", 1.0)) for s in data}
    return SleeveSpec(name, cls, {}, data, "1h", inst, alloc, **kw)


def test_strategy_breaker_pauses_then_entries_are_rejected() -> None:
    # a (50,000) buys 500 X at 100 (bar 1's open); at 85 it has lost 7,500 = 15 % → paused at bar 4's close
    closes = [100, 100, 95, 90, 85, 85, 85]
    a = scripted({0: [("buy", {"qty": 500.0})], 5: [("buy", {"qty": 1.0})]})
    b = scripted({})
    bt = PortfolioBacktest(
        [spec("a", a, {"X": bars(closes)}, 50), spec("b", b, {"Y": bars([10] * 7)}, 50)],
        100_000,
        RiskLimits(max_leverage=None, enforce_allocation=False, daily_loss_limit_pct=None),
        BreakerSettings(alert_levels_pct=(5, 10), snapshot_interval="1d"),
    )
    result = bt.run()
    assert_portfolio_reconciles(bt, result)
    ev = [(e.ts, e.kind, e.strategy, e.data) for e in bt.events.events]
    step = {T0 + (k + 1) * H: k for k in range(7)}  # close time → bar index
    interesting = [
        (step[t], k, s, d.get("action") or d.get("level_pct") or d.get("new") or d.get("check"))
        for t, k, s, d in ev
        if k != "portfolio:equity_update"
    ]
    assert interesting == [
        (0, "strategy:signal", "a", "entry"),
        (0, "strategy:position_opened", "a", None),  # filled at bar 1's open = bar 0's close time
        (2, "portfolio:drawdown_alert", "a", 5.0),  # 95: loss 2,500 = 5 % of 50,000
        (3, "portfolio:drawdown_alert", "a", 10.0),  # 90: 10 %
        (3, "portfolio:drawdown_alert", "", 5.0),  # portfolio: 5,000 of 100,000
        (4, "portfolio:circuit_breaker", "a", "trip"),  # 85: 15 %
        (4, "strategy:state_change", "a", "paused"),
        (5, "strategy:signal", "a", "skip"),
    ]
    rej = result.rejections.to_pylist()
    assert [(r["strategy"], r["symbol"], r["check"]) for r in rej] == [("a", "X", "strategy_paused")]
    assert bt.sleeves[0].strategy.placed[-1].status.name == "REJECTED"  # type: ignore[attr-defined]
    # the position stays open (reduce-only mode), b is untouched
    assert bt.sleeves[0].account.positions["X"].qty == 500
    assert bt.manager.states["b"].value == "active"


def test_portfolio_halt_rejects_every_strategy() -> None:
    # a loses 26,000 of a 100,000 portfolio: portfolio dd 26 % ≥ 25 → halted; b's entry is rejected
    closes = [100, 100, 87, 87]
    a = scripted({0: [("buy", {"qty": 2_000.0})]})
    b = scripted({3: [("buy", {"qty": 1.0})]})
    bt = PortfolioBacktest(
        [spec("a", a, {"X": bars(closes)}, 50, leverage=5), spec("b", b, {"Y": bars([10] * 5)}, 50)],
        100_000,
        RiskLimits(max_leverage=None, enforce_allocation=False, daily_loss_limit_pct=None),
        BreakerSettings(alert_levels_pct=(), snapshot_interval="1d"),
    )
    result = bt.run()
    assert_portfolio_reconciles(bt, result)
    trips = [(e.strategy, e.data["scope"]) for e in bt.events.of("portfolio:circuit_breaker")]
    assert ("", "portfolio") in trips
    assert bt.manager.drawdown() == pytest.approx(26.0)
    rej = result.rejections.to_pylist()
    assert [(r["strategy"], r["check"]) for r in rej] == [("b", "portfolio_halted")]


def test_allocation_cap_and_conflict_inside_a_run() -> None:
    # allocation: a owns 30 % of 100,000; buying 400 X at 100 needs 40,000 of margin (leverage 1) > 30,000
    a = scripted({0: [("buy", {"qty": 400.0})], 1: [("buy", {"qty": 200.0})]})
    # conflict: b sells X while a is long X (reject mode)
    b = scripted({3: [("sell", {"qty": 10.0})]})
    x = {"X": bars([100.0] * 6)}
    bt = PortfolioBacktest(
        [spec("a", a, x, 30), spec("b", b, {"X": bars([100.0] * 6)}, 70)],
        100_000,
        RiskLimits(max_risk_per_trade_pct=None, max_total_open_risk_pct=None),
        BreakerSettings(alert_levels_pct=(), snapshot_interval="1d"),
    )
    result = bt.run()
    assert_portfolio_reconciles(bt, result)
    rej = result.rejections.to_pylist()
    assert [(r["strategy"], r["check"]) for r in rej] == [("a", "allocation"), ("b", "conflict")]
    alloc = rej[0]
    assert alloc["value"] == pytest.approx(40_000) and alloc["limit"] == pytest.approx(30_000)
    # the 200-unit order (20,000 ≤ 30,000) passed and filled at bar 2's open
    assert bt.sleeves[0].account.positions["X"].qty == 200
    skips = [e for e in bt.events.of("strategy:signal") if e.data["action"] == "skip"]
    assert [(e.strategy, e.data["check"]) for e in skips] == [("a", "allocation"), ("b", "conflict")]


def test_sizing_uses_the_allocated_capital() -> None:
    class Sizer(Scripted):
        def on_bar(self, bar: Bar) -> None:
            if bar.index == 0:
                self.qty = self.risk.size_for_risk(bar.symbol, 100.0, 95.0, 1.0)

    bt = PortfolioBacktest(
        [spec("a", Sizer, {"X": bars([100.0] * 3)}, 25), spec("b", scripted({}), {"Y": bars([1.0] * 3)}, 75)],
        200_000,
    )
    bt.run()
    # allocated capital = 25 % × 200,000 = 50,000; risk 1 % = 500; stop distance 5 → 100 units
    assert bt.sleeves[0].strategy.qty == pytest.approx(100.0)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ("capital: -5", "capital"),
        ("strategies: []", "strategies"),
        ("bogus: 1", "bogus"),
        ("risk: {max_leverage: -1}", "risk.max_leverage"),
        ("breakers: {resume_drawdown_pct: 30}", "breakers.resume_drawdown_pct"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, patch: str, field: str) -> None:
    base = f"""
datasets: {{panel: {{bars: {PANEL}}}}}
strategies: [{{name: a, type: sma_crossover, dataset: panel, symbols: [BTCUSDT]}}]
"""
    key = patch.split(":")[0]
    lines = [ln for ln in base.splitlines() if not ln.startswith(key + ":")]
    path = write_config(tmp_path, "\n".join([*lines, patch]))
    with pytest.raises(ParameterError) as err:
        load_portfolio_config(path)
    assert field in err.value.field


def test_config_cross_checks(tmp_path: Path) -> None:
    def load(strategies: str) -> Any:
        path = write_config(tmp_path, f"datasets: {{panel: {{bars: {PANEL}}}}}\nstrategies: {strategies}\n")
        return build_backtest(load_portfolio_config(path), REGISTRY)

    with pytest.raises(ParameterError, match="unknown dataset"):
        load("[{name: a, type: sma_crossover, dataset: nope}]")
    with pytest.raises(ParameterError, match="unique"):
        load("[{name: a, type: sma_crossover, dataset: panel}, {name: a, type: ema_crossover, dataset: panel}]")
    with pytest.raises(ParameterError, match="at most 100"):
        load(
            "[{name: a, type: sma_crossover, dataset: panel, allocation: 70},"
            " {name: b, type: ema_crossover, dataset: panel, allocation: 40}]"
        )
    with pytest.raises(ParameterError) as err:
        load("[{name: a, type: sma_crossover, dataset: panel, symbols: [BTCUSDT], params: {fast: -1}}]")
    assert err.value.field == "strategies.0.params.fast"
    with pytest.raises(ParameterError, match="NOPEUSDT"):
        load("[{name: a, type: sma_crossover, dataset: panel, symbols: [NOPEUSDT]}]")


def test_seed_allocation_defaults(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f"""
datasets: {{panel: {{bars: {PANEL}}}}}
strategies:
  - {{name: t, type: multi_tf_trend, dataset: panel}}
  - {{name: s, type: mean_reversion_scalp, dataset: panel}}
  - {{name: c, type: funding_carry, dataset: panel}}
  - {{name: m, type: cross_sectional_momentum, dataset: panel}}
""",
    )
    assert load_portfolio_config(path).allocations() == {"t": 30.0, "s": 20.0, "c": 20.0, "m": 30.0}


def test_shipped_four_strategy_portfolio_trades_and_reconciles() -> None:
    config = Path(__file__).resolve().parents[1] / "configs" / "portfolio_crypto4.yaml"
    bt = build_backtest(load_portfolio_config(config), REGISTRY)
    result = bt.run()
    traded = {name: m["trades"] for name, m in result.strategy_metrics.items()}
    assert set(traded) == {"trend", "scalper", "carry", "momentum"}
    assert all(n > 0 for n in traded.values()), traded
    assert result.allocations == {"trend": 30.0, "scalper": 20.0, "carry": 20.0, "momentum": 30.0}
    assert assert_portfolio_reconciles(bt, result) == 4 * result.equity.num_rows
    assert result.funding.num_rows > 0 and result.snapshots.num_rows > 0
    names = set(result.correlation)
    assert names == set(traded) and all(set(row) == names for row in result.correlation.values())
