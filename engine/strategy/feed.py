"""Per-symbol bar feeds and the market-data service strategies read from.

A :class:`SymbolFeed` holds one symbol's bars as Python lists (fast scalar reads) plus a
:class:`~engine.strategy.series.Cursor`. :class:`BarMarketData` implements
:class:`~engine.strategy.services.MarketDataService` over the feeds: indicators are computed once,
vectorized, over the whole series when the strategy asks for them in ``on_init``, and read at the
cursor afterwards, so no value after the current bar is visible.

Higher timeframes: ``indicator(..., timeframe="4h")`` resamples the symbol's bars, computes the
indicator on the higher-timeframe bars and aligns it to the base timeline so that a base bar sees
the value of the last higher-timeframe bar that had *closed* by the base bar's close
(bar open + timeframe ≤ base bar open + base timeframe).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import pyarrow as pa

from engine.errors import ParameterError
from engine.indicators.registry import IndicatorSpec, get_indicator, validate_params
from engine.instruments import Instrument
from engine.strategy.funding import FundingRates, align_last
from engine.strategy.series import Bar, Cursor, Series
from engine.timeframes import timeframe_ns

BAR_FIELDS = ("open", "high", "low", "close", "volume")
#: fields a series or a one-input indicator may read: the bar fields and ``quote_volume`` (volume ×
#: close of the bar, quote currency; an approximation of traded quote notional when the data has none)
SOURCE_FIELDS = (*BAR_FIELDS, "quote_volume")
#: fields ``series()`` accepts: the source fields and ``ts`` (as float ns)
SERIES_FIELDS = (*SOURCE_FIELDS, "ts")


def _field(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name == "quote_volume":
        return arrays["volume"] * arrays["close"]
    return arrays[name]


class SymbolFeed:
    """One symbol's bars (ts in ns UTC, prices in quote currency, volume in base units).

    ``arrays`` holds the numpy columns; the attributes ``ts``, ``open``, ``high``, ``low``, ``close``
    and ``volume`` are zero-copy memoryviews of them, whose scalar reads return plain Python ints and
    floats (as fast as a list, without a list's 32 bytes per value).
    """

    ts: memoryview
    open: memoryview
    high: memoryview
    low: memoryview
    close: memoryview
    volume: memoryview

    def __init__(self, symbol: str, arrays: dict[str, np.ndarray], timeframe: str) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.tf_ns = timeframe_ns(timeframe)
        self.arrays = arrays  # numpy: ts (int64) and BAR_FIELDS (float64)
        self.n = len(arrays["ts"])
        self.cursor = Cursor()
        self.bar = Bar(symbol, self.cursor, self)
        self._htf: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = {}

    def __getattr__(self, name: str) -> memoryview:
        # only called for missing attributes: make the column view once, then it is a plain attribute
        if name in ("ts", *BAR_FIELDS):
            column = np.ascontiguousarray(self.__dict__["arrays"][name])
            self.__dict__["arrays"][name] = column
            view = memoryview(column)  # type: ignore[arg-type]
            setattr(self, name, view)
            return view
        raise AttributeError(name)

    def higher_timeframe(self, timeframe: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Bars of ``timeframe`` (resampled) and, per base bar, the index of the last closed one (-1)."""
        cached = self._htf.get(timeframe)
        if cached is not None:
            return cached
        from engine.data.resample import resample

        htf_ns = timeframe_ns(timeframe)
        check_higher_timeframe(timeframe, htf_ns, self.timeframe, self.tf_ns)
        table = pa.table(
            {
                "symbol": pa.array([self.symbol] * self.n, pa.string()),
                "ts": pa.array(self.arrays["ts"], pa.timestamp("ns", tz="UTC")),
                **{f: pa.array(self.arrays[f], pa.float64()) for f in BAR_FIELDS},
            }
        )
        out = resample(table, timeframe)
        htf = {"ts": out.column("ts").cast(pa.int64()).to_numpy()}
        for f in BAR_FIELDS:
            htf[f] = out.column(f).to_numpy()
        closes_at = htf["ts"] + htf_ns
        index = np.searchsorted(closes_at, self.arrays["ts"] + self.tf_ns, side="right") - 1
        self._htf[timeframe] = (htf, index)
        return htf, index


def check_higher_timeframe(timeframe: str, htf_ns: int, base_timeframe: str, base_tf_ns: int) -> None:
    """Reject a ``timeframe`` (``htf_ns`` long) that is not a whole multiple (> 1) of the base timeframe."""
    if htf_ns <= base_tf_ns or htf_ns % base_tf_ns:
        raise ParameterError(
            "timeframe",
            f"{timeframe!r} must be a whole multiple of the base timeframe {base_timeframe!r}",
        )


class _Feed(Protocol):
    """What :class:`MarketDataBase` reads of a feed (:class:`SymbolFeed`, the live feed)."""

    @property
    def symbol(self) -> str: ...

    @property
    def bar(self) -> Bar: ...

    @property
    def cursor(self) -> Cursor: ...

    @property
    def close(self) -> Sequence[float]: ...


FeedT = TypeVar("FeedT", bound=_Feed)


class MarketDataBase(Generic[FeedT]):
    """Symbol lookup and request checks shared by :class:`BarMarketData` and the live service.

    :class:`~engine.live.market_data.LiveMarketData` raises the same errors as BarMarketData from this one
    implementation. A subclass sets ``feeds``, ``instruments``, ``_symbols``, ``_timeframe`` and ``_funding``.
    """

    feeds: dict[str, FeedT]
    instruments: dict[str, Instrument]
    _symbols: list[str]
    _timeframe: str
    _funding: dict[str, FundingRates]

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    @property
    def timeframe(self) -> str:
        return self._timeframe

    def _feed(self, symbol: str | None) -> FeedT:
        if symbol is None:
            if len(self._symbols) != 1:
                raise ParameterError("symbol", "must be given when the run trades several symbols")
            symbol = self._symbols[0]
        feed = self.feeds.get(symbol)
        if feed is None:
            raise ParameterError("symbol", f"{symbol!r} is not in this run (symbols: {', '.join(self._symbols)})")
        return feed

    def instrument(self, symbol: str) -> Instrument:
        return self.instruments[self._feed(symbol).symbol]

    def bar(self, symbol: str) -> Bar:
        """The bar view of ``symbol`` at its cursor (ParameterError for an unknown symbol)."""
        return self._feed(symbol).bar

    def ltp(self, symbol: str) -> float:
        """Last traded price: the close of the current bar (NaN before the first bar)."""
        feed = self._feed(symbol)
        i = feed.cursor.i
        return feed.close[i] if i >= 0 else math.nan

    def funding_rates(self, symbol: str) -> FundingRates | None:
        """The funding history of ``symbol`` (None when the run has none for it).

        Read it at ``index_at(clock.now_ns())`` or later; see :mod:`engine.strategy.funding`.
        """
        return self._funding.get(self._feed(symbol).symbol)

    def _series_request(self, field: str, symbol: str | None) -> FeedT:
        """Check a ``series()`` request; return the symbol's feed."""
        feed = self._feed(symbol)
        if field not in SERIES_FIELDS:
            raise ParameterError("field", f"must be one of {', '.join(SERIES_FIELDS)}, got {field!r}")
        return feed

    def _indicator_request(
        self, name: str, symbol: str | None, source: str | None, params: dict[str, Any]
    ) -> tuple[FeedT, IndicatorSpec, dict[str, Any], tuple[str, ...]]:
        """Check an ``indicator()`` request: the symbol's feed, the spec, its validated parameters and inputs."""
        feed = self._feed(symbol)
        spec = get_indicator(name)
        kwargs = validate_params(spec, params)
        inputs = spec.inputs
        if source is not None:
            if len(inputs) != 1:
                raise ParameterError(
                    "source",
                    f"indicator {name!r} takes {', '.join(inputs)}; source applies to one-input indicators",
                )
            if source not in SOURCE_FIELDS:
                raise ParameterError("source", f"must be one of {', '.join(SOURCE_FIELDS)}, got {source!r}")
            inputs = (source,)
        return feed, spec, kwargs, inputs


class BarMarketData(MarketDataBase[SymbolFeed]):
    """MarketDataService over precomputed bar feeds (backtests, and replays of stored bars)."""

    def __init__(
        self,
        feeds: dict[str, SymbolFeed],
        instruments: dict[str, Instrument],
        timeframe: str,
        funding: dict[str, FundingRates] | None = None,
        open_interest: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.feeds = feeds
        self.instruments = instruments
        self._timeframe = timeframe
        self._symbols = list(feeds)
        self._funding = funding or {}
        self._oi = open_interest or {}
        #: every series handed to the strategy, per symbol, for the warm-up computation
        self.requested: dict[str, list[np.ndarray]] = {s: [] for s in feeds}

    def open_interest(self, symbol: str) -> Series | None:
        """Open interest (base units) as of each bar's close, or None when no OI series was given."""
        feed = self._feed(symbol)
        obs = self._oi.get(feed.symbol)
        if obs is None:
            return None
        values = align_last(obs[0], obs[1], feed.arrays["ts"] + feed.tf_ns)
        return Series(f"{feed.symbol}.open_interest", memoryview(np.ascontiguousarray(values)), feed.cursor)  # type: ignore[arg-type]

    def _aligned(self, feed: SymbolFeed, values: np.ndarray, index: np.ndarray | None) -> np.ndarray:
        if index is None:
            return values
        out = np.full(feed.n, np.nan)
        ok = index >= 0
        out[ok] = values[index[ok]]
        return out

    def _wrap(self, feed: SymbolFeed, name: str, values: np.ndarray) -> Series:
        values = np.ascontiguousarray(values, dtype=np.float64)
        self.requested[feed.symbol].append(values)
        return Series(name, memoryview(values), feed.cursor)  # type: ignore[arg-type]

    def series(self, field: str, symbol: str | None = None, *, timeframe: str | None = None) -> Series:
        """A bar field ("open", "high", "low", "close", "volume", "quote_volume", "ts") as a series."""
        feed = self._series_request(field, symbol)
        if timeframe is None or timeframe == feed.timeframe:
            values = feed.arrays[field].astype(np.float64) if field == "ts" else _field(feed.arrays, field)
            return self._wrap(feed, f"{feed.symbol}.{field}", values)
        htf, index = feed.higher_timeframe(timeframe)
        values = self._aligned(feed, _field(htf, field).astype(np.float64), index)
        return self._wrap(feed, f"{feed.symbol}.{timeframe}.{field}", values)

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

        ``source`` replaces the input field of single-input indicators (e.g. an EMA of "volume").
        Returns one Series, or a tuple in the spec's output order for multi-output indicators.

        Raises:
            ParameterError: unknown indicator, field, symbol or timeframe, or bad parameters.
        """
        feed, spec, kwargs, inputs = self._indicator_request(name, symbol, source, params)
        if timeframe is None or timeframe == feed.timeframe:
            arrays, index = feed.arrays, None
        else:
            arrays, index = feed.higher_timeframe(timeframe)
        out = spec.vectorized(*(_field(arrays, f) for f in inputs), **kwargs)
        label = f"{feed.symbol}.{timeframe}.{name}" if index is not None else f"{feed.symbol}.{name}"
        if isinstance(out, tuple):
            return tuple(
                self._wrap(feed, f"{label}.{out_name}", self._aligned(feed, values, index))
                for out_name, values in zip(spec.outputs, out, strict=True)
            )
        return self._wrap(feed, label, self._aligned(feed, out, index))

    def warmup_index(self, symbol: str) -> int:
        """First bar index of ``symbol`` at which every series requested on it is finite (0 if none)."""
        first = 0
        for values in self.requested[symbol]:
            finite = np.flatnonzero(np.isfinite(values))
            if finite.size == 0:
                return len(values)
            first = max(first, int(finite[0]))
        return first
