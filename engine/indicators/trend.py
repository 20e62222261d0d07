"""Trend-strength indicators: ADX (Average Directional Movement Index).

The vectorized function returns a float64 array of the input length with NaN during warm-up; the
streaming class returns the same values, bit for bit, one bar at a time. Inputs are assumed finite.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.indicators._core import NAN, FloatArray, as_arrays, check_int, nan_array

__all__ = ["ADX", "adx"]


def _directional(h: FloatArray, lo: FloatArray, c: FloatArray) -> tuple[list[float], list[float], list[float]]:
    """+DM, -DM and TR for bars 1..n-1 (as lists), TA-Lib's case analysis."""
    diff_p = h[1:] - h[:-1]
    diff_m = lo[:-1] - lo[1:]
    minus = (diff_m > 0.0) & (diff_p < diff_m)
    plus = ~minus & (diff_p > 0.0) & (diff_p > diff_m)
    pdm = np.where(plus, diff_p, 0.0)
    mdm = np.where(minus, diff_m, 0.0)
    pc = c[:-1]
    tr = np.maximum(np.maximum(h[1:] - lo[1:], np.abs(h[1:] - pc)), np.abs(lo[1:] - pc))
    return pdm.tolist(), mdm.tolist(), tr.tolist()


def adx(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, period: int = 14) -> FloatArray:
    """Average Directional Movement Index (Wilder 1978; arithmetic of TA-Lib ``ADX``), 0..100.

    Per bar: ``+DM = up`` if ``up > down`` and ``up > 0`` else 0, ``-DM = down`` if ``down > up`` and
    ``down > 0`` else 0 (``up = high - high[-1]``, ``down = low[-1] - low``), TR the true range.
    Wilder sums (TA-Lib seeding): the sums of bars ``1..period-1`` seed ``S = S - S/period + v`` from bar
    ``period`` on; ``+DI = 100 * S(+DM) / S(TR)``, ``-DI`` alike, ``DX = 100 * |+DI - -DI| / (+DI + -DI)``.
    The first ADX (bar ``2*period - 1``) is the mean of the DX of bars ``period..2*period-1``, then
    ``ADX = (ADX * (period - 1) + DX) / period``. A bar whose ``S(TR)`` or ``+DI + -DI`` is 0 has no DX: it
    adds nothing to the first mean and leaves ADX unchanged (TA-Lib). NaN for the first ``2*period - 1``
    bars. Python loop.
    """
    period = check_int("period", period, 1)
    h, lo, c = as_arrays(high=high, low=low, close=close)
    n = h.size
    lookback = 2 * period - 1
    if n <= lookback:
        return nan_array(n)
    pdm, mdm, tr = _directional(h, lo, c)
    p = period
    pm1 = p - 1
    sp = 0.0
    sm = 0.0
    st = 0.0
    for i in range(pm1):  # bars 1..p-1 seed the Wilder sums
        sp += pdm[i]
        sm += mdm[i]
        st += tr[i]
    m = n - p  # bars p..n-1
    s_p = [0.0] * m
    s_m = [0.0] * m
    s_t = [0.0] * m
    for j in range(m):
        i = j + pm1
        sp = sp - sp / p + pdm[i]
        sm = sm - sm / p + mdm[i]
        st = st - st / p + tr[i]
        s_p[j] = sp
        s_m[j] = sm
        s_t[j] = st
    sp_a = np.asarray(s_p, dtype=np.float64)
    sm_a = np.asarray(s_m, dtype=np.float64)
    st_a = np.asarray(s_t, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mdi = 100.0 * (sm_a / st_a)
        pdi = 100.0 * (sp_a / st_a)
        t = mdi + pdi
        dx = 100.0 * (np.abs(mdi - pdi) / t)
    valid = (st_a != 0.0) & (t != 0.0)
    dx = np.where(valid, dx, np.nan).tolist()
    sum_dx = 0.0
    for j in range(p):  # bars p..2p-1
        v = dx[j]
        if v == v:
            sum_dx += v
    a = sum_dx / p
    out = [NAN] * n
    out[lookback] = a
    for j in range(p, m):
        v = dx[j]
        if v == v:
            a = (a * pm1 + v) / p
        out[j + p] = a
    return np.asarray(out, dtype=np.float64)


class ADX:
    """Streaming ADX (Wilder 1978 / TA-Lib ``ADX``), 0..100; O(1) per update.

    ``update(high, low, close)`` returns NaN for the first ``2*period - 1`` bars; see :func:`adx`.
    """

    __slots__ = ("_adx", "_count", "_pc", "_ph", "_pl", "_sm", "_sp", "_st", "_sum_dx", "period", "value")

    def __init__(self, period: int = 14) -> None:
        self.period = check_int("period", period, 1)
        self._count = 0
        self._ph = NAN
        self._pl = NAN
        self._pc = NAN
        self._sp = 0.0
        self._sm = 0.0
        self._st = 0.0
        self._sum_dx = 0.0
        self._adx = 0.0
        self.value: float = NAN

    @property
    def ready(self) -> bool:
        """True once ``2 * period`` bars have been seen."""
        return self._count >= 2 * self.period

    def update(self, high: float, low: float, close: float) -> float:
        """Add one bar; return the new ADX (NaN during warm-up)."""
        bar = self._count
        self._count = bar + 1
        ph, pl, pc = self._ph, self._pl, self._pc
        self._ph, self._pl, self._pc = high, low, close
        if bar == 0:
            return NAN
        diff_p = high - ph
        diff_m = pl - low
        pdm = 0.0
        mdm = 0.0
        if diff_m > 0.0 and diff_p < diff_m:
            mdm = diff_m
        elif diff_p > 0.0 and diff_p > diff_m:
            pdm = diff_p
        tr = high - low
        v = abs(high - pc)
        if v > tr:
            tr = v
        v = abs(low - pc)
        if v > tr:
            tr = v
        p = self.period
        if bar < p:
            self._sp += pdm
            self._sm += mdm
            self._st += tr
            return NAN
        sp = self._sp
        sm = self._sm
        st = self._st
        sp = sp - sp / p + pdm
        sm = sm - sm / p + mdm
        st = st - st / p + tr
        self._sp, self._sm, self._st = sp, sm, st
        dx = NAN
        if st != 0.0:
            mdi = 100.0 * (sm / st)
            pdi = 100.0 * (sp / st)
            t = mdi + pdi
            if t != 0.0:
                dx = 100.0 * (abs(mdi - pdi) / t)
        lookback = 2 * p - 1
        if bar < lookback:
            if dx == dx:
                self._sum_dx += dx
            return NAN
        if bar == lookback:
            if dx == dx:
                self._sum_dx += dx
            self._adx = self._sum_dx / p
        elif dx == dx:
            self._adx = (self._adx * (p - 1) + dx) / p
        self.value = self._adx
        return self.value
