"""Shared numerics of the indicator modules (internal).

Every helper here exists in two forms that produce bit-identical results: a vectorized function over a
numpy ``float64`` array and a streaming class updated one value at a time. Identity is achieved by doing
the same IEEE-754 operations in the same order in both forms: ``np.cumsum`` (``np.add.accumulate``) is
strictly sequential, elementwise numpy arithmetic, ``np.sqrt``, ``min`` and ``max`` are correctly
rounded / exact, so a running sum evaluated by ``cumsum`` equals the same running sum done in Python.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from engine.errors import ParameterError

FloatArray = npt.NDArray[np.float64]
NAN = math.nan


# ---------------------------------------------------------------------------------------------------------
# argument checks (the registry's pydantic models express the same rules)
# ---------------------------------------------------------------------------------------------------------


def as_array(field: str, values: npt.ArrayLike) -> FloatArray:
    """``values`` as a one-dimensional float64 array, or ParameterError naming ``field``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ParameterError(field, f"must be a one-dimensional array, got {arr.ndim} dimensions")
    return arr


def as_arrays(**named: npt.ArrayLike) -> list[FloatArray]:
    """Several inputs as float64 arrays of one common length (ParameterError otherwise)."""
    arrays = [as_array(name, values) for name, values in named.items()]
    sizes = {a.size for a in arrays}
    if len(sizes) > 1:
        lengths = ", ".join(f"{name}={a.size}" for name, a in zip(named, arrays, strict=True))
        raise ParameterError(next(iter(named)), f"inputs must have equal lengths, got {lengths}")
    return arrays


def check_int(field: str, value: Any, minimum: int) -> int:
    """``value`` as an int ``>= minimum`` (bools and fractional numbers are rejected)."""
    if isinstance(value, bool):
        raise ParameterError(field, f"must be an integer >= {minimum}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            number = int(value)
        else:
            raise ParameterError(field, f"must be an integer >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ParameterError(field, f"must be an integer >= {minimum}, got {number}")
    return number


def check_positive(field: str, value: Any) -> float:
    """``value`` as a finite float ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ParameterError(field, f"must be a finite number > 0, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0.0:
        raise ParameterError(field, f"must be a finite number > 0, got {value!r}")
    return number


def nan_array(n: int) -> FloatArray:
    """A float64 array of ``n`` NaNs."""
    return np.full(n, np.nan, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# running mean (TA-Lib TA_INT_SMA arithmetic)
# ---------------------------------------------------------------------------------------------------------


def running_mean(x: FloatArray, period: int) -> FloatArray:
    """Mean of each trailing window of ``period`` values; NaN for the first ``period - 1`` positions.

    Same arithmetic as TA-Lib's SMA: a running total ``s`` gets the newest value added, the output is
    ``s / period``, then the oldest value is subtracted. The interleaved sequence
    ``x0 .. x[p-1], -x0, x[p], -x1, x[p+1], ...`` is accumulated by ``np.cumsum`` (sequential), so the
    result equals :class:`RunningMean` bit for bit.
    """
    n = x.size
    out = nan_array(n)
    if n < period:
        return out
    seq = np.empty(period + 2 * (n - period), dtype=np.float64)
    seq[:period] = x[:period]
    seq[period::2] = -x[: n - period]
    seq[period + 1 :: 2] = x[period:]
    out[period - 1 :] = np.cumsum(seq)[period - 1 :: 2] / period
    return out


class RunningMean:
    """Streaming form of :func:`running_mean`: O(1) per update (ring buffer + running total)."""

    __slots__ = ("_buf", "_count", "_period", "_pos", "_sum")

    def __init__(self, period: int) -> None:
        self._period = period
        self._buf = [0.0] * period
        self._pos = 0
        self._count = 0
        self._sum = 0.0

    @property
    def ready(self) -> bool:
        """True once ``period`` values have been seen."""
        return self._count >= self._period

    def update(self, x: float) -> float:
        """Add ``x``; return the mean of the last ``period`` values (NaN until ``period`` were seen)."""
        self._sum += x
        pos = self._pos
        self._buf[pos] = x
        pos += 1
        if pos == self._period:
            pos = 0
        self._pos = pos
        self._count += 1
        if self._count < self._period:
            return NAN
        out = self._sum / self._period
        self._sum -= self._buf[pos]  # the oldest value of the current window
        return out


# ---------------------------------------------------------------------------------------------------------
# rolling standard deviation (re-anchored shifted sums)
# ---------------------------------------------------------------------------------------------------------
#
# Windows are numbered j = 0, 1, ... (window j ends at x[j + p - 1]). Every p-th window (j % p == 0) is an
# *anchor*: its centre c = (sequential sum)/p and the shifted sums S1 = sum(x - c), S2 = sum((x - c)^2) are
# recomputed from the window (two passes, sequential). Between anchors the sums slide in O(1):
#     dn = x_new - c;  do = x_old - c;  S1 += dn - do;  S2 += dn*dn - do*do
# and var = (S2 - S1*S1/p) / (p - ddof), clipped at 0. Shifting by a centre that is at most p bars old
# avoids the cancellation of the textbook E[x^2] - E[x]^2 formula, and re-anchoring stops running-sum drift
# over long series; the anchor costs O(p) once per p updates, i.e. amortised O(1) per update.


def rolling_std(x: FloatArray, period: int, ddof: int) -> FloatArray:
    """Standard deviation (``ddof`` 0: population, 1: sample) of each trailing window of ``period``.

    NaN for the first ``period - 1`` positions. Bit-identical to :class:`RollingStd`.
    """
    n = x.size
    out = nan_array(n)
    m = n - period + 1  # number of full windows
    if m <= 0:
        return out
    p = period
    anchors = sliding_window_view(x, p)[::p]  # (nb, p), chronological rows
    nb = anchors.shape[0]
    centre = np.cumsum(anchors, axis=1)[:, -1] / p
    dev = anchors - centre[:, None]
    s1_anchor = np.cumsum(dev, axis=1)[:, -1]
    s2_anchor = np.cumsum(dev * dev, axis=1)[:, -1]

    c = np.repeat(centre, p)[:m]
    dn = x[p - 1 :] - c
    do = np.empty(m, dtype=np.float64)
    do[0] = 0.0
    do[1:] = x[: m - 1]
    do[1:] -= c[1:]
    inc1 = np.zeros(nb * p, dtype=np.float64)
    inc2 = np.zeros(nb * p, dtype=np.float64)
    inc1[:m] = dn - do
    inc2[:m] = dn * dn - do * do
    inc1[::p] = s1_anchor
    inc2[::p] = s2_anchor
    s1 = np.cumsum(inc1.reshape(nb, p), axis=1).ravel()[:m]
    s2 = np.cumsum(inc2.reshape(nb, p), axis=1).ravel()[:m]
    var = (s2 - s1 * s1 / p) / (p - ddof)
    var = np.where(var < 0.0, 0.0, var)
    out[p - 1 :] = np.sqrt(var)
    return out


class RollingStd:
    """Streaming form of :func:`rolling_std` (amortised O(1) per update; O(period) once per period)."""

    __slots__ = ("_buf", "_c", "_count", "_ddof", "_period", "_pos", "_s1", "_s2")

    def __init__(self, period: int, ddof: int) -> None:
        self._period = period
        self._ddof = ddof
        self._buf = [0.0] * period
        self._pos = 0
        self._count = 0
        self._c = 0.0
        self._s1 = 0.0
        self._s2 = 0.0

    def update(self, x: float) -> float:
        """Add ``x``; return the std of the last ``period`` values (NaN until ``period`` were seen)."""
        p = self._period
        buf = self._buf
        pos = self._pos
        old = buf[pos]
        buf[pos] = x
        pos += 1
        if pos == p:
            pos = 0
        self._pos = pos
        self._count += 1
        j = self._count - p  # index of the window ending at x
        if j < 0:
            return NAN
        if j % p == 0:
            window = buf[pos:] + buf[:pos]
            s = 0.0
            for v in window:
                s += v
            c = s / p
            s1 = 0.0
            s2 = 0.0
            for v in window:
                d = v - c
                s1 += d
                s2 += d * d
            self._c = c
        else:
            c = self._c
            dn = x - c
            do = old - c
            s1 = self._s1 + (dn - do)
            s2 = self._s2 + (dn * dn - do * do)
        self._s1 = s1
        self._s2 = s2
        var = (s2 - s1 * s1 / p) / (p - self._ddof)
        if var < 0.0:
            var = 0.0
        return math.sqrt(var)


# ---------------------------------------------------------------------------------------------------------
# rolling extrema
# ---------------------------------------------------------------------------------------------------------


def rolling_max_min(x: FloatArray, period: int) -> tuple[FloatArray, FloatArray]:
    """(max, min) of each trailing window of ``period`` values; NaN for the first ``period - 1``."""
    n = x.size
    hi = nan_array(n)
    lo = nan_array(n)
    if n >= period:
        windows = sliding_window_view(x, period)
        hi[period - 1 :] = windows.max(axis=1)
        lo[period - 1 :] = windows.min(axis=1)
    return hi, lo


class RollingMaxMin:
    """Streaming (max, min) over the last ``period`` values: monotonic deques, amortised O(1)."""

    __slots__ = ("_i", "_maxq", "_minq", "_period")

    def __init__(self, period: int) -> None:
        self._period = period
        self._i = 0
        self._maxq: deque[tuple[int, float]] = deque()
        self._minq: deque[tuple[int, float]] = deque()

    def update(self, x: float) -> tuple[float, float]:
        """Add ``x``; return (max, min) of the last ``period`` values ((NaN, NaN) until warm)."""
        i = self._i
        self._i = i + 1
        maxq = self._maxq
        minq = self._minq
        while maxq and maxq[-1][1] <= x:
            maxq.pop()
        maxq.append((i, x))
        while minq and minq[-1][1] >= x:
            minq.pop()
        minq.append((i, x))
        expired = i - self._period
        if maxq[0][0] <= expired:
            maxq.popleft()
        if minq[0][0] <= expired:
            minq.popleft()
        if i + 1 < self._period:
            return NAN, NAN
        return maxq[0][1], minq[0][1]
