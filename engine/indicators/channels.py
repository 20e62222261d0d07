"""Donchian channel: the highest high and lowest low of the last ``period`` bars (Donchian 1960s;
TA-Lib ``MAX(high)`` / ``MIN(low)``)."""

from __future__ import annotations

import numpy.typing as npt

from engine.indicators._core import FloatArray, RollingMaxMin, as_arrays, check_int, rolling_max_min


def donchian(high: npt.ArrayLike, low: npt.ArrayLike, period: int = 20) -> tuple[FloatArray, FloatArray]:
    """(upper, lower): max of ``high`` and min of ``low`` over each trailing window of ``period`` bars,
    including the current one; NaN for the first ``period - 1`` bars. Prices in quote currency.

    Raises:
        ParameterError: period < 1, or inputs of different lengths.
    """
    period = check_int("period", period, 1)
    h, lo = as_arrays(high=high, low=low)
    upper, _ = rolling_max_min(h, period)
    _, lower = rolling_max_min(lo, period)
    return upper, lower


class Donchian:
    """Streaming Donchian channel; ``update(high, low) -> (upper, lower)``, amortised O(1)."""

    __slots__ = ("_hi", "_lo", "ready", "value")

    def __init__(self, period: int = 20) -> None:
        period = check_int("period", period, 1)
        self._hi = RollingMaxMin(period)
        self._lo = RollingMaxMin(period)
        self.value: tuple[float, float] = (float("nan"), float("nan"))
        self.ready = False

    def update(self, high: float, low: float) -> tuple[float, float]:
        upper, _ = self._hi.update(high)
        _, lower = self._lo.update(low)
        self.value = (upper, lower)
        self.ready = upper == upper
        return self.value
