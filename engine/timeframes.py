"""Timeframe strings ("1m", "5m", "15m", "1h", "4h", "1d", "1w") and their length in nanoseconds."""

from __future__ import annotations

import re

from engine.errors import ParameterError

NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
NS_PER_HOUR = 60 * NS_PER_MINUTE
NS_PER_DAY = 24 * NS_PER_HOUR
NS_PER_YEAR = 365.25 * NS_PER_DAY

_UNITS = {"s": NS_PER_SECOND, "m": NS_PER_MINUTE, "h": NS_PER_HOUR, "d": NS_PER_DAY, "w": 7 * NS_PER_DAY}
_PATTERN = re.compile(r"^(\d+)([smhdw])$")


def timeframe_ns(timeframe: str) -> int:
    """Length of ``timeframe`` in ns, e.g. ``timeframe_ns("4h") == 14_400_000_000_000``.

    Raises:
        ParameterError: the string is not ``<positive int><s|m|h|d|w>``.
    """
    match = _PATTERN.match(timeframe.strip().lower()) if isinstance(timeframe, str) else None
    if not match or int(match.group(1)) <= 0:
        raise ParameterError("timeframe", f"must look like 1m, 5m, 15m, 1h, 4h or 1d, got {timeframe!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def timeframe_str(ns: int) -> str:
    """The shortest timeframe string for ``ns`` (e.g. 3_600_000_000_000 → "1h").

    Raises:
        ParameterError: ``ns`` is not a whole number of seconds.
    """
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if ns > 0 and ns % size == 0:
            return f"{ns // size}{unit}"
    raise ParameterError("timeframe", f"{ns} ns is not a whole number of seconds")
