"""The indicator registry used by the strategy API: names, inputs, outputs, parameters, both forms.

``INDICATORS[name]`` is an :class:`IndicatorSpec`. ``spec.vectorized(*input_arrays, **params)`` returns an
array (single output) or a tuple of arrays in ``spec.outputs`` order; ``spec.streaming(**params)`` builds an
object whose ``update(*inputs)`` returns a float or a tuple in the same order. Parameters are validated by
the spec's pydantic model (:func:`validate_params`), which fills in defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import ParameterError
from engine.indicators.channels import Donchian, donchian
from engine.indicators.momentum import ROC, RSI, StochRSI, roc, rsi, stochrsi, stochrsi_lookback
from engine.indicators.moving import EMA, SMA, VolumeSMA, ema, sma, volume_sma
from engine.indicators.trend import ADX, adx
from engine.indicators.volatility import ATR, BBands, BBWidth, RealizedVol, atr, bbands, bbwidth, realized_vol

__all__ = ["INDICATORS", "IndicatorSpec", "get_indicator", "validate_params"]


@dataclass(frozen=True)
class IndicatorSpec:
    """One indicator: its bar inputs, named outputs, parameter model and both implementations.

    ``lookback(**params)`` is the number of leading NaN outputs (for multi-output indicators every output
    starts at the same bar). ``lookback_fn`` computes it from validated parameters.
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: type[BaseModel]
    vectorized: Callable[..., np.ndarray | tuple[np.ndarray, ...]]
    streaming: Callable[..., Any]
    lookback_fn: Callable[..., int] = field(repr=False, compare=False)

    def lookback(self, **params: Any) -> int:
        """Leading NaN count of the outputs for ``params`` (defaults filled in; ParameterError if bad)."""
        return self.lookback_fn(**validate_params(self, params))


# ---------------------------------------------------------------------------------------------------------
# parameter models
# ---------------------------------------------------------------------------------------------------------

_CONFIG = ConfigDict(extra="forbid", frozen=True)


def _period(default: int, minimum: int = 1) -> Any:
    return Field(default, ge=minimum)


# ints: bools and fractional floats are rejected; integral floats such as 14.0 are accepted.
Int = Annotated[int, pydantic.BeforeValidator(lambda v: _no_bool(v))]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False), pydantic.BeforeValidator(lambda v: _no_bool(v))]


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


class PeriodParams(BaseModel):
    """``period``: window length in bars (int >= 1, default 20)."""

    model_config = _CONFIG
    period: Int = _period(20)


class RSIParams(BaseModel):
    """``period``: Wilder smoothing length in bars (int >= 1, default 14)."""

    model_config = _CONFIG
    period: Int = _period(14)


class ATRParams(RSIParams):
    """``period``: Wilder smoothing length in bars (int >= 1, default 14)."""


class ADXParams(RSIParams):
    """``period``: Wilder smoothing length in bars (int >= 1, default 14)."""


class ROCParams(BaseModel):
    """``period``: look-back in bars (int >= 1, default 10)."""

    model_config = _CONFIG
    period: Int = _period(10)


class BBandsParams(BaseModel):
    """``period`` (int >= 1, default 20) and ``k``, the band width in standard deviations (> 0, 2.0)."""

    model_config = _CONFIG
    period: Int = _period(20)
    k: PositiveFloat = 2.0


class StochRSIParams(BaseModel):
    """RSI ``period``, ``stoch_period`` (min/max window), ``k_smooth`` and ``d_smooth`` (ints >= 1)."""

    model_config = _CONFIG
    period: Int = _period(14)
    stoch_period: Int = _period(14)
    k_smooth: Int = _period(3)
    d_smooth: Int = _period(3)


class RealizedVolParams(BaseModel):
    """``period`` returns (int >= 2, default 20); ``periods_per_year`` (> 0) annualises, None: per bar."""

    model_config = _CONFIG
    period: Int = _period(20, 2)
    periods_per_year: PositiveFloat | None = None


# ---------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------

_CLOSE = ("close",)
_HLC = ("high", "low", "close")
_VALUE = ("value",)

INDICATORS: dict[str, IndicatorSpec] = {
    spec.name: spec
    for spec in (
        IndicatorSpec("sma", _CLOSE, _VALUE, PeriodParams, sma, SMA, lambda period: period - 1),
        IndicatorSpec("ema", _CLOSE, _VALUE, PeriodParams, ema, EMA, lambda period: period - 1),
        IndicatorSpec("rsi", _CLOSE, _VALUE, RSIParams, rsi, RSI, lambda period: period),
        IndicatorSpec("atr", _HLC, _VALUE, ATRParams, atr, ATR, lambda period: period),
        IndicatorSpec(
            "bbands",
            _CLOSE,
            ("upper", "middle", "lower"),
            BBandsParams,
            bbands,
            BBands,
            lambda period, k: period - 1,
        ),
        IndicatorSpec("adx", _HLC, ("adx",), ADXParams, adx, ADX, lambda period: 2 * period - 1),
        IndicatorSpec("stochrsi", _CLOSE, ("k", "d"), StochRSIParams, stochrsi, StochRSI, stochrsi_lookback),
        IndicatorSpec("roc", _CLOSE, _VALUE, ROCParams, roc, ROC, lambda period: period),
        IndicatorSpec("bbwidth", _CLOSE, _VALUE, BBandsParams, bbwidth, BBWidth, lambda period, k: period - 1),
        IndicatorSpec(
            "realized_vol",
            _CLOSE,
            _VALUE,
            RealizedVolParams,
            realized_vol,
            RealizedVol,
            lambda period, periods_per_year: period,
        ),
        IndicatorSpec(
            "volume_sma", ("volume",), _VALUE, PeriodParams, volume_sma, VolumeSMA, lambda period: period - 1
        ),
        IndicatorSpec(
            "donchian",
            ("high", "low"),
            ("upper", "lower"),
            PeriodParams,
            donchian,
            Donchian,
            lambda period: period - 1,
        ),
    )
}


def get_indicator(name: str) -> IndicatorSpec:
    """The spec registered as ``name``; ParameterError("indicator", ...) listing known names otherwise."""
    try:
        return INDICATORS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(INDICATORS))
        raise ParameterError("indicator", f"unknown indicator {name!r}; known: {known}") from None


def validate_params(spec: IndicatorSpec, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` checked by ``spec.params`` with defaults filled in, as a plain dict.

    Raises ParameterError naming the first offending field (``extra`` fields are rejected by name) and
    the rule it broke.
    """
    try:
        model = spec.params.model_validate(params)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = str(err["loc"][0]) if err["loc"] else spec.name
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(spec.params.model_fields) or "none"
            rule = f"unknown parameter for indicator {spec.name!r} (allowed: {allowed})"
        else:
            rule = f"{err['msg']} (got {err.get('input')!r})"
        raise ParameterError(loc, rule) from None
    return model.model_dump()
