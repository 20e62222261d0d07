"""Tests of engine.backtest.metrics: hand-computed cases, edge cases and a pandas cross-check."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from pandas.tseries.holiday import (
    AbstractHolidayCalendar,
    GoodFriday,
    Holiday,
    USLaborDay,
    USMartinLutherKingJr,
    USMemorialDay,
    USPresidentsDay,
    USThanksgivingDay,
    nearest_workday,
)
from pandas.tseries.offsets import CustomBusinessDay

from engine.backtest.metrics import METRIC_KEYS, compute_metrics, drawdown_series
from engine.errors import ParameterError
from engine.timeframes import NS_PER_DAY, NS_PER_HOUR

T0 = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z


def daily(n: int) -> np.ndarray:
    return T0 + np.arange(n, dtype=np.int64) * NS_PER_DAY


def run(equity, *, ts=None, initial=100.0, exposure=None, trades=(), **kw):
    equity = np.asarray(equity, dtype=np.float64)
    ts = daily(equity.size) if ts is None else ts
    exposure = np.zeros(equity.size) if exposure is None else exposure
    kw.setdefault("fees_paid", 0.0)
    kw.setdefault("funding_paid", 0.0)
    return compute_metrics(ts, equity, exposure, np.asarray(trades, dtype=np.float64), initial, **kw)


def assert_json_clean(m: dict) -> None:
    assert tuple(m) == METRIC_KEYS
    for key, value in m.items():
        assert value is None or type(value) in (int, float), (key, type(value))
        if isinstance(value, float):
            assert math.isfinite(value), key
    json.dumps(m, allow_nan=False)


# --- hand-computed case: equity [100, 110, 99, 121], initial 100, daily 24/7 bars ---------------


def test_hand_computed_small_curve():
    m = run(
        [100, 110, 99, 121],
        exposure=[0.0, 50.0, 50.0, 0.0],
        trades=[10, -5, 20, 0],
        fees_paid=1.5,
        funding_paid=-0.25,
    )
    assert_json_clean(m)

    # returns vs E_{-1} = 100: 0, +10 %, -10 %, +22/99
    r = [0.0, 0.1, -0.1, 121 / 99 - 1]
    mean = sum(r) / 4
    assert mean == pytest.approx(1 / 18)
    var = sum((x - mean) ** 2 for x in r) / 3
    ppy = 3 / (3 / 365.25)  # 3 bar gaps over 3 days
    assert m["periods_per_year"] == pytest.approx(365.25)
    assert m["volatility_pct"] == pytest.approx(math.sqrt(var) * math.sqrt(ppy) * 100)
    assert m["sharpe"] == pytest.approx(mean / math.sqrt(var) * math.sqrt(ppy))
    # only -10 % is below target 0: DD = sqrt(0.01 / 4) = 0.05
    assert m["sortino"] == pytest.approx((1 / 18) / 0.05 * math.sqrt(365.25))

    assert m["start_ts_ns"] == T0 and m["end_ts_ns"] == T0 + 3 * NS_PER_DAY and m["bars"] == 4
    assert m["initial_cash"] == 100.0 and m["final_equity"] == 121.0
    assert m["total_return_pct"] == pytest.approx(21.0)
    years = 4 / 365.25  # 3 days first-to-last open + one 1-day bar
    cagr = (1.21 ** (1 / years) - 1) * 100
    assert m["annual_return_pct"] == pytest.approx(cagr)
    assert m["max_drawdown_pct"] == pytest.approx(10.0)  # 110 -> 99
    assert m["max_drawdown_duration_bars"] == 2  # peak at bar 1, recovered at bar 3
    assert m["max_drawdown_duration_days"] == pytest.approx(2.0)
    assert m["calmar"] == pytest.approx(cagr / 10.0)

    assert m["trades"] == 4
    assert m["win_rate"] == pytest.approx(50.0)  # the break-even trade is not a win
    assert m["profit_factor"] == pytest.approx(30 / 5)
    assert m["expectancy"] == pytest.approx(25 / 4)
    assert m["avg_win"] == pytest.approx(15.0)
    assert m["avg_loss"] == pytest.approx(-5.0)
    assert m["best_trade"] == 20.0 and m["worst_trade"] == -5.0
    assert m["exposure_pct"] == pytest.approx(50.0)
    assert m["fees_paid"] == 1.5 and m["funding_paid"] == -0.25


def test_drawdown_series():
    dd = drawdown_series([100, 110, 99, 121], 100.0)
    np.testing.assert_allclose(dd, [0.0, 0.0, -10.0, 0.0], atol=1e-12)
    assert (dd <= 0).all() and not np.signbit(dd[dd == 0]).any()  # no -0.0
    np.testing.assert_allclose(drawdown_series([90, 95, 120], 100.0), [-10.0, -5.0, 0.0])
    assert drawdown_series([], 100.0).size == 0


def test_risk_free_rate_with_given_periods_per_year():
    eq = [100, 110, 99, 121]
    m = run(eq, risk_free_rate=0.05, periods_per_year=252)
    r = [0.0, 0.1, -0.1, 121 / 99 - 1]
    rfb = 1.05 ** (1 / 252) - 1
    ex = [x - rfb for x in r]
    mean_ex = sum(ex) / 4
    mean = sum(r) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / 3)
    dd = math.sqrt(sum(min(x, 0.0) ** 2 for x in ex) / 4)
    assert m["periods_per_year"] == 252.0
    assert m["sharpe"] == pytest.approx(mean_ex / sd * math.sqrt(252))
    assert m["sortino"] == pytest.approx(mean_ex / dd * math.sqrt(252))
    assert m["volatility_pct"] == pytest.approx(sd * math.sqrt(252) * 100)
    # CAGR uses calendar time (median bar spacing = 1 day), not the given ppy
    assert m["annual_return_pct"] == pytest.approx((1.21 ** (365.25 / 4) - 1) * 100)


# --- undefined values are None ----------------------------------------------------------------


def test_zero_trades():
    m = run([100, 101, 102])
    assert_json_clean(m)
    assert m["trades"] == 0
    for key in (
        "win_rate",
        "profit_factor",
        "expectancy",
        "avg_win",
        "avg_loss",
        "best_trade",
        "worst_trade",
    ):
        assert m[key] is None, key
    assert m["exposure_pct"] == 0.0


def test_all_winning_trades():
    m = run([100, 101, 102], trades=[1.0, 2.0, 3.0])
    assert_json_clean(m)
    assert m["win_rate"] == 100.0
    assert m["profit_factor"] is None
    assert m["avg_loss"] is None
    assert m["avg_win"] == pytest.approx(2.0) and m["expectancy"] == pytest.approx(2.0)


def test_all_losing_trades_profit_factor_zero():
    m = run([100, 99], trades=[-1.0, -3.0])
    assert m["profit_factor"] == 0.0 and m["win_rate"] == 0.0 and m["avg_win"] is None
    assert m["avg_loss"] == pytest.approx(-2.0)


def test_flat_equity_has_no_ratios():
    m = run([100.0] * 5)
    assert_json_clean(m)
    assert m["volatility_pct"] == 0.0
    assert m["sharpe"] is None and m["sortino"] is None and m["calmar"] is None
    assert m["max_drawdown_pct"] == 0.0
    assert m["max_drawdown_duration_bars"] == 0 and m["max_drawdown_duration_days"] == 0.0
    assert m["total_return_pct"] == 0.0 and m["annual_return_pct"] == 0.0


def test_constant_growth_no_downside():
    eq = 100 * 1.01 ** np.arange(1, 11)  # +1 % every bar: float-noise volatility only
    m = run(eq)
    assert_json_clean(m)
    assert m["sortino"] is None and m["sharpe"] is None and m["calmar"] is None
    assert m["max_drawdown_pct"] == 0.0


def test_single_bar_and_empty():
    m = run([105.0])
    assert_json_clean(m)
    assert m["bars"] == 1 and m["periods_per_year"] is None
    assert m["annual_return_pct"] is None and m["sharpe"] is None and m["volatility_pct"] is None
    assert m["total_return_pct"] == pytest.approx(5.0)

    m = run([95.0], periods_per_year=365.25)
    assert m["annual_return_pct"] == pytest.approx((0.95**365.25 - 1) * 100)
    assert m["max_drawdown_duration_bars"] == 1
    assert m["max_drawdown_duration_days"] == pytest.approx(1.0)

    m = run([], ts=np.array([], dtype=np.int64))
    assert_json_clean(m)
    assert m["bars"] == 0 and m["start_ts_ns"] is None and m["final_equity"] == 100.0
    assert m["max_drawdown_pct"] == 0.0 and m["exposure_pct"] is None and m["sharpe"] is None


def test_cagr_overflow_is_none():
    ts = T0 + np.arange(2, dtype=np.int64) * NS_PER_HOUR
    m = run([200.0, 400.0], ts=ts)  # x4 in two hours
    assert_json_clean(m)
    assert m["annual_return_pct"] is None and m["calmar"] is None


def test_equity_wiped_out():
    m = run([100, 50, -10, 5])
    assert_json_clean(m)
    assert m["volatility_pct"] is None and m["sharpe"] is None and m["sortino"] is None
    assert m["max_drawdown_pct"] == pytest.approx(110.0)
    assert run([100, 50, -10])["annual_return_pct"] == -100.0


# --- drawdown duration ------------------------------------------------------------------------


def test_drawdown_never_recovered():
    m = run([100, 120, 90, 100, 110])
    assert m["max_drawdown_pct"] == pytest.approx(25.0)
    assert m["max_drawdown_duration_bars"] == 3  # peak at bar 1 to the last bar (4)
    assert m["max_drawdown_duration_days"] == pytest.approx(3.0)


def test_drawdown_from_initial_cash():
    # initial 100 is the first peak; recovered at bar 2, one bar before the first close
    m = run([90, 95, 100, 105])
    assert m["max_drawdown_pct"] == pytest.approx(10.0)
    assert m["max_drawdown_duration_bars"] == 3
    assert m["max_drawdown_duration_days"] == pytest.approx(3.0)


def test_longest_of_several_drawdowns_with_gap_in_days():
    # two drawdowns of 2 bars each; the second spans a 10-day gap in the timestamps
    ts = T0 + np.array([0, 1, 2, 3, 13, 14], dtype=np.int64) * NS_PER_DAY
    m = run([110, 100, 111, 105, 112, 113], ts=ts)
    assert m["max_drawdown_duration_bars"] == 2
    assert m["max_drawdown_duration_days"] == pytest.approx(11.0)  # day 2 -> day 13


# --- periods per year inference ---------------------------------------------------------------


class _NyseLikeCalendar(AbstractHolidayCalendar):
    rules = [  # noqa: RUF012
        Holiday("NewYearsDay", month=1, day=1, observance=nearest_workday),
        USMartinLutherKingJr,
        USPresidentsDay,
        GoodFriday,
        USMemorialDay,
        Holiday("IndependenceDay", month=7, day=4, observance=nearest_workday),
        USLaborDay,
        USThanksgivingDay,
        Holiday("Christmas", month=12, day=25, observance=nearest_workday),
    ]


def _ns(index: pd.DatetimeIndex) -> np.ndarray:
    return index.tz_localize("UTC").as_unit("ns").asi8


def test_inferred_periods_per_year():
    hourly = T0 + np.arange(5000, dtype=np.int64) * NS_PER_HOUR
    assert run(np.full(5000, 100.0), ts=hourly)["periods_per_year"] == pytest.approx(8766.0)

    exchange_days = _ns(
        pd.date_range("2010-01-01", "2019-12-31", freq=CustomBusinessDay(calendar=_NyseLikeCalendar()))
    )
    m = run(np.full(exchange_days.size, 100.0), ts=exchange_days)
    assert m["periods_per_year"] == pytest.approx(252, abs=1.0)

    weekdays = _ns(pd.bdate_range("2010-01-01", "2019-12-31"))
    m = run(np.full(weekdays.size, 100.0), ts=weekdays)
    assert m["periods_per_year"] == pytest.approx(365.25 * 5 / 7, abs=0.5)  # ≈ 261 with no holidays


# --- cross-check against an independent pandas implementation --------------------------------


def _pandas_reference(ts, equity, initial, rf, ppy):
    s = pd.Series(equity, index=pd.to_datetime(ts, utc=True))
    full = pd.concat([pd.Series([initial]), s.reset_index(drop=True)], ignore_index=True)
    rets = full.pct_change().dropna()
    rf_bar = (1 + rf) ** (1 / ppy) - 1
    excess = rets - rf_bar
    sharpe = excess.mean() / rets.std() * np.sqrt(ppy)
    downside = np.sqrt((excess.clip(upper=0) ** 2).mean())
    sortino = excess.mean() / downside * np.sqrt(ppy)
    dd = full / full.cummax() - 1
    return sharpe, sortino, -dd.min() * 100, dd.iloc[1:].to_numpy() * 100


def _loop_durations(curve, times):
    best_bars, best_ns, peak_i = 0, 0, 0
    for i in range(1, len(curve)):
        if curve[i] >= curve[peak_i]:
            if i - peak_i > 1:
                best_bars = max(best_bars, i - peak_i)
                best_ns = max(best_ns, times[i] - times[peak_i])
            peak_i = i
    if peak_i < len(curve) - 1:
        best_bars = max(best_bars, len(curve) - 1 - peak_i)
        best_ns = max(best_ns, times[-1] - times[peak_i])
    return best_bars, best_ns / NS_PER_DAY


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_curve_matches_pandas(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    ts = T0 + np.arange(n, dtype=np.int64) * NS_PER_HOUR
    equity = 10_000 * np.cumprod(1 + rng.normal(0.0002, 0.01, n))
    m = run(equity, ts=ts, initial=10_000.0, risk_free_rate=0.03)
    assert_json_clean(m)
    sharpe, sortino, max_dd, dd = _pandas_reference(ts, equity, 10_000.0, 0.03, 8766.0)
    assert m["periods_per_year"] == pytest.approx(8766.0)
    assert m["sharpe"] == pytest.approx(sharpe, rel=1e-9)
    assert m["sortino"] == pytest.approx(sortino, rel=1e-9)
    assert m["max_drawdown_pct"] == pytest.approx(max_dd, rel=1e-9)
    np.testing.assert_allclose(drawdown_series(equity, 10_000.0), dd, rtol=1e-9, atol=1e-9)

    curve = np.concatenate(([10_000.0], equity))
    times = np.concatenate(([ts[0] - NS_PER_HOUR], ts))
    bars, days = _loop_durations(curve, times)
    assert m["max_drawdown_duration_bars"] == bars
    assert m["max_drawdown_duration_days"] == pytest.approx(days)


# --- input validation -------------------------------------------------------------------------


def test_bad_inputs_raise():
    with pytest.raises(ParameterError, match="equity"):
        run([100, 101], ts=daily(3))
    with pytest.raises(ParameterError, match="ts_ns"):
        run([100, 101, 102], ts=T0 + np.array([0, 2, 1], dtype=np.int64))
    with pytest.raises(ParameterError, match="initial_cash"):
        run([100, 101], initial=0.0)
    with pytest.raises(ParameterError, match="equity"):
        run([100, float("nan")])
    with pytest.raises(ParameterError, match="periods_per_year"):
        run([100, 101], periods_per_year=0)
    with pytest.raises(ParameterError, match="gross_exposure"):
        run([100, 101], exposure=np.zeros(1))


def test_accepts_datetime64_timestamps():
    ts = daily(4).astype("datetime64[ns]")
    assert run([100, 110, 99, 121], ts=ts)["periods_per_year"] == pytest.approx(365.25)
