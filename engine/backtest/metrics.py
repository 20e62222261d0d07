"""Performance metrics of one backtest run, computed from its equity curve and closed trades.

Everything here is vectorised numpy; the result is a flat dict of plain ``int`` / ``float`` / ``None``
(JSON-able, never NaN or ±inf). A metric is ``None`` when it is undefined for the data, e.g. a profit
factor with no losing trade, a Sharpe ratio with zero volatility, or an annualised figure when the
number of periods per year cannot be known.

Notation
--------
``E_0 … E_{N-1}`` is the equity at the close of each of the ``N`` bars, ``E_{-1} = initial_cash`` is the
equity before the first bar, ``ts_0 … ts_{N-1}`` are the bars' open times and ``ppy`` is the number of
bars per year.

Periods per year
    Given explicitly, or inferred from the timestamps as ``ppy = (N − 1) / years(ts_{N-1} − ts_0)``
    with a year of 365.25 days (:data:`engine.timeframes.NS_PER_YEAR`): the average number of bars
    per calendar year actually present in the data. This gives exactly 8,766 for 24/7 hourly crypto
    bars, 365.25 for 24/7 daily bars, ≈ 261 (365.25 × 5/7) for every-weekday daily bars and ≈ 252
    for exchange trading days (weekdays minus exchange holidays). Undefined (``None``) with fewer
    than two bars unless given.

Bar length (``bar``)
    The calendar length of one bar: the median spacing of the timestamps (robust to weekends and
    holidays, e.g. one day for exchange-day data), or ``1/ppy`` years when there is a single bar.

Returns
    Per-bar simple returns ``r_t = E_t / E_{t-1} − 1`` for ``t = 0 … N−1`` (``N`` returns; the first
    compares with ``initial_cash``). They are undefined once the equity has reached zero or below,
    in which case every return-based metric (volatility, Sharpe, Sortino) is ``None``.

``total_return_pct``
    ``100 × (E_{N-1} / initial_cash − 1)``.

``annual_return_pct`` (CAGR)
    ``100 × ((E_{N-1} / initial_cash) ^ (1 / T) − 1)`` where ``T = (ts_{N-1} − ts_0 + bar)`` in years
    of 365.25 days: the calendar time from the first bar's open to the last bar's close. −100 when the
    final equity is ≤ 0; ``None`` if it overflows (a large return over a very short span).

``volatility_pct``
    ``100 × std(r, ddof=1) × sqrt(ppy)`` (square-root-of-time annualisation).

``sharpe`` — Sharpe, W. F. (1994), "The Sharpe Ratio", *Journal of Portfolio Management* 21(1): 49–58
    ``mean(r − rf_bar) / std(r, ddof=1) × sqrt(ppy)`` with the annual risk-free rate converted to a
    per-bar rate ``rf_bar = (1 + rf) ^ (1/ppy) − 1``. The sqrt(ppy) scaling assumes IID returns
    (Lo, A. W. (2002), "The Statistics of Sharpe Ratios", *Financial Analysts Journal* 58(4): 36–52).
    ``None`` when the volatility is zero (within 1e-12 of the largest absolute return).

``sortino`` — Sortino, F. A. & Price, L. N. (1994), "Performance Measurement in a Downside Risk
Framework", *Journal of Investing* 3(3): 59–64
    ``mean(r − rf_bar) / DD × sqrt(ppy)`` with the target (minimum acceptable) return ``rf_bar`` and
    the downside deviation ``DD = sqrt(mean(min(r − rf_bar, 0)²))`` taken over *all* bars (bars above
    target count as zero). ``None`` when ``DD`` is zero (no bar below target).

``max_drawdown_pct`` — Magdon-Ismail, M. & Atiya, A. F. (2004), "Maximum Drawdown", *Risk* 17(10)
    The largest peak-to-trough decline ``100 × max_t (1 − E_t / max_{s ≤ t} E_s)`` on the curve
    ``E_{-1}, E_0, …, E_{N-1}`` (``initial_cash`` is the first peak). A positive number, 0 if the
    equity never fell below a previous peak. :func:`drawdown_series` gives the per-bar values
    ``100 × (E_t / peak_t − 1) ≤ 0`` for plotting.

``max_drawdown_duration_bars`` / ``max_drawdown_duration_days``
    The longest span from a peak to the first later point at or above that peak (recovery), or from
    the peak to the last bar if the equity never recovered. In bars it is the number of bars between
    the two points; in days it is the calendar time between them, where the point ``E_{-1}`` sits one
    bar before the first bar's close (consistent with the CAGR horizon). The two maxima are taken
    independently (with irregular timestamps the longest span in days can be a different drawdown
    than the longest in bars). 0 without drawdown. The days figure is ``None`` if ``bar`` is unknown.

``calmar`` — Young, T. W. (1991), "Calmar Ratio: A Smoother Tool", *Futures* 20(1): 40
    ``annual_return_pct / max_drawdown_pct`` over the whole run (Young used the trailing 36 months).
    ``None`` without drawdown.

Trade statistics (closed trades only, on ``net_pnl = gross − fees + funding``)
    ``trades`` count; ``win_rate`` = 100 × share of trades with ``net_pnl > 0`` (break-even trades
    are not wins); ``profit_factor`` = Σ winning net_pnl / |Σ losing net_pnl| (``None`` with no
    losing trade, 0 with losers only); ``expectancy`` = mean net_pnl per trade; ``avg_win`` = mean of
    net_pnl > 0; ``avg_loss`` = mean of net_pnl < 0 (a negative number); ``best_trade`` /
    ``worst_trade`` = max / min net_pnl. Each is ``None`` when its set of trades is empty.

``exposure_pct``
    ``100 ×`` the share of bars with ``gross_exposure > 0`` (``None`` with no bars).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.errors import ParameterError
from engine.timeframes import NS_PER_DAY, NS_PER_YEAR

__all__ = ["METRIC_KEYS", "compute_metrics", "drawdown_series"]

#: Keys of :func:`compute_metrics`'s result, in order.
METRIC_KEYS: tuple[str, ...] = (
    "start_ts_ns",
    "end_ts_ns",
    "bars",
    "initial_cash",
    "final_equity",
    "total_return_pct",
    "annual_return_pct",
    "volatility_pct",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown_pct",
    "max_drawdown_duration_bars",
    "max_drawdown_duration_days",
    "trades",
    "win_rate",
    "profit_factor",
    "expectancy",
    "avg_win",
    "avg_loss",
    "best_trade",
    "worst_trade",
    "exposure_pct",
    "fees_paid",
    "funding_paid",
    "periods_per_year",
)

#: Volatility (or downside deviation) at or below this fraction of the largest |return| is zero.
_ZERO_VOL_RTOL = 1e-12

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _finite_or_none(x: float) -> float | None:
    """``float(x)`` if finite, else ``None``; also turns ``-0.0`` into ``0.0``."""
    value = float(x)
    return value + 0.0 if math.isfinite(value) else None


def _as_float_array(name: str, values: Any) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ParameterError(name, f"must be one-dimensional, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ParameterError(name, "must contain only finite numbers (no NaN or inf)")
    return arr


def _as_ts_array(values: Any) -> IntArray:
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        arr = arr.astype("datetime64[ns]").view(np.int64)
    elif arr.size and arr.dtype.kind not in "iu":
        raise ParameterError("ts_ns", f"must be integer nanoseconds, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.ndim != 1:
        raise ParameterError("ts_ns", f"must be one-dimensional, got shape {arr.shape}")
    if arr.size > 1 and not (np.diff(arr) > 0).all():
        raise ParameterError("ts_ns", "must be strictly increasing")
    return arr


def _check_scalar(name: str, value: float, *, positive: bool = False, above: float | None = None) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ParameterError(name, f"must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ParameterError(name, f"must be finite, got {value!r}")
    if positive and x <= 0:
        raise ParameterError(name, f"must be > 0, got {value!r}")
    if above is not None and x <= above:
        raise ParameterError(name, f"must be > {above}, got {value!r}")
    return x


def drawdown_series(equity: npt.ArrayLike, initial_cash: float) -> FloatArray:
    """Drawdown of each bar in percent (≤ 0): ``100 × (E_t / max(initial_cash, E_0 … E_t) − 1)``.

    Same length as ``equity``; ``initial_cash`` is the starting peak, so a first bar below it is
    already in drawdown.

    Raises:
        ParameterError: ``initial_cash`` is not a positive finite number, or ``equity`` is not a
            one-dimensional array of finite numbers.
    """
    cash = _check_scalar("initial_cash", initial_cash, positive=True)
    eq = _as_float_array("equity", equity)
    peak = np.maximum.accumulate(np.concatenate(([cash], eq)))[1:]
    dd: FloatArray = (eq / peak - 1.0) * 100.0
    return dd + 0.0  # no -0.0


def _drawdown_durations(curve: FloatArray, times: IntArray | None) -> tuple[int, float | None]:
    """Longest peak-to-recovery (or peak-to-end) span of ``curve`` in points and in days.

    ``times`` gives each point's time (ns), or ``None`` when unknown (then days is ``None``).
    """
    n_last = curve.size - 1
    at_peak = np.flatnonzero(curve >= np.maximum.accumulate(curve))  # index 0 is always a peak
    ends = np.append(at_peak[1:], n_last)  # the next peak (recovery), or the last point
    gaps = ends - at_peak
    # Consecutive peaks one point apart have no drawdown between them; the last peak's span to the
    # end is a drawdown whenever it is non-zero (the curve is below that peak ever after).
    is_dd = gaps > 1
    is_dd[-1] = gaps[-1] > 0
    if not is_dd.any():
        return 0, (0.0 if times is not None else None)
    bars = int(gaps[is_dd].max())
    if times is None:
        return bars, None
    spans_ns = times[ends[is_dd]] - times[at_peak[is_dd]]
    return bars, float(spans_ns.max()) / NS_PER_DAY


def compute_metrics(
    ts_ns: npt.ArrayLike,
    equity: npt.ArrayLike,
    gross_exposure: npt.ArrayLike,
    trade_net_pnl: npt.ArrayLike,
    initial_cash: float,
    fees_paid: float,
    funding_paid: float,
    risk_free_rate: float = 0.0,
    periods_per_year: float | None = None,
) -> dict[str, float | int | None]:
    """Performance metrics of a run; see the module docstring for every definition.

    Args:
        ts_ns: int64 bar open times (ns UTC) of the equity curve, strictly increasing
            (``datetime64`` arrays are accepted too).
        equity: float64 equity at each bar's close, quote currency.
        gross_exposure: float64 Σ|qty|×mark at each bar (0 when flat).
        trade_net_pnl: float64 net P&L of each closed trade, quote currency.
        initial_cash: equity before the first bar (> 0).
        fees_paid: total fees paid (passed through).
        funding_paid: net funding paid, > 0 paid, < 0 received (passed through).
        risk_free_rate: annual risk-free rate as a fraction (> -1), the Sharpe/Sortino target.
        periods_per_year: bars per year for annualisation; inferred from ``ts_ns`` when ``None``.

    Returns:
        A dict with the keys of :data:`METRIC_KEYS`, values ``int``, ``float`` or ``None``.

    Raises:
        ParameterError: an argument is malformed (lengths differ, timestamps not increasing,
            non-finite values, ``initial_cash`` ≤ 0, ``periods_per_year`` ≤ 0, ...).
    """
    ts = _as_ts_array(ts_ns)
    eq = _as_float_array("equity", equity)
    expo = _as_float_array("gross_exposure", gross_exposure)
    pnl = _as_float_array("trade_net_pnl", trade_net_pnl)
    cash = _check_scalar("initial_cash", initial_cash, positive=True)
    fees = _check_scalar("fees_paid", fees_paid)
    funding = _check_scalar("funding_paid", funding_paid)
    rf = _check_scalar("risk_free_rate", risk_free_rate, above=-1.0)
    if eq.size != ts.size:
        raise ParameterError("equity", f"has {eq.size} values but ts_ns has {ts.size}")
    if expo.size != ts.size:
        raise ParameterError("gross_exposure", f"has {expo.size} values but ts_ns has {ts.size}")

    n = int(ts.size)

    # --- time base ---------------------------------------------------------------------------
    ppy: float | None
    if periods_per_year is not None:
        ppy = _check_scalar("periods_per_year", periods_per_year, positive=True)
    elif n >= 2:
        ppy = (n - 1) / (float(ts[-1] - ts[0]) / NS_PER_YEAR)
    else:
        ppy = None
    bar_ns: int | None
    if n >= 2:
        bar_ns = round(float(np.median(np.diff(ts))))
    elif n == 1 and ppy is not None:
        bar_ns = round(NS_PER_YEAR / ppy)
    else:
        bar_ns = None

    final = float(eq[-1]) if n else cash
    growth = final / cash

    # --- returns -----------------------------------------------------------------------------
    curve = np.concatenate(([cash], eq))  # E_{-1}, E_0, ..., E_{N-1}
    volatility = sharpe = sortino = None
    if n and ppy is not None and (curve[:-1] > 0).all():
        rets = curve[1:] / curve[:-1] - 1.0
        rf_bar = math.expm1(math.log1p(rf) / ppy)
        excess_mean = float(np.mean(rets - rf_bar))
        scale = _ZERO_VOL_RTOL * max(float(np.max(np.abs(rets))), abs(rf_bar), 1e-300)
        if n >= 2:
            std = float(np.std(rets, ddof=1))
            volatility = _finite_or_none(std * math.sqrt(ppy) * 100.0)
            if std > scale:
                sharpe = _finite_or_none(excess_mean / std * math.sqrt(ppy))
        downside = float(np.sqrt(np.mean(np.minimum(rets - rf_bar, 0.0) ** 2)))
        if downside > scale:
            sortino = _finite_or_none(excess_mean / downside * math.sqrt(ppy))

    # --- CAGR ----------------------------------------------------------------------------------
    annual: float | None = None
    years = float(ts[-1] - ts[0] + bar_ns) / NS_PER_YEAR if n and bar_ns is not None else 0.0
    if years > 0:
        if growth <= 0:
            annual = -100.0
        else:
            with np.errstate(over="ignore"):
                annual = _finite_or_none(float(np.expm1(np.log(growth) / years)) * 100.0)

    # --- drawdowns -----------------------------------------------------------------------------
    peaks = np.maximum.accumulate(curve)
    max_dd = _finite_or_none(-float(np.min(curve / peaks - 1.0)) * 100.0) or 0.0
    times = np.concatenate(([ts[0] - bar_ns], ts)) if bar_ns is not None and n else None
    dd_bars, dd_days = _drawdown_durations(curve, times)
    if n == 0:
        dd_days = 0.0
    calmar = _finite_or_none(annual / max_dd) if annual is not None and max_dd > 0 else None

    # --- trades --------------------------------------------------------------------------------
    n_trades = int(pnl.size)
    wins = pnl[pnl > 0]
    losses = pnl[pnl < 0]
    gross_win = float(wins.sum())
    gross_loss = float(-losses.sum())

    def _mean(a: FloatArray) -> float | None:
        return _finite_or_none(float(np.mean(a))) if a.size else None

    return {
        "start_ts_ns": int(ts[0]) if n else None,
        "end_ts_ns": int(ts[-1]) if n else None,
        "bars": n,
        "initial_cash": cash,
        "final_equity": final,
        "total_return_pct": _finite_or_none((growth - 1.0) * 100.0),
        "annual_return_pct": annual,
        "volatility_pct": volatility,
        "sharpe": sharpe,
        "sortino": sortino,
        "calmar": calmar,
        "max_drawdown_pct": max_dd,
        "max_drawdown_duration_bars": dd_bars,
        "max_drawdown_duration_days": dd_days,
        "trades": n_trades,
        "win_rate": 100.0 * wins.size / n_trades if n_trades else None,
        "profit_factor": _finite_or_none(gross_win / gross_loss) if gross_loss > 0 else None,
        "expectancy": _mean(pnl),
        "avg_win": _mean(wins),
        "avg_loss": _mean(losses),
        "best_trade": float(pnl.max()) if n_trades else None,
        "worst_trade": float(pnl.min()) if n_trades else None,
        "exposure_pct": 100.0 * float(np.count_nonzero(expo > 0)) / n if n else None,
        "fees_paid": fees,
        "funding_paid": funding,
        "periods_per_year": ppy,
    }
