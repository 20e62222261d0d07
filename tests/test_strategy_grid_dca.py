"""Grid trading and DCA plugins: every entry and exit rule on hand-built bars (fill prices, quantities
and times computed by hand from the documented rules and the paper fill rules), parameter
validation, and real Binance data (they trade, equity reconciles at every bar, runs are deterministic).

Paper rules used below: orders placed while bar k is processed are active from bar k+1; a limit fills
at its price when the path O → nearer extreme → farther extreme → C reaches it, or at the open when
the bar opens through it; market orders fill at the next open. Fills are stamped with the bar's open
time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from reconcile import assert_equity_reconciles

from engine.backtest.config import BacktestRequest, run_request
from engine.backtest.runner import Backtest, BacktestSettings
from engine.errors import ParameterError, StrategyRuntimeError
from engine.instruments import Instrument
from engine.strategy.registry import StrategyRegistry

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PERP = DATA / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"
SPOT = DATA / "binance_spot_1h_2025-05-01_2026-05-07.parquet"
FUNDING = DATA / "binance_usdm_funding_rates_40sym_2019_2026.parquet"
HOUR = 3_600_000_000_000
START = 1_700_000_000 * 10**9
REGISTRY = StrategyRegistry().discover()


def ohlc(rows: list[tuple[float, float, float, float]]) -> dict[str, Any]:
    """Bars of symbol X from (open, high, low, close) rows, one hour apart."""
    a = np.asarray(rows, dtype=np.float64)
    assert (a[:, 1] >= a[:, [0, 3]].max(axis=1)).all() and (a[:, 2] <= a[:, [0, 3]].min(axis=1)).all()
    return {
        "X": {
            "ts": START + np.arange(len(a), dtype=np.int64) * HOUR,
            "open": a[:, 0].copy(),
            "high": a[:, 1].copy(),
            "low": a[:, 2].copy(),
            "close": a[:, 3].copy(),
            "volume": np.ones(len(a)),
        }
    }


def run_bars(strategy: str, params: dict[str, Any], bars: dict[str, Any], kind: str = "spot", **inst: Any) -> Any:
    instruments = {s: Instrument(symbol=s, kind=kind, **inst) for s in bars}  # type: ignore[arg-type]
    result = Backtest(REGISTRY.get(strategy), params, bars, "1h", instruments, BacktestSettings()).run()
    closes = {s: (a["ts"], a["close"]) for s, a in bars.items()}
    assert_equity_reconciles(result, closes, perpetual=kind == "perpetual")
    return result


def fills(result: Any) -> list[tuple[int, int, float, float, str]]:
    """(bar index, side, price, qty, tag) per fill, in fill order."""
    f = result.fills
    bars = [(ts.value - START) // HOUR for ts in f.column("ts").to_pylist()]
    return list(
        zip(
            bars,
            f.column("side").to_pylist(),
            f.column("price").to_pylist(),
            f.column("qty").to_pylist(),
            f.column("tag").to_pylist(),
            strict=True,
        )
    )


def approx_fills(expected: list[tuple[int, int, float, float, str]]) -> list[Any]:
    return [(k, s, pytest.approx(p, rel=1e-12), pytest.approx(q, rel=1e-12), t) for k, s, p, q, t in expected]


# ---------------------------------------------------------------------------------------- grid trading


def test_grid_long_buys_sells_rearms_gaps_and_stops() -> None:
    # 5 levels from 90 to 110: 90, 95, 100, 105, 110. First close 102: buys at 90 (L0), 95 (L1), 100 (L2).
    # Quantity per level = 100 000 × 10 % / level: 100 at 100, 10 000/95 at 95, 10 000/90 at 90.
    rows = [
        (102.0, 102.5, 101.5, 102.0),  # 0 setup
        (102.0, 102.5, 99.5, 101.0),  # 1 low touches 100: entry L2 fills at 100 → sell at 105
        (101.0, 105.5, 100.5, 104.0),  # 2 high touches 105: exit L2 fills at 105 → buy at 100 re-armed
        (104.0, 104.5, 99.0, 100.5),  # 3 the re-armed buy fills again at 100
        (94.0, 96.5, 93.0, 96.0),  # 4 opens through 95: entry L1 fills at the open 94 → sell at 100
        (96.0, 101.0, 95.5, 100.5),  # 5 exit L1 fills at 100 → buy at 95 re-armed
        (100.5, 100.7, 87.0, 88.0),  # 6 falls through 95 and 90 (both fill); close 88 < 90 × 0.98 = 88.2: stop
        (87.5, 89.0, 86.0, 88.5),  # 7 the stop's market close fills at the open 87.5
        (88.5, 99.0, 88.0, 98.0),  # 8 the grid is off: nothing fills
    ]
    params = {"grid_levels": 5, "lower_price": 90.0, "upper_price": 110.0, "order_size_pct": 10.0, "stop_pct": 2.0}
    result = run_bars("grid_trading", params, ohlc(rows))
    q1, q0 = 10_000 / 95, 10_000 / 90
    got = fills(result)
    assert got[:7] == approx_fills(
        [
            (1, 1, 100.0, 100.0, "entry:2"),
            (2, -1, 105.0, 100.0, "exit:2"),
            (3, 1, 100.0, 100.0, "entry:2"),
            (4, 1, 94.0, q1, "entry:1"),
            (5, -1, 100.0, q1, "exit:1"),
            (6, 1, 95.0, q1, "entry:1"),
            (6, 1, 90.0, q0, "entry:0"),
        ]
    )
    assert got[7] == (7, -1, 87.5, pytest.approx(100.0 + q1 + q0, rel=1e-12), "stop")
    assert len(got) == 8
    trades = result.trades.to_pydict()
    assert result.metrics["trades"] == 2
    assert trades["exit_price"][0] == 105.0
    # second trade: 100 @ 100 + q1 @ 94 + q1 @ 95 + q0 @ 90 in; q1 out at 100, the rest at 87.5
    assert trades["gross_pnl"][1] == pytest.approx(q1 * (100 - 94) + 100 * -12.5 + q1 * -7.5 + q0 * -2.5, rel=1e-9)
    assert result.metrics["final_equity"] == pytest.approx(100_000 + 500 + trades["gross_pnl"][1], rel=1e-12)


def test_grid_default_range_from_spacing() -> None:
    # no bounds: half width = 2 % × 5 / 2 = 5 % → lower 95, upper 105, levels 95, 97.5, 100, 102.5, 105.
    # close 100: buys at 95 and 97.5 only (100 is not below the close); fixed qty 2 per level.
    rows = [
        (100.0, 100.5, 99.5, 100.0),  # 0 setup
        (100.0, 100.2, 97.0, 98.0),  # 1 touches 97.5 (not 95): entry L1 fills
        (98.0, 100.5, 97.8, 100.2),  # 2 exit L1 at 100 (one level up)
        (100.2, 100.4, 94.0, 95.5),  # 3 both buys: re-armed L1 at 97.5, then L0 at 95
        (95.5, 97.6, 95.2, 97.0),  # 4 exit L0 at 97.5; exit L1 (at 100) rests
    ]
    result = run_bars("grid_trading", {"grid_levels": 5, "grid_spacing_pct": 2.0, "order_qty": 2.0}, ohlc(rows))
    lower = 100.0 * (1.0 - 2.0 / 100.0 * 5 / 2.0)
    upper = 100.0 * (1.0 + 2.0 / 100.0 * 5 / 2.0)
    levels = [lower + i * (upper - lower) / 4 for i in range(5)]
    assert levels == pytest.approx([95.0, 97.5, 100.0, 102.5, 105.0], rel=1e-12)
    assert fills(result) == approx_fills(
        [
            (1, 1, levels[1], 2.0, "entry:1"),
            (2, -1, levels[2], 2.0, "exit:1"),
            (3, 1, levels[1], 2.0, "entry:1"),
            (3, 1, levels[0], 2.0, "entry:0"),
            (4, -1, levels[1], 2.0, "exit:0"),
        ]
    )
    assert result.metrics["trades"] == 1  # only the first round trip ended flat


def test_grid_recenters_up_when_flat() -> None:
    # 80..120, close 105: buys at 80, 90, 100. Bar 1 closes at 125 > 120: the grid is rebuilt around 125 with
    # the same shape: lower 125 × 80/100 = 100, upper 125 × 120/100 = 150 → levels 100, 112.5, 125, 137.5, 150
    # and buys at 100 and 112.5; the old orders are gone.
    rows = [
        (105.0, 105.5, 104.5, 105.0),
        (105.0, 126.0, 104.8, 125.0),  # leaves the range upwards
        (125.0, 125.5, 112.0, 113.0),  # new entry L1 at 112.5
        (113.0, 113.5, 99.0, 100.2),  # new entry L0 at 100 (the old grid's buy at 100 was cancelled)
        (100.2, 113.0, 100.0, 112.8),  # exit L0 at 112.5
    ]
    params = {"grid_levels": 5, "lower_price": 80.0, "upper_price": 120.0, "order_qty": 1.0, "recenter": True}
    result = run_bars("grid_trading", params, ohlc(rows))
    assert fills(result) == [
        (2, 1, 112.5, 1.0, "entry:1"),
        (3, 1, 100.0, 1.0, "entry:0"),
        (4, -1, 112.5, 1.0, "exit:0"),
    ]


def test_grid_recenters_down_closing_the_inventory() -> None:
    # 80..120, close 105: buys at 80, 90, 100. Bar 2 falls to 74 (buys at 90 and 80 fill) and closes at 75:
    # close the 3 units at market and rebuild around 75: lower 60, upper 90, levels 60, 67.5, 75, 82.5, 90.
    rows = [
        (105.0, 105.5, 104.5, 105.0),
        (105.0, 105.5, 99.0, 101.0),  # entry L2 at 100
        (101.0, 101.5, 74.0, 75.0),  # entries L1 at 90 and L0 at 80; recentre
        (74.0, 74.5, 67.0, 68.0),  # close 3 at the open 74, then the new entry L1 at 67.5
        (68.0, 75.5, 67.8, 75.2),  # its exit at 75
    ]
    params = {"grid_levels": 5, "lower_price": 80.0, "upper_price": 120.0, "order_qty": 1.0, "recenter": True}
    result = run_bars("grid_trading", params, ohlc(rows))
    assert fills(result) == [
        (1, 1, 100.0, 1.0, "entry:2"),
        (2, 1, 90.0, 1.0, "entry:1"),
        (2, 1, 80.0, 1.0, "entry:0"),
        (3, -1, 74.0, 3.0, "recenter"),
        (3, 1, 67.5, 1.0, "entry:1"),
        (4, -1, 75.0, 1.0, "exit:1"),
    ]
    assert result.trades.column("gross_pnl").to_pylist() == [74.0 * 3 - 270.0, 7.5]


def test_grid_neutral_on_perpetual_nets_long_and_short_lots() -> None:
    # 80..120 (levels 80, 90, 100, 110, 120), close 100: buys at 80, 90 and sells at 110, 120; each exit is a
    # plain limit one level back towards the start.
    rows = [
        (100.0, 100.5, 99.5, 100.0),
        (100.0, 110.5, 99.8, 108.0),  # short entry L3 at 110 → buy at 100
        (108.0, 108.5, 99.5, 101.0),  # short exit at 100: flat; sell at 110 re-armed
        (101.0, 101.5, 89.0, 92.0),  # long entry L1 at 90 → sell at 100
        (92.0, 111.0, 91.5, 109.0),  # low first; then up: long exit at 100 (flat), short entry at 110 (short)
        (109.0, 109.5, 99.0, 100.5),  # short exit at 100: flat
    ]
    params = {"grid_levels": 5, "lower_price": 80.0, "upper_price": 120.0, "order_qty": 1.0, "mode": "neutral"}
    result = run_bars("grid_trading", params, ohlc(rows), kind="perpetual")
    assert fills(result) == [
        (1, -1, 110.0, 1.0, "entry:3"),
        (2, 1, 100.0, 1.0, "exit:3"),
        (3, 1, 90.0, 1.0, "entry:1"),
        (4, -1, 100.0, 1.0, "exit:1"),
        (4, -1, 110.0, 1.0, "entry:3"),
        (5, 1, 100.0, 1.0, "exit:3"),
    ]
    assert result.trades.column("side").to_pylist() == [-1, 1, -1]
    assert result.metrics["final_equity"] == pytest.approx(100_000 + 30.0)


def test_grid_short_mode_and_its_stop_above() -> None:
    # 80..120, close 95: sells at 100, 110, 120, reduce-only buy-backs one level down; stop 5 %: close > 126
    rows = [
        (95.0, 95.5, 94.5, 95.0),
        (95.0, 100.5, 94.5, 99.0),  # short entry L2 at 100 → buy at 90
        (99.0, 99.5, 89.5, 91.0),  # exit at 90: flat; sell at 100 re-armed
        (91.0, 128.0, 90.5, 127.0),  # sells at 100, 110 and 120; close 127 > 120 × 1.05 = 126: stop
        (126.5, 127.0, 125.0, 126.0),  # the stop buys 3 back at the open
        (126.0, 126.5, 85.0, 86.0),  # grid off
    ]
    params = {"grid_levels": 5, "lower_price": 80.0, "upper_price": 120.0, "order_qty": 1.0, "mode": "short"}
    result = run_bars("grid_trading", params | {"stop_pct": 5.0}, ohlc(rows), kind="perpetual")
    assert fills(result) == [
        (1, -1, 100.0, 1.0, "entry:2"),
        (2, 1, 90.0, 1.0, "exit:2"),
        (3, -1, 100.0, 1.0, "entry:2"),
        (3, -1, 110.0, 1.0, "entry:3"),
        (3, -1, 120.0, 1.0, "entry:4"),
        (4, 1, 126.5, 3.0, "stop"),
    ]
    with pytest.raises(StrategyRuntimeError, match="mode 'short' needs perpetual"):
        run_bars("grid_trading", params, ohlc(rows))


def test_grid_limit_fills_pay_the_maker_fee() -> None:
    rows = [(102.0, 102.5, 101.5, 102.0), (102.0, 102.5, 99.5, 101.0), (101.0, 105.5, 100.5, 104.0)]
    params = {"grid_levels": 5, "lower_price": 90.0, "upper_price": 110.0, "order_qty": 3.0}
    result = run_bars("grid_trading", params, ohlc(rows), maker_fee=0.001, taker_fee=0.002)
    assert result.fills.column("fee").to_pylist() == pytest.approx([3 * 100 * 0.001, 3 * 105 * 0.001], rel=1e-12)
    assert result.metrics["final_equity"] == pytest.approx(100_000 + 15 - 0.3 - 0.315, rel=1e-12)


def test_grid_rejected_entry_is_rearmed_and_fills_later() -> None:
    # 45 % of equity per level on spot: after the buys at 100 and 95 only 10 000 cash is left, so the buy at
    # 90 (45 000) is rejected; it is placed again at that bar's close and fills once the exits freed cash
    q2, q1, q0 = 45_000 / 100, 45_000 / 95, 45_000 / 90
    rows = [
        (102.0, 102.5, 101.5, 102.0),  # 0 setup: buys at 90, 95, 100
        (102.0, 102.5, 89.0, 91.0),  # 1 entries L2 and L1 fill; L0 is rejected (cash 10 000) → re-armed
        (91.0, 105.5, 90.5, 105.0),  # 2 low first (90.5 misses 90), then exits at 100 and 105
        (89.0, 89.5, 88.5, 89.2),  # 3 opens through all three buys: L0 (oldest order) and L1 fill at 89;
        #                            L2 (450 × 89 = 40 050 > 17 960 cash left) is rejected
    ]
    params = {"grid_levels": 5, "lower_price": 90.0, "upper_price": 110.0, "order_size_pct": 45.0}
    result = run_bars("grid_trading", params, ohlc(rows))
    assert fills(result) == approx_fills(
        [
            (1, 1, 100.0, q2, "entry:2"),
            (1, 1, 95.0, q1, "entry:1"),
            (2, -1, 100.0, q1, "exit:1"),
            (2, -1, 105.0, q2, "exit:2"),
            (3, 1, 89.0, q0, "entry:0"),
            (3, 1, 89.0, q1, "entry:1"),
        ]
    )
    assert result.metrics["orders_rejected"] == 2


def test_grid_quantity_below_the_lot_is_an_error() -> None:
    rows = [(102.0, 102.5, 101.5, 102.0), (102.0, 102.5, 99.5, 101.0)]
    params = {"grid_levels": 5, "lower_price": 90.0, "upper_price": 110.0, "order_qty": 0.5}
    with pytest.raises(StrategyRuntimeError, match="order_qty: the quantity at level 90"):
        run_bars("grid_trading", params, ohlc(rows), lot_size=1.0)


@pytest.mark.parametrize(
    ("params", "field", "rule"),
    [
        ({"grid_levels": 1}, "grid_levels", "greater than or equal to 2"),
        ({"grid_levels": 21}, "grid_levels", "less than or equal to 20"),
        ({"grid_levels": "10"}, "grid_levels", "valid integer"),
        ({"grid_spacing_pct": 0.05}, "grid_spacing_pct", "0.1"),
        ({"grid_spacing_pct": 10.5}, "grid_spacing_pct", "10"),
        ({"lower_price": 0.0, "upper_price": 1.0}, "lower_price", "greater than 0"),
        ({"lower_price": 90.0}, "params", "lower_price and upper_price must be given together"),
        ({"lower_price": 110.0, "upper_price": 90.0}, "params", "lower_price (110.0) must be below upper_price"),
        ({"lower_price": 90.0, "upper_price": 90.0}, "params", "must be below upper_price"),
        ({"grid_spacing_pct": 10.0, "grid_levels": 20}, "params", "default lower bound stays above 0"),
        ({"order_size_pct": 5.0, "order_qty": 1.0}, "params", "order_size_pct or order_qty, not both"),
        ({"order_size_pct": 0.0}, "order_size_pct", "greater than 0"),
        ({"order_qty": -1.0}, "order_qty", "greater than or equal to 0"),
        ({"stop_pct": 100.0}, "stop_pct", "less than 100"),
        ({"mode": "both"}, "mode", "'long', 'short' or 'neutral'"),
        ({"recenter": "yes"}, "recenter", "valid boolean"),
        ({"levels": 5}, "levels", "unknown parameter"),
    ],
)
def test_grid_parameter_validation(params: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(ParameterError) as info:
        REGISTRY.get("grid_trading").validate_params(params)
    assert info.value.field == field
    assert rule in info.value.rule


# ---------------------------------------------------------------------------------------- DCA


def test_dca_base_safety_orders_take_profit_and_cooldown() -> None:
    # base 10 % of 100 000 at the close 100 → 100 units at the next open (100). Safety orders from the base
    # fill price: deviations 2, 2 + 2×2 = 6, 6 + 2×4 = 14 % → 98, 94, 86; notionals 10 000 × 2^(k−1).
    # Take-profit 2 % above the average entry, re-placed after each fill. Cooldown 2 bars.
    rows = [
        (100.0, 100.5, 99.5, 100.0),  # 0 base order
        (100.0, 100.5, 99.2, 99.5),  # 1 base fills at 100; TP at 102
        (99.5, 99.8, 97.5, 98.2),  # 2 safety 1 at 98
        (98.2, 98.4, 93.5, 94.5),  # 3 safety 2 at 94
        (94.5, 99.0, 94.2, 98.8),  # 4 take-profit at avg₂ × 1.02 (≈ 98.36); safety 3 is cancelled
        (98.8, 99.0, 85.0, 86.5),  # 5 cooldown: nothing fills (86 would have filled safety 3)
        (86.5, 87.0, 86.0, 86.8),  # 6 = 4 + 2: next base order at this close
        (87.0, 87.5, 86.9, 87.2),  # 7 base fills at the open 87
        (87.2, 87.3, 85.0, 85.5),  # 8 new safety 1 at 87 × 0.98 = 85.26
    ]
    params = {
        "base_order_pct": 10.0,
        "safety_order_pct": 10.0,
        "max_safety_orders": 3,
        "safety_step_pct": 2.0,
        "step_scale": 2.0,
        "volume_scale": 2.0,
        "take_profit_pct": 2.0,
        "cooldown_bars": 2,
    }
    result = run_bars("dca", params, ohlc(rows))
    p1, p2 = 100.0 * (1 - 0.02), 100.0 * (1 - 0.06)
    q1, q2 = 10_000 / p1, 20_000 / p2
    avg1 = (100 * 100.0 + q1 * p1) / (100 + q1)
    avg2 = ((100 + q1) * avg1 + q2 * p2) / (100 + q1 + q2)
    tp = avg2 * 1.02
    total = 100 + q1 + q2
    equity = 100_000 + total * tp - (10_000 + q1 * p1 + q2 * p2)
    base2 = equity * 10 / 100 / 86.8
    got = fills(result)
    assert got == approx_fills(
        [
            (1, 1, 100.0, 100.0, "base"),
            (2, 1, p1, q1, "safety:1"),
            (3, 1, p2, q2, "safety:2"),
            (4, -1, tp, total, "tp"),
            (7, 1, 87.0, base2, "base"),
            (8, 1, 87 * 0.98, equity * 10 / 100 / (87 * 0.98), "safety:1"),
        ]
    )
    assert 98.3 < tp < 98.4
    assert result.metrics["trades"] == 1
    assert result.trades.column("gross_pnl")[0].as_py() == pytest.approx(equity - 100_000, rel=1e-9)
    # the TP resting at the end is the one for the new average (base 2 + safety 1)
    q = base2 + equity * 0.1 / (87 * 0.98)
    avg = (base2 * 87.0 + equity * 0.1) / q
    assert avg * 1.02 > 85.5  # not reached by bar 8


def test_dca_take_profit_tracks_the_average_after_each_safety_order() -> None:
    # one safety order; the first TP (at 100 × 1.03 = 103) is cancelled when the safety order fills, so bar 3
    # reaching 102 does not fill it; the new TP at avg × 1.03 ≈ 101.96 fills in bar 3 instead
    rows = [
        (100.0, 100.5, 99.5, 100.0),
        (100.0, 100.5, 99.5, 99.8),  # base at 100, TP at 103
        (99.8, 99.9, 97.0, 97.5),  # safety 1 at 98 (2 %), qty 10 000/98
        (97.5, 102.0, 97.4, 101.0),  # new TP ≈ 101.96 fills
    ]
    params = {"max_safety_orders": 1, "safety_step_pct": 2.0, "safety_order_pct": 10.0, "take_profit_pct": 3.0}
    result = run_bars("dca", params, ohlc(rows))
    q1 = 10_000 / 98.0
    avg = (100 * 100.0 + q1 * 98.0) / (100 + q1)
    assert fills(result)[-1] == (3, -1, pytest.approx(avg * 1.03, rel=1e-12), pytest.approx(100 + q1), "tp")
    assert avg * 1.03 < 102.0 < 103.0


def test_dca_short_deal_stop_loss_on_perpetual() -> None:
    # short: base sell 100 @ 100, safety sell at 102 (2 % above), TP 3 % below the average, stop 5 % above it
    rows = [
        (100.0, 100.5, 99.5, 100.0),  # 0 base order (sell)
        (100.0, 100.5, 99.5, 100.0),  # 1 base fills at 100
        (100.0, 102.5, 99.8, 102.2),  # 2 safety 1 at 102
        (102.2, 107.0, 102.0, 106.5),  # 3 close 106.5 > avg × 1.05 ≈ 106.04: stop
        (106.6, 107.0, 106.0, 106.4),  # 4 buy back at the open; deal over, cooldown 0: new base at this close
        (106.4, 106.8, 106.0, 106.2),  # 5 new base sell at the open
    ]
    params = {
        "side": "short",
        "max_safety_orders": 1,
        "safety_step_pct": 2.0,
        "safety_order_pct": 10.0,
        "take_profit_pct": 3.0,
        "stop_loss_pct": 5.0,
    }
    result = run_bars("dca", params, ohlc(rows), kind="perpetual")
    q1 = 10_000 / 102.0
    avg = (100 * 100.0 + q1 * 102.0) / (100 + q1)
    assert avg * 1.05 < 106.5
    pnl = (avg - 106.6) * (100 + q1)
    equity = 100_000 + pnl
    assert fills(result) == approx_fills(
        [
            (1, -1, 100.0, 100.0, "base"),
            (2, -1, 102.0, q1, "safety:1"),
            (4, 1, 106.6, 100 + q1, "stop"),
            (5, -1, 106.4, equity * 10 / 100 / 106.4, "base"),
        ]
    )
    assert result.trades.column("side").to_pylist() == [-1]
    assert result.trades.column("gross_pnl")[0].as_py() == pytest.approx(pnl, rel=1e-9)
    with pytest.raises(StrategyRuntimeError, match="side 'short' needs perpetual"):
        run_bars("dca", params, ohlc(rows))


def test_dca_periodic_buys_every_n_bars() -> None:
    # 1 000 quote every 3 bars from the first bar: decisions at bars 0, 3, 6, 9 → fills at the next opens
    closes = [100.0, 90.0, 70.0, 50.0, 60.0, 110.0, 125.0, 130.0, 90.0, 80.0, 85.0, 95.0]
    opens = [100.0, *closes[:-1]]
    rows = [(o, max(o, c) + 0.5, min(o, c) - 0.5, c) for o, c in zip(opens, closes, strict=True)]
    params = {"mode": "periodic", "periodic_amount": 1000.0, "periodic_interval_bars": 3, "take_profit_pct": 0.0}
    result = run_bars("dca", params, ohlc(rows))
    assert fills(result) == [
        (1, 1, 100.0, 10.0, "periodic"),
        (4, 1, 50.0, 20.0, "periodic"),
        (7, 1, 125.0, 8.0, "periodic"),
        (10, 1, 80.0, 12.5, "periodic"),
    ]
    assert result.metrics["trades"] == 0


def test_dca_periodic_with_take_profit_and_cooldown() -> None:
    # every 2 bars, TP 10 % over the average, cooldown 1: buy 10 @ 100 (TP 110), buy 12.5 @ 80
    # (avg 2000/22.5, TP ≈ 97.78); the TP fills in bar 4; the schedule restarts at bar 4 + 1 = 5
    rows = [
        (100.0, 100.5, 99.5, 100.0),  # 0 buy 1 000 / 100
        (100.0, 100.5, 99.0, 99.0),  # 1 fills at 100
        (99.0, 99.5, 79.5, 80.0),  # 2 buy 1 000 / 80
        (80.0, 82.0, 79.5, 81.0),  # 3 fills at 80
        (81.0, 98.0, 80.5, 97.0),  # 4 TP at (2000/22.5) × 1.1; the decision at this bar is skipped (cooldown)
        (97.0, 100.5, 96.5, 100.0),  # 5 new cycle: buy 1 000 / 100
        (100.0, 100.5, 99.5, 100.2),  # 6 fills at 100
    ]
    params = {"mode": "periodic", "periodic_amount": 1000.0, "periodic_interval_bars": 2, "take_profit_pct": 10.0}
    result = run_bars("dca", params | {"cooldown_bars": 1}, ohlc(rows))
    tp = 2000 / 22.5 * 1.1
    assert fills(result) == approx_fills(
        [
            (1, 1, 100.0, 10.0, "periodic"),
            (3, 1, 80.0, 12.5, "periodic"),
            (4, -1, tp, 22.5, "tp"),
            (6, 1, 100.0, 10.0, "periodic"),
        ]
    )


def test_dca_fees_taker_base_maker_safety_and_take_profit() -> None:
    rows = [
        (100.0, 100.5, 99.5, 100.0),
        (100.0, 100.5, 99.5, 99.8),  # base (market → taker 0.2 %)
        (99.8, 99.9, 97.0, 97.5),  # safety at 98 (limit → maker 0.1 %)
        (97.5, 102.0, 97.4, 101.0),  # TP (limit → maker)
    ]
    params = {"max_safety_orders": 1, "safety_step_pct": 2.0, "safety_order_pct": 10.0, "take_profit_pct": 3.0}
    result = run_bars("dca", params, ohlc(rows), maker_fee=0.001, taker_fee=0.002)
    f = result.fills.to_pydict()
    rates = [0.002, 0.001, 0.001]
    assert f["fee"] == pytest.approx([q * p * r for q, p, r in zip(f["qty"], f["price"], rates, strict=True)])
    assert result.metrics["fees_paid"] == pytest.approx(sum(f["fee"]), rel=1e-12)


def test_dca_unaffordable_safety_order_is_dropped() -> None:
    # base 50 % (500 @ 100, 50 000 left); safety 1 needs 60 000 at 98: rejected, the deal goes on with the
    # base order's take-profit at 102
    rows = [
        (100.0, 100.5, 99.5, 100.0),
        (100.0, 100.5, 99.5, 99.8),  # base fills at 100
        (99.8, 99.9, 97.0, 97.5),  # safety 1 at 98 is rejected
        (97.5, 102.5, 97.4, 101.0),  # TP at 102
    ]
    params = {"base_order_pct": 50.0, "safety_order_pct": 60.0, "max_safety_orders": 1, "safety_step_pct": 2.0}
    result = run_bars("dca", params | {"take_profit_pct": 2.0}, ohlc(rows))
    assert fills(result) == [(1, 1, 100.0, 500.0, "base"), (3, -1, 102.0, 500.0, "tp")]
    assert result.metrics["orders_rejected"] == 1


@pytest.mark.parametrize(
    ("params", "field", "rule"),
    [
        ({"mode": "grid"}, "mode", "'safety_orders' or 'periodic'"),
        ({"side": "both"}, "side", "'long' or 'short'"),
        ({"base_order_pct": 0.0}, "base_order_pct", "greater than 0"),
        ({"base_order_pct": 100.5}, "base_order_pct", "less than or equal to 100"),
        ({"safety_order_pct": 0.0}, "safety_order_pct", "greater than 0"),
        ({"max_safety_orders": 51}, "max_safety_orders", "less than or equal to 50"),
        ({"max_safety_orders": 2.0}, "max_safety_orders", "valid integer"),
        ({"safety_step_pct": 0.0}, "safety_step_pct", "greater than 0"),
        ({"step_scale": 0.05}, "step_scale", "greater than or equal to 0.1"),
        ({"volume_scale": 11.0}, "volume_scale", "less than or equal to 10"),
        ({"take_profit_pct": -1.0}, "take_profit_pct", "greater than or equal to 0"),
        ({"take_profit_pct": 0.0}, "params", "take_profit_pct must be > 0 in safety_orders mode"),
        ({"side": "short", "take_profit_pct": 100.0}, "params", "take_profit_pct (100) must be below 100 for short"),
        ({"safety_step_pct": 40.0, "step_scale": 2.0, "max_safety_orders": 2}, "params", "(120 %) must be below 100"),
        ({"stop_loss_pct": 100.0}, "stop_loss_pct", "less than 100"),
        ({"cooldown_bars": -1}, "cooldown_bars", "greater than or equal to 0"),
        ({"periodic_amount": 0.0}, "periodic_amount", "greater than 0"),
        ({"periodic_interval_bars": 0}, "periodic_interval_bars", "greater than or equal to 1"),
        ({"tp": 1.0}, "tp", "unknown parameter"),
    ],
)
def test_dca_parameter_validation(params: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(ParameterError) as info:
        REGISTRY.get("dca").validate_params(params)
    assert info.value.field == field
    assert rule in info.value.rule


def test_dca_periodic_mode_accepts_zero_take_profit_and_ignores_safety_settings() -> None:
    cls = REGISTRY.get("dca")
    p = cls.validate_params({"mode": "periodic", "take_profit_pct": 0.0, "safety_step_pct": 60.0, "step_scale": 5.0})
    assert p.mode == "periodic"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------- catalog


@pytest.mark.parametrize("strategy", ["grid_trading", "dca"])
def test_plugins_are_discovered_with_documented_bounded_params(strategy: str) -> None:
    cls = REGISTRY.get(strategy)
    meta = cls.metadata()
    assert meta["type"] == strategy
    assert set(meta["compatibility"]["market_types"]) == {"spot", "perpetual"}
    assert "seed 002" in (cls.__doc__ or "")
    for name, prop in meta["parameters_schema"]["properties"].items():
        assert prop.get("description"), name
        schemas = prop.get("anyOf", [prop])
        for schema in schemas:
            if schema.get("type") in ("number", "integer"):
                assert {"minimum", "exclusiveMinimum"} & schema.keys(), name
                assert {"maximum", "exclusiveMaximum"} & schema.keys(), name


# ---------------------------------------------------------------------------------------- real data


@pytest.mark.parametrize(
    ("strategy", "symbol", "market"),
    [
        ("grid_trading", "BTCUSDT", "perpetual"),
        ("dca", "ETHUSDT", "perpetual"),
        ("grid_trading", "ETHUSDT", "spot"),
        ("dca", "BTCUSDT", "spot"),
    ],
)
def test_real_data_default_params_trade_reconcile_and_are_deterministic(
    strategy: str, symbol: str, market: str
) -> None:
    perpetual = market == "perpetual"
    raw: dict[str, Any] = {
        "strategy_type": strategy,
        "data": PERP if perpetual else SPOT,
        "symbols": [symbol],
        "fee_bps": 2,
        "lot_size": 0.001,
    }
    if perpetual:
        raw["funding"] = FUNDING
    request = BacktestRequest.parse(raw)
    result = run_request(request, REGISTRY)
    assert result.metrics["trades"] >= 3
    assert result.metrics["fees_paid"] > 0
    if perpetual:
        assert result.funding is not None and result.funding.num_rows > 0
    from engine.data import load_bars

    table = load_bars(request.data, symbols=[symbol])
    table = table.filter(pc.equal(table.column("symbol"), symbol))
    closes = {symbol: (table.column("ts").cast(pa.int64()).to_numpy(), table.column("close").to_numpy())}
    assert_equity_reconciles(result, closes, perpetual=perpetual)
    again = run_request(request, REGISTRY)
    assert again.trade_hash == result.trade_hash
    assert again.metrics["final_equity"] == result.metrics["final_equity"]
