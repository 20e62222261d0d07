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

import pickle
from collections.abc import Sequence
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


def merge_batches(batches: list[MarketBatch]) -> list[MarketBatch]:
    """One batch per (source, stream) holding the rows of ``batches`` in order: what a multiplexer
    sends a subscriber in one delivery when several batches of a stream are pending for it.

    The merged batch of a stream has its rows concatenated (one chunk per column), the **last** seq and
    watermark (watermarks never decrease along a stream) and the **oldest** ``ingest_ns`` (latency is
    that of the oldest row). It is what a conflated batch already is — a batch standing for a run of
    seqs, the newest one named — so a receiver that checks seq continuity sees a jump only where
    batches were really missed. Streams keep the order of their first batch; a single batch of a
    stream is passed through as the same object.

    Raises:
        ParameterError: the batches of one stream are not in increasing seq order.
    """
    groups: dict[tuple[str, str], list[MarketBatch]] = {}
    for b in batches:
        group = groups.setdefault((b.source, b.stream), [])
        if group and b.seq <= group[-1].seq:
            raise ParameterError("batches", f"{b.source} {b.stream}: seq {b.seq} after {group[-1].seq}")
        group.append(b)
    out: list[MarketBatch] = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        tables = [b.table for b in group if b.table.num_rows] or [group[-1].table]
        table = pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
        last = group[-1]
        oldest = min(b.ingest_ns for b in group)
        out.append(MarketBatch(last.source, last.stream, last.seq, table, last.watermark_ns, oldest))
    return out


#: a delivery up to this many bytes goes inside the call itself (Ray sends arguments below its
#: ``max_direct_call_object_size``, 100 KiB by default, with the task, bypassing the object store)
INLINE_DELIVERY_BYTES = 90_000


def delivery_nbytes(batches: Sequence[MarketBatch]) -> int:
    """Bytes of the batches' Arrow buffers: what decides between sending a delivery inline
    (:func:`encode_delivery`) and through the object store."""
    return sum(b.table.nbytes for b in batches)


def encode_delivery(batches: Sequence[MarketBatch]) -> bytes:
    """One delivery as bytes (pickle protocol 5, buffers in-band), serialised **once** however many
    subscribers get it; sent inline with each call it costs the receiver no object-store round trip
    (about a third of the per-call CPU on this machine, see ``bench/bench_runtime.py``). Only actors
    of the engine's own Ray cluster exchange these bytes (Ray itself pickles every argument)."""
    return pickle.dumps(tuple(batches), protocol=5)


def decode_delivery(payload: bytes | Sequence[MarketBatch]) -> tuple[MarketBatch, ...]:
    """The batches of a delivery: ``payload`` is the bytes of :func:`encode_delivery` or the batches
    themselves (a delivery too big to go inline comes through the object store, which Ray resolves
    to the tuple before the call runs).

    Raises:
        ParameterError: ``payload`` holds something other than market batches.
    """
    batches = pickle.loads(payload) if isinstance(payload, bytes | bytearray | memoryview) else payload
    if not isinstance(batches, tuple | list) or not all(isinstance(b, MarketBatch) for b in batches):
        raise ParameterError("payload", f"must be a delivery of MarketBatch objects, got {type(batches).__name__}")
    return tuple(batches)
