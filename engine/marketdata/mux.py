"""The transport-free core of a market-data multiplexer (one symbol or a shard of symbols).

An actor drives a :class:`MuxCore` like this (all calls synchronous, on the actor's thread)::

    core.subscribe("bot:7", {"bars:1m", "bars:15m"}, None)
    for name in core.upstream_streams(): open that feed once, however many subscribers
    loop:
        if not core.backpressure(): core.ingest(feed_batch, time.time_ns())   # pull from the feed
        core.flush(time.time_ns())                                          # window-based cuts
        for sub_id, batches in core.deliveries(inflight_limit=8):
            send the batches to sub_id in one call (ray.put each batch once: the same MarketBatch
            object goes to every subscriber of its stream); on completion core.ack(sub_id, len(batches))

What it does:

* **Streams.** A trades feed gives the ``"trades"`` stream, bars of ``bar_timeframe`` built from the
  ticks (:class:`~engine.marketdata.bars.TickBarBuilder`), higher timeframes
  (:class:`~engine.marketdata.bars.BarAggregator`) and the LTP. With ``bars_from="bars"`` the mux takes
  a ``"bars:<bar_timeframe>"`` feed instead (a bar-catalog replay): bar stream, higher timeframes,
  LTP. A quotes feed gives the ``"quotes"`` stream only: **the LTP is the last trade price (or the
  last bar close), never a quote mid**, because M2M of a position is valued at traded prices.
* **Batches.** Each output stream accumulates rows and is cut into a
  :class:`~engine.marketdata.schemas.MarketBatch` when it holds ``max_rows`` rows (cut into pieces of
  exactly ``max_rows``), when its oldest row has waited ``window_ns`` of wall time (:meth:`flush`), at
  once on :meth:`flush` while every subscriber of the stream is idle (nothing queued or in flight:
  waiting would only add latency; batching resumes as soon as one is busy), on
  ``flush(force=True)`` and when a feed ends (``final``: an empty batch with watermark
  :data:`~engine.marketdata.schemas.END_OF_STREAM` if nothing is left). A batch is created once per
  stream and queued, as the same object, for every subscriber of the stream. **Subscribers get every
  batch of their streams, all symbols of this mux included, and filter symbols themselves**; the
  ``symbols`` of a subscription are recorded (and checked against the mux's symbols) for routing.
* **Watermarks.** A batch carries its stream's watermark (see ``MarketBatch``); they never decrease.
  When a ``max_rows`` cut splits rows that share the feed's watermark, the earlier piece gets the
  tightest watermark the later rows allow (the later piece's first ``ts``, or its first bar close − 1).
* **Queues and back-pressure.** Every subscriber has its own queue; :meth:`deliveries` hands each one
  at most ``inflight_limit`` un-acknowledged batches, so a slow subscriber never holds back the
  others. When a queue exceeds ``max_queue`` batches, its pending ``quotes`` and ``ltp`` batches are
  conflated (replaced by one batch with the newest row per symbol, the newest seq and watermark, the
  ingest time of the oldest row kept); trade and bar batches are never dropped: instead
  :meth:`backpressure` turns True, telling the actor to stop pulling from the feed until every queue
  is back to ``low_water`` batches or fewer.
* **Replay.** The last ``history`` batches of each stream are kept for restarted subscribers
  (:meth:`replay_since`).

Units: prices in quote currency, sizes in base units, times int64 ns UTC (event times from the data,
wall times from the caller's ``now_ns``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from engine.errors import ParameterError
from engine.feeds.base import FeedBatch
from engine.marketdata.bars import BarAggregator, SymbolCodes, TickBarBuilder, float_array, ts_ns_array
from engine.marketdata.schemas import (
    BARS_PREFIX,
    END_OF_STREAM,
    LTP,
    LTP_SCHEMA,
    QUOTES,
    TRADES,
    MarketBatch,
    stream_schema,
    stream_timeframe_ns,
)
from engine.timeframes import timeframe_ns, timeframe_str

_NO_DATA = -(2**63)


@dataclass(frozen=True, slots=True)
class MuxStats:
    """Counters for metrics (all cumulative except the depths and the flag).

    Attributes:
        ticks_in: trade and quote rows ingested.
        bars_in: bar rows ingested from a bars feed.
        late_ticks: trades dropped by the bar builder because their bar had already been emitted.
        rows_out: rows in cut batches, per stream.
        batches_cut: batches cut, per stream.
        queue_depth: batches waiting (not yet handed out), per subscriber.
        inflight: batches handed out and not yet acknowledged, per subscriber.
        conflations: pending quote/ltp batches merged away by conflation, per subscriber.
        backpressure: the current back-pressure flag.
    """

    ticks_in: int
    bars_in: int
    late_ticks: int
    rows_out: dict[str, int]
    batches_cut: dict[str, int]
    queue_depth: dict[str, int]
    inflight: dict[str, int]
    conflations: dict[str, int]
    backpressure: bool


@dataclass(slots=True)
class _Stream:
    """One output stream: rows waiting to be cut, its counters and its replay history."""

    name: str
    tf_ns: int  # bar length for bar streams, 0 otherwise
    history_size: int
    seq: int = 0
    watermark_ns: int = 0
    cut_watermark_ns: int = 0
    chunks: deque[tuple[pa.Table, int]] = field(default_factory=deque)  # (rows, wall ns they entered)
    rows: int = 0
    rows_out: int = 0
    history: deque[tuple[MarketBatch, int]] = field(default_factory=deque)  # (batch, data end ns)
    evicted_end_ns: int = _NO_DATA  # largest data end of a batch dropped from history

    def data_end_ns(self, table: pa.Table) -> int:
        """Event time up to which ``table``'s rows reach (exclusive): last ts + 1, or last bar close."""
        if table.num_rows == 0:
            return _NO_DATA
        last = int(ts_ns_array(table["ts"].slice(table.num_rows - 1))[0])
        return last + self.tf_ns if self.tf_ns else last + 1


@dataclass(slots=True)
class _Subscriber:
    streams: frozenset[str]
    symbols: frozenset[str] | None
    first_seq: dict[str, int]  # per stream: the first seq queued live for this subscription
    queue: deque[MarketBatch] = field(default_factory=deque)
    inflight: int = 0  # batches handed out and not acknowledged
    calls: int = 0  # deliveries (calls) handed out and not acknowledged
    conflations: int = 0


class MuxCore:
    """Fan-out, bar building, batching, bounded queues and replay of one multiplexer (no transport).

    Args:
        source: the multiplexer's name, stamped on every batch ("mux:BTCUSDT", "mux:shard-0").
        symbols: the symbols this mux covers (subscriptions are checked against them); None: any.
        bar_timeframe: base bar timeframe, built from trades or taken from the bars feed.
        bars_from: "trades" (build bars from ticks) or "bars" (a ``bars:<bar_timeframe>`` feed).
        max_rows: rows per batch at most (a stream is cut as soon as it has this many).
        window_ns: wall-time ns a row may wait before :meth:`flush` cuts its stream.
        max_queue: pending batches per subscriber above which quotes/ltp are conflated and
            back-pressure engages.
        low_water: back-pressure disengages when every queue holds at most this many (default
            ``max_queue // 4``).
        history: batches kept per stream for :meth:`replay_since` (0 disables replay).

    Raises:
        ParameterError: a bad argument, named by its field.
    """

    def __init__(
        self,
        source: str,
        *,
        symbols: Iterable[str] | None = None,
        bar_timeframe: str = "1m",
        bars_from: str = "trades",
        max_rows: int = 4096,
        window_ns: int = 10_000_000,
        max_queue: int = 64,
        low_water: int | None = None,
        history: int = 256,
    ) -> None:
        if not source:
            raise ParameterError("source", "must be a non-empty name")
        if bars_from not in ("trades", "bars"):
            raise ParameterError("bars_from", f"must be 'trades' or 'bars', got {bars_from!r}")
        low = max_queue // 4 if low_water is None else low_water
        for name, value, minimum in (("max_rows", max_rows, 1), ("window_ns", window_ns, 0),
                                     ("max_queue", max_queue, 1), ("low_water", low, 0), ("history", history, 0)):
            if not isinstance(value, int) or value < minimum:
                raise ParameterError(name, f"must be an integer >= {minimum}, got {value!r}")
        if low >= max_queue:
            raise ParameterError("low_water", f"must be below max_queue ({max_queue}), got {low}")
        self.source = source
        self.symbols = frozenset(symbols) if symbols is not None else None
        self.bars_from = bars_from
        self.max_rows, self.window_ns, self.max_queue, self.low_water = max_rows, window_ns, max_queue, low
        self.history = history
        base_ns = timeframe_ns(bar_timeframe)
        self.bar_timeframe = timeframe_str(base_ns)
        self.base_bars_stream = f"{BARS_PREFIX}{self.bar_timeframe}"
        self._builder = TickBarBuilder(self.bar_timeframe)
        self._aggregator = BarAggregator(self.bar_timeframe)
        self._streams: dict[str, _Stream] = {}
        self._subs: dict[str, _Subscriber] = {}
        self._subs_of: dict[str, list[_Subscriber]] = {}
        self._ltp: dict[str, tuple[int, float]] = {}
        self._ltp_pending: dict[str, tuple[int, float]] = {}
        self._ltp_oldest_ns: int | None = None
        self._ltp_watermarks: dict[str, int] = {}  # per contributing feed
        self._ticks_in = 0
        self._bars_in = 0
        self._backpressure = False

    # ---------------------------------------------------------------- subscriptions

    def subscribe(self, sub_id: str, streams: set[str], symbols: set[str] | None = None) -> None:
        """Subscribe ``sub_id`` to ``streams`` ("trades", "quotes", "ltp", "bars:<tf>"; a bar timeframe
        is canonicalised, "bars:60m" → "bars:1h", and must be the base or buildable from it).

        Batches cut from now on are queued for it; for earlier data see :meth:`replay_since`.
        ``symbols`` (None: all) is recorded, not used to filter: batches hold all of the mux's symbols.

        Raises:
            ParameterError: ``sub_id`` empty or already subscribed (unsubscribe first), ``streams``
                empty or holding an unknown/unbuildable stream, ``symbols`` empty or outside the mux's.
        """
        if not isinstance(sub_id, str) or not sub_id:
            raise ParameterError("sub_id", "must be a non-empty string")
        if sub_id in self._subs:
            raise ParameterError("sub_id", f"{sub_id!r} is already subscribed (unsubscribe first)")
        if not streams:
            raise ParameterError("streams", "must name at least one stream")
        names = frozenset(self._canonical(s) for s in streams)
        if symbols is not None:
            if not symbols:
                raise ParameterError("symbols", "must be None (all) or a non-empty set")
            unknown = set(symbols) - self.symbols if self.symbols is not None else set()
            if unknown:
                raise ParameterError("symbols", f"{sorted(unknown)} are not served by {self.source}")
        for name in names:
            if name.startswith(BARS_PREFIX) and name != self.base_bars_stream:
                self._aggregator.add_timeframe(name[len(BARS_PREFIX):])
        sub = _Subscriber(names, frozenset(symbols) if symbols is not None else None,
                          {name: self._stream(name).seq + 1 for name in names})
        self._subs[sub_id] = sub
        for name in names:
            self._subs_of.setdefault(name, []).append(sub)

    def unsubscribe(self, sub_id: str) -> None:
        """Remove ``sub_id`` and drop its pending batches (in-flight ones are forgotten; later acks of
        it are ignored). A stream nobody subscribes to stops accumulating rows.

        Raises:
            ParameterError: ``sub_id`` is not subscribed.
        """
        sub = self._sub(sub_id)
        del self._subs[sub_id]
        for name in sub.streams:
            self._subs_of[name] = [s for s in self._subs_of[name] if s is not sub]
            if not self._subs_of[name]:
                del self._subs_of[name]
                stream = self._streams[name]
                stream.chunks.clear()
                stream.rows = 0
        if LTP not in self._subs_of:
            self._ltp_pending.clear()
            self._ltp_oldest_ns = None
        self._update_backpressure()

    def upstream_streams(self) -> set[str]:
        """Feed streams to open (once each) for the current subscriptions: "trades", "quotes" and/or
        ``"bars:<bar_timeframe>"`` (when ``bars_from="bars"``)."""
        wanted = set(self._subs_of)
        needed: set[str] = set()
        if QUOTES in wanted:
            needed.add(QUOTES)
        if TRADES in wanted:
            needed.add(TRADES)
        if LTP in wanted or any(s.startswith(BARS_PREFIX) for s in wanted):
            needed.add(TRADES if self.bars_from == "trades" else self.base_bars_stream)
        return needed

    # ---------------------------------------------------------------- intake

    def ingest(self, batch: FeedBatch, now_ns: int) -> None:
        """Take one feed batch (``now_ns``: wall time ns it enters the mux) and cut every stream that
        reached ``max_rows``. A ``final`` batch closes all open bars and ends the streams it feeds.

        Raises:
            ParameterError: ``batch.stream`` is not a feed stream this mux takes (field ``stream``), its
                table does not have the stream's schema (``table``), or rows are out of time order.
        """
        table = batch.table
        try:
            schema = stream_schema(batch.stream)
        except ParameterError as exc:
            raise ParameterError("stream", exc.rule) from None
        if batch.stream not in (TRADES, QUOTES, self.base_bars_stream) or (
            batch.stream == self.base_bars_stream and self.bars_from != "bars"
        ):
            raise ParameterError(
                "stream", f"{self.source} takes 'trades', 'quotes' and ({self.base_bars_stream!r} with "
                f"bars_from='bars') feeds, got {batch.stream!r} (bars_from={self.bars_from!r})")
        if not table.schema.equals(schema, check_metadata=False):
            raise ParameterError("table", f"{batch.stream} rows must have the schema {schema}, got {table.schema}")
        watermark = END_OF_STREAM if batch.final else batch.watermark_ns
        if batch.stream == QUOTES:
            self._ticks_in += table.num_rows
            self._append(QUOTES, table, watermark, now_ns)
            touched = [QUOTES]
        elif batch.stream == TRADES:
            self._ticks_in += table.num_rows
            self._append(TRADES, table, watermark, now_ns)
            touched = [TRADES]
            if self.bars_from == "trades":
                self._builder.ingest(table)
                touched += self._base_bars(self._builder.close_until(watermark), watermark, now_ns)
            self._update_ltp(TRADES, table, 0, watermark, now_ns)
            touched.append(LTP)
        else:
            self._bars_in += table.num_rows
            touched = self._base_bars(table, watermark, now_ns)
            self._update_ltp(batch.stream, table, self._aggregator.base_timeframe_ns, watermark, now_ns)
            touched.append(LTP)
        if batch.final:
            for name in touched:
                if name in self._subs_of:
                    self._cut_all(name, True, now_ns)

    def flush(self, now_ns: int, force: bool = False) -> int:
        """Cut every stream whose oldest waiting row entered at or before ``now_ns - window_ns``; with
        ``force`` cut every stream holding rows, and send an empty batch on a stream whose watermark
        advanced since its last batch. Returns the number of batches cut."""
        cut = 0
        for name in list(self._subs_of):
            stream = self._stream(name)
            if name == LTP:
                due = self._ltp_oldest_ns is not None and now_ns - self._ltp_oldest_ns >= self.window_ns
            else:
                due = bool(stream.chunks) and (
                    now_ns - stream.chunks[0][1] >= self.window_ns
                    or all(s.inflight == 0 and not s.queue for s in self._subs_of[name])
                )
            if due or force:
                cut += self._cut_all(name, force, now_ns)
        return cut

    # ---------------------------------------------------------------- delivery

    def deliveries(
        self, inflight_limit: int, calls_limit: int | None = None
    ) -> list[tuple[str, list[MarketBatch]]]:
        """Per subscriber with pending batches and room, the oldest pending batches up to
        ``inflight_limit`` minus its un-acknowledged ones; they count as in flight until :meth:`ack`.

        With ``calls_limit``, a subscriber that already has that many deliveries un-acknowledged gets
        nothing now: its batches wait and go out together in its next delivery. One delivery is one
        call whose fixed cost (a Ray actor call: ~1 ms of CPU on each side here) does not depend on
        its rows, so under load a subscriber's deliveries grow instead of multiplying: a busy machine
        serving many subscribers sends each of them fewer, bigger deliveries (see
        :func:`~engine.marketdata.schemas.merge_batches`).

        Raises:
            ParameterError: ``inflight_limit`` < 1 or ``calls_limit`` < 1.
        """
        if inflight_limit < 1:
            raise ParameterError("inflight_limit", f"must be >= 1, got {inflight_limit}")
        if calls_limit is not None and calls_limit < 1:
            raise ParameterError("calls_limit", f"must be None or >= 1, got {calls_limit}")
        out: list[tuple[str, list[MarketBatch]]] = []
        for sub_id, sub in self._subs.items():
            if calls_limit is not None and sub.calls >= calls_limit:
                continue
            room = min(inflight_limit - sub.inflight, len(sub.queue))
            if room > 0:
                out.append((sub_id, [sub.queue.popleft() for _ in range(room)]))
                sub.inflight += room
                sub.calls += 1
        if out:
            self._update_backpressure()
        return out

    def ack(self, sub_id: str, n_batches: int) -> None:
        """``sub_id`` finished processing one delivery of ``n_batches`` batches handed out by
        :meth:`deliveries`. Acks of a subscriber that has unsubscribed are ignored.

        Raises:
            ParameterError: ``n_batches`` negative or above the subscriber's batches in flight.
        """
        sub = self._subs.get(sub_id)
        if sub is None:
            return
        if not 0 <= n_batches <= sub.inflight:
            raise ParameterError("n_batches", f"must be in [0, {sub.inflight}] for {sub_id!r}, got {n_batches}")
        sub.inflight -= n_batches
        sub.calls = max(0, sub.calls - 1)

    def backpressure(self) -> bool:
        """True while the actor should stop pulling from the feed: some queue grew above ``max_queue``
        (after conflating its quotes) and not every queue has drained to ``low_water`` since."""
        self._update_backpressure()
        return self._backpressure

    # ---------------------------------------------------------------- state

    def ltp(self) -> dict[str, tuple[int, float]]:
        """Last traded price per symbol: ``(ts_ns, price)``; from a bars feed, the last close stamped
        at the bar's close time."""
        return dict(self._ltp)

    def replay_since(self, sub_id: str, stream: str, watermark_ns: int) -> list[MarketBatch] | None:
        """Kept batches of ``stream`` a restarted subscriber missed, given the watermark of the last
        batch it processed: every batch cut before its subscription that holds data not covered by
        ``watermark_ns`` (a trade/quote/ltp row with ``ts >= watermark_ns``, a bar with close
        ``> watermark_ns``), plus empty batches advancing the watermark past it (e.g. the end of
        stream), in seq order. Call it right after :meth:`subscribe`; batches cut later are in the
        subscriber's queue. A returned batch may also hold older rows (when the feed's watermark lagged
        its data): the subscriber skips rows it already has.

        Returns:
            The batches (the same objects other subscribers got), or None when history no longer
            reaches back that far (a batch with such data was evicted): the caller reports a gap.

        Raises:
            ParameterError: ``sub_id`` not subscribed, or not to ``stream``.
        """
        sub = self._sub(sub_id)
        name = self._canonical(stream)
        if name not in sub.streams:
            raise ParameterError("stream", f"{sub_id!r} is not subscribed to {stream!r}")
        s = self._stream(name)
        if s.evicted_end_ns > watermark_ns:
            return None
        boundary = sub.first_seq[name]
        return [
            b for b, end in s.history
            if b.seq < boundary and (end > watermark_ns or (b.table.num_rows == 0 and b.watermark_ns > watermark_ns))
        ]

    def stats(self) -> MuxStats:
        """Counters for metrics (see :class:`MuxStats`)."""
        return MuxStats(
            ticks_in=self._ticks_in,
            bars_in=self._bars_in,
            late_ticks=self._builder.late_ticks,
            rows_out={n: s.rows_out for n, s in self._streams.items()},
            batches_cut={n: s.seq for n, s in self._streams.items()},
            queue_depth={i: len(s.queue) for i, s in self._subs.items()},
            inflight={i: s.inflight for i, s in self._subs.items()},
            conflations={i: s.conflations for i, s in self._subs.items()},
            backpressure=self._backpressure,
        )

    # ---------------------------------------------------------------- internals

    def _sub(self, sub_id: str) -> _Subscriber:
        sub = self._subs.get(sub_id)
        if sub is None:
            raise ParameterError("sub_id", f"{sub_id!r} is not subscribed to {self.source}")
        return sub

    def _canonical(self, stream: str) -> str:
        try:
            stream_schema(stream)
        except ParameterError as exc:
            raise ParameterError("streams", exc.rule) from None
        if not stream.startswith(BARS_PREFIX):
            return stream
        name = f"{BARS_PREFIX}{timeframe_str(stream_timeframe_ns(stream))}"
        if name != self.base_bars_stream:
            try:
                self._aggregator.check_timeframe(name[len(BARS_PREFIX):])
            except ParameterError as exc:
                raise ParameterError("streams", f"{stream!r}: {exc.rule}") from None
        return name

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream(name, stream_timeframe_ns(name), self.history)
        return stream

    def _base_bars(self, bars: pa.Table, watermark: int, now_ns: int) -> list[str]:
        """Route complete base bars to their stream and the higher timeframes; names of streams fed."""
        self._append(self.base_bars_stream, bars, watermark, now_ns)
        self._aggregator.ingest(bars)
        fed = [self.base_bars_stream]
        for tf, table in self._aggregator.close_until(watermark).items():
            name = f"{BARS_PREFIX}{tf}"
            self._append(name, table, watermark, now_ns)
            fed.append(name)
        return fed

    def _append(self, name: str, table: pa.Table, watermark: int, now_ns: int) -> None:
        stream = self._stream(name)
        stream.watermark_ns = max(stream.watermark_ns, watermark)
        if name not in self._subs_of or table.num_rows == 0:
            return
        stream.chunks.append((table, now_ns))
        stream.rows += table.num_rows
        while stream.rows >= self.max_rows:
            self._cut_rows(stream, self.max_rows)

    def _cut_all(self, name: str, force: bool, now_ns: int) -> int:
        """Cut everything waiting on ``name`` (an empty batch stamped ``now_ns`` too when ``force`` and
        the watermark advanced); returns the number of batches cut."""
        if name == LTP:
            return self._cut_ltp(force, now_ns)
        stream = self._stream(name)
        cut = 0
        while stream.rows:
            self._cut_rows(stream, min(stream.rows, self.max_rows))
            cut += 1
        if not cut and force and stream.watermark_ns > stream.cut_watermark_ns:
            self._publish(stream, stream_schema(name).empty_table(), stream.watermark_ns, now_ns)
            cut = 1
        return cut

    def _cut_rows(self, stream: _Stream, n: int) -> None:
        """Cut the oldest ``n`` waiting rows of ``stream`` into a batch (fewer when the cut would split
        rows of equal ``ts``: the run of ties goes to the next batch, unless it fills the batch)."""
        ingest_ns = stream.chunks[0][1]
        parts = self._take(stream, n)
        table = parts[0][0] if len(parts) == 1 else pa.concat_tables([p for p, _ in parts]).combine_chunks()
        watermark = stream.watermark_ns
        if stream.rows:  # later rows share the feed watermark: promise only what they allow
            first = self._first_ts(stream)
            ts = ts_ns_array(table["ts"])
            if ts[-1] == first and ts[0] < first:  # keep rows of equal ts in one batch
                k = int(np.searchsorted(ts, first))
                self._give_back(stream, parts, k)
                table = table.slice(0, k)
            bound = first + stream.tf_ns - 1 if stream.tf_ns else first
            watermark = max(stream.cut_watermark_ns, min(watermark, bound))
        self._publish(stream, table, watermark, ingest_ns)

    @staticmethod
    def _take(stream: _Stream, n: int) -> list[tuple[pa.Table, int]]:
        """Remove the oldest ``n`` waiting rows of ``stream``: (rows, wall ns they entered) parts."""
        parts: list[tuple[pa.Table, int]] = []
        need = n
        while need:
            table, entered = stream.chunks[0]
            if table.num_rows <= need:
                parts.append((table, entered))
                stream.chunks.popleft()
                need -= table.num_rows
            else:
                parts.append((table.slice(0, need), entered))
                stream.chunks[0] = (table.slice(need), entered)
                need = 0
        stream.rows -= n
        return parts

    @staticmethod
    def _give_back(stream: _Stream, parts: list[tuple[pa.Table, int]], keep: int) -> None:
        """Return the taken rows after the first ``keep`` to the front of the waiting rows."""
        back: list[tuple[pa.Table, int]] = []
        start = 0
        for table, entered in parts:
            end = start + table.num_rows
            if end > keep:
                back.append((table.slice(max(0, keep - start)), entered))
            start = end
        stream.chunks.extendleft(reversed(back))
        stream.rows += sum(t.num_rows for t, _ in back)

    @staticmethod
    def _first_ts(stream: _Stream) -> int:
        return int(ts_ns_array(stream.chunks[0][0]["ts"].slice(0, 1))[0])

    def _publish(self, stream: _Stream, table: pa.Table, watermark: int, ingest_ns: int) -> None:
        """Stamp, keep and queue one batch for every subscriber of ``stream``."""
        stream.seq += 1
        batch = MarketBatch(self.source, stream.name, stream.seq, table, watermark, ingest_ns)
        stream.cut_watermark_ns = watermark
        stream.rows_out += table.num_rows
        if self.history:
            if len(stream.history) == self.history:
                stream.evicted_end_ns = max(stream.evicted_end_ns, stream.history.popleft()[1])
            stream.history.append((batch, stream.data_end_ns(table)))
        for sub in self._subs_of.get(stream.name, ()):
            sub.queue.append(batch)
            if len(sub.queue) > self.max_queue:
                self._conflate(sub)
                if len(sub.queue) > self.max_queue:
                    self._backpressure = True

    def _update_ltp(self, feed: str, table: pa.Table, tf_ns: int, watermark: int, now_ns: int) -> None:
        """Latest price per symbol from trades (price at ts) or bars (close at open + tf_ns)."""
        self._ltp_watermarks[feed] = max(self._ltp_watermarks.get(feed, 0), watermark)
        stream = self._stream(LTP)
        stream.watermark_ns = max(stream.watermark_ns, min(self._ltp_watermarks.values()))
        if table.num_rows == 0:
            return
        codes = SymbolCodes()
        sym, n_symbols = codes.encode(table["symbol"])
        last = np.array([len(sym) - 1]) if n_symbols == 1 else len(sym) - 1 - np.unique(sym[::-1], return_index=True)[1]
        ts = ts_ns_array(table["ts"])[last] + tf_ns
        price = float_array(table["price" if feed == TRADES else "close"])[last]
        names = codes.names
        pending = LTP in self._subs_of
        for code, t, p in zip(sym[last].tolist(), ts.tolist(), price.tolist(), strict=True):
            symbol = names[code]
            if t >= self._ltp.get(symbol, (_NO_DATA, 0.0))[0]:
                self._ltp[symbol] = (t, p)
                if pending:
                    self._ltp_pending[symbol] = (t, p)
        if pending and self._ltp_pending and self._ltp_oldest_ns is None:
            self._ltp_oldest_ns = now_ns
        if pending and len(self._ltp_pending) >= self.max_rows:
            self._cut_ltp(False, now_ns)

    def _cut_ltp(self, force: bool, now_ns: int) -> int:
        stream = self._stream(LTP)
        if self._ltp_pending:
            rows = sorted(self._ltp_pending.items(), key=lambda item: item[1][0])
            table = pa.table(
                {"symbol": [s for s, _ in rows], "ts": pa.array([t for _, (t, _) in rows], pa.int64()).cast(
                    LTP_SCHEMA.field("ts").type), "price": [p for _, (_, p) in rows]},
                schema=LTP_SCHEMA,
            )
            ingest_ns = self._ltp_oldest_ns if self._ltp_oldest_ns is not None else now_ns
            self._ltp_pending = {}
            self._ltp_oldest_ns = None
            self._publish(stream, table, stream.watermark_ns, ingest_ns)
            return 1
        if force and stream.watermark_ns > stream.cut_watermark_ns:
            self._publish(stream, LTP_SCHEMA.empty_table(), stream.watermark_ns, now_ns)
            return 1
        return 0

    def _conflate(self, sub: _Subscriber) -> None:
        """Merge ``sub``'s pending quote batches into one and its ltp batches into one (newest row per
        symbol, newest seq and watermark), each at the position of its newest batch."""
        for name in (QUOTES, LTP):
            idx = [i for i, b in enumerate(sub.queue) if b.stream == name]
            if len(idx) < 2:
                continue
            merged = [sub.queue[i] for i in idx]
            table = pa.concat_tables([b.table for b in merged])
            origin = np.repeat(np.arange(len(merged)), [b.table.num_rows for b in merged])
            sym, _ = SymbolCodes().encode(table["symbol"])
            keep = np.sort(len(sym) - 1 - np.unique(sym[::-1], return_index=True)[1])
            newest = merged[-1]
            ingest = min((merged[i].ingest_ns for i in np.unique(origin[keep]).tolist()), default=newest.ingest_ns)
            batch = MarketBatch(self.source, name, newest.seq, table.take(pa.array(keep, pa.int64())).combine_chunks(),
                                newest.watermark_ns, ingest)
            drop = set(idx[:-1])
            sub.queue = deque(batch if i == idx[-1] else b for i, b in enumerate(sub.queue) if i not in drop)
            sub.conflations += len(idx) - 1

    def _update_backpressure(self) -> None:
        depth = max((len(s.queue) for s in self._subs.values()), default=0)
        if self._backpressure:
            self._backpressure = depth > self.low_water
        else:
            self._backpressure = depth > self.max_queue
