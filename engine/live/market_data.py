"""The market-data service of a live bot: series that grow by one value per bar.

:class:`LiveMarketData` implements :class:`~engine.strategy.services.MarketDataService` with the
same methods, labels and errors as the backtest's :class:`~engine.strategy.feed.BarMarketData`, but
the bars arrive one at a time (:meth:`LiveMarketData.append_bar`) and every requested indicator is
updated with its *streaming* form (:mod:`engine.indicators.registry`), which is bit-identical to the
vectorized form the backtest uses. A strategy therefore reads the same values at the same bar live
as in a backtest over the same bars.

The bot's loop, per symbol and bar::

    i = md.append_bar(symbol, ts, o, h, l, c, v)   # series grow; the cursor does NOT move
    ... match resting orders against bar i ...     # the strategy still sees bar i - 1
    md.advance(symbol)                             # cursor -> i
    strategy.on_bar(md.bar(symbol))

Higher timeframes
-----------------
``indicator(..., timeframe="4h")`` and ``series(..., timeframe="1d")`` aggregate the base bars into
higher-timeframe (HTF) buckets exactly as :func:`engine.data.resample.resample` does: right-open
buckets ``[t, t + htf)`` aligned to the UTC epoch (weeks to Monday 00:00 UTC); open = first open,
high = max, low = min, close = last close, volume = sum (a sequential sum here; DuckDB may add in
another order, so HTF volumes can differ in the last bits). A base bar sees the last HTF bar that
had *closed* by the base bar's close: bucket start + htf ≤ base open + base tf, as
:meth:`engine.strategy.feed.SymbolFeed.higher_timeframe` aligns them.

Streaming rule: a bucket is finalized (appended as an HTF bar, its indicators updated) when

1. a base bar of a later bucket arrives while it is open (bars were missing at its end), or
2. the base bar that closes at or after the bucket's end arrives (bucket start + htf ≤ ts + tf).

Why this equals the backtest's alignment: bars are at least one base timeframe apart
(:meth:`LiveMarketData.append_bar` enforces ``ts ≥ previous ts + tf``), so after base bar ``i`` no
later bar opens before ``ts_i + tf``. A bucket ending at or before ``ts_i + tf`` can therefore get no
more bars: it is complete, and the rules above have finalized it (rule 2 if bar ``i`` is in it, rule
1 if an earlier bucket's bar came last). A bucket ending after ``ts_i + tf`` is not visible to bar
``i`` in the backtest either. So after each base bar the finalized HTF bars are exactly those the
backtest shows it, and the last of them is the one it aligns to. The bucket still open at the end of
a backtest (a partial last bucket) is never visible to any base bar in either implementation.

Late requests
-------------
An indicator or series requested when bars already exist (e.g. a strategy added to a running bot)
is computed over the stored history with the same streaming form first, so its values equal those
it would have had if requested before the first bar. Identical requests share one computation.

Warm-up
-------
:meth:`LiveMarketData.warmup_index` has BarMarketData's meaning (the first bar index at which every
series requested on the symbol has been finite; the number of bars if one never was; 0 when none is
requested), tracked incrementally: each bar checks only the series not yet finite.

Checkpoints
-----------
All state is plain Python (lists of ints and floats, dicts, the streaming indicator objects, the
pydantic instruments and the funding/open-interest inputs) and pickles with the standard
:mod:`pickle`. Pickle the service *together with* the strategy that holds its Series (one
``pickle.dumps((market_data, strategy))``) so the Series keep sharing the service's lists.

Memory
------
Nothing is trimmed. Per base bar a symbol stores its 6 bar values plus one value per requested
base-timeframe series (each indicator output, ``ts``/``quote_volume`` if requested, each aligned HTF
series) and one int per HTF aggregation (the aligned index); per HTF bar, 6 bar values plus one per
HTF indicator output. A list slot is 8 bytes and a distinct float object 24 more, so about 32 bytes
per value (aligned HTF values share their float objects: 8 bytes). Example: one symbol of 1h bars
with 20 series grows by about 8,760 × 26 × 32 B ≈ 7 MB a year; 1m bars by about 60 times that.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any

import numpy as np

from engine.data.resample import WEEK_NS, WEEK_OFFSET_NS
from engine.errors import ParameterError
from engine.instruments import Instrument
from engine.strategy.feed import BAR_FIELDS, MarketDataBase, check_higher_timeframe
from engine.strategy.feed import SERIES_FIELDS as SERIES_FIELDS  # re-exported: the fields series() accepts
from engine.strategy.funding import FundingRates
from engine.strategy.series import Bar, Cursor, Series
from engine.timeframes import timeframe_ns

__all__ = ["LiveMarketData", "LiveSymbolFeed"]

NAN = math.nan


class _Calc:
    """One streaming indicator over one timeline: reads its input columns at index ``j``, appends outputs."""

    __slots__ = ("multi", "outputs", "srcs", "state")

    def __init__(self, state: Any, srcs: list[list[float]], n_outputs: int) -> None:
        self.state = state
        self.srcs = srcs
        self.multi = n_outputs > 1
        self.outputs: list[list[float]] = [[] for _ in range(n_outputs)]

    def push(self, j: int) -> None:
        result = self.state.update(*[src[j] for src in self.srcs])
        if self.multi:
            for out, value in zip(self.outputs, result, strict=True):
                out.append(value)
        else:
            self.outputs[0].append(result)


class _Timeline:
    """Bars of one timeline (base or higher) as growing lists, plus what is computed on them.

    ``ts`` holds ints (ns UTC, bar open); the price fields and ``volume`` floats. Derived columns
    (``"ts"`` as float, ``"quote_volume"``) and streaming indicators are added on request and
    updated by :meth:`_pushed` after each appended bar.
    """

    def __init__(self, tf_ns: int) -> None:
        self.tf_ns = tf_ns
        self.ts: list[int] = []
        self.open: list[float] = []
        self.high: list[float] = []
        self.low: list[float] = []
        self.close: list[float] = []
        self.volume: list[float] = []
        self.n = 0
        self._derived: dict[str, list[float]] = {}
        self._calcs: list[_Calc] = []

    def column(self, field: str) -> list[float]:
        """The values of ``field`` (a bar field, ``"quote_volume"`` or ``"ts"`` as float), one per bar."""
        if field in BAR_FIELDS:
            values: list[float] = getattr(self, field)
            return values
        column = self._derived.get(field)
        if column is None:
            column = [self._derived_value(field, j) for j in range(self.n)]
            self._derived[field] = column
        return column

    def _derived_value(self, field: str, j: int) -> float:
        if field == "ts":
            return float(self.ts[j])
        return self.volume[j] * self.close[j]  # quote_volume, as feed._field computes it

    def add_calc(self, state: Any, inputs: tuple[str, ...], n_outputs: int) -> _Calc:
        """A streaming indicator over ``inputs``, run over the bars so far, then kept up to date."""
        calc = _Calc(state, [self.column(f) for f in inputs], n_outputs)
        for j in range(self.n):
            calc.push(j)
        self._calcs.append(calc)
        return calc

    def _append(self, ts: int, o: float, h: float, lo: float, c: float, v: float) -> int:
        self.ts.append(ts)
        self.open.append(o)
        self.high.append(h)
        self.low.append(lo)
        self.close.append(c)
        self.volume.append(v)
        j = self.n
        self.n = j + 1
        for field, column in self._derived.items():
            column.append(self._derived_value(field, j))
        for calc in self._calcs:
            calc.push(j)
        return j


class _Aligned:
    """A higher-timeframe column seen from the base timeline: one value per base bar."""

    __slots__ = ("dst", "src")

    def __init__(self, src: list[float], index: list[int]) -> None:
        self.src = src
        self.dst: list[float] = [src[k] if k >= 0 else NAN for k in index]


class _HigherTimeframe(_Timeline):
    """Base bars aggregated into higher-timeframe buckets (see the module docstring for the rule).

    ``index[i]`` is the index of the last HTF bar closed by base bar ``i``'s close (-1: none yet).
    """

    def __init__(self, tf_ns: int, base_tf_ns: int) -> None:
        super().__init__(tf_ns)
        self.base_tf_ns = base_tf_ns
        self.offset = WEEK_OFFSET_NS if tf_ns % WEEK_NS == 0 else 0
        self.index: list[int] = []
        self.aligned: list[_Aligned] = []
        self._start: int | None = None  # open time of the bucket being filled (None: no open bucket)
        self._o = self._h = self._l = self._c = self._v = NAN

    def aligned_column(self, src: list[float]) -> list[float]:
        """``src`` (an HTF column) as seen from each base bar: a new list, kept up to date."""
        aligned = _Aligned(src, self.index)
        self.aligned.append(aligned)
        return aligned.dst

    def add_base(self, ts: int, o: float, h: float, lo: float, c: float, v: float) -> None:
        start = ts - (ts - self.offset) % self.tf_ns
        if self._start is not None and self._start != start:
            self._finalize()  # rule 1: the bucket lost its last bars
        if self._start is None:
            self._start = start
            self._o, self._h, self._l, self._c, self._v = o, h, lo, c, v
        else:
            if h > self._h:
                self._h = h
            if lo < self._l:
                self._l = lo
            self._c = c
            self._v += v
        if start + self.tf_ns <= ts + self.base_tf_ns:
            self._finalize()  # rule 2: this bar closes the bucket
        k = self.n - 1
        self.index.append(k)
        for aligned in self.aligned:
            aligned.dst.append(aligned.src[k] if k >= 0 else NAN)

    def _finalize(self) -> None:
        start = self._start
        assert start is not None
        self._start = None
        self._append(start, self._o, self._h, self._l, self._c, self._v)


class _AsOf:
    """Observations (ts ns, value) aligned to each base bar's close: the last one at or before it."""

    __slots__ = ("dst", "obs_ts", "obs_values", "pos")

    def __init__(self, obs_ts: list[int], obs_values: list[float]) -> None:
        self.obs_ts = obs_ts
        self.obs_values = obs_values
        self.pos = 0  # number of observations at or before the last bar's close
        self.dst: list[float] = []

    def push(self, close_ns: int) -> None:
        pos = bisect_right(self.obs_ts, close_ns, self.pos)
        self.pos = pos
        self.dst.append(self.obs_values[pos - 1] if pos > 0 else NAN)


class LiveSymbolFeed(_Timeline):
    """One symbol's bars, appended one complete bar at a time, and its cursor.

    Attributes (the same names as :class:`~engine.strategy.feed.SymbolFeed`): ``symbol``,
    ``timeframe``, ``tf_ns`` (bar length, ns), ``n`` (bars so far), ``ts`` (list of int ns UTC, bar
    open), ``open``/``high``/``low``/``close`` (lists of float, quote currency), ``volume`` (list of
    float, base units), ``cursor`` (the bar the strategy sees; not moved by :meth:`append`) and
    ``bar`` (a :class:`~engine.strategy.series.Bar` view at the cursor).
    """

    def __init__(self, symbol: str, timeframe: str) -> None:
        super().__init__(timeframe_ns(timeframe))
        self.symbol = symbol
        self.timeframe = timeframe
        self.cursor = Cursor()
        self.bar = Bar(symbol, self.cursor, self)
        self._htf: dict[int, _HigherTimeframe] = {}
        self._asof: list[_AsOf] = []
        #: requested result lists by request key (identical requests share one computation)
        self._cache: dict[tuple[Any, ...], tuple[list[float], ...]] = {}
        # warm-up: requested lists not yet finite, and the first index at which all others were
        self._pending: list[list[float]] = []
        self._warm = 0

    def append(self, ts: int, o: float, h: float, lo: float, c: float, v: float) -> int:
        """Append a complete, already validated bar; update everything computed on it; return its index."""
        i = self._append(ts, o, h, lo, c, v)
        for htf in self._htf.values():
            htf.add_base(ts, o, h, lo, c, v)
        if self._asof:
            close_ns = ts + self.tf_ns
            for asof in self._asof:
                asof.push(close_ns)
        if self._pending:
            still = [values for values in self._pending if not math.isfinite(values[i])]
            if len(still) < len(self._pending):
                self._warm = max(self._warm, i)
            self._pending = still
        return i

    def higher_timeframe(self, timeframe: str) -> _HigherTimeframe:
        """The aggregation to ``timeframe`` (built over the bars so far on first use).

        Raises:
            ParameterError: bad timeframe string, or not a whole multiple of the base timeframe
                (BarMarketData's message).
        """
        htf_ns = timeframe_ns(timeframe)
        htf = self._htf.get(htf_ns)
        if htf is not None:
            return htf
        check_higher_timeframe(timeframe, htf_ns, self.timeframe, self.tf_ns)
        htf = _HigherTimeframe(htf_ns, self.tf_ns)
        for i in range(self.n):
            htf.add_base(self.ts[i], self.open[i], self.high[i], self.low[i], self.close[i], self.volume[i])
        self._htf[htf_ns] = htf
        return htf

    def as_of(self, obs_ts: list[int], obs_values: list[float]) -> list[float]:
        """Observations aligned to each bar's close (last at or before it, NaN before the first)."""
        asof = _AsOf(obs_ts, obs_values)
        for ts in self.ts:
            asof.push(ts + self.tf_ns)
        self._asof.append(asof)
        return asof.dst

    def track(self, values: list[float]) -> None:
        """Count ``values`` (one per bar) in the warm-up index."""
        for i, value in enumerate(values):
            if math.isfinite(value):
                self._warm = max(self._warm, i)
                return
        self._pending.append(values)

    def warmup_index(self) -> int:
        """First index at which every tracked list has been finite (``n`` if one never was; 0 if none)."""
        return self.n if self._pending else self._warm


class LiveMarketData(MarketDataBase[LiveSymbolFeed]):
    """MarketDataService over bars appended one at a time (live bots; replays fed bar by bar).

    Args:
        symbols: the traded symbols, in order (unique).
        instruments: an :class:`~engine.instruments.Instrument` for each symbol.
        timeframe: the base bar length, e.g. ``"1m"``, ``"15m"``, ``"1h"``.
        funding: per-symbol funding histories (as BarMarketData takes them), or None.
        open_interest: per-symbol ``(ts ns int64, open interest base units)`` observations, sorted
            by ts (as BarMarketData takes them), or None.

    Raises:
        ParameterError: bad timeframe string, duplicate symbols, or a symbol without an instrument.
    """

    def __init__(
        self,
        symbols: list[str],
        instruments: dict[str, Instrument],
        timeframe: str,
        funding: dict[str, FundingRates] | None = None,
        open_interest: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        timeframe_ns(timeframe)
        symbols = list(symbols)
        if len(set(symbols)) != len(symbols):
            raise ParameterError("symbols", f"must be unique, got {', '.join(symbols)}")
        missing = [s for s in symbols if s not in instruments]
        if missing:
            raise ParameterError("instruments", f"no instrument for {', '.join(missing)}")
        self.feeds = {s: LiveSymbolFeed(s, timeframe) for s in symbols}
        self.instruments = instruments
        self._timeframe = timeframe
        self._symbols = symbols
        self._funding = funding or {}
        self._oi = {
            s: (np.asarray(ts, dtype=np.int64).tolist(), np.asarray(values, dtype=np.float64).tolist())
            for s, (ts, values) in (open_interest or {}).items()
        }
        self._oi_series: dict[str, Series] = {}

    # ------------------------------------------------------------------ MarketDataService
    # symbols, timeframe, instrument, bar, ltp, funding_rates and the request checks: MarketDataBase

    def open_interest(self, symbol: str) -> Series | None:
        """Open interest (base units) as of each bar's close, or None when no OI series was given."""
        feed = self._feed(symbol)
        cached = self._oi_series.get(feed.symbol)
        if cached is not None:
            return cached
        obs = self._oi.get(feed.symbol)
        if obs is None:
            return None
        series = Series(f"{feed.symbol}.open_interest", feed.as_of(*obs), feed.cursor)
        self._oi_series[feed.symbol] = series
        return series

    def series(self, field: str, symbol: str | None = None, *, timeframe: str | None = None) -> Series:
        """A bar field ("open", "high", "low", "close", "volume", "quote_volume", "ts") as a series.

        One float per bar of the base timeframe (``ts`` as float ns); with a higher ``timeframe``,
        the field of the last higher-timeframe bar closed by each base bar's close (NaN before one).

        Raises:
            ParameterError: unknown field or symbol, bad timeframe, or a timeframe that is not a whole
                multiple of the base timeframe.
        """
        feed = self._series_request(field, symbol)
        if timeframe is None or timeframe == feed.timeframe:
            key: tuple[Any, ...] = ("series", 0, field)
            label = f"{feed.symbol}.{field}"
            values = feed._cache.get(key)
            if values is None:
                values = (feed.column(field),)
        else:
            htf = feed.higher_timeframe(timeframe)
            key = ("series", htf.tf_ns, field)
            label = f"{feed.symbol}.{timeframe}.{field}"
            values = feed._cache.get(key)
            if values is None:
                values = (htf.aligned_column(htf.column(field)),)
        return self._wrap(feed, key, label, values)[0]

    def indicator(
        self,
        name: str,
        symbol: str | None = None,
        *,
        timeframe: str | None = None,
        source: str | None = None,
        **params: Any,
    ) -> Series | tuple[Series, ...]:
        """An indicator of ``symbol``'s bars (see :mod:`engine.indicators.registry` for names).

        Computed with the indicator's streaming form, one value per base bar (over the bars so far
        at once, then at each :meth:`append_bar`). ``source`` replaces the input field of
        single-input indicators (e.g. an EMA of "volume"). With a higher ``timeframe`` the indicator
        runs on the aggregated bars and each base bar sees the value of the last closed one.
        Returns one Series, or a tuple in the spec's output order for multi-output indicators.

        Raises:
            ParameterError: unknown indicator, field, symbol or timeframe, or bad parameters.
        """
        feed, spec, kwargs, inputs = self._indicator_request(name, symbol, source, params)
        n_outputs = len(spec.outputs)
        params_key = tuple(sorted(kwargs.items()))
        if timeframe is None or timeframe == feed.timeframe:
            label = f"{feed.symbol}.{name}"
            key: tuple[Any, ...] = ("indicator", 0, name, inputs, params_key)
            values = feed._cache.get(key)
            if values is None:
                values = tuple(feed.add_calc(spec.streaming(**kwargs), inputs, n_outputs).outputs)
        else:
            htf = feed.higher_timeframe(timeframe)
            label = f"{feed.symbol}.{timeframe}.{name}"
            key = ("indicator", htf.tf_ns, name, inputs, params_key)
            values = feed._cache.get(key)
            if values is None:
                calc = htf.add_calc(spec.streaming(**kwargs), inputs, n_outputs)
                values = tuple(htf.aligned_column(out) for out in calc.outputs)
        if n_outputs > 1:
            labels = [f"{label}.{out_name}" for out_name in spec.outputs]
            return self._wrap(feed, key, labels, values)
        return self._wrap(feed, key, label, values)[0]

    def _wrap(
        self, feed: LiveSymbolFeed, key: tuple[Any, ...], labels: str | list[str], values: tuple[list[float], ...]
    ) -> tuple[Series, ...]:
        if key not in feed._cache:
            feed._cache[key] = values
            for column in values:
                feed.track(column)
        names = [labels] if isinstance(labels, str) else labels
        return tuple(Series(label, column, feed.cursor) for label, column in zip(names, values, strict=True))

    # ------------------------------------------------------------------ the bot's side
    def append_bar(
        self, symbol: str, ts: int, open: float, high: float, low: float, close: float, volume: float
    ) -> int:
        """Append one complete bar of ``symbol``; return its index. The cursor does not move.

        ``ts`` is the bar's open time (int ns UTC); prices in quote currency, volume in base units.
        Every requested indicator and higher-timeframe aggregation of the symbol is updated. Call
        :meth:`advance` to show the bar to the strategy.

        Raises:
            ParameterError: unknown symbol; ``ts`` not an int, or earlier than the previous bar's close
                (out of order, duplicate or overlapping); a non-positive or non-finite price
                (``open``/``high``/``low``/``close``), ``high < low`` (``high``), or a negative or
                non-finite ``volume``. Nothing is changed by a rejected bar.
        """
        feed = self._feed(symbol)
        if isinstance(ts, bool) or not isinstance(ts, int | np.integer):
            raise ParameterError("ts", f"must be an int (ns UTC, bar open), got {ts!r}")
        ts = int(ts)
        if feed.n:
            last = feed.ts[-1]
            if ts < last + feed.tf_ns:
                what = "duplicate" if ts == last else "out of order" if ts < last else "overlapping"
                raise ParameterError(
                    "ts",
                    f"{what} bar of {feed.symbol}: {ts} must be at least the previous bar's close "
                    f"{last + feed.tf_ns} (previous open {last} + {feed.timeframe})",
                )
        o, h, lo, c, v = float(open), float(high), float(low), float(close), float(volume)
        for name, price in (("open", o), ("high", h), ("low", lo), ("close", c)):
            if not (price > 0.0 and math.isfinite(price)):
                raise ParameterError(name, f"must be a finite price > 0, got {price!r} ({feed.symbol} at {ts})")
        if h < lo:
            raise ParameterError("high", f"must be >= low ({lo!r}), got {h!r} ({feed.symbol} at {ts})")
        if not (v >= 0.0 and math.isfinite(v)):
            raise ParameterError("volume", f"must be a finite number >= 0, got {v!r} ({feed.symbol} at {ts})")
        return feed.append(ts, o, h, lo, c, v)

    def advance(self, symbol: str) -> int:
        """Move ``symbol``'s cursor to its last appended bar (-1 before any); return that index."""
        feed = self._feed(symbol)
        feed.cursor.i = feed.n - 1
        return feed.cursor.i

    def warmup_index(self, symbol: str) -> int:
        """First bar index of ``symbol`` at which every series requested on it is finite (0 if none).

        As BarMarketData: a requested series that has never been finite makes it the number of
        bars so far. Raises ParameterError for an unknown symbol.
        """
        return self._feed(symbol).warmup_index()

    def warmed_up(self, symbol: str) -> bool:
        """True when the last appended bar is at or after :meth:`warmup_index` (False before any bar)."""
        feed = self._feed(symbol)
        return feed.n > 0 and feed.warmup_index() <= feed.n - 1
