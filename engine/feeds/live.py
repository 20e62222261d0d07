"""Live public market data from Binance (spot ``binance``, USDⓈ-M futures ``binanceusdm``) and Bybit
(``bybit``) over ccxt's websocket API (``ccxt.pro``), as a :class:`~engine.feeds.base.Feed`.

Streams and the ccxt calls behind them (a per-symbol call runs as one task per symbol when the exchange
lacks the multi-symbol one, per ``client.has``):

* ``"trades"``: ``watch_trades_for_symbols`` (else ``watch_trades``); ccxt unified trades → rows of
  :data:`~engine.marketdata.schemas.TRADES_SCHEMA` (``timestamp`` ms → ``ts`` ns, ``side`` "buy" → +1,
  "sell" → −1, else 0, ``amount`` → ``size`` in base units, ``id`` → ``trade_id``);
* ``"quotes"``: ``watch_bids_asks`` (else ``watch_ticker``); ``bid``/``bidVolume``/``ask``/``askVolume``
  → :data:`~engine.marketdata.schemas.QUOTES_SCHEMA` (a ticker without a timestamp, such as Binance spot's
  book ticker, is stamped with the receive time);
* ``"bars:<tf>"``: ``watch_ohlcv_for_symbols`` (else ``watch_ohlcv``); only **closed** candles are emitted:
  a candle is closed when a newer candle of its symbol arrives (its last update is emitted then).

Rows of one batch are sorted by ``ts``. ``watermark_ns`` is the latest event time seen (trades/quotes:
the largest ``ts``; bars: the smallest open among the symbols' still-open candles, i.e. the next bar to
come), never decreasing, since exchanges stream in order.

Reliability:

* ``ccxt.NetworkError`` (``ExchangeNotAvailable`` and ``RequestTimeout`` are subclasses) and ``OSError``
  (connection drops) close the client and reconnect through ``client_factory`` after
  ``min(cap, base × factor**attempt) × (1 + jitter × rng())`` seconds (attempt 0, 1, 2, …; reset by the
  first message after a reconnect). When data resumes a ``FeedGap(reason="reconnect", symbol="")`` covers
  the last event time seen before the drop → the first event time after it. A candle still open at the
  drop is dropped if the next candle of its symbol arrives after the reconnect (its last updates may be
  missing), so the gap stands for it. Other exceptions propagate.
* a numeric trade id that jumps (``id > last + 1``; Binance ids are consecutive per symbol) yields
  ``FeedGap(reason="trade_id_jump")`` for that symbol from its previous trade's ``ts`` to the new one;
  ids ``<=`` the last one (replays after a reconnect) are dropped as duplicates.
* no message for ``stale_after_s`` seconds yields ``FeedGap(reason="stale", symbol="")`` from the later of
  the last event time and the previous stale notice to the wall-clock time (one per silent period).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ccxt
import numpy as np
import pyarrow as pa

from engine.errors import ParameterError
from engine.feeds.base import Feed, FeedBatch, FeedGap
from engine.feeds.replay import Clock, Sleep, interruptible_sleep
from engine.marketdata.schemas import (
    BARS_PREFIX,
    BARS_SCHEMA,
    QUOTES,
    QUOTES_SCHEMA,
    TRADES,
    TRADES_SCHEMA,
    stream_schema,
)

#: exchanges whose public streams this feed supports (ccxt ids)
EXCHANGES = ("binance", "binanceusdm", "bybit")
#: exchanges whose trade ids are consecutive integers per symbol
CONSECUTIVE_TRADE_IDS = ("binance", "binanceusdm")
#: errors after which the feed reconnects
RECONNECT_ERRORS: tuple[type[BaseException], ...] = (ccxt.NetworkError, ccxt.ExchangeNotAvailable, OSError)
_NS_PER_MS = 1_000_000


def default_client_factory(exchange_id: str, config: Mapping[str, Any] | None = None) -> Callable[[], Any]:
    """A factory of ``ccxt.pro.<exchange_id>(config)`` clients (public data: no keys needed)."""
    import ccxt.pro as ccxtpro

    def make() -> Any:
        return getattr(ccxtpro, exchange_id)(dict(config or {}))

    return make


def engine_symbol(unified: str) -> str:
    """The catalog's name of a ccxt unified symbol: "BTC/USDT:USDT" → "BTCUSDT", "ETH/BTC" → "ETHBTC"."""
    return unified.split(":", 1)[0].replace("/", "")


@dataclass
class _SymbolState:
    last_ts: int | None = None
    last_trade_id: int | None = None
    candle: list[Any] | None = None  # the still-open candle [ts_ms, o, h, l, c, v]
    candle_stale: bool = False  # a reconnect happened since the open candle's last update


class CcxtLiveFeed(Feed):
    """A live feed of one stream for ``symbols`` of one exchange (see the module docstring).

    Args:
        exchange_id: ``"binance"``, ``"binanceusdm"`` or ``"bybit"``.
        symbols: ccxt unified symbols ("BTC/USDT:USDT" for the USDⓈ-M perpetual).
        stream: ``"trades"``, ``"quotes"`` or ``"bars:<tf>"`` (a timeframe the exchange streams, e.g. 1m).
        client_factory: makes a ccxt.pro exchange object (or any object with the same ``watch_*``
            coroutines, ``has`` and ``close``); default ``ccxt.pro.<exchange_id>()``.
        symbol_names: unified symbol → name in the tables (default :func:`engine_symbol`).
        backoff_base_s, backoff_factor, backoff_cap_s, jitter: reconnect delays (see the module docstring).
        max_reconnects: give up (re-raise) after this many reconnects in a row without data; ``None``: never.
        stale_after_s: seconds without any message before a stale notice; ``None``: no staleness check.
        check_trade_ids: detect trade-id jumps (default: on for Binance).
        clock: wall clock in ns (``time.time_ns``), stamps ``received_ns``.
        sleep: coroutine function sleeping seconds (``asyncio.sleep``), used for the backoff.
        rng: uniform [0, 1) numbers for the jitter (``random.random``).

    Raises:
        ParameterError: an unsupported exchange (``'exchange_id'``), stream (``'stream'``), no or duplicate
            symbols (``'symbols'``), or a non-positive backoff/staleness setting.
    """

    def __init__(
        self,
        exchange_id: str,
        symbols: Sequence[str],
        stream: str,
        *,
        client_factory: Callable[[], Any] | None = None,
        symbol_names: Mapping[str, str] | None = None,
        backoff_base_s: float = 0.5,
        backoff_factor: float = 2.0,
        backoff_cap_s: float = 30.0,
        jitter: float = 0.2,
        max_reconnects: int | None = None,
        stale_after_s: float | None = 30.0,
        check_trade_ids: bool | None = None,
        clock: Clock = time.time_ns,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if exchange_id not in EXCHANGES:
            raise ParameterError("exchange_id", f"must be one of {list(EXCHANGES)}, got {exchange_id!r}")
        stream_schema(stream)
        if stream not in (TRADES, QUOTES) and not stream.startswith(BARS_PREFIX):
            raise ParameterError("stream", f"a live feed streams 'trades', 'quotes' or 'bars:<tf>', got {stream!r}")
        unified = list(symbols)
        if not unified or len(set(unified)) != len(unified):
            raise ParameterError("symbols", f"must be a non-empty list of distinct symbols, got {unified!r}")
        for name, value in (("backoff_base_s", backoff_base_s), ("backoff_cap_s", backoff_cap_s)):
            if not value > 0:
                raise ParameterError(name, f"must be > 0, got {value!r}")
        if not backoff_factor >= 1:
            raise ParameterError("backoff_factor", f"must be >= 1, got {backoff_factor!r}")
        if not jitter >= 0:
            raise ParameterError("jitter", f"must be >= 0, got {jitter!r}")
        if stale_after_s is not None and not stale_after_s > 0:
            raise ParameterError("stale_after_s", f"must be > 0 or None, got {stale_after_s!r}")
        self.exchange_id = exchange_id
        self.stream = stream
        self.unified_symbols = unified
        names = dict(symbol_names or {})
        self._names = {u: names.get(u, engine_symbol(u)) for u in unified}
        self.symbols = [self._names[u] for u in unified]
        self.timeframe = stream[len(BARS_PREFIX) :] if stream.startswith(BARS_PREFIX) else ""
        self._factory = client_factory or default_client_factory(exchange_id)
        self.backoff_base_s = backoff_base_s
        self.backoff_factor = backoff_factor
        self.backoff_cap_s = backoff_cap_s
        self.jitter = jitter
        self.max_reconnects = max_reconnects
        self.stale_after_s = stale_after_s
        self.check_trade_ids = exchange_id in CONSECUTIVE_TRADE_IDS if check_trade_ids is None else check_trade_ids
        self._clock = clock
        self._sleep = sleep
        self._rng = rng

        self.reconnects = 0  #: reconnects so far
        self.skipped_rows = 0  #: rows dropped: unknown symbol, missing/invalid price, duplicate trade id
        self._client: Any = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._state = {u: _SymbolState() for u in unified}
        self._closed = False
        self._wake: asyncio.Event | None = None
        self._watermark = 0
        self._last_ts: int | None = None  # latest event time seen, any symbol
        self._stale_from: int | None = None
        self._gap_from: int | None = None  # set while a reconnect gap is open

    # ------------------------------------------------------------------------------------------ iteration

    async def events(self) -> AsyncIterator[FeedBatch | FeedGap]:
        """Yield batches (never ``final``) and gap notices until :meth:`close` is called.

        Raises:
            ccxt.BaseError: a non-network error from ccxt (bad symbol, exchange error), or the last network
                error once ``max_reconnects`` reconnects in a row have failed.
        """
        self._wake = asyncio.Event()
        started = self._clock()
        failures = 0
        try:
            while not self._closed:
                try:
                    if self._client is None:
                        self._client = self._factory()
                    results = await self._next_results()
                except RECONNECT_ERRORS:
                    if self._closed:
                        return
                    if self.max_reconnects is not None and failures >= self.max_reconnects:
                        raise
                    await self._drop_client()
                    if self._gap_from is None:
                        self._gap_from = self._gap_start()
                    for st in self._state.values():
                        st.candle_stale = st.candle is not None
                    delay = self.backoff_delay(failures)
                    failures += 1
                    self.reconnects += 1
                    await interruptible_sleep(self._sleep, delay, self._wake)
                    continue
                if self._closed:
                    return
                received = self._clock()
                if results is None:  # nothing for stale_after_s seconds
                    seen = [x for x in (self._last_ts, self._stale_from) if x is not None]
                    start = max(seen) if seen else started  # nothing yet: silent since the feed started
                    self._stale_from = received
                    yield FeedGap(self.stream, "", start, received, "stale")
                    continue
                failures = 0
                table, gaps = self._convert(results, received)
                if table.num_rows:
                    first = int(table["ts"][0].value)
                    if self._gap_from is not None:
                        if first > self._gap_from or not self.timeframe:
                            yield FeedGap(self.stream, "", self._gap_from, first, "reconnect")
                        self._gap_from = None
                    self._last_ts = max(self._last_ts or first, int(table["ts"][-1].value))
                for gap in gaps:
                    yield gap
                if table.num_rows:
                    yield FeedBatch(self.stream, table, self._watermark, received)
        finally:
            await self.close()

    def _gap_start(self) -> int | None:
        """Start of the reconnect gap: the last event time seen; for bars the open of the earliest candle
        still open at the drop (it may be dropped, see the module docstring) if that is earlier."""
        opens = [int(st.candle[0]) * _NS_PER_MS for st in self._state.values() if st.candle is not None]
        starts = [x for x in (self._last_ts, min(opens, default=None)) if x is not None]
        return min(starts) if starts else None

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect ``attempt`` (0-based): capped exponential with jitter."""
        base = min(self.backoff_cap_s, self.backoff_base_s * self.backoff_factor**attempt)
        return base * (1.0 + self.jitter * self._rng())

    async def close(self) -> None:
        """Stop the iteration, cancel pending ``watch_*`` calls and close the client. Idempotent."""
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        await self._drop_client()

    async def _drop_client(self) -> None:
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    # ------------------------------------------------------------------------------------------ ccxt calls

    def _calls(self) -> dict[str, Callable[[], Awaitable[Any]]]:
        """The pending ``watch_*`` calls by key ("*" for one multi-symbol call, else the unified symbol)."""
        c = self._client
        has = getattr(c, "has", {}) or {}
        syms = self.unified_symbols
        if self.stream == TRADES:
            if has.get("watchTradesForSymbols"):
                return {"*": lambda: c.watch_trades_for_symbols(syms)}
            return {s: functools.partial(c.watch_trades, s) for s in syms}
        if self.stream == QUOTES:
            if has.get("watchBidsAsks"):
                return {"*": lambda: c.watch_bids_asks(syms)}
            return {s: functools.partial(c.watch_ticker, s) for s in syms}
        tf = self.timeframe
        if has.get("watchOHLCVForSymbols"):
            return {"*": lambda: c.watch_ohlcv_for_symbols([[s, tf] for s in syms])}
        return {s: functools.partial(c.watch_ohlcv, s, tf) for s in syms}

    async def _next_results(self) -> list[tuple[str, Any]] | None:
        """Wait for the next ccxt result(s); ``None`` after ``stale_after_s`` seconds without one.

        Raises the first error of a finished call (the others keep running until the client is dropped).
        """
        calls = self._calls()
        for key, call in calls.items():
            if key not in self._tasks:
                self._tasks[key] = asyncio.ensure_future(call())
        assert self._wake is not None
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait(
                {*self._tasks.values(), waiter}, timeout=self.stale_after_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if self._closed:
            return []
        finished = [(k, t) for k, t in self._tasks.items() if t in done]
        if not finished:
            return None
        for k, _ in finished:
            del self._tasks[k]
        out: list[tuple[str, Any]] = []
        for k, task in finished:
            out.append((k, task.result()))  # raises the call's error
        return out

    # ------------------------------------------------------------------------------------------ conversion

    def _convert(self, results: list[tuple[str, Any]], received: int) -> tuple[pa.Table, list[FeedGap]]:
        if self.stream == TRADES:
            trades = [t for _, r in results for t in (r or [])]
            return self._trades(trades)
        if self.stream == QUOTES:
            tickers: list[dict[str, Any]] = []
            for key, r in results:  # watch_bids_asks: {symbol: ticker}; watch_ticker: one ticker
                tickers.extend(r.values() if key == "*" else [r])
            return self._quotes(tickers, received), []
        candles: list[tuple[str, list[Any]]] = []
        for key, r in results:
            if isinstance(r, Mapping):  # watch_ohlcv_for_symbols: {symbol: {timeframe: [candles]}}
                for sym, by_tf in r.items():
                    candles.extend((sym, c) for c in (by_tf or {}).get(self.timeframe, []))
            else:
                candles.extend((key, c) for c in (r or []))
        return self._bars(candles), []

    def _trades(self, trades: list[dict[str, Any]]) -> tuple[pa.Table, list[FeedGap]]:
        rows: list[tuple[str, int, float, float, int, str]] = []
        gaps: list[FeedGap] = []
        for t in sorted(trades, key=lambda t: t.get("timestamp") or 0):
            st = self._state.get(t.get("symbol", ""))
            ts_ms, price, amount = t.get("timestamp"), _num(t.get("price")), _num(t.get("amount"))
            if st is None or ts_ms is None or not price > 0 or not amount >= 0:
                self.skipped_rows += 1
                continue
            ts = int(ts_ms) * _NS_PER_MS
            tid = "" if t.get("id") is None else str(t["id"])
            if self.check_trade_ids and tid.isdigit():
                n = int(tid)
                if st.last_trade_id is not None:
                    if n <= st.last_trade_id:
                        self.skipped_rows += 1
                        continue
                    if n > st.last_trade_id + 1:
                        start = st.last_ts if st.last_ts is not None else ts
                        gaps.append(FeedGap(self.stream, self._names[t["symbol"]], start, ts, "trade_id_jump"))
                st.last_trade_id = n
            st.last_ts = ts
            side = {"buy": 1, "sell": -1}.get(str(t.get("side") or "").lower(), 0)
            rows.append((self._names[t["symbol"]], ts, price, amount, side, tid))
        if rows:
            self._watermark = max(self._watermark, max(r[1] for r in rows))
        return _table(rows, TRADES_SCHEMA), gaps

    def _quotes(self, tickers: list[dict[str, Any]], received: int) -> pa.Table:
        rows: list[tuple[str, int, float, float, float, float]] = []
        for q in tickers:
            st = self._state.get(q.get("symbol", ""))
            bid, ask = _num(q.get("bid")), _num(q.get("ask"))
            if st is None or not (bid > 0 and ask > 0):
                self.skipped_rows += 1
                continue
            ts_ms = q.get("timestamp")
            ts = int(ts_ms) * _NS_PER_MS if ts_ms is not None else received
            if st.last_ts is not None and ts < st.last_ts:
                ts = st.last_ts  # receive-time stamps may not go back in time
            st.last_ts = ts
            bid_size, ask_size = _num(q.get("bidVolume"), 0.0), _num(q.get("askVolume"), 0.0)
            rows.append((self._names[q["symbol"]], ts, bid, bid_size, ask, ask_size))
        rows.sort(key=lambda r: r[1])
        if rows:
            self._watermark = max(self._watermark, rows[-1][1])
        return _table(rows, QUOTES_SCHEMA)

    def _bars(self, candles: list[tuple[str, list[Any]]]) -> pa.Table:
        rows: list[tuple[str, int, float, float, float, float, float]] = []
        for sym, c in candles:
            st = self._state.get(sym)
            if st is None or not c or c[0] is None:
                self.skipped_rows += 1
                continue
            if st.candle is None or c[0] == st.candle[0]:
                st.candle, st.candle_stale = list(c), False  # a new or updated open candle
                continue
            if c[0] < st.candle[0]:
                continue  # a late update of a candle already emitted
            closed, was_stale = st.candle, st.candle_stale
            st.candle, st.candle_stale = list(c), False
            o, h, lo, cl, v = (_num(x) for x in closed[1:6])
            if was_stale or not (o > 0 and h > 0 and lo > 0 and cl > 0 and v >= 0):
                self.skipped_rows += 1
                continue
            rows.append((self._names[sym], int(closed[0]) * _NS_PER_MS, o, h, lo, cl, v))
        opens = [int(st.candle[0]) * _NS_PER_MS for st in self._state.values() if st.candle is not None]
        if opens:
            self._watermark = max(self._watermark, min(opens))
        rows.sort(key=lambda r: r[1])
        return _table(rows, BARS_SCHEMA)


def _num(value: Any, default: float = float("nan")) -> float:
    try:
        return default if value is None else float(value)
    except (TypeError, ValueError):
        return default


def _table(rows: Sequence[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for field, values in zip(schema, columns, strict=True):
        if field.name == "ts":
            arrays.append(pa.array(np.asarray(values, dtype=np.int64), pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(list(values), field.type))
    return pa.Table.from_arrays(arrays, schema=schema)
