"""funding_carry and cross_sectional_momentum (seed 004, Phase 4.4 and 4.5).

Hand-built bars and funding tables trigger each entry and exit rule; fill times, prices and
quantities are computed here from the rules (slippage 0, fees 0). Real data: both plugins trade the
32-symbol Binance panel with their default parameters, the accounting reconciles at every bar and the
runs are deterministic.
"""

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
HOUR = 3_600 * 10**9
DAY = 24 * HOUR
T0 = 1_704_067_200 * 10**9  # 2024-01-01 00:00 UTC
REGISTRY = StrategyRegistry().discover()
BP = 1e-4  # one basis point: funding rates below are written in units of 0.01 %


# ------------------------------------------------------------------------------------------------ helpers
def make_bars(closes: list[float], start: int, step: int, volume: float = 1.0) -> dict[str, np.ndarray]:
    """Bars whose open is the previous close and whose range is ±0.5 around the body."""
    c = np.asarray(closes, dtype=np.float64)
    o = np.concatenate(([c[0]], c[:-1]))
    return {
        "ts": start + np.arange(len(c), dtype=np.int64) * step,
        "open": o,
        "high": np.maximum(o, c) + 0.5,
        "low": np.minimum(o, c) - 0.5,
        "close": c,
        "volume": np.full(len(c), float(volume)),
    }


def funding_table(events: dict[str, list[tuple[int, float]]]) -> pa.Table:
    """The table engine.data.load_funding returns: symbol, ts (timestamp ns UTC), rate."""
    rows = [(s, t, r) for s, evs in events.items() for t, r in sorted(evs)]
    return pa.table(
        {
            "symbol": pa.array([r[0] for r in rows], pa.string()),
            "ts": pa.array([r[1] for r in rows], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            "rate": pa.array([r[2] for r in rows], pa.float64()),
        }
    )


def run(
    strategy: str,
    params: dict[str, Any],
    bars: dict[str, dict[str, np.ndarray]],
    timeframe: str,
    funding: pa.Table | None = None,
    open_interest: pa.Table | None = None,
    leverage: float = 1.0,
) -> Any:
    inst = {s: Instrument(symbol=s, kind="perpetual", leverage=leverage) for s in bars}
    bt = Backtest(
        REGISTRY.get(strategy),
        params,
        bars,
        timeframe,
        inst,
        BacktestSettings(),
        funding=funding,
        open_interest=open_interest,
    )
    result = bt.run()
    closes = {s: (a["ts"], a["close"]) for s, a in bars.items()}
    assert_equity_reconciles(result, closes, perpetual=True)
    return result


def fill_rows(result: Any) -> list[tuple[str, int, int, float, float, str]]:
    """(symbol, ts ns, side, qty, price, tag) per fill, in execution order."""
    f = result.fills
    return list(
        zip(
            f.column("symbol").to_pylist(),
            f.column("ts").cast(pa.int64()).to_pylist(),
            f.column("side").to_pylist(),
            f.column("qty").to_pylist(),
            f.column("price").to_pylist(),
            f.column("tag").to_pylist(),
            strict=True,
        )
    )


def wilder_atr(bars: dict[str, np.ndarray], period: int) -> np.ndarray:
    """Reference ATR: TR[i] = max(H−L, |H−C[i−1]|, |L−C[i−1]|); seeded with mean(TR[1..p]), then Wilder."""
    h, lo, c = bars["high"], bars["low"], bars["close"]
    tr = [np.nan] + [max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])) for i in range(1, len(c))]
    out = np.full(len(c), np.nan)
    out[period] = sum(tr[1 : period + 1]) / period
    for i in range(period + 1, len(c)):
        out[i] = (out[i - 1] * (period - 1) + tr[i]) / period
    return out


def zscore(values: list[float]) -> float:
    """z of the last value over the list (population std): the reference for a window's z-score."""
    x = np.asarray(values)
    return float((x[-1] - x.mean()) / x.std())


# ------------------------------------------------------------------------------------------------ funding carry
#: test windows: z over 2 days (6 events at 8 h), mean over 1 day (3 events)
CARRY = {"z_window_days": 2.0, "mean_window_days": 1.0}
#: rate_8h per 8-hourly event k = 0..9 (bp): alternating 1, 2 (z = ±1 over 6 events), spike 10 at 72 h
BASE = [1.0 if k % 2 == 0 else 2.0 for k in range(9)] + [10.0]


def eight_hourly(rates_bp: list[float], sign: float = 1.0) -> list[tuple[int, float]]:
    return [(T0 + 8 * HOUR * k, sign * r * BP) for k, r in enumerate(rates_bp)]


def test_carry_design_of_the_spike() -> None:
    # event 9 (72 h): window (24 h, 72 h] = events 4..9; the 1-day mean = events 7..9
    assert zscore(BASE[4:10]) == pytest.approx(2.2146, abs=1e-4) and zscore(BASE[4:10]) > 1.5
    assert np.mean(BASE[7:10]) * BP > 1e-4
    # events 6..8 (first with a full 2-day history): |z| = 1 < 1.5, so nothing fires before 72 h
    assert [round(zscore(BASE[k - 5 : k + 1]), 12) for k in (6, 7, 8)] == [-1.0, 1.0, -1.0]


@pytest.mark.parametrize("side", [-1, 1])
def test_carry_entry_short_and_long_then_z_exit(side: int) -> None:
    # short: closes rise 100 → 171 (RSI 100 > 60; TR = 2 per bar so ATR(14) = 2), positive funding spike;
    # long: the mirror image (closes fall 300 → 229, RSI 0 < 40, negative funding spike)
    start = 100.0 if side < 0 else 300.0
    closes = [start - side * k for k in range(72)] + [start - side * 71 + side * (k - 71) for k in range(72, 90)]
    rates = [*BASE, 1.0]  # event 10 (80 h): z over events 5..10 < 0 → back inside ±0.5 → exit
    sign = -float(side)
    result = run(
        "funding_carry",
        CARRY,
        {"X": make_bars(closes, T0, HOUR)},
        "1h",
        funding=funding_table({"X": eight_hourly(rates, sign)}),
    )
    # signal at the close of bar 71 (72 h, spike known) → market fill at bar 72's open = close[71];
    # stop = close ∓ 2.5 × ATR(2) = ±5; qty = 100 000 × 0.75 % / 5 = 150
    entry = closes[71]
    assert entry == (171.0 if side < 0 else 229.0)
    # z exit: event 10 is known at the close of bar 79 (80 h) → fill at bar 80's open = close[79]
    exit_price = closes[79]
    assert fill_rows(result) == [
        ("X", T0 + 72 * HOUR, side, 150.0, entry, "entry"),
        ("X", T0 + 80 * HOUR, -side, 150.0, exit_price, "exit_z"),
    ]
    # the position held through one settlement (80 h, settled before the exit fill at the mark close[79])
    funding = result.funding.to_pydict()
    assert funding["qty"] == [side * 150.0]
    assert funding["payment"] == [pytest.approx(-side * 150.0 * closes[79] * sign * BP)]
    assert result.metrics["trades"] == 1
    assert result.trades.column("side").to_pylist() == [side]


def test_carry_atr_stop() -> None:
    closes = [100.0 + k for k in range(90)]  # keeps rising through the short's stop at 171 + 5 = 176
    result = run(
        "funding_carry",
        CARRY,
        {"X": make_bars(closes, T0, HOUR)},
        "1h",
        funding=funding_table({"X": eight_hourly(BASE)}),
    )
    # bar 76: open 175, low 174.5, high 176.5: the path reaches the stop 176 (stop fill, no slippage);
    # the loss is the 0.75 % of equity the size was set for. No re-entry: no funding event after the stop.
    assert fill_rows(result) == [
        ("X", T0 + 72 * HOUR, -1, 150.0, 171.0, "entry"),
        ("X", T0 + 76 * HOUR, 1, 150.0, 176.0, "entry:sl"),
    ]
    assert result.trades.column("gross_pnl").to_pylist() == [pytest.approx(-750.0)]


def test_carry_time_exit_after_n_settlements_and_reentry_on_a_new_event() -> None:
    # funding keeps doubling (z ≈ 2 at every event): only the time exit can end the trade.
    # Closes rise 0.1 per bar after the entry: RSI stays 100, the stop (176) is never reached.
    closes = [100.0 + k for k in range(72)] + [(1710 + k - 71) / 10 for k in range(72, 110)]
    rates = [*BASE, 20.0, 40.0, 80.0, 160.0]  # events 10..13 at 80, 88, 96, 104 h
    for k in range(10, 14):
        assert zscore(rates[k - 5 : k + 1]) > 1.5
    result = run(
        "funding_carry",
        CARRY,
        {"X": make_bars(closes, T0, HOUR)},
        "1h",
        funding=funding_table({"X": eight_hourly(rates)}),
    )
    rows = fill_rows(result)
    # entry at 72 h; settlements 80, 88, 96 h → the third is known at the close of bar 95 → exit at
    # bar 96's open, after the 96 h settlement was paid. No re-entry on event 12 (already seen when
    # exiting); event 13 (104 h) re-enters at bar 104's open.
    assert rows[:2] == [
        ("X", T0 + 72 * HOUR, -1, 150.0, 171.0, "entry"),
        ("X", T0 + 96 * HOUR, 1, 150.0, closes[95], "exit_time"),
    ]
    funding = result.funding.to_pydict()
    marks = [closes[79], closes[87], closes[95]]
    assert funding["mark_price"] == marks
    assert funding["payment"] == pytest.approx([150.0 * m * r * BP for m, r in zip(marks, rates[10:13], strict=True)])
    # the second entry: equity after the first trade and its funding; ATR of bar 103 (Wilder reference)
    equity = 100_000.0 + (171.0 - closes[95]) * 150.0 + sum(funding["payment"])
    atr = wilder_atr(make_bars(closes, T0, HOUR), 14)[103]
    symbol, ts, side, qty, price, tag = rows[2]
    assert (symbol, ts, side, price, tag) == ("X", T0 + 104 * HOUR, -1, closes[103], "entry")
    assert qty == pytest.approx(equity * 0.0075 / (2.5 * atr), rel=1e-12)
    assert len(rows) == 3


def test_carry_normalises_4h_funding_to_8h() -> None:
    # the same per-8h signal for an 8-hourly symbol (rate v) and a 4-hourly one (rate v / 2 per 4 h):
    # base alternating 1.2 / 1.6 bp per 8 h, spike 6 bp per 8 h at 72 h; z and mean windows 2 days
    params = {"z_window_days": 2.0, "mean_window_days": 2.0}
    closes = [100.0 + k for k in range(72)] + [171.0 - (k - 71) for k in range(72, 80)]
    eight = [(T0 + 8 * HOUR * k, (6.0 if k == 9 else 1.2 if k % 2 == 0 else 1.6) * BP) for k in range(10)]
    four = [(T0 + 4 * HOUR * m, (6.0 if m == 18 else 1.2 if m % 2 == 0 else 1.6) / 2 * BP) for m in range(19)]
    # the 4-hourly window (24 h, 72 h] holds 12 events: raw mean 0.9 bp < the 1 bp floor, per 8 h 1.8 bp
    raw = [r for t, r in four if t > T0 + 24 * HOUR]
    assert len(raw) == 12 and np.mean(raw) < 1e-4 < 2 * np.mean(raw)
    bars = {s: make_bars(closes, T0, HOUR) for s in ("EIGHT", "FOUR")}
    result = run("funding_carry", params, bars, "1h", funding=funding_table({"EIGHT": eight, "FOUR": four}))
    entries = [r for r in fill_rows(result) if r[5] == "entry"]
    assert entries == [
        ("EIGHT", T0 + 72 * HOUR, -1, 150.0, 171.0, "entry"),
        ("FOUR", T0 + 72 * HOUR, -1, 150.0, 171.0, "entry"),
    ]
    # with one slot, the larger |z| wins: 12 events make the 4-hourly spike more extreme (3.28 vs 2.22)
    z8 = zscore([r for t, r in eight if t > T0 + 24 * HOUR])
    z4 = zscore([r * 2 for r in raw])
    assert z4 > z8 > 1.5
    one = run(
        "funding_carry",
        {**params, "max_positions": 1},
        bars,
        "1h",
        funding=funding_table({"EIGHT": eight, "FOUR": four}),
    )
    assert [r[0] for r in fill_rows(one) if r[5] == "entry"] == ["FOUR"]


def test_carry_open_interest_condition() -> None:
    closes = [100.0 + k for k in range(72)] + [171.0 - (k - 71) for k in range(72, 80)]
    symbols = ("FALLING", "RISING", "NO_OI")
    bars = {s: make_bars(closes, T0, HOUR) for s in symbols}
    funding = funding_table({s: eight_hourly(BASE) for s in symbols})
    # OI observed at every bar close; NO_OI has no OI rows, so the condition does not apply to it
    close_ts = T0 + HOUR * np.arange(1, 81)
    oi = pa.table(
        {
            "symbol": ["FALLING"] * 80 + ["RISING"] * 80,
            "ts": pa.array(np.concatenate([close_ts, close_ts]), pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            "open_interest": np.concatenate([1000.0 - np.arange(80), 1000.0 + np.arange(80)]),
        }
    )
    result = run("funding_carry", CARRY, bars, "1h", funding=funding, open_interest=oi)
    entries = [r for r in fill_rows(result) if r[5] == "entry"]
    assert entries == [
        ("RISING", T0 + 72 * HOUR, -1, 150.0, 171.0, "entry"),
        ("NO_OI", T0 + 72 * HOUR, -1, 150.0, 171.0, "entry"),
    ]


def test_carry_parameter_validation() -> None:
    cls = REGISTRY.get("funding_carry")
    assert cls.validate_params({}).model_dump() == {
        "z_window_days": 30.0,
        "mean_window_days": 7.0,
        "entry_z": 1.5,
        "exit_z": 0.5,
        "min_mean_rate_8h": 0.0001,
        "rsi_period": 14,
        "rsi_short_min": 60.0,
        "rsi_long_max": 40.0,
        "atr_period": 14,
        "atr_stop": 2.5,
        "max_funding_periods": 3,
        "risk_pct": 0.75,
        "max_positions": 10,
        "oi_lookback_hours": 24,
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"entry_z": -1.0}, "entry_z"),
        ({"exit_z": 2.0}, "exit_z"),
        ({"entry_z": 1.0, "exit_z": 1.0}, "exit_z"),
        ({"max_funding_periods": 0}, "max_funding_periods"),
        ({"max_positions": True}, "max_positions"),
        ({"risk_pct": "1"}, "risk_pct"),
        ({"z_window": 30}, "z_window"),
    ]
    for raw, field in cases:
        with pytest.raises(ParameterError) as info:
            cls.validate_params(raw)
        assert info.value.field == field
    schema = cls.parameters_schema()["properties"]
    assert all(prop.get("description") for prop in schema.values())
    # perpetuals on 1h bars only
    with pytest.raises(ParameterError, match="market"):
        Backtest(cls, {}, {"X": make_bars([1.0, 2.0], T0, HOUR)}, "1h", {"X": Instrument(symbol="X")})


# ------------------------------------------------------------------------------------------------ momentum
#: small windows: ROC 1/2/3 days, vol 2, volume 2, ATR 2, EMA 3, drawdown 3; baskets of 2
MOM = {
    "roc_fast_period": 1,
    "roc_mid_period": 2,
    "roc_slow_period": 3,
    "vol_period": 2,
    "volume_period": 2,
    "atr_period": 2,
    "regime_ema_period": 3,
    "drawdown_window": 3,
    "long_count": 2,
    "short_count": 2,
    "gross_leverage": 1.0,
}
D0 = 1_704_240_000 * 10**9  # Wednesday 2024-01-03 00:00 UTC: bar 4 (Sunday) closes Monday 01-08 00:00
MONDAY_1, MONDAY_2 = D0 + 5 * DAY, D0 + 12 * DAY  # the opens of bars 5 and 12 (fills of the rebalances)
CLOSES = {
    # bars 0..4 decide the first rebalance, bars 8..11 the second
    "A": [100, 102, 104, 110, 120, 122, 125, 127, 130, 133, 137, 140, 141, 142],
    "B": [100, 101, 103, 104, 108, 108, 107, 108, 107, 108, 107, 108, 108, 108],
    "C": [100, 100, 101, 100, 101, 103, 105, 108, 111, 115, 119, 124, 125, 126],
    "D": [100, 99, 97, 96, 93, 92, 91, 90, 89, 88, 87, 86, 86, 86],
    "E": [100, 98, 94, 90, 84, 83, 81, 80, 78, 77, 75, 74, 74, 74],
    "F": [100, 104, 108, 115, 130, 135, 140, 150, 160, 170, 180, 190, 190, 190],  # best, but illiquid
}
VOLUME = {"A": 2e6, "B": 2e6, "C": 2e6, "D": 2e6, "E": 2e6, "F": 1e3}  # quote volume ≈ 2e8 vs 1e5
BTC_DOWN = [100.0 - k for k in range(14)]
BTC_UP = [100.0 + k for k in range(14)]


def momentum_bars(btc: list[float], closes: dict[str, Any] | None = None) -> dict[str, dict[str, np.ndarray]]:
    source = CLOSES if closes is None else closes
    bars = {s: make_bars([float(x) for x in c], D0, DAY, VOLUME.get(s, 2e6)) for s, c in source.items()}
    bars["BTCUSDT"] = make_bars(btc, D0, DAY, 10.0)  # regime only: far below the volume floor
    return bars


def reference_score(a: dict[str, np.ndarray], k: int) -> float:
    """(0.40 ROC1 + 0.35 ROC2 + 0.25 ROC3) / std(last 2 daily log returns, ddof=1), ROC in percent."""
    c = a["close"]
    roc = [(c[k] / c[k - n] - 1.0) * 100.0 for n in (1, 2, 3)]
    vol = np.std(np.diff(np.log(c[k - 2 : k + 1])), ddof=1)
    return (0.40 * roc[0] + 0.35 * roc[1] + 0.25 * roc[2]) / vol


def reference_qty(bars: dict[str, dict[str, np.ndarray]], basket: list[str], k: int, notional: float) -> dict:
    """Equal-volatility weights ∝ close / ATR(2); qty = notional × weight / close."""
    w = {s: bars[s]["close"][k] / wilder_atr(bars[s], 2)[k] for s in basket}
    total = sum(w.values())
    return {s: notional * w[s] / total / bars[s]["close"][k] for s in basket}


def test_momentum_baskets_on_monday_and_rotation_at_the_next() -> None:
    bars = momentum_bars(BTC_DOWN)
    scores = {s: reference_score(bars[s], 4) for s in "ABCDE"}
    assert sorted(scores, key=lambda s: scores[s], reverse=True) == ["A", "B", "C", "D", "E"]
    result = run("cross_sectional_momentum", MOM, bars, "1d", leverage=5)
    rows = fill_rows(result)
    # nothing trades except at the Monday opens after the Sunday bars closed
    assert {r[1] for r in rows} == {MONDAY_1, MONDAY_2}
    first = [r for r in rows if r[1] == MONDAY_1]
    # each book gets gross 1.0 × equity / 2; BTC closes below its EMA(3): shorts allowed; F is illiquid
    want = reference_qty(bars, ["A", "B"], 4, 50_000.0) | reference_qty(bars, ["D", "E"], 4, 50_000.0)
    assert [(r[0], r[2], r[4], r[5]) for r in first] == [
        ("A", 1, 120.0, "rebalance_entry"),
        ("B", 1, 108.0, "rebalance_entry"),
        ("D", -1, 93.0, "rebalance_entry"),
        ("E", -1, 84.0, "rebalance_entry"),
    ]
    for symbol, _, _, qty, _, _ in first:
        assert qty == pytest.approx(want[symbol], rel=1e-12)
    # second rebalance (bar 11, Sunday 01-14): C has overtaken B; the targets at the closes of bar 11
    scores = {s: reference_score(bars[s], 11) for s in "ABCDE"}
    ranked = sorted(scores, key=lambda s: scores[s], reverse=True)
    assert ranked[:2] == ["C", "A"] and set(ranked[3:]) == {"D", "E"}
    held = {r[0]: r[2] * r[3] for r in first}
    entry = {r[0]: r[4] for r in first}
    equity = 100_000.0 + sum(q * (bars[s]["close"][11] - entry[s]) for s, q in held.items())
    target = reference_qty(bars, ["C", "A"], 11, equity / 2) | reference_qty(bars, ["D", "E"], 11, equity / 2)
    target = {s: q if s in ("A", "C") else -q for s, q in target.items()}
    second = [r for r in rows if r[1] == MONDAY_2]
    expected = [("B", -1, held["B"], 108.0, "rebalance_exit"), ("C", 1, target["C"], 124.0, "rebalance_entry")]
    for s in ("A", "D", "E"):  # held names are resized only when more than 25 % off target
        delta = target[s] - held[s]
        if abs(delta) > 0.25 * abs(target[s]):
            tag = "rebalance_add" if abs(target[s]) > abs(held[s]) else "rebalance_reduce"
            expected.append((s, 1 if delta > 0 else -1, abs(delta), bars[s]["close"][11], tag))
    order = {s: i for i, s in enumerate(bars)}
    expected.sort(key=lambda e: order[e[0]])  # fills happen symbol by symbol at the same open
    # by design A and E moved more than 25 % off target (resized), D stayed within it (no order)
    assert [(e[0], e[4]) for e in expected] == [
        ("A", "rebalance_add"),
        ("B", "rebalance_exit"),
        ("C", "rebalance_entry"),
        ("E", "rebalance_add"),
    ]
    assert len(second) == len(expected)
    for got, exp in zip(second, expected, strict=True):
        assert (got[0], got[2], got[4], got[5]) == (exp[0], exp[1], exp[3], exp[4])
        assert got[3] == pytest.approx(exp[2], rel=1e-12)
    assert result.metrics["trades"] == 1  # B's long closed; the others are still open


def test_momentum_no_shorts_while_btc_above_its_ema() -> None:
    bars = momentum_bars(BTC_UP)
    result = run("cross_sectional_momentum", MOM, bars, "1d", leverage=5)
    first = [r for r in fill_rows(result) if r[1] == MONDAY_1]
    # only the long book; its half of the gross (50 000), the short half stays in cash
    want = reference_qty(bars, ["A", "B"], 4, 50_000.0)
    assert [(r[0], r[2]) for r in first] == [("A", 1), ("B", 1)]
    for symbol, _, _, qty, _, _ in first:
        assert qty == pytest.approx(want[symbol], rel=1e-12)
    assert all(r[2] == 1 for r in fill_rows(result) if r[5] == "rebalance_entry")


def test_momentum_universe_floor_and_size() -> None:
    # with a floor of 10 000 instead of 10 M a day, F (best score; ≈ 1.3e5 a day) joins the long basket
    bars = momentum_bars(BTC_UP)
    open_all = run("cross_sectional_momentum", {**MOM, "min_quote_volume": 1e4}, bars, "1d", leverage=5)
    assert [r[0] for r in fill_rows(open_all) if r[1] == MONDAY_1] == ["A", "F"]
    # a symbol listed two days later (the best riser) lacks the 3 days of ROC history on the first
    # Monday: it is skipped then, and ranked at the second
    late = {**bars, "NEW": make_bars([100.0 * 1.1**k + (k % 2) for k in range(12)], D0 + 2 * DAY, DAY, 2e6)}
    listed = fill_rows(run("cross_sectional_momentum", MOM, late, "1d", leverage=5))
    assert [r[0] for r in listed if r[1] == MONDAY_1] == ["A", "B"]
    assert ("NEW", MONDAY_2, 1) in [(r[0], r[1], r[2]) for r in listed]
    # universe_size 3 keeps the 3 largest quote volumes (volume × close): A, B, C; D and E never trade
    small = run("cross_sectional_momentum", {**MOM, "universe_size": 3}, momentum_bars(BTC_DOWN), "1d", leverage=5)
    first = [(r[0], r[2]) for r in fill_rows(small) if r[1] == MONDAY_1]
    assert first == [("A", 1), ("B", 1), ("C", -1)]


def test_momentum_drawdown_filter_excludes_a_crashed_coin() -> None:
    # G crashed from 100 to 30 on bar 1 and rebounds: the best score, but 61 % below its 5-day high
    # (bar 5 is the Monday bar the orders fill on)
    closes = {"A": [100, 101, 103, 102, 104, 105], "B": [100, 101, 100, 101, 101, 101], "G": [100, 30, 33, 36, 39, 40]}
    bars = momentum_bars(BTC_UP[:6], closes)
    assert reference_score(bars["G"], 4) > reference_score(bars["A"], 4) > reference_score(bars["B"], 4)
    params = {**MOM, "drawdown_window": 5, "long_count": 1, "short_count": 0}
    result = run("cross_sectional_momentum", params, bars, "1d", leverage=5)
    assert 1 - 39 / 100.5 > 0.60
    # long_count 1, no short book: the whole gross (1.0 × equity) goes to the single long
    assert [(r[0], r[1], r[2], r[4]) for r in fill_rows(result)] == [("A", MONDAY_1, 1, 104.0)]
    assert fill_rows(result)[0][3] == pytest.approx(100_000.0 / 104.0, rel=1e-12)
    relaxed = run("cross_sectional_momentum", {**params, "max_drawdown_pct": 70.0}, bars, "1d", leverage=5)
    assert [r[0] for r in fill_rows(relaxed)] == ["G"]


def test_momentum_parameter_validation_and_regime_symbol() -> None:
    cls = REGISTRY.get("cross_sectional_momentum")
    defaults = cls.validate_params({}).model_dump()
    assert (defaults["roc_fast_period"], defaults["roc_mid_period"], defaults["roc_slow_period"]) == (7, 14, 30)
    assert (defaults["weight_fast"], defaults["weight_mid"], defaults["weight_slow"]) == (0.40, 0.35, 0.25)
    assert (defaults["long_count"], defaults["short_count"], defaults["universe_size"]) == (5, 5, 30)
    assert defaults["min_quote_volume"] == 10_000_000.0 and defaults["regime_ema_period"] == 50
    assert defaults["max_drawdown_pct"] == 60.0 and defaults["gross_leverage"] == 2.0
    cases: list[tuple[dict[str, Any], str]] = [
        ({"weight_fast": 0.0, "weight_mid": 0.0, "weight_slow": 0.0}, "weight_slow"),
        ({"long_count": 0, "short_count": 0}, "short_count"),
        ({"vol_period": 1}, "vol_period"),
        ({"rebalance_weekday": 7}, "rebalance_weekday"),
        ({"gross_leverage": 0}, "gross_leverage"),
        ({"universe_size": 2.5}, "universe_size"),
    ]
    for raw, field in cases:
        with pytest.raises(ParameterError) as info:
            cls.validate_params(raw)
        assert info.value.field == field
    bars = momentum_bars(BTC_UP)
    del bars["BTCUSDT"]
    with pytest.raises(StrategyRuntimeError, match="regime_symbol"):
        run("cross_sectional_momentum", MOM, bars, "1d")
    # an empty regime_symbol disables the filter: shorts without any BTC series
    result = run("cross_sectional_momentum", {**MOM, "regime_symbol": ""}, bars, "1d", leverage=5)
    assert [(r[0], r[2]) for r in fill_rows(result) if r[1] == MONDAY_1] == [("A", 1), ("B", 1), ("D", -1), ("E", -1)]


# ------------------------------------------------------------------------------------------------ real data
def panel_closes(timeframe: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from engine.data import load_bars, resample

    table = load_bars(PANEL)
    if timeframe != "1h":
        table = resample(table, timeframe)
    symbols = table.column("symbol").to_numpy(zero_copy_only=False)
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    close = table.column("close").to_numpy()
    return {s: (ts[symbols == s], close[symbols == s]) for s in np.unique(symbols)}


def test_funding_carry_on_real_data_with_default_parameters() -> None:
    request = BacktestRequest.parse(
        {"strategy_type": "funding_carry", "data": PANEL, "funding": FUNDING, "market": "perpetual"}
    )
    result = run_request(request, REGISTRY)
    assert len(result.symbols) == 32
    tags = result.fills.column("tag").to_pylist()
    # all three exits occur on a year of data (166 trades: 79 z exits, 42 time exits, 45 stops)
    assert result.metrics["trades"] >= 100
    assert {"exit_z", "exit_time", "entry:sl"} <= set(tags)
    assert len(set(result.trades.column("symbol").to_pylist())) >= 15
    assert {-1, 1} <= set(result.trades.column("side").to_pylist())
    assert result.funding is not None and result.funding.num_rows > 0
    assert_equity_reconciles(result, panel_closes("1h"), perpetual=True)
    assert run_request(request, REGISTRY).trade_hash == result.trade_hash


def test_cross_sectional_momentum_on_real_data_with_default_parameters() -> None:
    request = BacktestRequest.parse(
        {
            "strategy_type": "cross_sectional_momentum",
            "data": PANEL,
            "funding": FUNDING,
            "market": "perpetual",
            "timeframe": "1d",
            "leverage": 3,  # gross 2 × equity needs more than 2x margin leverage to leave room
        }
    )
    result = run_request(request, REGISTRY)
    assert len(result.symbols) == 32
    fills_ts = result.fills.column("ts").cast(pa.int64()).to_numpy()
    assert np.all(fills_ts % DAY == 0) and np.all((fills_ts // DAY + 3) % 7 == 0)  # Monday 00:00 UTC only
    assert result.metrics["trades"] >= 100
    assert {-1, 1} <= set(result.trades.column("side").to_pylist())
    assert result.metrics["orders_rejected"] == 0
    assert_equity_reconciles(result, panel_closes("1d"), perpetual=True)
    assert run_request(request, REGISTRY).trade_hash == result.trade_hash
