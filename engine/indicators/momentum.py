"""Momentum indicators: RSI, ROC and Stochastic RSI.

Vectorized functions take numpy-compatible 1-D float inputs and return float64 arrays of the same length
with NaN during warm-up; streaming classes return the same values, bit for bit, one update at a time.
Inputs are assumed finite (a NaN enters the recursive state and propagates).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.indicators._core import (
    NAN,
    FloatArray,
    RollingMaxMin,
    RunningMean,
    as_array,
    check_int,
    nan_array,
    rolling_max_min,
    running_mean,
)

__all__ = ["ROC", "RSI", "StochRSI", "roc", "rsi", "stochrsi"]


# ---------------------------------------------------------------------------------------------------------
# RSI
# ---------------------------------------------------------------------------------------------------------


def rsi(close: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Relative Strength Index (Wilder 1978; arithmetic of TA-Lib ``RSI``), in percent 0..100.

    With ``d = close[i] - close[i-1]``: average gain ``G`` and loss ``L`` are seeded with the simple
    averages of the first ``period`` gains/losses (bars 1..period), then smoothed the Wilder way
    ``G = (G * (period - 1) + gain) / period``; ``RSI = 100 * G / (G + L)``, and 0 when ``G + L == 0``
    (TA-Lib's convention for a flat market). NaN for the first ``period`` bars. Python loop.
    """
    period = check_int("period", period, 1)
    arr = as_array("close", close)
    n = arr.size
    if n <= period:
        return nan_array(n)
    diffs = np.diff(arr)
    # a gain adds ``d`` to G, a loss subtracts ``d`` from L (TA-Lib); adding 0.0 to the other is exact
    gains = np.where(diffs < 0, 0.0, diffs).tolist()
    losses = np.where(diffs < 0, -diffs, 0.0).tolist()
    p = period
    pm1 = p - 1
    gain = 0.0
    loss = 0.0
    for i in range(p):
        gain += gains[i]
        loss += losses[i]
    gain /= p
    loss /= p
    avg_gain = [NAN] * n
    avg_loss = [NAN] * n
    avg_gain[p] = gain
    avg_loss[p] = loss
    for i in range(p, n - 1):
        gain = (gain * pm1 + gains[i]) / p
        loss = (loss * pm1 + losses[i]) / p
        avg_gain[i + 1] = gain
        avg_loss[i + 1] = loss
    g = np.asarray(avg_gain, dtype=np.float64)
    t = g + np.asarray(avg_loss, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(t != 0.0, 100.0 * (g / t), 0.0)
    out[:p] = np.nan
    return out


class RSI:
    """Streaming RSI (Wilder 1978 / TA-Lib ``RSI``), percent 0..100; O(1) per update.

    ``update(close)`` returns NaN for the first ``period`` updates; see :func:`rsi` for the formula.
    """

    __slots__ = ("_count", "_gain", "_loss", "_prev", "period", "value")

    def __init__(self, period: int = 14) -> None:
        self.period = check_int("period", period, 1)
        self._count = 0
        self._prev = NAN
        self._gain = 0.0
        self._loss = 0.0
        self.value: float = NAN

    @property
    def ready(self) -> bool:
        """True once ``period + 1`` values have been seen."""
        return self._count > self.period

    def update(self, x: float) -> float:
        """Add one close; return the new RSI (NaN during warm-up)."""
        count = self._count
        self._count = count + 1
        prev = self._prev
        self._prev = x
        if count == 0:
            return NAN
        d = x - prev
        p = self.period
        if count < p:
            if d < 0:
                self._loss -= d
            else:
                self._gain += d
            return NAN
        if count == p:
            loss = self._loss
            gain = self._gain
            if d < 0:
                loss -= d
            else:
                gain += d
        else:
            loss = self._loss * (p - 1)
            gain = self._gain * (p - 1)
            if d < 0:
                loss -= d
            else:
                gain += d
        loss /= p
        gain /= p
        self._loss = loss
        self._gain = gain
        t = gain + loss
        self.value = 100.0 * (gain / t) if t != 0.0 else 0.0
        return self.value


# ---------------------------------------------------------------------------------------------------------
# ROC
# ---------------------------------------------------------------------------------------------------------


def roc(close: npt.ArrayLike, period: int = 10) -> FloatArray:
    """Rate of change in percent (TA-Lib ``ROC``): ``(close / close[i - period] - 1) * 100``.

    0 where the reference value is 0 (TA-Lib's convention). NaN for the first ``period`` bars.
    """
    period = check_int("period", period, 1)
    arr = as_array("close", close)
    n = arr.size
    out = nan_array(n)
    if n > period:
        prev = arr[: n - period]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (arr[period:] / prev - 1.0) * 100.0
        out[period:] = np.where(prev != 0.0, ratio, 0.0)
    return out


class ROC:
    """Streaming rate of change in percent (TA-Lib ``ROC``); O(1) per update (ring buffer)."""

    __slots__ = ("_buf", "_count", "_pos", "period", "value")

    def __init__(self, period: int = 10) -> None:
        self.period = check_int("period", period, 1)
        self._buf = [0.0] * self.period
        self._pos = 0
        self._count = 0
        self.value: float = NAN

    @property
    def ready(self) -> bool:
        """True once ``period + 1`` values have been seen."""
        return self._count > self.period

    def update(self, x: float) -> float:
        """Add one close; return ``(x / x_{period ago} - 1) * 100`` (NaN during warm-up)."""
        pos = self._pos
        prev = self._buf[pos]
        self._buf[pos] = x
        self._pos = pos + 1 if pos + 1 < self.period else 0
        self._count += 1
        if self._count > self.period:
            self.value = ((x / prev) - 1.0) * 100.0 if prev != 0.0 else 0.0
        return self.value


# ---------------------------------------------------------------------------------------------------------
# Stochastic RSI
# ---------------------------------------------------------------------------------------------------------


def stochrsi_lookback(period: int, stoch_period: int, k_smooth: int, d_smooth: int) -> int:
    """Leading NaN count of :func:`stochrsi`: ``period + stoch_period + k_smooth + d_smooth - 3``."""
    return period + (stoch_period - 1) + (k_smooth - 1) + (d_smooth - 1)


def stochrsi(
    close: npt.ArrayLike,
    period: int = 14,
    stoch_period: int = 14,
    k_smooth: int = 3,
    d_smooth: int = 3,
) -> tuple[FloatArray, FloatArray]:
    """Stochastic RSI (Chande & Kroll 1994; TradingView's "Stoch RSI" definition), percent 0..100.

    ``r = RSI(close, period)`` (:func:`rsi`); ``raw = 100 * (r - min_n r) / (max_n r - min_n r)`` over
    the last ``n = stoch_period`` RSI values (0 when the RSI window is flat, as TA-Lib);
    ``K = SMA(raw, k_smooth)``; ``D = SMA(K, d_smooth)``. Both outputs start at the same bar (NaN for the
    first ``period + stoch_period + k_smooth + d_smooth - 3`` bars), as TA-Lib aligns its outputs.

    TA-Lib equivalents: ``talib.STOCH(r, r, r, stoch_period, k_smooth, SMA, d_smooth, SMA)`` (slow K/D of
    the RSI) for any ``k_smooth``; with ``k_smooth=1`` also ``talib.STOCHRSI(close, period, stoch_period,
    d_smooth, SMA)`` (its fastk/fastd). TA-Lib's STOCHRSI has no K smoothing, so with the default
    ``k_smooth=3`` its fastk is our unsmoothed raw value and its fastd our K.
    Returns ``(k, d)``.
    """
    period = check_int("period", period, 1)
    stoch_period = check_int("stoch_period", stoch_period, 1)
    k_smooth = check_int("k_smooth", k_smooth, 1)
    d_smooth = check_int("d_smooth", d_smooth, 1)
    arr = as_array("close", close)
    n = arr.size
    k_out = nan_array(n)
    d_out = nan_array(n)
    lookback = stochrsi_lookback(period, stoch_period, k_smooth, d_smooth)
    if n <= lookback:
        return k_out, d_out
    r = rsi(arr, period)[period:]
    hi, lo = rolling_max_min(r, stoch_period)
    diff = (hi - lo) / 100.0
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(diff != 0.0, (r - lo) / diff, 0.0)[stoch_period - 1 :]
    k = running_mean(raw, k_smooth)[k_smooth - 1 :]
    d = running_mean(k, d_smooth)[d_smooth - 1 :]
    k_out[lookback:] = k[d_smooth - 1 :]
    d_out[lookback:] = d
    return k_out, d_out


class StochRSI:
    """Streaming Stochastic RSI returning ``(k, d)``; see :func:`stochrsi` for the definition.

    O(1) per update (the rolling RSI max/min uses monotonic deques: amortised O(1)). Both outputs are
    NaN until D is defined.
    """

    __slots__ = ("_dsma", "_ext", "_ksma", "_rsi", "d_smooth", "k_smooth", "period", "stoch_period", "value")

    def __init__(self, period: int = 14, stoch_period: int = 14, k_smooth: int = 3, d_smooth: int = 3) -> None:
        self.period = check_int("period", period, 1)
        self.stoch_period = check_int("stoch_period", stoch_period, 1)
        self.k_smooth = check_int("k_smooth", k_smooth, 1)
        self.d_smooth = check_int("d_smooth", d_smooth, 1)
        self._rsi = RSI(self.period)
        self._ext = RollingMaxMin(self.stoch_period)
        self._ksma = RunningMean(self.k_smooth)
        self._dsma = RunningMean(self.d_smooth)
        self.value: tuple[float, float] = (NAN, NAN)

    @property
    def ready(self) -> bool:
        """True once both K and D are defined."""
        return self._dsma.ready

    def update(self, x: float) -> tuple[float, float]:
        """Add one close; return ``(k, d)`` ((NaN, NaN) during warm-up)."""
        r = self._rsi.update(x)
        if not self._rsi.ready:
            return self.value
        hi, lo = self._ext.update(r)
        if hi != hi:  # extrema window not full yet
            return self.value
        diff = (hi - lo) / 100.0
        raw = (r - lo) / diff if diff != 0.0 else 0.0
        k = self._ksma.update(raw)
        if not self._ksma.ready:
            return self.value
        d = self._dsma.update(k)
        if self._dsma.ready:
            self.value = (k, d)
        return self.value
