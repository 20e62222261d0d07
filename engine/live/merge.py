"""Merging bar batches from several multiplexers into one ordered stream of time slices.

A bot trading several symbols may receive them from several multiplexer actors (one per symbol or
shard). Each source's batches arrive in order, but sources run independently, so the bot must not
process the bars closing at time t until every source has said it has nothing more up to t. Each
batch carries its source's watermark (:class:`engine.marketdata.schemas.MarketBatch`); the merger
buffers the bot's bars and releases those whose close is at or before the smallest watermark of all
its sources, ordered by open time, then by symbol (the backtest's order). A source that has ended
has the watermark ``END_OF_STREAM``.
"""

from __future__ import annotations

import heapq

import pyarrow as pa

from engine.errors import ParameterError
from engine.live.bot import BarRow
from engine.marketdata.schemas import BARS_PREFIX


class BarMerger:
    """Buffers bars from ``sources`` and releases complete, ordered time slices.

    Args:
        sources: the source keys whose watermarks gate the release (e.g. "mux:BTCUSDT"), each
            expected to send bars of ``timeframe``.
        symbols: the bot's symbols; rows of other symbols are dropped.
        timeframe_ns: bar length (a bar closes at open + timeframe).

    Raises:
        ParameterError: an empty source list.
    """

    def __init__(self, sources: list[str], symbols: list[str], timeframe_ns: int) -> None:
        if not sources:
            raise ParameterError("sources", "a bot needs at least one market-data source")
        self.watermarks = dict.fromkeys(sources, -1)
        self.order = {s: i for i, s in enumerate(sorted(symbols))}
        self.tf_ns = timeframe_ns
        self._heap: list[tuple[int, int, BarRow]] = []
        self.last_seq: dict[tuple[str, str], int] = {}

    def add(self, source: str, stream: str, seq: int, table: pa.Table, watermark_ns: int) -> None:
        """Buffer one batch of bars (BARS_SCHEMA) from ``source`` and advance its watermark.

        Raises:
            ParameterError: an unknown source or a stream that is not bars.
        """
        if source not in self.watermarks:
            raise ParameterError("source", f"unknown market-data source {source!r}")
        if not stream.startswith(BARS_PREFIX):
            raise ParameterError("stream", f"a bot's bar merger takes bar streams, got {stream!r}")
        self.last_seq[(source, stream)] = seq
        if table.num_rows:
            order = self.order
            cols = [table.column(c).to_pylist() for c in ("symbol", "open", "high", "low", "close", "volume")]
            ts = table.column("ts").cast(pa.int64()).to_pylist()
            for symbol, t, o, h, low, c, v in zip(cols[0], ts, *cols[1:], strict=True):
                rank = order.get(symbol)
                if rank is not None:
                    heapq.heappush(self._heap, (t, rank, (symbol, t, o, h, low, c, v)))
        if watermark_ns > self.watermarks[source]:
            self.watermarks[source] = watermark_ns

    @property
    def watermark_ns(self) -> int:
        """The smallest watermark of all sources (bars closing at or before it are complete)."""
        return min(self.watermarks.values())

    def ready(self) -> list[BarRow]:
        """Bars whose close ≤ :attr:`watermark_ns`, in (open time, symbol) order, removed from the buffer."""
        limit = self.watermark_ns - self.tf_ns
        out: list[BarRow] = []
        heap = self._heap
        while heap and heap[0][0] <= limit:
            out.append(heapq.heappop(heap)[2])
        return out

    def pending(self) -> int:
        """Bars buffered, waiting for a slower source."""
        return len(self._heap)
