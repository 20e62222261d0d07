"""Lookahead-free views of per-bar data for strategies: cursors, series and the bar view.

A :class:`Cursor` holds the index of the current bar of one symbol. A :class:`Series` reads its
values at that index, so a strategy only ever sees values up to the current bar. In a backtest the
values are computed once, vectorized, before the loop; in a live session the same classes read lists
that grow by one value per bar. Either way a read costs one list index, and no object is created per
bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


class Cursor:
    """Index of the current bar of one symbol's timeline (``i = -1`` before the first bar)."""

    __slots__ = ("i",)

    def __init__(self) -> None:
        self.i = -1


class Series:
    """A per-bar series (an indicator output or a bar field) as seen at the current bar.

    ``series.value`` is the value at the current bar, ``series.prev`` the one before and
    ``series[n]`` the value ``n`` bars ago (n >= 0). Values before the start are NaN.
    Units are those of the source (prices in quote currency, volumes in base units).
    """

    __slots__ = ("_c", "_v", "name")

    def __init__(self, name: str, values: Sequence[float], cursor: Cursor) -> None:
        self.name = name
        self._v = values
        self._c = cursor

    @property
    def value(self) -> float:
        return self._v[self._c.i]

    @property
    def prev(self) -> float:
        i = self._c.i - 1
        return self._v[i] if i >= 0 else math.nan

    def __getitem__(self, ago: int) -> float:
        if ago < 0:
            raise IndexError(f"series '{self.name}': bars ago must be >= 0 (no lookahead), got {ago}")
        i = self._c.i - ago
        return self._v[i] if i >= 0 else math.nan

    def __len__(self) -> int:
        return self._c.i + 1

    def window(self, n: int) -> list[float]:
        """The last ``n`` values, oldest first (shorter near the start)."""
        i = self._c.i + 1
        return list(self._v[max(0, i - n) : i])

    def __repr__(self) -> str:
        return f"Series({self.name}={self.value if self._c.i >= 0 else math.nan})"


class Bar:
    """The current bar of one symbol (a reusable view; do not keep it across callbacks).

    Attributes read at the cursor: ``ts`` (open time, ns UTC), ``open``, ``high``, ``low``,
    ``close`` (quote currency), ``volume`` (base units), ``index`` (bar number in the run).
    A bar is complete when ``on_bar`` sees it. ``source`` is any object with list attributes
    ``ts``, ``open``, ``high``, ``low``, ``close`` and ``volume`` (a feed).
    """

    __slots__ = ("_c", "_f", "symbol")

    def __init__(self, symbol: str, cursor: Cursor, source: Any) -> None:
        self.symbol = symbol
        self._c = cursor
        self._f = source

    @property
    def index(self) -> int:
        return self._c.i

    @property
    def ts(self) -> int:
        return self._f.ts[self._c.i]

    @property
    def open(self) -> float:
        return self._f.open[self._c.i]

    @property
    def high(self) -> float:
        return self._f.high[self._c.i]

    @property
    def low(self) -> float:
        return self._f.low[self._c.i]

    @property
    def close(self) -> float:
        return self._f.close[self._c.i]

    @property
    def volume(self) -> float:
        return self._f.volume[self._c.i]

    def __repr__(self) -> str:
        if self._c.i < 0:
            return f"Bar({self.symbol}, not started)"
        return (
            f"Bar({self.symbol}, ts={self.ts}, O={self.open}, H={self.high}, L={self.low}, "
            f"C={self.close}, V={self.volume})"
        )


class Tick:
    """A trade or quote update: ``symbol``, ``ts`` (ns UTC), ``price`` (LTP), ``size`` (base units)."""

    __slots__ = ("price", "size", "symbol", "ts")

    def __init__(self, symbol: str, ts: int, price: float, size: float = 0.0) -> None:
        self.symbol = symbol
        self.ts = ts
        self.price = price
        self.size = size
