"""ReplayFeed on real data: order, batching, exact watermarks, pacing with a fake clock, resume, close."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from engine.data.catalog import load_bars
from engine.data.ticks import load_trades
from engine.errors import ParameterError
from engine.feeds.base import FeedBatch
from engine.feeds.replay import ReplayFeed, replay_from_catalog
from engine.marketdata.schemas import END_OF_STREAM

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PANEL_1M = DATA / "binance_usdm_perp_1m_13sym_2026-01-04_2026-01-17.parquet"
BTC_TRADES = DATA / "nautilus_binance_btcusdt_trades_2021-01-08.parquet"
SYMBOLS = ["DOGEUSDT", "LINKUSDT", "SUIUSDT"]
MINUTE = 60 * 10**9

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")


def ns(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value)


def ts_of(table: pa.Table) -> np.ndarray:
    return table["ts"].combine_chunks().cast(pa.int64()).to_numpy()


@pytest.fixture(scope="module")
def bars() -> pa.Table:
    return load_bars(PANEL_1M, SYMBOLS, ns("2026-01-05"), ns("2026-01-06"))


@pytest.fixture(scope="module")
def trades() -> pa.Table:
    return load_trades(BTC_TRADES, symbol="BTCUSDT")


def by_ts(table: pa.Table) -> pa.Table:
    """``table`` in replay order: by ts, ties in table order."""
    return table.take(pa.array(np.argsort(ts_of(table), kind="stable")))


class FakeTime:
    """A wall clock that only moves when the feed sleeps (or the test says so)."""

    def __init__(self, start: int = 1_700_000_000 * 10**9) -> None:
        self.now = start
        self.start = start
        self.sleeps: list[float] = []

    def clock(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += round(seconds * 1e9)


def collect(feed: ReplayFeed, on_batch: object = None) -> list[FeedBatch]:
    async def run() -> list[FeedBatch]:
        out: list[FeedBatch] = []
        async for event in feed.events():
            assert isinstance(event, FeedBatch)
            out.append(event)
            if callable(on_batch):
                on_batch(event)
        return out

    return asyncio.run(run())


def check_bar_watermarks(batches: list[FeedBatch], tf: int) -> None:
    """Watermark rules for bars, checked against every later batch (via the suffix minimum of their opens)."""
    firsts = [int(ts_of(b.table).min()) if b.table.num_rows else END_OF_STREAM for b in batches]
    suffix = np.minimum.accumulate(np.array(firsts, dtype=np.int64)[::-1])[::-1]  # suffix[i] = min(firsts[i:])
    for k, b in enumerate(batches):
        if b.final:
            assert k == len(batches) - 1 and b.watermark_ns == END_OF_STREAM
            continue
        assert b.watermark_ns == firsts[k + 1]  # the next bar's open ...
        assert suffix[k + 1] == b.watermark_ns  # ... which is the earliest open of every later batch, so
        assert suffix[k + 1] + tf > b.watermark_ns  # no later bar closes at or before the watermark,
        assert int(ts_of(b.table).max()) < b.watermark_ns  # and every bar opening before it is delivered


def test_bars_fast_replay_batches_and_watermarks(bars: pa.Table) -> None:
    assert bars.num_rows == 3 * 1440
    batches = collect(ReplayFeed(bars, "bars:1m", batch_rows=100))
    assert pa.concat_tables([b.table for b in batches]).equals(by_ts(bars))
    # symbol order within each minute is the table's (the catalog sorts by symbol)
    assert batches[0].table["symbol"].to_pylist()[:3] == SYMBOLS
    sizes = [b.table.num_rows for b in batches]
    assert sizes == [99] * 43 + [63]  # 100 would split a minute: cut back to 33 whole minutes
    for a, b in itertools.pairwise(batches):
        assert ts_of(a.table)[-1] < ts_of(b.table)[0]  # a timestamp is never split across batches
    assert [b.final for b in batches] == [False] * 43 + [True]
    check_bar_watermarks(batches, MINUTE)


def test_bars_time_slice_larger_than_batch_rows(bars: pa.Table) -> None:
    batches = collect(ReplayFeed(bars, "bars:1m", batch_rows=2))
    assert all(b.table.num_rows == 3 for b in batches)  # one whole minute each, never 2 + 1
    assert len(batches) == 1440
    check_bar_watermarks(batches, MINUTE)


def test_trades_fast_replay_exact_and_watermarks(trades: pa.Table) -> None:
    batches = collect(ReplayFeed(trades, "trades", batch_rows=64))
    assert pa.concat_tables([b.table for b in batches]).equals(trades)
    assert [b.table.num_rows for b in batches] == [64] * 31 + [17]
    for k, b in enumerate(batches[:-1]):
        assert b.watermark_ns == ts_of(batches[k + 1].table)[0]
        for later in batches[k + 1 :]:
            assert (ts_of(later.table) >= b.watermark_ns).all()  # no later trade has ts < watermark
    assert batches[-1].final and batches[-1].watermark_ns == END_OF_STREAM
    # the file has simultaneous trades; a split inside them still gives a true watermark
    ts = ts_of(trades)
    assert (ts[1:] == ts[:-1]).any()


def test_multi_symbol_ticks_merge_by_ts(trades: pa.Table) -> None:
    other = trades.set_column(0, "symbol", pa.array(["BTCUSDT2"] * trades.num_rows))
    table = pa.concat_tables([trades.slice(0, 500), other.slice(250, 500)])  # two symbols, each ts-sorted
    batches = collect(ReplayFeed(table, "trades", batch_rows=128))
    out = pa.concat_tables([b.table for b in batches])
    assert out.equals(by_ts(table))
    assert (np.diff(ts_of(out)) >= 0).all()
    assert set(out["symbol"].to_pylist()) == {"BTCUSDT", "BTCUSDT2"}


def test_speed_60_over_ten_minutes_of_bars(bars: pa.Table) -> None:
    ten = bars.filter(pa.compute.less(bars["ts"], pa.scalar(ns("2026-01-05 00:10"), bars["ts"].type)))
    fake = FakeTime()
    batches = collect(ReplayFeed(ten, "bars:1m", speed=60.0, clock=fake.clock, sleep=fake.sleep))
    # closes run 00:01 … 00:10: 9 minutes of event time after the first, at 60× = 9 s of wall time
    assert sum(fake.sleeps) == pytest.approx(9.0, abs=1e-9)
    assert fake.sleeps == pytest.approx([1.0] * 9)
    assert [b.table.num_rows for b in batches] == [3] * 10  # one minute per batch, as each closes
    for k, b in enumerate(batches):
        assert b.received_ns - fake.start == k * 10**9
    check_bar_watermarks(batches, MINUTE)


def test_speed_1_trades_pacing_is_exact(trades: pa.Table) -> None:
    fake = FakeTime()
    ts = ts_of(trades)
    batches = collect(ReplayFeed(trades, "trades", speed=1.0, clock=fake.clock, sleep=fake.sleep))
    assert pa.concat_tables([b.table for b in batches]).equals(trades)
    assert sum(fake.sleeps) == pytest.approx((ts[-1] - ts[0]) / 1e9, abs=1e-6)
    assert len(batches) == len(np.unique(ts))  # each batch: the trades of one instant, when it is due
    for b in batches:
        t = ts_of(b.table)
        assert (t - ts[0] == b.received_ns - fake.start).all()


def test_paced_slow_consumer_gets_everything_due(trades: pa.Table) -> None:
    fake = FakeTime()
    ts = ts_of(trades)

    def consume(_: FeedBatch) -> None:
        fake.now += 5 * 10**9  # the consumer takes 5 s of wall time per batch

    feed = ReplayFeed(trades, "trades", speed=2.0, batch_rows=300, clock=fake.clock, sleep=fake.sleep)
    batches = collect(feed, consume)
    assert pa.concat_tables([b.table for b in batches]).equals(trades)
    for k, b in enumerate(batches):
        elapsed = b.received_ns - fake.start
        t = ts_of(b.table)
        assert ((t - ts[0]) / 2.0 <= elapsed).all()  # nothing early
        if b.table.num_rows < 300 and not b.final:  # not cut by batch_rows: every due row is in it
            nxt = ts_of(batches[k + 1].table)[0]
            assert (nxt - ts[0]) / 2.0 > elapsed
    assert max(b.table.num_rows for b in batches) == 300


def test_window_groups_trades_per_second(trades: pa.Table) -> None:
    second = 10**9
    batches = collect(ReplayFeed(trades, "trades", window_ns=second, batch_rows=10_000))
    assert pa.concat_tables([b.table for b in batches]).equals(trades)
    windows = [np.unique(ts_of(b.table) // second) for b in batches]
    assert all(len(w) == 1 for w in windows)
    assert len(batches) == len(np.unique(ts_of(trades) // second))
    fake = FakeTime()
    paced = collect(ReplayFeed(trades, "trades", speed=1.0, window_ns=second, clock=fake.clock, sleep=fake.sleep))
    assert [b.table.num_rows for b in paced] == [b.table.num_rows for b in batches]
    first_end = (ts_of(trades)[0] // second + 1) * second
    for b in paced:  # a window is released when its end is due
        end = (ts_of(b.table)[0] // second + 1) * second
        assert b.received_ns - fake.start == end - first_end


def test_start_after_ns_resumes(bars: pa.Table, trades: pa.Table) -> None:
    cut = ns("2026-01-05 12:00")
    batches = collect(ReplayFeed(bars, "bars:1m", start_after_ns=cut))
    out = pa.concat_tables([b.table for b in batches])
    assert ts_of(out)[0] == cut + MINUTE and out.num_rows == 3 * (720 - 1)
    assert out.equals(by_ts(bars).slice(3 * 721))
    ts = ts_of(trades)
    resumed = collect(ReplayFeed(trades, "trades", start_after_ns=int(ts[999])))
    got = pa.concat_tables([b.table for b in resumed])
    assert got.num_rows == int((ts > ts[999]).sum()) and (ts_of(got) > ts[999]).all()
    empty = collect(ReplayFeed(trades, "trades", start_after_ns=int(ts[-1])))
    assert len(empty) == 1 and empty[0].final and empty[0].table.num_rows == 0
    assert empty[0].watermark_ns == END_OF_STREAM


def test_close_stops_a_sleeping_replay(trades: pa.Table) -> None:
    async def run() -> tuple[int, float]:
        # real clock and sleep, 1e-3 × real time: the 46 s of trades would take 13 hours
        feed = ReplayFeed(trades, "trades", speed=1e-3)
        got = 0
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        loop.call_later(0.2, lambda: asyncio.ensure_future(feed.close()))
        async for _ in feed.events():
            got += 1
        await feed.close()  # idempotent
        return got, loop.time() - t0

    got, took = asyncio.run(run())
    assert got == 1  # only the first instant was due
    assert took < 2.0


def test_replay_from_catalog(trades: pa.Table) -> None:
    feed = replay_from_catalog(PANEL_1M, "bars:1m", SYMBOLS, ns("2026-01-05"), ns("2026-01-05 01:00"))
    out = pa.concat_tables([b.table for b in collect(feed)])
    assert out.num_rows == 180 and feed.symbols == SYMBOLS
    with pytest.raises(ParameterError) as info:
        replay_from_catalog(PANEL_1M, "bars:5m", SYMBOLS, ns("2026-01-05"), ns("2026-01-06"))
    assert info.value.field == "stream"
    assert "'bars:5m' has bars of 300000000000 ns but the file's bars are 60000000000 ns apart" in str(info.value)
    got = pa.concat_tables([b.table for b in collect(replay_from_catalog(BTC_TRADES, "trades", batch_rows=500))])
    assert got.equals(trades.set_column(0, "symbol", pa.array([BTC_TRADES.stem] * trades.num_rows)))
    with pytest.raises(ParameterError, match="'stream'"):
        replay_from_catalog(BTC_TRADES, "ltp")


def test_bad_arguments(bars: pa.Table, trades: pa.Table) -> None:
    with pytest.raises(ParameterError, match="'table'"):
        ReplayFeed(trades, "bars:1m")
    with pytest.raises(ParameterError, match="'stream'"):
        ReplayFeed(trades, "ticks")
    with pytest.raises(ParameterError, match="'speed'"):
        ReplayFeed(trades, "trades", speed=0.0)
    with pytest.raises(ParameterError, match="'batch_rows'"):
        ReplayFeed(trades, "trades", batch_rows=0)
    with pytest.raises(ParameterError, match="'window_ns'"):
        ReplayFeed(bars, "bars:1m", window_ns=-1)
