"""The feed interface: where a market-data multiplexer gets its data from.

A :class:`Feed` is an asynchronous source of :class:`FeedBatch` objects (Arrow tables of one stream
in time order) and :class:`FeedGap` notices. Two kinds exist behind this one interface: a replay
of stored trades, quotes or bars from the data catalog at a speed factor
(:mod:`engine.feeds.replay`), and a live exchange feed over ccxt's websocket API
(:mod:`engine.feeds.live`). The multiplexer (``actors/mux.py``) opens one feed per symbol or shard
of symbols, however many bots subscribe, and pulls from it with ``async for``.

Contract of every feed:

* ``stream`` is ``"trades"``, ``"quotes"`` or ``"bars:<tf>"``; each batch's table has
  :func:`engine.marketdata.schemas.stream_schema` of it, rows in non-decreasing ``ts``;
* ``watermark_ns`` of a batch: the feed will not later yield a trade/quote with ``ts <`` it or a
  bar whose close is ``<=`` it (see :class:`engine.marketdata.schemas.MarketBatch`); a replay sets it
  exactly, a live feed to the last event time it has seen minus nothing (exchanges stream in order);
* iteration ends when the source is exhausted (replay) or the feed is closed; the last batch of a
  finished replay has ``final=True``;
* :meth:`Feed.close` stops the iteration and releases connections; it is idempotent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True, slots=True)
class FeedBatch:
    """Rows of one stream from a feed (see the module docstring for ``watermark_ns``).

    ``received_ns`` is the wall-clock time (``time.time_ns()``) at which the feed produced the batch
    (for a live feed: when the websocket message arrived), the start of tick-to-bot latency.
    """

    stream: str
    table: pa.Table
    watermark_ns: int
    received_ns: int
    final: bool = False


@dataclass(frozen=True, slots=True)
class FeedGap:
    """Data that may be missing: ``symbol`` ("" for all of the feed's symbols) had no data from
    ``from_ns`` to ``to_ns`` (event time, ns UTC) because of ``reason`` (a reconnect, a trade-id
    jump, a stale stream)."""

    stream: str
    symbol: str
    from_ns: int
    to_ns: int
    reason: str


class Feed(ABC):
    """An asynchronous market-data source for one or more symbols (see the module docstring)."""

    #: the stream this feed yields ("trades", "quotes" or "bars:<tf>")
    stream: str
    #: the symbols this feed covers
    symbols: list[str]

    @abstractmethod
    def events(self) -> AsyncIterator[FeedBatch | FeedGap]:
        """Yield batches and gap notices in order until the source ends or :meth:`close` is called."""

    @abstractmethod
    async def close(self) -> None:
        """Stop and release resources (idempotent)."""
