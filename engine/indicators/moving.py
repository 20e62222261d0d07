"""Moving averages: SMA, EMA and the volume SMA.

Vectorized functions take numpy-compatible 1-D float inputs and return float64 arrays of the same length
with NaN during warm-up; streaming classes return the same values, bit for bit, one update at a time.
Inputs are assumed finite: a NaN enters the running state and propagates (for SMA, until the end).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.indicators._core import (
    NAN,
    FloatArray,
    RunningMean,
    as_array,
    check_int,
    nan_array,
    running_mean,
)

__all__ = ["EMA", "SMA", "VolumeSMA", "ema", "sma", "volume_sma"]


def sma(close: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Simple moving average (TA-Lib ``SMA``): mean of the last ``period`` values.

    Input: values (any unit, typically close prices). Output: same unit, NaN for the first
    ``period - 1`` bars. Arithmetic as TA-Lib's running total (add newest, output ``total / period``,
    subtract oldest), so results equal TA-Lib's up to rounding and :class:`SMA` exactly.
    """
    period = check_int("period", period, 1)
    return running_mean(as_array("close", close), period)


def volume_sma(volume: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Simple moving average of volume: :func:`sma` applied to the bar volume (base units)."""
    period = check_int("period", period, 1)
    return running_mean(as_array("volume", volume), period)


class SMA:
    """Streaming simple moving average (TA-Lib ``SMA``); O(1) per update.

    ``update(x)`` returns the mean of the last ``period`` inputs (NaN for the first ``period - 1``).
    """

    __slots__ = ("_mean", "period", "value")

    def __init__(self, period: int = 20) -> None:
        self.period = check_int("period", period, 1)
        self._mean = RunningMean(self.period)
        self.value: float = NAN

    @property
    def ready(self) -> bool:
        """True once ``period`` values have been seen (``value`` is then defined)."""
        return self._mean.ready

    def update(self, x: float) -> float:
        """Add one value; return the new average (NaN during warm-up)."""
        self.value = self._mean.update(x)
        return self.value


class VolumeSMA(SMA):
    """Streaming volume SMA: :class:`SMA` fed with bar volumes."""

    __slots__ = ()


def _ema_loop(x: list[float], period: int, out: list[float]) -> None:
    k = 2.0 / (period + 1)
    s = 0.0
    for i in range(period):
        s += x[i]
    m = s / period
    out[period - 1] = m
    for i in range(period, len(x)):
        m = ((x[i] - m) * k) + m
        out[i] = m


def ema(close: npt.ArrayLike, period: int = 20) -> FloatArray:
    """Exponential moving average (TA-Lib ``EMA``, default compatibility mode).

    ``k = 2 / (period + 1)``; seeded at bar ``period - 1`` with the SMA of the first ``period`` values,
    then ``ema = (x - ema) * k + ema``. Output in the input's unit, NaN for the first ``period - 1`` bars.
    The recursion runs as a plain Python loop (no vectorized form gives identical bits).
    """
    period = check_int("period", period, 1)
    arr = as_array("close", close)
    n = arr.size
    if n < period:
        return nan_array(n)
    out = [NAN] * n
    _ema_loop(arr.tolist(), period, out)
    return np.asarray(out, dtype=np.float64)


class EMA:
    """Streaming exponential moving average (TA-Lib ``EMA``, SMA seed); O(1) per update."""

    __slots__ = ("_count", "_k", "_sum", "period", "value")

    def __init__(self, period: int = 20) -> None:
        self.period = check_int("period", period, 1)
        self._k = 2.0 / (self.period + 1)
        self._count = 0
        self._sum = 0.0
        self.value: float = NAN

    @property
    def ready(self) -> bool:
        """True once a value has been produced."""
        return self._count >= self.period

    def update(self, x: float) -> float:
        """Add one value; return the new EMA (NaN for the first ``period - 1`` updates)."""
        self._count += 1
        if self._count > self.period:
            m = self.value
            self.value = ((x - m) * self._k) + m
        else:
            self._sum += x
            if self._count == self.period:
                self.value = self._sum / self.period
        return self.value
