"""Replay of stored trades, quotes or bars as a :class:`~engine.feeds.base.Feed`, at a speed factor.

Order: rows are replayed by ``ts`` (a stable sort, so rows of one time keep the table's order: the catalog
loaders sort bars by symbol, so simultaneous bars come in symbol order).

Event time of a row: ``ts`` for trades and quotes; for bars the **close** (``ts + timeframe``), the moment a
bar becomes known. Pacing (``speed`` set): a virtual clock is anchored at the first row (its event time ↔
the wall time of the first batch); each batch holds the rows whose event time is due on that clock
(``event − first event ≤ (wall − start) × speed``), at most ``batch_rows`` of them, and the feed sleeps
until the next row is due. ``speed=None`` replays as fast as possible in chunks of ``batch_rows``.

``window_ns > 0`` groups rows into event-time windows ``[k·w, (k+1)·w)`` aligned to the epoch: a batch
never holds rows of two windows, and when paced a window is released when its end is due (so a 1 s window
turns a trade replay into one batch per second of data, as a live multiplexer flushing every second would).

Batches of bars never split one timestamp: every symbol's bar of one open time is in the same batch (a
single time slice larger than ``batch_rows`` makes a larger batch). Trades and quotes may be split anywhere.

Watermarks (derived for :class:`engine.marketdata.schemas.MarketBatch`): let ``j`` be the first row not yet
yielded.

* trades/quotes: ``watermark = ts[j]``. Rows come in ``ts`` order, so no later row has ``ts < ts[j]``, and
  no larger value is true, since row ``j`` has exactly that time.
* bars: ``watermark = ts[j]``, the next bar's **open** ``T'``. Every later bar opens at ``>= T'`` and so
  closes at ``>= T' + tf > T'``: no later bar has ``close <= watermark``. The contract alone would allow up
  to ``T' + tf − 1``; ``T'`` is chosen because it is also the largest ``W`` for which "all market activity
  before ``W`` has been delivered" holds (the bar opening at ``T'`` covers ``[T', T' + tf)``), so a consumer
  can compare bar and tick watermarks on one time axis. With contiguous bars it equals the close of the bars
  just delivered.
* the last batch: ``final=True``, ``watermark = END_OF_STREAM``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.data.catalog import load_bars
from engine.data.resample import infer_timeframe_ns
from engine.data.ticks import load_quotes, load_trades
from engine.errors import ParameterError
from engine.feeds.base import Feed, FeedBatch, FeedGap
from engine.marketdata.schemas import (
    BARS_PREFIX,
    END_OF_STREAM,
    QUOTES,
    TRADES,
    stream_schema,
    stream_timeframe_ns,
)

Clock = Callable[[], int]
Sleep = Callable[[float], Awaitable[object]]


class ReplayFeed(Feed):
    """Replays one stream of a loaded table (see the module docstring for order, pacing and watermarks).

    Args:
        table: rows of :func:`engine.marketdata.schemas.stream_schema` of ``stream`` (prices in quote
            currency, sizes in base units, ``ts`` ns UTC; bars stamped at their open), any row order.
        stream: ``"trades"``, ``"quotes"`` or ``"bars:<tf>"``.
        speed: replay speed factor (1.0 real time, 60.0 sixty times faster); ``None`` as fast as possible.
        batch_rows: most rows per batch (bars: unless one time slice is larger).
        window_ns: event-time window in ns grouping rows into batches (0: no windows).
        start_after_ns: skip rows with ``ts <= start_after_ns`` (resume after a restart).
        clock: wall clock in ns (``time.time_ns``); stamps ``received_ns`` and paces the replay.
        sleep: coroutine function sleeping the given seconds (``asyncio.sleep``).

    Raises:
        ParameterError: an unknown stream (``'stream'``), a table whose schema is not the stream's
            (``'table'``), ``speed`` not finite and > 0, ``batch_rows < 1`` or ``window_ns < 0``.
    """

    def __init__(
        self,
        table: pa.Table,
        stream: str,
        *,
        speed: float | None = None,
        batch_rows: int = 4096,
        window_ns: int = 0,
        start_after_ns: int | None = None,
        clock: Clock = time.time_ns,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        schema = stream_schema(stream)
        if stream not in (TRADES, QUOTES) and not stream.startswith(BARS_PREFIX):
            raise ParameterError("stream", f"a replay needs 'trades', 'quotes' or 'bars:<tf>', got {stream!r}")
        if not table.schema.equals(schema):
            raise ParameterError("table", f"must have the schema of stream {stream!r}: {schema}, got {table.schema}")
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ParameterError("speed", f"must be finite and > 0 (or None: as fast as possible), got {speed!r}")
        if batch_rows < 1:
            raise ParameterError("batch_rows", f"must be >= 1, got {batch_rows}")
        if window_ns < 0:
            raise ParameterError("window_ns", f"must be >= 0, got {window_ns}")
        self.stream = stream
        self.speed = speed
        self.batch_rows = int(batch_rows)
        self.window_ns = int(window_ns)
        self._clock = clock
        self._sleep = sleep
        self._closed = False
        self._wake: asyncio.Event | None = None

        ts = table["ts"].cast(pa.int64()).to_numpy()
        order = np.argsort(ts, kind="stable")
        if start_after_ns is not None:
            order = order[ts[order] > int(start_after_ns)]
        self._table = table.take(pa.array(order)).combine_chunks()
        self._ts = ts[order]
        self.symbols = list(dict.fromkeys(self._table["symbol"].to_pylist()))
        self._bars = stream.startswith(BARS_PREFIX)
        event = self._ts + stream_timeframe_ns(stream)
        self._window = event // self.window_ns if self.window_ns else None
        # release time (event time) of each row: the end of its window when windows are used
        self._release = (self._window + 1) * self.window_ns if self._window is not None else event

    async def events(self) -> AsyncIterator[FeedBatch | FeedGap]:
        """Yield :class:`FeedBatch` objects until the table is exhausted or :meth:`close` is called.

        The last batch has ``final=True`` and ``watermark_ns == END_OF_STREAM`` (an empty table gives one
        empty final batch). A replay never yields a :class:`FeedGap`.
        """
        n = len(self._ts)
        i = 0
        start_wall: int | None = None
        due_offset: np.ndarray | None = None
        if n == 0 and not self._closed:
            yield FeedBatch(self.stream, self._table, END_OF_STREAM, self._clock(), final=True)
            return
        while i < n and not self._closed:
            j = n
            if self.speed is not None:
                now = self._clock()
                if start_wall is None:
                    start_wall = now
                    # wall-clock ns after the start at which each row is due (ceil, so a sleep of exactly the
                    # computed length always makes the next row due)
                    due_offset = np.ceil((self._release - self._release[0]) / self.speed).astype(np.int64)
                assert due_offset is not None
                elapsed = now - start_wall
                j = int(np.searchsorted(due_offset, elapsed, side="right"))
                if j <= i:
                    await self._pause((int(due_offset[i]) - elapsed) / 1e9)
                    continue
            j = self._cut(i, j)
            final = j >= n
            watermark = END_OF_STREAM if final else int(self._ts[j])
            batch = FeedBatch(self.stream, self._table.slice(i, j - i), watermark, self._clock(), final=final)
            i = j
            yield batch

    def _cut(self, i: int, j: int) -> int:
        """End (exclusive) of the batch starting at row ``i`` given the rows due up to ``j``."""
        j = min(j, i + self.batch_rows)
        if self._window is not None:
            j = min(j, int(np.searchsorted(self._window, self._window[i], side="right")))
        if self._bars and j < len(self._ts) and self._ts[j] == self._ts[j - 1]:
            back = int(np.searchsorted(self._ts, self._ts[j], side="left"))
            j = back if back > i else int(np.searchsorted(self._ts, self._ts[j], side="right"))
        return j

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` with the injected ``sleep``, returning early when :meth:`close` is called."""
        if self._wake is None:
            self._wake = asyncio.Event()
        await interruptible_sleep(self._sleep, seconds, self._wake)

    async def close(self) -> None:
        """Stop the iteration (a pending sleep is cut short). Idempotent."""
        self._closed = True
        if self._wake is not None:
            self._wake.set()


async def interruptible_sleep(sleep: Sleep, seconds: float, wake: asyncio.Event) -> None:
    """Await ``sleep(seconds)`` but return as soon as ``wake`` is set (the sleep is then cancelled)."""
    if wake.is_set():
        return
    sleeper = asyncio.ensure_future(sleep(seconds))
    waiter = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waiter):
            if not task.done():
                task.cancel()
        await asyncio.gather(sleeper, waiter, return_exceptions=True)


def replay_from_catalog(
    path: str | Path,
    stream: str,
    symbols: Iterable[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    require_volume: bool = True,
    **kw: object,
) -> ReplayFeed:
    """Load ``stream`` from a catalog file and wrap it in a :class:`ReplayFeed` (``kw`` go to its constructor).
    ``require_volume=False`` lets a bar file without volume (an index) load with volume 0.

    Trades load with :func:`engine.data.ticks.load_trades`, quotes with
    :func:`~engine.data.ticks.load_quotes`, bars with :func:`engine.data.catalog.load_bars`; ``symbols``,
    ``start_ns`` (inclusive) and ``end_ns`` (exclusive), ns UTC, filter as those loaders do.

    Raises:
        ParameterError: an unknown stream, or (``'stream'``) a bar stream whose timeframe is not the file's
            bar spacing (resampling to a higher timeframe is the multiplexer's job); the loaders' errors.
        DataError: the loaders' errors.
    """
    stream_schema(stream)
    if stream == TRADES:
        table = load_trades(path, symbols, start_ns, end_ns)
    elif stream == QUOTES:
        table = load_quotes(path, symbols, start_ns, end_ns)
    elif stream.startswith(BARS_PREFIX):
        table = load_bars(path, symbols, start_ns, end_ns, require_volume=require_volume)
        want = stream_timeframe_ns(stream)
        try:
            spacing = infer_timeframe_ns(table)
        except ParameterError:
            spacing = want  # one bar per symbol: nothing contradicts the stream's timeframe
        if spacing != want:
            raise ParameterError(
                "stream",
                f"{stream!r} has bars of {want} ns but the file's bars are {spacing} ns apart (rule: the stream's "
                "timeframe must equal the file's bar spacing; resample in the multiplexer)",
            )
    else:
        raise ParameterError("stream", f"a replay needs 'trades', 'quotes' or 'bars:<tf>', got {stream!r}")
    return ReplayFeed(table, stream, **kw)  # type: ignore[arg-type]
