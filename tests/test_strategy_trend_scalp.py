"""multi_tf_trend and mean_reversion_scalp (seed 004, Phases 4.2 and 4.3).

Hand-built bars trigger each entry, exit and blocking rule. Every indicator condition is checked in
the test against TA-Lib, computed independently on the test's own copy of the bars (with the
higher-timeframe bars built here by numpy and aligned to the last *closed* bar). The expected fills
(bar, side, quantity, price, tag) come from the rules by hand: market orders fill at the next bar's
open (= the signal close, as each bar opens at the previous close), stops at their level, with
slippage and fees 0 unless a test says otherwise. Then the parameter models, and both plugins on
real Binance perpetual data: they trade with default parameters, the equity reconciles at every
bar, and runs are deterministic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import talib
from reconcile import assert_equity_reconciles

from engine.backtest.config import BacktestRequest, run_request
from engine.backtest.runner import Backtest, BacktestSettings
from engine.errors import ParameterError, StrategyRuntimeError
from engine.instruments import Instrument
from engine.strategy.registry import StrategyRegistry

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PANEL_1H = DATA / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"
PERP_15M = DATA / "binance_usdm_perp_15m_4sym_2025-08_2026-05.parquet"
FUNDING = DATA / "binance_usdm_funding_rates_40sym_2019_2026.parquet"
REGISTRY = StrategyRegistry().discover()
TREND = REGISTRY.get("multi_tf_trend")
SCALP = REGISTRY.get("mean_reversion_scalp")

MINUTE = 60 * 10**9
M15, H1, H4 = 15 * MINUTE, 60 * MINUTE, 240 * MINUTE
START = 1_700_006_400 * 10**9  # 2023-11-15 00:00 UTC: a day boundary, so 4h/1h/15m buckets line up
CASH = 100_000.0
REL = 1e-12  # prices derived from ATR: the engine's ATR and TA-Lib's may differ in the last bits

Bars = dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------------------------
# bars, runs, fills
# ---------------------------------------------------------------------------------------------------------


def make_bars(closes: np.ndarray, volume: np.ndarray, wick: float, step: int) -> Bars:
    """Bars opening at the previous close, with high/low ``wick`` beyond the body; ts = open time."""
    c = np.asarray(closes, dtype=np.float64)
    o = np.concatenate(([c[0]], c[:-1]))
    return {
        "ts": START + np.arange(len(c), dtype=np.int64) * step,
        "open": o,
        "high": np.maximum(o, c) + wick,
        "low": np.minimum(o, c) - wick,
        "close": c,
        "volume": np.asarray(volume, dtype=np.float64),
    }


def mirror(bars: Bars, pivot: float) -> Bars:
    """The bars reflected about ``pivot`` (price p → 2·pivot − p): an uptrend becomes a downtrend."""
    return {
        "ts": bars["ts"],
        "open": 2 * pivot - bars["open"],
        "high": 2 * pivot - bars["low"],
        "low": 2 * pivot - bars["high"],
        "close": 2 * pivot - bars["close"],
        "volume": bars["volume"],
    }


def split_bars(bars: Bars, k: int, step: int) -> Bars:
    """``k`` bars of ``step`` per bar that resample back to it: (O, H, L, O), then (O, O, O, O) bars,
    then (O, max(O, C), min(O, C), C); volume split evenly. The first visits both extremes in the
    parent's order, so a stop hit in the parent fills at the same price and open time."""
    o, h, lo, c, v = (bars[key] for key in ("open", "high", "low", "close", "volume"))
    n = len(o)
    out: Bars = {key: np.repeat(o, k) for key in ("open", "high", "low", "close")}
    out["high"][0::k], out["low"][0::k] = h, lo
    out["high"][k - 1 :: k], out["low"][k - 1 :: k] = np.maximum(o, c), np.minimum(o, c)
    out["close"][k - 1 :: k] = c
    out["volume"] = np.repeat(v / k, k)
    out["ts"] = START + np.arange(k * n, dtype=np.int64) * step
    return out


def run(
    strategy: type,
    params: dict[str, Any],
    bars: dict[str, Bars],
    timeframe: str,
    *,
    kind: str = "perpetual",
    leverage: float = 5.0,
    lot_size: float = 0.0,
    slippage_bps: float = 0.0,
) -> Any:
    """Backtest on hand-built bars and check the accounting replay at every bar."""
    inst = {
        s: Instrument(symbol=s, kind=kind, leverage=leverage if kind == "perpetual" else 1.0, lot_size=lot_size)  # type: ignore[arg-type]
        for s in bars
    }
    settings = BacktestSettings(cash=CASH, slippage_bps=slippage_bps)
    result = Backtest(strategy, params, bars, timeframe, inst, settings).run()
    closes = {s: (b["ts"], b["close"]) for s, b in bars.items()}
    assert_equity_reconciles(result, closes, perpetual=kind == "perpetual")
    return result


Fill = tuple[str, int, int, float, float, str]  # symbol, bar index, side, qty, price, tag


def fills(result: Any, step: int) -> list[Fill]:
    f = result.fills
    ts = f.column("ts").cast(pa.int64()).to_numpy()
    return list(
        zip(
            f.column("symbol").to_pylist(),
            ((ts - START) // step).tolist(),
            f.column("side").to_pylist(),
            f.column("qty").to_pylist(),
            f.column("price").to_pylist(),
            f.column("tag").to_pylist(),
            strict=True,
        )
    )


def assert_fills(result: Any, step: int, expected: list[Fill]) -> None:
    got = fills(result, step)
    assert [(s, b, side, tag) for s, b, side, _, _, tag in got] == [
        (s, b, side, tag) for s, b, side, _, _, tag in expected
    ]
    for g, e in zip(got, expected, strict=True):
        assert g[3] == pytest.approx(e[3], rel=REL), (g, e)
        assert g[4] == pytest.approx(e[4], rel=REL), (g, e)


def risk_qty(entry: float, stop: float, risk_pct: float = 1.0) -> float:
    """size_for_risk on a flat account of CASH: equity × risk % / |entry − stop|."""
    return CASH * risk_pct / 100.0 / abs(entry - stop)


def higher(values_by_bucket: np.ndarray, n: int, per: int) -> np.ndarray:
    """Align a higher-timeframe series to n base bars: base bar i sees bucket (i + 1) // per − 1."""
    j = (np.arange(n) + 1) // per - 1
    out = np.full(n, np.nan)
    ok = j >= 0
    out[ok] = values_by_bucket[j[ok]]
    return out


def prev(x: np.ndarray) -> np.ndarray:
    return np.concatenate(([np.nan], x[:-1]))


# ---------------------------------------------------------------------------------------------------------
# multi_tf_trend: scenario and TA-Lib reference
# ---------------------------------------------------------------------------------------------------------

#: the 4h bar whose close has the long signal: EMA(9) crosses above EMA(21) after the dip
S = 373
#: the 4h bar of the dip where EMA(9) crosses below EMA(21) (a short signal if the filter allowed it)
DIP_CROSS = 365


def trend_bars(tail: list[float], spike_at: tuple[int, ...] = (S,), spike: float = 3.0) -> Bars:
    """60 days of a 4h uptrend (+0.6, +0.6, −0.4 per bar, repeating), a 7-bar dip of −1.2 each, then
    +1.0 bars until EMA(9) crosses above EMA(21) at bar 373, then the ``tail`` close-to-close steps.
    Volume 1, except ``spike`` on the bars in ``spike_at``. Wicks 0.3."""
    steps = [(-0.4 if i % 3 == 0 else 0.6) for i in range(360)] + [-1.2] * 7 + [1.0] * 7 + tail
    closes = np.round(100.0 + np.cumsum(steps), 6)
    volume = np.ones(len(closes))
    for i in spike_at:
        volume[i] = spike
    return make_bars(closes, volume, 0.3, H4)


def trend_params(**overrides: Any) -> Any:
    return TREND.validate_params(overrides)


def trend_reference(b: Bars, p: Any) -> dict[str, np.ndarray]:
    """TA-Lib indicators on 4h bars, and on daily bars (6 × 4h) aligned to the last closed day."""
    h, lo, c, v = b["high"], b["low"], b["close"], b["volume"]
    n = len(c)
    nd = n // 6
    dh = h[: 6 * nd].reshape(nd, 6).max(axis=1)
    dl = lo[: 6 * nd].reshape(nd, 6).min(axis=1)
    dc = c[5 : 6 * nd : 6]
    return {
        "ema_fast": talib.EMA(c, p.ema_fast),
        "ema_slow": talib.EMA(c, p.ema_slow),
        "rsi": talib.RSI(c, p.rsi_period),
        "atr": talib.ATR(h, lo, c, p.atr_period),
        "vol_sma": talib.SMA(v, p.volume_period),
        "filter_ema": higher(talib.EMA(dc, p.filter_ema_period), n, 6),
        "adx": higher(talib.ADX(dh, dl, dc, p.adx_period), n, 6),
        "daily_adx": talib.ADX(dh, dl, dc, p.adx_period),
    }


def trend_signals(b: Bars, r: dict[str, np.ndarray], p: Any) -> tuple[list[int], list[int]]:
    """Bars whose close meets every long / short entry rule (the rules of Phase 4.2, vectorized)."""
    c, rsi = b["close"], r["rsi"]
    fast, slow = r["ema_fast"], r["ema_slow"]
    up = (prev(fast) <= prev(slow)) & (fast > slow)
    down = (prev(fast) >= prev(slow)) & (fast < slow)
    common = (r["adx"] > p.adx_entry) & (b["volume"] > p.volume_mult * r["vol_sma"])
    long = up & common & (c > r["filter_ema"]) & (rsi >= p.rsi_long_min) & (rsi <= p.rsi_long_max)
    short = down & common & (c < r["filter_ema"]) & (rsi >= p.rsi_short_min) & (rsi <= p.rsi_short_max)
    return np.flatnonzero(long).tolist(), np.flatnonzero(short).tolist()


def test_trend_scenario_meets_each_long_rule_at_one_bar_only() -> None:
    p = trend_params()
    b = trend_bars([0.3, -4.0])
    r = trend_reference(b, p)
    c = b["close"]
    assert r["ema_fast"][S - 1] <= r["ema_slow"][S - 1] and r["ema_fast"][S] > r["ema_slow"][S]
    assert 40.0 <= r["rsi"][S] <= 70.0  # ≈ 62.5
    assert b["volume"][S] > 1.2 * r["vol_sma"][S]  # 3 > 1.2 × 1.1
    assert c[S] > r["filter_ema"][S]  # the daily EMA(50) of the last closed day lags far below
    assert r["adx"][S] > 25.0  # a clean daily uptrend: ADX ≈ 97
    assert trend_signals(b, r, p) == ([S], [])


def test_trend_long_entry_and_initial_stop() -> None:
    # entry at bar 374's open (= close 373); the bracket stop at close − 2 ATR fills when bar 375
    # falls through it (open 0.3 above the entry, low 3.7 below it)
    b = trend_bars([0.3, -4.0])
    r = trend_reference(b, trend_params())
    entry, atr = b["close"][S], r["atr"][S]
    stop = entry - 2.0 * atr
    assert b["open"][S + 2] > stop > b["low"][S + 2]
    qty = risk_qty(entry, stop)
    result = run(TREND, {}, {"X": b}, "4h")
    assert_fills(result, H4, [("X", S + 1, 1, qty, entry, "long"), ("X", S + 2, -1, qty, stop, "long:sl")])
    assert result.trades.num_rows == 1
    # the loss is risk_pct of equity
    assert result.trades.column("net_pnl")[0].as_py() == pytest.approx(-0.01 * CASH, rel=1e-9)


def test_trend_short_entry_and_stop_alongside_a_long_on_another_symbol() -> None:
    # the mirrored bars (p → 400 − p) give a downtrend whose 4h EMA(9) crosses below EMA(21) at the
    # same bar: RSI in the short band [30, 60], close below the daily EMA; both symbols trade at once
    up = trend_bars([0.3, -4.0])
    down = mirror(up, 200.0)
    p = trend_params()
    r_down = trend_reference(down, p)
    assert trend_signals(down, r_down, p) == ([], [S])
    assert 30.0 <= r_down["rsi"][S] <= 60.0
    r_up = trend_reference(up, p)
    long_entry, short_entry = up["close"][S], down["close"][S]
    long_stop = long_entry - 2.0 * r_up["atr"][S]
    short_stop = short_entry + 2.0 * r_down["atr"][S]
    assert down["low"][S + 2] < short_stop < down["high"][S + 2]
    result = run(TREND, {}, {"UP": up, "DOWN": down}, "4h")
    long_qty, short_qty = risk_qty(long_entry, long_stop), risk_qty(short_entry, short_stop)
    assert_fills(
        result,
        H4,
        [
            ("UP", S + 1, 1, long_qty, long_entry, "long"),
            ("DOWN", S + 1, -1, short_qty, short_entry, "short"),
            ("UP", S + 2, -1, long_qty, long_stop, "long:sl"),
            ("DOWN", S + 2, 1, short_qty, short_stop, "short:sl"),
        ],
    )


def test_trend_stop_is_measured_from_the_entry_fill() -> None:
    # 10 bps slippage: the entry fills at close × 1.001; the bracket stop (close − 2 ATR) is replaced
    # after the entry bar by a stop 2 ATR below the fill, which fills (less slippage) on bar 375
    b = trend_bars([0.3, -4.0])
    r = trend_reference(b, trend_params())
    close, atr = b["close"][S], r["atr"][S]
    fill = close * 1.001
    stop = fill - 2.0 * atr
    qty = risk_qty(close, close - 2.0 * atr)  # sized at the signal close
    result = run(TREND, {}, {"X": b}, "4h", slippage_bps=10.0)
    assert_fills(result, H4, [("X", S + 1, 1, qty, fill, "long"), ("X", S + 2, -1, qty, stop * 0.999, "stop")])


def test_trend_trailing_stop_after_three_atr() -> None:
    # +1.5 × 3 bars: bar 376's high (entry + 4.8) is more than 3 ATR (≈ 4.43) above the entry, so
    # at its close the stop moves to that high − 1.5 ATR; bar 377 (−0.5) stays above it and makes no
    # new high; bar 378 (−3.0) falls through it
    b = trend_bars([1.5, 1.5, 1.5, -0.5, -3.0])
    r = trend_reference(b, trend_params())
    entry, atr = b["close"][S], r["atr"][S]
    assert b["high"][S + 2] < entry + 3.0 * atr <= b["high"][S + 3]  # the trail starts at bar 376
    trail = b["high"][S + 3] - 1.5 * atr
    assert trail > entry and b["low"][S + 4] > trail and b["open"][S + 5] > trail > b["low"][S + 5]
    qty = risk_qty(entry, entry - 2.0 * atr)
    result = run(TREND, {}, {"X": b}, "4h")
    assert_fills(result, H4, [("X", S + 1, 1, qty, entry, "long"), ("X", S + 5, -1, qty, trail, "trail")])
    assert result.trades.column("net_pnl")[0].as_py() > 0


def test_trend_opposing_cross_exit() -> None:
    # the price goes sideways for 30 bars (the EMAs converge, no daily direction: ADX holds) and then
    # steps down 0.5 per bar: EMA(9) crosses below EMA(21) on bar 405, well above the 2-ATR stop; the
    # position is closed at the next open, and no short opens (volume and daily filter say no)
    b = trend_bars([0.0] * 30 + [-0.5] * 3)
    p = trend_params()
    r = trend_reference(b, p)
    fast, slow = r["ema_fast"], r["ema_slow"]
    crosses = [i for i in range(S + 1, len(b["close"])) if fast[i - 1] >= slow[i - 1] and fast[i] < slow[i]]
    x = crosses[0]
    assert x == S + 32 and r["adx"][x] > 20.0
    entry, atr = b["close"][S], r["atr"][S]
    assert b["low"][S + 1 : x + 2].min() > entry - 2.0 * atr
    assert trend_signals(b, r, p) == ([S], [])
    qty = risk_qty(entry, entry - 2.0 * atr)
    result = run(TREND, {}, {"X": b}, "4h")
    assert_fills(result, H4, [("X", S + 1, 1, qty, entry, "long"), ("X", x + 1, -1, qty, b["close"][x], "cross_exit")])


def test_trend_opposing_cross_reverses_when_the_opposite_entry_rules_hold() -> None:
    # the bars of the cross exit with a volume spike on the cross down (bar 405) and a daily EMA(1)
    # (the last closed day's close, 194.6 > 193.6): the long is closed and a short opened at the same
    # open, sized on the equity at bar 405's close; a +4.0 bar later hits the short's bracket stop
    x = S + 32
    b = trend_bars([0.0] * 30 + [-0.5] * 4 + [4.0], spike_at=(S, x))
    p = trend_params(filter_ema_period=1)
    r = trend_reference(b, p)
    assert trend_signals(b, r, p) == ([S], [x])
    c = b["close"]
    assert 30.0 <= r["rsi"][x] <= 60.0 and c[x] < r["filter_ema"][x] and r["adx"][x] > 25.0
    long_qty = risk_qty(c[S], c[S] - 2.0 * r["atr"][S])
    short_stop = c[x] + 2.0 * r["atr"][x]
    assert b["high"][x + 1 : x + 3].max() < short_stop < b["high"][x + 3]
    equity = CASH + long_qty * (c[x] - c[S])  # the long's unrealised P&L at bar 405's close
    short_qty = equity * 1.0 / 100.0 / abs(c[x] - short_stop)
    result = run(TREND, {"filter_ema_period": 1}, {"X": b}, "4h")
    assert_fills(
        result,
        H4,
        [
            ("X", S + 1, 1, long_qty, c[S], "long"),
            ("X", x + 1, -1, long_qty, c[x], "cross_exit"),
            ("X", x + 1, -1, short_qty, c[x], "short"),
            ("X", x + 3, 1, short_qty, short_stop, "short:sl"),
        ],
    )
    assert result.trades.column("side").to_pylist() == [1, -1]


def adx_bars() -> Bars:
    """The long of bar 373, then +0.3 per bar to the end of day 63; from day 64 on the closes creep up
    (+0.05 per bar) while every day spans the same range, 0.5 above day 63's high (bar 2 of the day) and
    2.0 below its low (bar 3): the first such day has only −DM (a lower low bigger than the higher
    high), the others none, so the daily DX collapses and ADX(3) falls below 20 on day 66."""
    tail = [0.3] * (6 * 64 - (S + 1)) + [0.05] * 36
    b = trend_bars(tail)
    d63 = slice(6 * 63, 6 * 64)
    top, bottom = b["high"][d63].max() + 0.5, b["low"][d63].min() - 2.0
    for day in range(64, 70):
        b["high"][6 * day + 2] = top
        b["low"][6 * day + 3] = bottom
    return b


def test_trend_adx_below_20_exit() -> None:
    b = adx_bars()
    p = trend_params(adx_period=3)
    r = trend_reference(b, p)
    assert trend_signals(b, r, p) == ([S], [])
    daily_adx = r["daily_adx"]
    assert daily_adx[61] > 25.0  # what bar 373 sees
    first_low = next(d for d in range(62, len(daily_adx)) if daily_adx[d] < 20.0)
    assert first_low == 66 and daily_adx[65] >= 20.0
    exit_bar = 6 * first_low + 6  # day 66 closes with bar 401; the exit fills at bar 402's open
    entry, atr = b["close"][S], r["atr"][S]
    # neither the stop nor the trailing trigger is reached, and EMA(9) stays above EMA(21)
    assert b["low"][S + 1 : exit_bar].min() > entry - 2.0 * atr
    assert b["high"][S + 1 : exit_bar].max() < entry + 3.0 * atr
    assert (r["ema_fast"][S:exit_bar] > r["ema_slow"][S:exit_bar]).all()
    qty = risk_qty(entry, entry - 2.0 * atr)
    result = run(TREND, {"adx_period": 3}, {"X": b}, "4h")
    assert_fills(
        result,
        H4,
        [("X", S + 1, 1, qty, entry, "long"), ("X", exit_bar, -1, qty, b["close"][exit_bar - 1], "adx_exit")],
    )


@pytest.mark.parametrize(
    ("overrides", "spike", "why"),
    [
        ({}, 1.2, "volume 1.2 is not above 1.2 × its SMA (1.2 × 1.01)"),
        ({"rsi_long_max": 62.0}, 3.0, "RSI ≈ 62.5 is above the long band"),
        ({"rsi_long_min": 63.0, "rsi_long_max": 70.0}, 3.0, "RSI ≈ 62.5 is below the long band"),
        ({"adx_entry": 98.0}, 3.0, "daily ADX ≈ 97.1 is not above the threshold"),
    ],
)
def test_trend_blocking_conditions_prevent_the_long(overrides: dict[str, Any], spike: float, why: str) -> None:
    b = trend_bars([0.3, -4.0], spike=spike)
    p = trend_params(**overrides)
    assert trend_signals(b, trend_reference(b, p), p) == ([], []), why
    result = run(TREND, overrides, {"X": b}, "4h")
    assert result.fills.num_rows == 0, why


def test_trend_daily_filter_against_prevents_entry() -> None:
    # the volume spike sits on the dip's cross down (bar 365): EMA cross, RSI in the short band and
    # daily ADX all agree on a short, but the close is above the daily EMA(50), so nothing trades;
    # mirrored, the same bar is a long cross with RSI in the long band below the daily EMA
    p = trend_params()
    for b, fast_above in (
        (trend_bars([0.3], spike_at=(DIP_CROSS,)), False),
        (mirror(trend_bars([0.3], spike_at=(DIP_CROSS,)), 200.0), True),
    ):
        r = trend_reference(b, p)
        i = DIP_CROSS
        crossed = r["ema_fast"][i] > r["ema_slow"][i] if fast_above else r["ema_fast"][i] < r["ema_slow"][i]
        assert crossed and (r["ema_fast"][i - 1] - r["ema_slow"][i - 1]) * (1 if fast_above else -1) <= 0
        band = (p.rsi_long_min, p.rsi_long_max) if fast_above else (p.rsi_short_min, p.rsi_short_max)
        assert band[0] <= r["rsi"][i] <= band[1]
        assert b["volume"][i] > 1.2 * r["vol_sma"][i] and r["adx"][i] > 25.0
        assert (b["close"][i] < r["filter_ema"][i]) if fast_above else (b["close"][i] > r["filter_ema"][i])
        assert trend_signals(b, r, p) == ([], [])
        assert run(TREND, {}, {"X": b}, "4h").fills.num_rows == 0


def test_trend_shorts_need_allow_short_and_a_perpetual() -> None:
    down = mirror(trend_bars([0.3, -4.0]), 200.0)
    assert run(TREND, {"allow_short": False}, {"X": down}, "4h").fills.num_rows == 0
    assert run(TREND, {}, {"X": down}, "4h", kind="spot").fills.num_rows == 0
    assert run(TREND, {}, {"X": down}, "4h").fills.num_rows == 2


def test_trend_entry_timeframe_above_the_run_timeframe() -> None:
    # the same market as 1h bars: with entry_timeframe 4h the signal is read at the 4h close, so the
    # entry, its size and the stop fill are those of the 4h run (same times, same prices)
    b4 = trend_bars([0.3, -4.0])
    b1 = split_bars(b4, 4, H1)
    four = run(TREND, {}, {"X": b4}, "4h")
    one = run(TREND, {"entry_timeframe": "4h"}, {"X": b1}, "1h")
    assert fills(one, H4) == fills(four, H4)
    assert len(fills(four, H4)) == 2


def test_trend_entry_timeframe_below_the_run_timeframe_is_an_error() -> None:
    daily = make_bars(np.linspace(100, 120, 80), np.ones(80), 0.5, 24 * H1)
    with pytest.raises(StrategyRuntimeError, match="timeframe"):
        run(TREND, {"filter_timeframe": "1w"}, {"X": daily}, "1d")


# ---------------------------------------------------------------------------------------------------------
# mean_reversion_scalp: scenario and TA-Lib reference
# ---------------------------------------------------------------------------------------------------------

#: the 15m bar whose close has the long signal (a small bounce after a three-bar drop)
E = 243


def scalp_bars(tail: list[float], spike: float = 5.0) -> Bars:
    """60 hours of a 15m uptrend (+0.15, −0.05 per bar), a drop of −1.0, −1.0, −0.8, then a +0.15
    bounce on bar 243 with volume ``spike`` (1 elsewhere), then the ``tail`` steps. Wicks 0.05."""
    steps = [(0.15 if i % 2 == 0 else -0.05) for i in range(240)] + [-1.0, -1.0, -0.8, 0.15] + tail
    closes = np.round(100.0 + np.cumsum(steps), 6)
    volume = np.ones(len(closes))
    volume[E] = spike
    return make_bars(closes, volume, 0.05, M15)


def scalp_params(**overrides: Any) -> Any:
    return SCALP.validate_params(overrides)


def scalp_reference(b: Bars, p: Any) -> dict[str, np.ndarray]:
    """TA-Lib indicators on 15m bars, and the EMA of 1h closes (every 4th bar) aligned to the last closed hour."""
    h, lo, c, v = b["high"], b["low"], b["close"], b["volume"]
    n = len(c)
    upper, middle, lower = talib.BBANDS(c, p.bb_period, p.bb_k, p.bb_k, talib.MA_Type.SMA)
    r = talib.RSI(c, p.stoch_rsi_period)
    k, d = talib.STOCH(r, r, r, p.stoch_period, p.stoch_k, talib.MA_Type.SMA, p.stoch_d, talib.MA_Type.SMA)
    return {
        "upper": upper,
        "middle": middle,
        "lower": lower,
        "rsi": talib.RSI(c, p.rsi_period),
        "k": k,
        "d": d,
        "vol_sma": talib.SMA(v, p.volume_period),
        "atr": talib.ATR(h, lo, c, p.atr_period),
        "filter_ema": higher(talib.EMA(c[3 : 4 * (n // 4) : 4], p.filter_ema_period), n, 4),
    }


def scalp_signals(b: Bars, r: dict[str, np.ndarray], p: Any) -> tuple[list[int], list[int]]:
    """Bars whose close meets every long / short entry rule of Phase 4.3 (vectorized)."""
    c, rsi, k, d = b["close"], r["rsi"], r["k"], r["d"]
    kp, dp = prev(k), prev(d)
    spike = b["volume"] > p.volume_mult * r["vol_sma"]
    regime = np.ones(len(c), dtype=bool)
    if p.bb_width_max > 0:
        regime = (r["upper"] - r["lower"]) / r["middle"] <= p.bb_width_max
    long = (
        (c < r["lower"])
        & (rsi < p.rsi_oversold)
        & (kp <= dp)
        & (k > d)
        & (kp < p.stoch_oversold)
        & spike
        & (c > r["filter_ema"])
    )
    short = (
        (c > r["upper"])
        & (rsi > p.rsi_overbought)
        & (kp >= dp)
        & (k < d)
        & (kp > p.stoch_overbought)
        & spike
        & (c < r["filter_ema"])
    )
    return np.flatnonzero(long & regime).tolist(), np.flatnonzero(short & regime).tolist()


def test_scalp_scenario_meets_each_long_rule_at_one_bar_only() -> None:
    p = scalp_params()
    b = scalp_bars([-1.0])
    r = scalp_reference(b, p)
    c = b["close"]
    assert c[E] < r["lower"][E]  # 109.35 < ≈ 109.70
    assert r["rsi"][E] < 25.0  # ≈ 16.1
    assert r["k"][E - 1] <= r["d"][E - 1] and r["k"][E] > r["d"][E] and r["k"][E - 1] < 20.0  # 0 ≤ 11.1; 2.0 > 0.67
    assert b["volume"][E] > 2.0 * r["vol_sma"][E]  # 5 > 2 × 1.2
    assert c[E] > r["filter_ema"][E]  # the 1h EMA(50) lags below (≈ 107.19)
    assert scalp_signals(b, r, p) == ([E], [])


def test_scalp_long_entry_and_stop() -> None:
    b = scalp_bars([-1.0])
    r = scalp_reference(b, scalp_params())
    entry, atr = b["close"][E], r["atr"][E]
    stop = entry - 1.5 * atr
    assert b["open"][E + 1] > stop > b["low"][E + 1]
    qty = risk_qty(entry, stop)
    result = run(SCALP, {}, {"X": b}, "15m")
    assert_fills(result, M15, [("X", E + 1, 1, qty, entry, "long"), ("X", E + 1, -1, qty, stop, "long:sl")])
    assert result.trades.column("net_pnl")[0].as_py() == pytest.approx(-0.01 * CASH, rel=1e-9)


def test_scalp_short_entry_and_stop_on_mirrored_bars() -> None:
    b = mirror(scalp_bars([-1.0]), 150.0)
    p = scalp_params()
    r = scalp_reference(b, p)
    assert scalp_signals(b, r, p) == ([], [E])
    assert b["close"][E] > r["upper"][E] and r["rsi"][E] > 75.0 and r["k"][E - 1] > 80.0
    entry, atr = b["close"][E], r["atr"][E]
    stop = entry + 1.5 * atr
    assert b["low"][E + 1] < stop < b["high"][E + 1]
    qty = risk_qty(entry, stop)
    result = run(SCALP, {}, {"X": b}, "15m")
    assert_fills(result, M15, [("X", E + 1, -1, qty, entry, "short"), ("X", E + 1, 1, qty, stop, "short:sl")])


@pytest.mark.parametrize("lot_size", [0.0, 0.001])
def test_scalp_middle_band_partial_then_trailing_remainder(lot_size: float) -> None:
    # bar 244 closes above the middle band → half the entry quantity is sold at bar 245's open and the
    # stop trails 0.5 ATR behind the best high; bar 245 makes a new high (the trail follows it) and
    # bar 246 falls through the trail, which closes the rest
    b = scalp_bars([2.2, 0.4, -1.0])
    r = scalp_reference(b, scalp_params())
    c, atr = b["close"], r["atr"][E]
    assert c[E + 1] >= r["middle"][E + 1] and r["rsi"][E + 1] > 40.0
    entry = c[E]
    inst = Instrument(symbol="X", lot_size=lot_size)
    qty = inst.round_qty(risk_qty(entry, entry - 1.5 * atr))
    half = inst.round_qty(qty * 0.5)
    trail_1, trail_2 = b["high"][E + 1] - 0.5 * atr, b["high"][E + 2] - 0.5 * atr
    assert b["low"][E + 2] > trail_1 and b["open"][E + 3] > trail_2 > b["low"][E + 3]
    result = run(SCALP, {}, {"X": b}, "15m", lot_size=lot_size)
    assert_fills(
        result,
        M15,
        [
            ("X", E + 1, 1, qty, entry, "long"),
            ("X", E + 2, -1, half, c[E + 1], "tp_partial"),
            ("X", E + 3, -1, qty - half, trail_2, "trail"),
        ],
    )
    assert result.trades.num_rows == 1 and result.trades.column("net_pnl")[0].as_py() > 0


def test_scalp_rsi_exit_after_partial_option_and_full_take_profit() -> None:
    b = scalp_bars([2.2, 0.4, -1.0])
    r = scalp_reference(b, scalp_params())
    c, atr = b["close"], r["atr"][E]
    qty = risk_qty(c[E], c[E] - 1.5 * atr)
    # rsi_exit_after_partial: RSI(7) ≈ 62 ≥ 40 at bar 245's close closes the remainder at bar 246's open
    assert r["rsi"][E + 2] >= 40.0
    result = run(SCALP, {"rsi_exit_after_partial": True}, {"X": b}, "15m")
    assert_fills(
        result,
        M15,
        [
            ("X", E + 1, 1, qty, c[E], "long"),
            ("X", E + 2, -1, qty * 0.5, c[E + 1], "tp_partial"),
            ("X", E + 3, -1, qty * 0.5, c[E + 2], "rsi_exit"),
        ],
    )
    # partial_pct 100: the whole position is taken off at the middle band
    result = run(SCALP, {"partial_pct": 100.0}, {"X": b}, "15m")
    assert_fills(result, M15, [("X", E + 1, 1, qty, c[E], "long"), ("X", E + 2, -1, qty, c[E + 1], "tp_exit")])


def test_scalp_rsi_back_in_band_exit() -> None:
    # bar 244 (+1.0) closes below the middle band with RSI(7) back above 40: close at bar 245's open
    b = scalp_bars([1.0, 0.1])
    r = scalp_reference(b, scalp_params())
    c, atr = b["close"], r["atr"][E]
    assert c[E + 1] < r["middle"][E + 1] and 40.0 <= r["rsi"][E + 1] <= 60.0
    qty = risk_qty(c[E], c[E] - 1.5 * atr)
    result = run(SCALP, {}, {"X": b}, "15m")
    assert_fills(result, M15, [("X", E + 1, 1, qty, c[E], "long"), ("X", E + 2, -1, qty, c[E + 1], "rsi_exit")])


def test_scalp_twelve_candle_time_stop() -> None:
    # a slow grind lower (−0.01 per bar): below the middle band, RSI(7) < 40, above the stop; the
    # entry candle (244) is the first of 12, so the position is closed at the open of bar 256
    b = scalp_bars([-0.01] * 14)
    p = scalp_params()
    r = scalp_reference(b, p)
    c, atr = b["close"], r["atr"][E]
    held = slice(E + 1, E + 13)
    assert (c[held] < r["middle"][held]).all() and (r["rsi"][held] < 40.0).all()
    assert b["low"][held].min() > c[E] - 1.5 * atr
    assert scalp_signals(b, r, p) == ([E], [])
    qty = risk_qty(c[E], c[E] - 1.5 * atr)
    result = run(SCALP, {}, {"X": b}, "15m")
    assert_fills(result, M15, [("X", E + 1, 1, qty, c[E], "long"), ("X", E + 13, -1, qty, c[E + 12], "time_exit")])
    assert result.trades.column("bars_held")[0].as_py() == 12


@pytest.mark.parametrize(
    ("overrides", "spike", "why"),
    [
        ({}, 2.1, "volume 2.1 is not above 2 × its SMA (2 × 1.055)"),
        ({"filter_ema_period": 1}, 5.0, "the 1h filter is the last closed hour's close (112.0), above the close"),
        ({"rsi_oversold": 16.0}, 5.0, "RSI(7) ≈ 16.06 is not below 16"),
        ({"stoch_oversold": 0.0}, 5.0, "the previous K (0) is not below 0"),
        ({"bb_k": 2.5}, 5.0, "the close is not below the 2.5-sigma band"),
        ({"bb_width_max": 0.01}, 5.0, "the band width ≈ 0.029 is above the regime cap"),
    ],
)
def test_scalp_blocking_conditions_prevent_the_long(overrides: dict[str, Any], spike: float, why: str) -> None:
    b = scalp_bars([-1.0], spike=spike)
    p = scalp_params(**overrides)
    assert scalp_signals(b, scalp_reference(b, p), p) == ([], []), why
    assert run(SCALP, overrides, {"X": b}, "15m").fills.num_rows == 0, why


def test_scalp_band_width_filter_allows_a_narrow_enough_market() -> None:
    b = scalp_bars([-1.0])
    p = scalp_params(bb_width_max=0.05)
    assert scalp_signals(b, scalp_reference(b, p), p) == ([E], [])
    assert run(SCALP, {"bb_width_max": 0.05}, {"X": b}, "15m").fills.num_rows == 2


@pytest.mark.parametrize("tail", [[-1.0], [-0.01] * 14], ids=["stop", "time_stop"])
def test_scalp_entry_timeframe_above_the_run_timeframe(tail: list[float]) -> None:
    # the same market as 5m bars with entry_timeframe 15m: signals and the 12-candle count use the
    # 15m closes, so the fills are those of the 15m run (same open times and prices)
    b15 = scalp_bars(tail)
    fifteen = run(SCALP, {}, {"X": b15}, "15m")
    five = run(SCALP, {"entry_timeframe": "15m"}, {"X": split_bars(b15, 3, 5 * MINUTE)}, "5m")
    assert fills(five, M15) == fills(fifteen, M15)
    assert [f[5] for f in fills(fifteen, M15)] == ["long", "long:sl" if tail == [-1.0] else "time_exit"]


def test_scalp_size_is_capped_below_what_cash_allows() -> None:
    # on spot the risk size (≈ 1875 units ≈ 205k) is more than the 100k cash buys: the entry takes
    # 99 % of the affordable quantity (margin_headroom_pct 1), and the stop closes that quantity
    b = scalp_bars([-1.0])
    r = scalp_reference(b, scalp_params())
    entry, atr = b["close"][E], r["atr"][E]
    assert risk_qty(entry, entry - 1.5 * atr) * entry > CASH
    qty = CASH / entry * 0.99
    result = run(SCALP, {}, {"X": b}, "15m", kind="spot")
    assert_fills(
        result, M15, [("X", E + 1, 1, qty, entry, "long"), ("X", E + 1, -1, qty, entry - 1.5 * atr, "long:sl")]
    )


def test_scalp_shorts_need_allow_short_and_a_perpetual() -> None:
    b = mirror(scalp_bars([-1.0]), 150.0)
    assert run(SCALP, {"allow_short": False}, {"X": b}, "15m").fills.num_rows == 0
    assert run(SCALP, {}, {"X": b}, "15m", kind="spot").fills.num_rows == 0


# ---------------------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "raw", "field"),
    [
        ("multi_tf_trend", {"ema_fast": 21, "ema_slow": 9}, "ema_slow"),
        ("multi_tf_trend", {"ema_fast": 9.0}, "ema_fast"),
        ("multi_tf_trend", {"adx_exit": 30.0}, "adx_exit"),
        ("multi_tf_trend", {"rsi_long_min": 80.0}, "rsi_long_max"),
        ("multi_tf_trend", {"rsi_short_max": 20.0}, "rsi_short_max"),
        ("multi_tf_trend", {"risk_pct": 0.0}, "risk_pct"),
        ("multi_tf_trend", {"stop_atr": -1.0}, "stop_atr"),
        ("multi_tf_trend", {"trail_atr": math.nan}, "trail_atr"),
        ("multi_tf_trend", {"volume_mult": 1000.0}, "volume_mult"),
        ("multi_tf_trend", {"entry_timeframe": "4x"}, "entry_timeframe"),
        ("multi_tf_trend", {"filter_timeframe": "6h"}, "filter_timeframe"),
        ("multi_tf_trend", {"filter_timeframe": "4h"}, "filter_timeframe"),
        ("multi_tf_trend", {"allow_short": "yes"}, "allow_short"),
        ("multi_tf_trend", {"leverage": 3}, "leverage"),
        ("mean_reversion_scalp", {"rsi_oversold": 80.0}, "rsi_overbought"),
        ("mean_reversion_scalp", {"stoch_oversold": 90.0}, "stoch_overbought"),
        ("mean_reversion_scalp", {"rsi_exit_low": 70.0}, "rsi_exit_high"),
        ("mean_reversion_scalp", {"partial_pct": 0.0}, "partial_pct"),
        ("mean_reversion_scalp", {"partial_pct": 150.0}, "partial_pct"),
        ("mean_reversion_scalp", {"max_bars": 0}, "max_bars"),
        ("mean_reversion_scalp", {"bb_period": 1}, "bb_period"),
        ("mean_reversion_scalp", {"bb_width_max": -0.1}, "bb_width_max"),
        ("mean_reversion_scalp", {"filter_timeframe": "10m"}, "filter_timeframe"),
        ("mean_reversion_scalp", {"stoch_k": 0}, "stoch_k"),
    ],
)
def test_bad_parameters_name_the_field(strategy: str, raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ParameterError) as info:
        REGISTRY.get(strategy).validate_params(raw)
    assert info.value.field == field


def test_defaults_are_the_seed_values_and_timeframes_are_normalised() -> None:
    t = trend_params()
    assert (t.entry_timeframe, t.filter_timeframe, t.filter_ema_period, t.adx_period, t.adx_entry, t.adx_exit) == (
        "4h",
        "1d",
        50,
        14,
        25.0,
        20.0,
    )
    assert (t.ema_fast, t.ema_slow, t.rsi_period, t.rsi_long_min, t.rsi_long_max, t.rsi_short_min) == (
        9,
        21,
        14,
        40.0,
        70.0,
        30.0,
    )
    assert (t.rsi_short_max, t.volume_period, t.volume_mult, t.atr_period, t.stop_atr) == (60.0, 20, 1.2, 14, 2.0)
    assert (t.trail_trigger_atr, t.trail_atr, t.risk_pct, t.allow_short) == (3.0, 1.5, 1.0, True)
    s = scalp_params()
    assert (s.entry_timeframe, s.filter_timeframe, s.filter_ema_period, s.bb_period, s.bb_k, s.rsi_period) == (
        "15m",
        "1h",
        50,
        20,
        2.0,
        7,
    )
    assert (s.rsi_oversold, s.rsi_overbought, s.stoch_rsi_period, s.stoch_period, s.stoch_k, s.stoch_d) == (
        25.0,
        75.0,
        14,
        14,
        3,
        3,
    )
    assert (s.stoch_oversold, s.stoch_overbought, s.volume_mult, s.atr_period, s.stop_atr, s.partial_pct) == (
        20.0,
        80.0,
        2.0,
        14,
        1.5,
        50.0,
    )
    assert (s.trail_atr, s.rsi_exit_low, s.rsi_exit_high, s.max_bars, s.bb_width_max) == (0.5, 40.0, 60.0, 12, 0.0)
    assert trend_params(entry_timeframe="240m", filter_timeframe="24h").entry_timeframe == "4h"
    assert scalp_params(filter_timeframe="60m").filter_timeframe == "1h"
    for cls in (TREND, SCALP):
        schema = cls.parameters_schema()
        for name, prop in schema["properties"].items():
            assert prop.get("description"), name
            if prop.get("type") in ("integer", "number"):
                assert {"minimum", "exclusiveMinimum"} & set(prop) and {"maximum", "exclusiveMaximum"} & set(prop), name


# ---------------------------------------------------------------------------------------------------------
# real data
# ---------------------------------------------------------------------------------------------------------

TREND_SYMBOLS = [
    "BTCUSDT",
    "ETHUSDT",
    "SOLUSDT",
    "AVAXUSDT",
    "LINKUSDT",
    "DOTUSDT",
    "ADAUSDT",
    "NEARUSDT",
    "SUIUSDT",
    "RENDERUSDT",
]


def real_closes(path: Path, symbols: list[str], timeframe: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from engine.data import load_bars, resample

    table = load_bars(path, symbols=symbols)
    if timeframe is not None:
        table = resample(table, timeframe)
    out = {}
    for s in symbols:
        t = table.filter(pc.equal(table.column("symbol"), s))
        out[s] = (t.column("ts").cast(pa.int64()).to_numpy(), t.column("close").to_numpy())
    return out


def check_one_position_per_symbol(result: Any) -> None:
    """Entries (tags long/short) only open from flat; every trade ends flat."""
    position: dict[str, float] = {}
    for row in result.fills.to_pylist():
        held = position.get(row["symbol"], 0.0)
        if row["tag"] in ("long", "short"):
            assert abs(held) < 1e-9, row
        position[row["symbol"]] = held + row["side"] * row["qty"]


def test_multi_tf_trend_on_real_4h_perpetual_data() -> None:
    request = BacktestRequest.parse(
        {
            "strategy_type": "multi_tf_trend",
            "data": PANEL_1H,
            "timeframe": "4h",
            "symbols": TREND_SYMBOLS,
            "market": "perpetual",
            "leverage": 3,
            "funding": FUNDING,
            "fee_bps": 4,
            "slippage_bps": 1,
            "lot_size": 0.001,
        }
    )
    result = run_request(request, REGISTRY)
    tags = result.fills.column("tag").to_pylist()
    assert result.metrics["trades"] >= 20
    assert "long" in tags and "short" in tags and "cross_exit" in tags and "trail" in tags
    assert len(set(result.fills.column("symbol").to_pylist())) >= 8
    assert result.funding is not None and result.funding.num_rows > 0
    check_one_position_per_symbol(result)
    assert_equity_reconciles(result, real_closes(PANEL_1H, TREND_SYMBOLS, "4h"), perpetual=True)
    assert run_request(request, REGISTRY).trade_hash == result.trade_hash


def test_mean_reversion_scalp_on_real_15m_perpetual_data() -> None:
    symbols = ["BTCUSDT", "DOGEUSDT", "ETHUSDT", "XRPUSDT"]
    request = BacktestRequest.parse(
        {
            "strategy_type": "mean_reversion_scalp",
            "data": PERP_15M,
            "symbols": symbols,
            "market": "perpetual",
            "leverage": 2,
            "funding": FUNDING,
            "fee_bps": 4,
            "slippage_bps": 1,
            "lot_size": 0.001,
        }
    )
    result = run_request(request, REGISTRY)
    tags = result.fills.column("tag").to_pylist()
    assert result.metrics["trades"] >= 5
    assert "long" in tags and "short" in tags and "rsi_exit" in tags
    check_one_position_per_symbol(result)
    assert_equity_reconciles(result, real_closes(PERP_15M, symbols, None), perpetual=True)
    assert run_request(request, REGISTRY).trade_hash == result.trade_hash
