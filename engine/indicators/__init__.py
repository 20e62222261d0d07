"""Technical indicators, each in a vectorized and a streaming form that agree bit for bit.

Vectorized functions take 1-D float arrays and return float64 arrays of the same length with NaN during
warm-up (tuples for multi-output indicators); streaming classes expose ``update(*inputs)`` (O(1) per
update), ``value`` and ``ready``. Definitions follow TA-Lib (and Wilder 1978 / Bollinger) and match TA-Lib
to ~1e-15 relative; see each function's docstring. :mod:`engine.indicators.registry` maps indicator
names to specs for the strategy API.
"""

from engine.indicators.momentum import ROC, RSI, StochRSI, roc, rsi, stochrsi
from engine.indicators.moving import EMA, SMA, VolumeSMA, ema, sma, volume_sma
from engine.indicators.registry import INDICATORS, IndicatorSpec, get_indicator, validate_params
from engine.indicators.trend import ADX, adx
from engine.indicators.volatility import (
    ATR,
    BBands,
    BBWidth,
    RealizedVol,
    atr,
    bbands,
    bbwidth,
    log_returns,
    realized_vol,
    true_range,
)

__all__ = [
    "ADX",
    "ATR",
    "EMA",
    "INDICATORS",
    "ROC",
    "RSI",
    "SMA",
    "BBWidth",
    "BBands",
    "IndicatorSpec",
    "RealizedVol",
    "StochRSI",
    "VolumeSMA",
    "adx",
    "atr",
    "bbands",
    "bbwidth",
    "ema",
    "get_indicator",
    "log_returns",
    "realized_vol",
    "roc",
    "rsi",
    "sma",
    "stochrsi",
    "true_range",
    "validate_params",
    "volume_sma",
]
