"""Arrow shapes of streamed market data and the batch the multiplexer sends to its subscribers.

Every table has ``symbol`` (string) and ``ts`` (``timestamp[ns, UTC]``) first, rows in time order
(ties keep the feed's order). Prices are in quote currency, sizes and volumes in base units.

* trades: one row per trade; ``side`` is the aggressor (+1 buyer-initiated, −1 seller-initiated,
  0 unknown); ``trade_id`` is the venue's id as text ("" when the source has none).
* quotes: top of book (bid, bid size, ask, ask size).
* bars: OHLCV stamped at the bar's **open** time, complete (the bar has closed), the shape of
  :data:`engine.data.catalog.BAR_SCHEMA`.
* ltp: last traded price per symbol (the close of the last trade or bar seen).

A stream is named ``"trades"``, ``"quotes"``, ``"ltp"`` or ``"bars:<timeframe>"`` (``"bars:1m"``,
``"bars:15m"``, …; timeframes in the grammar of :func:`engine.timeframes.timeframe_ns`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from engine.data.catalog import BAR_SCHEMA, TS_TYPE
from engine.errors import ParameterError
from engine.timeframes import timeframe_ns

TRADES_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts", TS_TYPE),
        ("price", pa.float64()),
        ("size", pa.float64()),
        ("side", pa.int8()),
        ("trade_id", pa.string()),
    ]
)
QUOTES_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts", TS_TYPE),
        ("bid", pa.float64()),
        ("bid_size", pa.float64()),
        ("ask", pa.float64()),
        ("ask_size", pa.float64()),
    ]
)
BARS_SCHEMA = BAR_SCHEMA
LTP_SCHEMA = pa.schema([("symbol", pa.string()), ("ts", TS_TYPE), ("price", pa.float64())])

TRADES = "trades"
QUOTES = "quotes"
LTP = "ltp"
BARS_PREFIX = "bars:"
#: ``watermark_ns`` of the last batch of a stream that has ended (replay finished)
END_OF_STREAM = 2**63 - 1


def bars_stream(timeframe: str) -> str:
    """The stream name of bars of ``timeframe`` ("bars:1m"). Raises ParameterError for a bad timeframe."""
    timeframe_ns(timeframe)
    return f"{BARS_PREFIX}{timeframe}"


def stream_schema(stream: str) -> pa.Schema:
    """The Arrow schema of ``stream``'s tables.

    Raises:
        ParameterError: ``stream`` is not "trades", "quotes", "ltp" or "bars:<timeframe>".
    """
    if stream == TRADES:
        return TRADES_SCHEMA
    if stream == QUOTES:
        return QUOTES_SCHEMA
    if stream == LTP:
        return LTP_SCHEMA
    if stream.startswith(BARS_PREFIX):
        timeframe_ns(stream[len(BARS_PREFIX) :])
        return BARS_SCHEMA
    raise ParameterError("stream", f"must be 'trades', 'quotes', 'ltp' or 'bars:<timeframe>', got {stream!r}")


def stream_timeframe_ns(stream: str) -> int:
    """Bar length in ns of a "bars:<tf>" stream (0 for the other streams)."""
    return timeframe_ns(stream[len(BARS_PREFIX) :]) if stream.startswith(BARS_PREFIX) else 0


@dataclass(frozen=True, slots=True)
class MarketBatch:
    """One batch of one stream, put in the object store once and handed to every subscriber.

    Attributes:
        source: the multiplexer's name ("mux:BTCUSDT" or "mux:shard-0").
        stream: see the module docstring.
        seq: 1, 2, 3, … per (source, stream); a subscriber that sees a jump knows it missed batches.
        table: rows of :func:`stream_schema` (may hold several symbols; may be empty when the batch
            only advances the watermark).
        watermark_ns: event time up to which this stream of this source is complete: no later batch
            holds a trade/quote with ``ts < watermark_ns`` or a bar whose close (open + timeframe)
            is ``<= watermark_ns``. :data:`END_OF_STREAM` when the stream has ended.
        ingest_ns: wall-clock ns (``time.time_ns()``) at which the oldest row of the batch entered
            the multiplexer (tick-to-subscriber latency = receive wall time − ingest_ns).
    """

    source: str
    stream: str
    seq: int
    table: pa.Table
    watermark_ns: int
    ingest_ns: int
