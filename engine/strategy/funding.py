"""Funding-rate history and open-interest series as strategies see them.

:class:`FundingRates` holds one perpetual's settled funding events (ts in ns UTC, rate as a fraction
per funding interval, e.g. 0.0001 = 0.01 %). Intervals differ by symbol and can change over time
(Binance moved several contracts from 8 h to 4 h), so every event carries its own interval and a rate
normalised to 8 hours: ``rate_8h = rate × 8 h / interval``.

Lookahead: the arrays hold the whole history the run was given. Strategies read them only through
:meth:`FundingRates.index_at` with the clock's time (or compute causal rolling statistics over them
and read those at that index), so a bar never sees a funding event settled after its close.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.timeframes import NS_PER_HOUR

EIGHT_HOURS_NS = 8 * NS_PER_HOUR


class FundingRates:
    """One symbol's funding events, oldest first.

    Attributes:
        symbol: the perpetual.
        ts: int64 ns UTC of each settlement.
        rate: funding rate per interval (fraction; > 0 means longs pay shorts).
        interval_ns: the interval each event covers (time since the previous event; the first event
            takes the second's interval, and a single event is assumed to cover 8 h).
        rate_8h: ``rate × 8 h / interval_ns``, comparable across symbols and interval changes.
    """

    __slots__ = ("interval_ns", "rate", "rate_8h", "symbol", "ts")

    def __init__(self, symbol: str, ts: np.ndarray, rate: np.ndarray) -> None:
        ts = np.asarray(ts, dtype=np.int64)
        rate = np.asarray(rate, dtype=np.float64)
        if ts.shape != rate.shape:
            raise ValueError(f"funding {symbol}: ts and rate lengths differ ({ts.size} != {rate.size})")
        if ts.size > 1 and np.any(np.diff(ts) <= 0):
            raise ValueError(f"funding {symbol}: timestamps must be strictly increasing")
        self.symbol = symbol
        self.ts = ts
        self.rate = rate
        interval = np.full(ts.size, EIGHT_HOURS_NS, dtype=np.int64)
        if ts.size > 1:
            gaps = np.diff(ts)
            # round to whole minutes: settlement stamps carry a few ms of jitter
            gaps = np.maximum(np.round(gaps / 60e9).astype(np.int64) * 60_000_000_000, 60_000_000_000)
            interval[1:] = gaps
            interval[0] = gaps[0]
        self.interval_ns = interval
        self.rate_8h = rate * (EIGHT_HOURS_NS / interval)

    def __len__(self) -> int:
        return int(self.ts.size)

    def index_at(self, now_ns: int) -> int:
        """Index of the last event settled at or before ``now_ns`` (-1 when none)."""
        return int(np.searchsorted(self.ts, now_ns, side="right")) - 1

    def indices_at(self, times_ns: np.ndarray) -> np.ndarray:
        """Vectorized :meth:`index_at` for many times (e.g. every bar's close time)."""
        return np.searchsorted(self.ts, np.asarray(times_ns, dtype=np.int64), side="right") - 1

    def __repr__(self) -> str:
        return f"FundingRates({self.symbol}, {len(self)} events)"


def funding_by_symbol(table: pa.Table | None, symbols: list[str] | None = None) -> dict[str, FundingRates]:
    """Split a funding table (symbol, ts, rate; as :func:`engine.data.load_funding` returns it) per symbol."""
    out: dict[str, FundingRates] = {}
    if table is None or table.num_rows == 0:
        return out
    wanted = symbols if symbols is not None else list(dict.fromkeys(table.column("symbol").to_pylist()))
    for symbol in wanted:
        rows = table.filter(pc.equal(table.column("symbol"), symbol))
        if rows.num_rows:
            ts = rows.column("ts").cast(pa.int64()).to_numpy()
            out[symbol] = FundingRates(symbol, ts, rows.column("rate").to_numpy())
    return out


def align_last(obs_ts: np.ndarray, obs_values: np.ndarray, at_ns: np.ndarray) -> np.ndarray:
    """The last observation at or before each time in ``at_ns`` (NaN before the first one)."""
    j = np.searchsorted(np.asarray(obs_ts, dtype=np.int64), np.asarray(at_ns, dtype=np.int64), side="right") - 1
    out = np.full(len(at_ns), np.nan)
    ok = j >= 0
    out[ok] = np.asarray(obs_values, dtype=np.float64)[j[ok]]
    return out
