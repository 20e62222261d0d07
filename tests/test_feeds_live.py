"""CcxtLiveFeed offline: recorded ccxt.pro results (Binance USDⓈ-M) served by a fake client, reconnects with
injected backoff sleeps, gap notices, closed-candle logic, close(); and ccxt.pro's real Binance parser fed
raw websocket payloads through a stub connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ccxt
import ccxt.pro
import pandas as pd
import pyarrow as pa
import pytest

from engine.errors import ParameterError
from engine.feeds.base import FeedBatch, FeedGap
from engine.feeds.live import CcxtLiveFeed, engine_symbol
from engine.marketdata.schemas import BARS_SCHEMA, QUOTES_SCHEMA, TRADES_SCHEMA

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ccxt"
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
MS = 1_000_000


def ns(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value)


def recorded(name: str) -> list[Any]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


class Script:
    """One recorded session shared by every client the factory makes (a reconnect resumes it)."""

    def __init__(self, results: list[Any], fail_before: dict[int, BaseException] | None = None) -> None:
        self.results = results
        self.fail_before = dict(fail_before or {})
        self.position = 0
        self.calls: list[tuple[str, tuple[Any, ...]]] = []


class FakeClient:
    """Stands in for a ccxt.pro exchange: ``watch_*`` return the recorded results in order, raise the
    scripted error at its position, and wait forever once the recording is exhausted."""

    def __init__(self, script: Script, has: dict[str, bool]) -> None:
        self.script = script
        self.has = has
        self.closed = False
        self.pending = 0

    async def _next(self, method: str, *args: Any) -> Any:
        s = self.script
        s.calls.append((method, args))
        if self.closed:
            raise ccxt.NetworkError("client closed")
        error = s.fail_before.pop(s.position, None)
        if error is not None:
            raise error
        if s.position >= len(s.results):
            self.pending += 1
            try:
                await asyncio.Event().wait()  # a quiet market: no message ever comes
            finally:
                self.pending -= 1
        result = s.results[s.position]
        s.position += 1
        await asyncio.sleep(0)
        return result

    async def watch_trades_for_symbols(self, symbols: list[str]) -> Any:
        return await self._next("watch_trades_for_symbols", tuple(symbols))

    async def watch_trades(self, symbol: str) -> Any:
        return await self._next("watch_trades", symbol)

    async def watch_bids_asks(self, symbols: list[str]) -> Any:
        return await self._next("watch_bids_asks", tuple(symbols))

    async def watch_ticker(self, symbol: str) -> Any:
        return await self._next("watch_ticker", symbol)

    async def watch_ohlcv_for_symbols(self, pairs: list[list[str]]) -> Any:
        return await self._next("watch_ohlcv_for_symbols", tuple(map(tuple, pairs)))

    async def watch_ohlcv(self, symbol: str, timeframe: str) -> Any:
        return await self._next("watch_ohlcv", symbol, timeframe)

    async def close(self) -> None:
        self.closed = True


ALL = {"watchTradesForSymbols": True, "watchBidsAsks": True, "watchOHLCVForSymbols": True}


def factory(script: Script, has: dict[str, bool] | None = None) -> tuple[Callable[[], FakeClient], list[FakeClient]]:
    made: list[FakeClient] = []

    def make() -> FakeClient:
        made.append(FakeClient(script, ALL if has is None else has))
        return made[-1]

    return make, made


class Sleeps:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def run(feed: CcxtLiveFeed, count: int) -> list[FeedBatch | FeedGap]:
    """The first ``count`` events of the feed; then close it."""

    async def go() -> list[FeedBatch | FeedGap]:
        out: list[FeedBatch | FeedGap] = []
        async for event in feed.events():
            out.append(event)
            if len(out) == count:
                await feed.close()
        return out

    return asyncio.run(asyncio.wait_for(go(), timeout=10))


def run_until_rows(feed: CcxtLiveFeed, n: int) -> list[FeedBatch | FeedGap]:
    """Events until ``n`` rows have come (however they are batched); then close the feed."""

    async def go() -> list[FeedBatch | FeedGap]:
        out: list[FeedBatch | FeedGap] = []
        async for event in feed.events():
            out.append(event)
            if sum(e.table.num_rows for e in out if isinstance(e, FeedBatch)) >= n:
                await feed.close()
        return out

    return asyncio.run(asyncio.wait_for(go(), timeout=10))


def rows(events: list[FeedBatch | FeedGap]) -> list[dict[str, Any]]:
    tables = [e.table for e in events if isinstance(e, FeedBatch)]
    out = pa.concat_tables(tables).to_pylist()
    for r in out:
        r["ts"] = int(pd.Timestamp(r["ts"]).value)
    return out


def trade_feed(script: Script, made_sleep: Sleeps, **kw: Any) -> tuple[CcxtLiveFeed, list[FakeClient]]:
    make, made = factory(script)
    feed = CcxtLiveFeed(
        "binanceusdm",
        [BTC, ETH],
        "trades",
        client_factory=make,
        sleep=made_sleep,
        rng=lambda: 0.5,
        clock=lambda: 42,
        **kw,
    )
    return feed, made


def test_trades_rows_gaps_and_reconnect() -> None:
    sleeps = Sleeps()
    script = Script(recorded("binanceusdm_trades.jsonl"), {3: ccxt.NetworkError("binanceusdm connection closed")})
    feed, made = trade_feed(script, sleeps, backoff_base_s=0.5, jitter=0.2)
    assert feed.symbols == ["BTCUSDT", "ETHUSDT"]
    events = run(feed, 7)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["FeedBatch", "FeedBatch", "FeedBatch", "FeedGap", "FeedGap", "FeedBatch", "FeedBatch"]
    t0 = ns("2026-01-12 00:00:00")
    # the drop after the trade at .348: one reconnect after 0.5 × (1 + 0.2 × 0.5) s, via a new client
    assert sleeps.seconds == [pytest.approx(0.55)]
    assert feed.reconnects == 1 and len(made) == 2 and made[0].closed
    assert events[3] == FeedGap("trades", "", t0 + 348 * MS, t0 + 2012 * MS, "reconnect")
    # ETH trade ids jump 5200100 → 5200104 (three trades missed)
    assert events[4] == FeedGap("trades", "ETHUSDT", t0 + 207 * MS, t0 + 2018 * MS, "trade_id_jump")
    got = rows(events)
    assert got == [
        {"symbol": "BTCUSDT", "ts": t0 + 101 * MS, "price": 91000.1, "size": 0.002, "side": 1, "trade_id": "7010001"},
        {"symbol": "BTCUSDT", "ts": t0 + 101 * MS, "price": 91000.0, "size": 0.01, "side": -1, "trade_id": "7010002"},
        {"symbol": "ETHUSDT", "ts": t0 + 207 * MS, "price": 3100.55, "size": 0.5, "side": 1, "trade_id": "5200100"},
        {"symbol": "BTCUSDT", "ts": t0 + 348 * MS, "price": 91000.2, "size": 0.001, "side": 1, "trade_id": "7010003"},
        {"symbol": "BTCUSDT", "ts": t0 + 2012 * MS, "price": 91001.0, "size": 0.004, "side": -1, "trade_id": "7010004"},
        {"symbol": "ETHUSDT", "ts": t0 + 2018 * MS, "price": 3100.8, "size": 1.2, "side": 1, "trade_id": "5200104"},
        # the repeated 7010004 after it is dropped as a duplicate
        {"symbol": "BTCUSDT", "ts": t0 + 2497 * MS, "price": 90999.9, "size": 0.03, "side": -1, "trade_id": "7010005"},
    ]
    assert feed.skipped_rows == 1
    batches = [e for e in events if isinstance(e, FeedBatch)]
    assert all(b.table.schema.equals(TRADES_SCHEMA) and not b.final and b.received_ns == 42 for b in batches)
    assert [b.watermark_ns for b in batches] == [t0 + x * MS for x in (101, 207, 348, 2018, 2497)]
    assert script.calls[0] == ("watch_trades_for_symbols", ((BTC, ETH),))
    # close() stopped the iteration and closed the live client, cancelling its pending watch call
    assert made[1].closed and made[1].pending == 0


def test_backoff_grows_to_the_cap_and_gives_up() -> None:
    sleeps = Sleeps()
    errors: dict[int, BaseException] = {0: ccxt.RequestTimeout("t")}
    script = Script([], errors)

    class Flaky(FakeClient):
        async def watch_trades_for_symbols(self, symbols: list[str]) -> Any:
            raise [ccxt.RequestTimeout("timeout"), ccxt.ExchangeNotAvailable("503"), ConnectionResetError()][
                len(made) % 3
            ]

    made: list[FakeClient] = []

    def make() -> FakeClient:
        made.append(Flaky(script, ALL))
        return made[-1]

    feed = CcxtLiveFeed(
        "binanceusdm",
        [BTC],
        "trades",
        client_factory=make,
        sleep=sleeps,
        rng=lambda: 1.0,
        backoff_base_s=1.0,
        backoff_factor=2.0,
        backoff_cap_s=10.0,
        jitter=0.1,
        max_reconnects=6,
    )
    with pytest.raises(ccxt.NetworkError):
        run(feed, 1)
    assert sleeps.seconds == pytest.approx([1.1, 2.2, 4.4, 8.8, 11.0, 11.0])  # min(cap, 2**k) × 1.1
    assert len(made) == 7 and all(c.closed for c in made)
    assert feed.backoff_delay(0) == pytest.approx(1.1)


def test_non_network_errors_propagate() -> None:
    script = Script([], {0: ccxt.BadSymbol("binanceusdm does not have market symbol FOO/USDT:USDT")})
    feed, made = trade_feed(script, Sleeps())
    with pytest.raises(ccxt.BadSymbol):
        run(feed, 1)
    assert made[0].closed and feed.reconnects == 0


def test_quotes_from_bids_asks() -> None:
    script = Script(recorded("binanceusdm_bidsasks.jsonl"))
    make, made = factory(script)
    feed = CcxtLiveFeed("binanceusdm", [BTC, ETH], "quotes", client_factory=make)
    events = run(feed, 2)
    t0 = ns("2026-01-12 00:00:00")
    assert all(isinstance(e, FeedBatch) and e.table.schema.equals(QUOTES_SCHEMA) for e in events)
    assert rows(events) == [
        {
            "symbol": "BTCUSDT",
            "ts": t0 + 120 * MS,
            "bid": 91000.0,
            "bid_size": 5.321,
            "ask": 91000.1,
            "ask_size": 0.874,
        },
        {"symbol": "BTCUSDT", "ts": t0 + 131 * MS, "bid": 91000.0, "bid_size": 4.9, "ask": 91000.1, "ask_size": 1.02},
        {"symbol": "ETHUSDT", "ts": t0 + 133 * MS, "bid": 3100.5, "bid_size": 40.1, "ask": 3100.51, "ask_size": 12.7},
    ]
    assert [e.watermark_ns for e in events if isinstance(e, FeedBatch)] == [t0 + 120 * MS, t0 + 133 * MS]
    assert made[0].closed


def test_quotes_fall_back_to_watch_ticker_per_symbol() -> None:
    tickers = [next(iter(r.values())) for r in recorded("binanceusdm_bidsasks.jsonl")[:1]]
    eth = recorded("binanceusdm_bidsasks.jsonl")[1][ETH]
    spot_like = {**eth, "timestamp": None}  # Binance spot's book ticker has no time: stamped on receipt
    script = Script([*tickers, spot_like])
    make, _ = factory(script, has={"watchBidsAsks": False})
    feed = CcxtLiveFeed("binanceusdm", [BTC, ETH], "quotes", client_factory=make, clock=lambda: 777)
    got = rows(run_until_rows(feed, 2))
    assert len(got) == 2
    assert {r["symbol"]: r["ts"] for r in got} == {"BTCUSDT": ns("2026-01-12") + 120 * MS, "ETHUSDT": 777}
    assert sorted(c[0] for c in script.calls[:2]) == ["watch_ticker", "watch_ticker"]
    assert {c[1] for c in script.calls[:2]} == {(BTC,), (ETH,)}


def test_bars_only_closed_candles() -> None:
    script = Script(recorded("binanceusdm_ohlcv.jsonl"))
    make, _ = factory(script)
    feed = CcxtLiveFeed("binanceusdm", [BTC, ETH], "bars:1m", client_factory=make)
    events = run(feed, 3)
    t0 = ns("2026-01-12 00:00:00")
    assert all(isinstance(e, FeedBatch) and e.table.schema.equals(BARS_SCHEMA) for e in events)
    assert [e.table.num_rows for e in events if isinstance(e, FeedBatch)] == [1, 1, 1]
    assert rows(events) == [
        # BTC 23:59 closes when the 00:00 candle appears; its last update is emitted
        {"symbol": "BTCUSDT", "ts": t0 - 60 * 10**9, "open": 90950.0, "high": 91010.0, "low": 90940.0,
         "close": 91000.1, "volume": 121.2},
        {"symbol": "ETHUSDT", "ts": t0 - 60 * 10**9, "open": 3099.0, "high": 3101.0, "low": 3098.5,
         "close": 3100.5, "volume": 2100.0},
        {"symbol": "BTCUSDT", "ts": t0, "open": 91000.1, "high": 91002.0, "low": 90999.0, "close": 91001.0,
         "volume": 15.3},
    ]  # fmt: skip
    # watermark: the earliest still-open candle (ETH 23:59 while open, then 00:00 for both)
    assert [e.watermark_ns for e in events if isinstance(e, FeedBatch)] == [t0 - 60 * 10**9, t0, t0]


def test_bars_candle_open_across_a_reconnect() -> None:
    results = recorded("binanceusdm_ohlcv.jsonl")
    t0 = ns("2026-01-12 00:00:00")
    bar_2359 = {"symbol": "BTCUSDT", "ts": t0 - 60 * 10**9, "open": 90950.0, "high": 91010.0, "low": 90940.0,
                "close": 91000.1, "volume": 121.2}  # fmt: skip
    bar_0000 = {"symbol": "BTCUSDT", "ts": t0, "open": 91000.1, "high": 91002.0, "low": 90999.0, "close": 91001.0,
                "volume": 15.3}  # fmt: skip

    def session(script: Script, count: int) -> tuple[list[FeedBatch | FeedGap], CcxtLiveFeed, Sleeps]:
        make, _ = factory(script)
        sleeps = Sleeps()
        feed = CcxtLiveFeed("binanceusdm", [BTC], "bars:1m", client_factory=make, sleep=sleeps, rng=lambda: 0.0)
        return run(feed, count), feed, sleeps

    # dropped before line 2, which refreshes the open 23:59 candle (kline messages carry the whole candle)
    # and opens 00:00: the refreshed 23:59 bar is complete and emitted; no gap is reported
    events, feed, sleeps = session(Script(results, {2: ccxt.NetworkError("closed")}), 2)
    assert [type(e).__name__ for e in events] == ["FeedBatch", "FeedBatch"]
    assert rows(events) == [bar_2359, bar_0000]
    assert sleeps.seconds == [0.5] and feed.skipped_rows == 2  # the two ETH rows (not subscribed)

    # dropped while 23:59 was open, and the next message is already the 00:00 candle: 23:59's last updates
    # are unknown, so it is not emitted and the reconnect gap starts at its open
    events, feed, _ = session(Script([results[0], results[3], results[5]], {1: ccxt.NetworkError("closed")}), 2)
    assert events[0] == FeedGap("bars:1m", "", t0 - 60 * 10**9, t0, "reconnect")
    assert rows(events) == [bar_0000]
    assert feed.skipped_rows == 1


def test_stale_stream_notice_and_close_during_wait() -> None:
    script = Script(recorded("binanceusdm_trades.jsonl")[:1])
    make, made = factory(script)
    now = [ns("2026-01-12 00:00:05")]
    feed = CcxtLiveFeed("binanceusdm", [BTC, ETH], "trades", client_factory=make, stale_after_s=0.05,
                        clock=lambda: now[0])  # fmt: skip

    async def go() -> list[FeedBatch | FeedGap]:
        out: list[FeedBatch | FeedGap] = []
        async for event in feed.events():
            out.append(event)
            now[0] += 10**9
            if len(out) == 3:
                asyncio.get_running_loop().call_later(0.01, lambda: asyncio.ensure_future(feed.close()))
        return out

    events = asyncio.run(asyncio.wait_for(go(), timeout=10))
    t0 = ns("2026-01-12 00:00:00")
    assert isinstance(events[0], FeedBatch)
    # one notice per silent period, contiguous: last trade .101 → now, then on from there
    assert events[1] == FeedGap("trades", "", t0 + 101 * MS, t0 + 6 * 10**9, "stale")
    assert events[2] == FeedGap("trades", "", t0 + 6 * 10**9, t0 + 7 * 10**9, "stale")
    assert 3 <= len(events) <= 4  # close() ended the iteration while the feed waited for data
    assert made[0].closed and made[0].pending == 0


def test_parameters_are_checked() -> None:
    with pytest.raises(ParameterError, match="'exchange_id'"):
        CcxtLiveFeed("kraken", [BTC], "trades")
    with pytest.raises(ParameterError, match="'stream'"):
        CcxtLiveFeed("bybit", [BTC], "ltp")
    with pytest.raises(ParameterError, match="'symbols'"):
        CcxtLiveFeed("bybit", [BTC, BTC], "trades")
    with pytest.raises(ParameterError, match="'backoff_factor'"):
        CcxtLiveFeed("binance", ["BTC/USDT"], "trades", backoff_factor=0.5)
    assert engine_symbol("BTC/USDT:USDT") == "BTCUSDT" and engine_symbol("ETH/BTC") == "ETHBTC"
    assert not CcxtLiveFeed("bybit", [BTC], "trades").check_trade_ids  # Bybit ids are UUIDs


# ------------------------------------------------------------------------------ ccxt.pro's real parser


class StubConnection:
    """What ccxt.pro's message handlers need of a websocket client: its URL and ``resolve``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.subscriptions: dict[str, Any] = {}
        self.resolved: list[tuple[Any, str]] = []

    def resolve(self, result: Any, message_hash: str) -> None:
        self.resolved.append((result, message_hash))


def offline_binanceusdm() -> Any:
    """A real ``ccxt.pro.binanceusdm`` with BTC/USDT:USDT loaded by hand (no network)."""
    ex = ccxt.pro.binanceusdm()
    ex.set_markets(
        [
            {
                "id": "BTCUSDT", "lowercaseId": "btcusdt", "symbol": BTC, "base": "BTC", "quote": "USDT",
                "settle": "USDT", "baseId": "BTC", "quoteId": "USDT", "settleId": "USDT", "type": "swap",
                "spot": False, "margin": False, "swap": True, "future": False, "option": False, "contract": True,
                "linear": True, "inverse": False, "contractSize": 1.0, "active": True, "precision": {},
                "limits": {}, "info": {},
            }
        ]
    )  # fmt: skip
    return ex


def test_ccxt_pro_binance_parses_raw_payloads_into_feed_rows() -> None:
    async def parse() -> tuple[list[Any], list[Any]]:
        ex = offline_binanceusdm()
        conn = StubConnection("wss://fstream.binance.com/ws")
        raw_trades = [
            {"e": "trade", "E": 1768176000105, "T": 1768176000101, "s": "BTCUSDT", "t": 7010001, "p": "91000.10",
             "q": "0.002", "X": "MARKET", "m": False},
            {"e": "aggTrade", "E": 1768176000215, "a": 2900001, "s": "BTCUSDT", "p": "91000.00", "q": "0.010",
             "f": 7010002, "l": 7010003, "T": 1768176000211, "m": True},
        ]  # fmt: skip
        kline = {"e": "kline", "E": 1768176000300, "s": "BTCUSDT", "k": {
            "t": 1768176000000, "T": 1768176059999, "s": "BTCUSDT", "i": "1m", "f": 7010001, "L": 7010003,
            "o": "91000.10", "c": "91000.00", "h": "91000.10", "l": "91000.00", "v": "0.012", "n": 3, "x": False,
            "q": "1092.0002", "V": "0.002", "Q": "182.0002", "B": "0"}}  # fmt: skip
        for m in [*raw_trades, kline]:
            ex.handle_message(conn, m)
        trades = [dict(t) for t in conn.resolved[1][0]]
        candles = [list(c) for c in conn.resolved[2][0][2]]
        await ex.close()
        return trades, candles

    trades, candles = asyncio.run(parse())
    # ccxt's unified trade has the keys of the hand-recorded fixture
    assert set(trades[0]) == set(recorded("binanceusdm_trades.jsonl")[0][0])
    assert (trades[0]["symbol"], trades[0]["side"], trades[1]["side"]) == (BTC, "buy", "sell")
    assert candles == [[1768176000000, 91000.1, 91000.1, 91000.0, 91000.0, 0.012]]

    # the parsed structures, served by a fake client, become feed rows
    script = Script([trades[:1], trades[1:]])
    make, _ = factory(script)
    feed = CcxtLiveFeed("binanceusdm", [BTC], "trades", client_factory=make, check_trade_ids=False)
    t0 = ns("2026-01-12 00:00:00")
    assert rows(run(feed, 2)) == [
        {"symbol": "BTCUSDT", "ts": t0 + 101 * MS, "price": 91000.1, "size": 0.002, "side": 1, "trade_id": "7010001"},
        {"symbol": "BTCUSDT", "ts": t0 + 211 * MS, "price": 91000.0, "size": 0.01, "side": -1, "trade_id": "2900001"},
    ]
