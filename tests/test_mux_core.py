"""MuxCore on real ticks, quotes and bars: exactly-once in-order delivery, shared batches, conflation,
back-pressure, watermarks, replay and subscription errors."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_bars import (
    DATA_DIR,
    PERP_1M,
    assert_bars_equal,
    load_btcusdt_trades,
    merged_trades,
    reference_bars,
)

from engine.data import load_bars, resample
from engine.errors import ParameterError
from engine.feeds.base import FeedBatch
from engine.marketdata.mux import MuxCore
from engine.marketdata.schemas import (
    END_OF_STREAM,
    QUOTES_SCHEMA,
    MarketBatch,
    decode_delivery,
    encode_delivery,
    merge_batches,
    stream_timeframe_ns,
)

BTC_QUOTES = DATA_DIR / "nautilus_binance_btcusdt_quotes_2021-01-08.parquet"
EURUSD_TICKS = DATA_DIR / "nautilus_histdata_eurusd_ticks_2020-01.parquet"

pytestmark = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"real data not found at {DATA_DIR}")


def _ns(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.cast(pc.cast(column, pa.timestamp("ns", tz="UTC")), pa.int64()).to_numpy()


def feed(table: pa.Table, stream: str, seed: int, max_size: int = 300) -> Iterator[FeedBatch]:
    """Random-size feed batches with exact, strict watermarks: a batch ends where ``ts`` changes and
    its watermark is the next batch's first ts (all its rows are earlier); final at the end."""
    rng = np.random.default_rng(seed)
    ts = _ns(table["ts"])
    a = 0
    while a < table.num_rows:
        b = min(table.num_rows, a + int(rng.integers(1, max_size)))
        while b < table.num_rows and ts[b] == ts[b - 1]:
            b += 1
        final = b == table.num_rows
        yield FeedBatch(stream, table.slice(a, b - a), END_OF_STREAM if final else int(ts[b]), 0, final)
        a = b


def load_quotes() -> pa.Table:
    """Real quotes of two symbols on one clock: Binance BTCUSDT top of book and HistData EUR/USD ticks
    (shifted to start with BTCUSDT; sizes 0 as in the file), in time order."""
    btc = pq.read_table(BTC_QUOTES)
    eur = pq.read_table(EURUSD_TICKS)
    bts, ets = _ns(btc["timestamp"]), _ns(eur["timestamp"])
    ets = ets - ets[0] + bts[0]
    rows = {
        "symbol": ["BTCUSDT"] * btc.num_rows + ["EURUSD"] * eur.num_rows,
        "ts": np.concatenate([bts, ets]),
        "bid": np.concatenate([btc["bid"].to_numpy(), eur["bid"].to_numpy()]),
        "bid_size": np.concatenate([btc["bid_size"].to_numpy(), np.zeros(eur.num_rows)]),
        "ask": np.concatenate([btc["ask"].to_numpy(), eur["ask"].to_numpy()]),
        "ask_size": np.concatenate([btc["ask_size"].to_numpy(), np.zeros(eur.num_rows)]),
    }
    order = np.argsort(np.asarray(rows["ts"]), kind="stable")
    table = pa.table({k: np.asarray(v)[order] for k, v in rows.items()})
    return table.set_column(1, "ts", pa.array(table["ts"].to_numpy(), pa.int64()).cast(QUOTES_SCHEMA.field("ts").type)
                            ).cast(QUOTES_SCHEMA)


class Harness:
    """Drives a MuxCore like the actor would; subscribers ack after ``lag`` rounds (None: never)."""

    def __init__(self, core: MuxCore, lags: dict[str, int | None], inflight: int = 4) -> None:
        self.core, self.lags, self.inflight = core, lags, inflight
        self.got: dict[str, list[MarketBatch]] = defaultdict(list)
        self.pending: dict[str, list[tuple[int, int]]] = defaultdict(list)  # (round due, n)
        self.round = 0
        self.max_depth = 0

    def step(self) -> None:
        self.round += 1
        for sub_id, batches in self.core.deliveries(self.inflight):
            self.got[sub_id].extend(batches)
            lag = self.lags[sub_id]
            if lag is not None:
                self.pending[sub_id].append((self.round + lag, len(batches)))
        for sub_id, due in self.pending.items():
            while due and due[0][0] <= self.round:
                self.core.ack(sub_id, due.pop(0)[1])
        self.max_depth = max([self.max_depth, *self.core.stats().queue_depth.values()])

    def run(self, batches: Iterator[FeedBatch], clock_step: int = 1_000_000) -> None:
        now = 0
        for batch in batches:
            now += clock_step
            self.core.ingest(batch, now)
            self.core.flush(now)
            self.step()
        self.drain()

    def drain(self) -> None:
        self.core.flush(10**18, force=True)
        for _ in range(10_000):
            self.lags = {k: (0 if v is None else v) for k, v in self.lags.items()}
            self.step()
            if not any(self.core.stats().queue_depth.values()) and not any(self.core.stats().inflight.values()):
                return


def by_stream(batches: list[MarketBatch]) -> dict[str, list[MarketBatch]]:
    out: dict[str, list[MarketBatch]] = defaultdict(list)
    for b in batches:
        out[b.stream].append(b)
    return out


def assert_stream_contract(batches: list[MarketBatch], max_rows: int) -> None:
    """seq 1..N contiguous, watermarks non-decreasing and kept (no later row before one), END at the end."""
    assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
    marks = [b.watermark_ns for b in batches]
    assert marks == sorted(marks) and marks[-1] == END_OF_STREAM
    tf = stream_timeframe_ns(batches[0].stream)
    for i, b in enumerate(batches):
        assert b.table.num_rows <= max_rows
        later = [x.table for x in batches[i + 1:] if x.table.num_rows]
        if later:
            events = _ns(pa.concat_tables(later)["ts"]) + tf
            assert (events > b.watermark_ns).all() if tf else (events >= b.watermark_ns).all()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_subscriber_gets_every_trade_and_bar_once_in_order(seed: int) -> None:
    trades = merged_trades()
    core = MuxCore("mux:shard-0", max_rows=500, window_ns=3_000_000, max_queue=10_000)
    streams = {"A": {"trades", "bars:1m", "bars:5m", "ltp"}, "B": {"trades"}, "C": {"bars:1m", "bars:60m"}}
    for sub_id, wanted in streams.items():
        core.subscribe(sub_id, wanted, None)
    assert core.upstream_streams() == {"trades"}
    h = Harness(core, {"A": 0, "B": 3, "C": 1}, inflight=3)
    h.run(feed(trades, "trades", seed))

    got = {k: by_stream(v) for k, v in h.got.items()}
    assert set(got["C"]) == {"bars:1m", "bars:1h"}  # "bars:60m" is canonicalised
    for per_stream in got.values():
        for batches in per_stream.values():
            assert_stream_contract(batches, 500)
    for sub_id in ("A", "B"):
        assert pa.concat_tables([b.table for b in got[sub_id]["trades"]]).equals(trades)
    for tf, stream in (("1m", "bars:1m"), ("5m", "bars:5m"), ("1h", "bars:1h")):
        subs = [s for s in got if stream in got[s]]
        tables = [pa.concat_tables([b.table for b in got[s][stream]]) for s in subs]
        for table in tables:
            assert_bars_equal(table, reference_bars(trades, tf))
    # one object per batch, shared by every subscriber of the stream
    for a, b in (("A", "B"), ("A", "C")):
        common = set(got[a]) & set(got[b])
        for stream in common:
            assert all(x is y for x, y in zip(got[a][stream], got[b][stream], strict=True))
    # LTP: the last trade per symbol, in the ltp() view and in the stream's last rows
    ltp_rows = pa.concat_tables([b.table for b in got["A"]["ltp"]]).to_pandas()
    last = trades.to_pandas().groupby("symbol").last()
    for symbol, row in last.iterrows():
        assert core.ltp()[symbol] == (row["ts"].value, row["price"])
        assert ltp_rows[ltp_rows["symbol"] == symbol]["price"].iloc[-1] == row["price"]
    stats = core.stats()
    assert stats.ticks_in == trades.num_rows and stats.late_ticks == 0
    assert stats.rows_out["trades"] == trades.num_rows
    assert stats.batches_cut["trades"] == len(got["A"]["trades"])
    assert not stats.backpressure and sum(stats.conflations.values()) == 0


def test_batches_cut_by_window_and_size_without_splitting_ties() -> None:
    trades = load_btcusdt_trades()
    ts = _ns(trades["ts"])
    core = MuxCore("mux:BTCUSDT", max_rows=100, window_ns=50)
    core.subscribe("s", {"trades"})
    core.ingest(FeedBatch("trades", trades.slice(0, 250), int(ts[250]), 0), now_ns=1_000)
    (_, first), = core.deliveries(10)
    sizes = [b.table.num_rows for b in first]
    # two batches cut at once, each ending before a run of equal timestamps (BTCUSDT has ties there)
    assert len(sizes) == 2 and all(90 < n <= 100 for n in sizes) and sizes != [100, 100]
    assert core.flush(1_049) == 0 and core.deliveries(10) == []
    assert core.flush(1_050) == 1
    (_, [last]), = core.deliveries(10)
    assert last.table.num_rows == 250 - sum(sizes) and last.ingest_ns == 1_000 and last.seq == 3
    batches = [*first, last]
    assert pa.concat_tables([b.table for b in batches]).equals(trades.slice(0, 250))
    for a, b in itertools.pairwise(batches):
        a_ts, b_ts = _ns(a.table["ts"]), _ns(b.table["ts"])
        assert a_ts[-1] < b_ts[0] and a.watermark_ns == b_ts[0]  # the tightest watermark the rows allow
    assert last.watermark_ns == ts[250]
    assert core.flush(5_000, force=True) == 0  # nothing waiting, watermark unchanged


def test_quotes_conflate_for_a_lagging_subscriber_only() -> None:
    quotes = load_quotes()
    core = MuxCore("mux:fx-crypto", max_rows=50, window_ns=1, max_queue=6, low_water=2)
    core.subscribe("fast", {"quotes"})
    core.subscribe("slow", {"quotes"})
    h = Harness(core, {"fast": 0, "slow": None}, inflight=2)  # "slow" takes 2 batches and never acks
    now = 0
    for batch in feed(quotes, "quotes", seed=7, max_size=40):
        now += 10
        core.ingest(batch, now)
        core.flush(now)
        h.step()
        assert not core.backpressure()  # quotes are conflated, never back-pressure
        assert core.stats().queue_depth["slow"] <= 6
    fast = h.got["fast"]
    assert [b.seq for b in fast] == list(range(1, len(fast) + 1))
    assert pa.concat_tables([b.table for b in fast]).equals(quotes)
    stats = core.stats()
    assert stats.conflations["slow"] > 0 and stats.conflations["fast"] == 0
    slow_pending = list(core._subs["slow"].queue)
    fast_by_seq = {b.seq: b for b in fast}
    conflated = [b for b in slow_pending if b is not fast_by_seq[b.seq]]
    assert conflated and [b.seq for b in h.got["slow"]] == [1, 2]
    newest = slow_pending[-1]
    assert newest.seq == fast[-1].seq and newest.watermark_ns == fast[-1].watermark_ns == END_OF_STREAM
    # a conflated batch holds the latest quote of each symbol among the batches it replaced
    for merged in conflated:
        upto = pa.concat_tables([b.table for b in fast if 2 < b.seq <= merged.seq]).to_pandas()
        latest = upto.groupby("symbol").tail(1).sort_values("ts", kind="stable")
        got = merged.table.to_pandas()
        assert sorted(got["symbol"]) == sorted(latest["symbol"])
        for _, row in got.iterrows():
            ref = latest[latest["symbol"] == row["symbol"]].iloc[0]
            assert (row == ref).all()


def test_trades_never_dropped_and_backpressure_engages_and_releases() -> None:
    trades = load_btcusdt_trades()
    core = MuxCore("mux:BTCUSDT", max_rows=20, window_ns=0, max_queue=8, low_water=3)
    core.subscribe("fast", {"trades"})
    core.subscribe("slow", {"trades", "bars:1m"})
    fast_got: list[MarketBatch] = []
    slow_got: list[MarketBatch] = []
    batches = feed(trades, "trades", seed=11, max_size=30)
    now = 0
    while not core.backpressure():
        now += 1
        core.ingest(next(batches), now)
        core.flush(now)
        for sub_id, got in core.deliveries(2):
            if sub_id == "fast":
                fast_got += got
                core.ack("fast", len(got))
            else:
                slow_got += got  # in flight forever for now
    depth = core.stats().queue_depth
    assert depth["slow"] > 8 and depth["fast"] == 0  # the fast one is not held back
    assert sum(b.table.num_rows for b in fast_got) == core.stats().rows_out["trades"]
    # the actor stops pulling; the slow one drains: still back-pressured above low water
    while core.stats().queue_depth["slow"] > 3:
        assert core.backpressure()
        core.ack("slow", 2)
        slow_got += core.deliveries(2)[0][1]
    assert not core.backpressure()
    for batch in batches:  # resume intake to the end
        now += 1
        core.ingest(batch, now)
        core.flush(now)
        for sub_id, got in core.deliveries(50):
            (fast_got if sub_id == "fast" else slow_got).extend(got)
            core.ack(sub_id, len(got))
    core.flush(now, force=True)
    for sub_id, got in core.deliveries(10_000):
        (fast_got if sub_id == "fast" else slow_got).extend(got)
    slow_trades = [b for b in slow_got if b.stream == "trades"]
    assert [b.seq for b in slow_trades] == list(range(1, len(slow_trades) + 1))
    assert all(x is y for x, y in zip(fast_got, slow_trades, strict=True))
    assert pa.concat_tables([b.table for b in slow_trades]).equals(trades)
    assert sum(core.stats().conflations.values()) == 0


def test_replay_since_returns_exactly_the_missed_batches_or_none() -> None:
    trades = load_btcusdt_trades()
    core = MuxCore("mux:BTCUSDT", max_rows=50, window_ns=0, history=10)
    core.subscribe("keep", {"trades"})
    core.subscribe("bot", {"trades"})
    all_batches: list[MarketBatch] = []
    feed_iter = feed(trades, "trades", seed=5, max_size=40)

    def pump(n: int) -> None:
        for _, batch in zip(range(n), feed_iter, strict=False):
            core.ingest(batch, 0)
            core.flush(0)
        for sub_id, got in core.deliveries(10_000):
            if sub_id == "keep":
                all_batches.extend(got)
            core.ack(sub_id, len(got))

    pump(6)
    seen = len(all_batches)
    checkpoint = all_batches[-1].watermark_ns  # the bot processed everything up to here, then died
    core.unsubscribe("bot")
    pump(4)
    missed = all_batches[seen:]
    assert 0 < len(missed) <= 10
    core.subscribe("bot", {"trades"})
    assert core.replay_since("bot", "trades", checkpoint) == missed  # the same objects, in order
    assert all(x is y for x, y in zip(core.replay_since("bot", "trades", checkpoint) or [], missed, strict=True))
    assert core.replay_since("bot", "trades", all_batches[-1].watermark_ns) == []
    # rows of the replay are exactly the trades at or after the checkpoint, up to the live boundary
    replayed = pa.concat_tables([b.table for b in missed])
    ts = _ns(trades["ts"])
    start = int(np.searchsorted(ts, checkpoint))
    assert replayed.equals(trades.slice(start, replayed.num_rows))
    pump(40)  # history (10 batches) no longer reaches the checkpoint
    core.unsubscribe("bot")
    core.subscribe("bot", {"trades"})
    assert core.replay_since("bot", "trades", checkpoint) is None
    with pytest.raises(ParameterError) as err:
        core.replay_since("bot", "quotes", checkpoint)
    assert err.value.field == "stream"


def test_bars_feed_gives_bars_higher_timeframes_and_ltp() -> None:
    panel = load_bars(PERP_1M, symbols=["DOGEUSDT", "LINKUSDT", "TRXUSDT"])
    panel = panel.sort_by([("ts", "ascending"), ("symbol", "ascending")]).slice(0, 3 * 60 * 30)
    core = MuxCore("mux:replay", bars_from="bars", max_rows=64, window_ns=0)
    core.subscribe("bot", {"bars:15m", "ltp"})
    assert core.upstream_streams() == {"bars:1m"}
    h = Harness(core, {"bot": 0})
    ts = _ns(panel["ts"])
    batches = []
    for a in range(0, panel.num_rows, 100):
        b = min(panel.num_rows, a + 100)
        # bars feed watermark: bars with close <= it are all delivered (the next batch's first open)
        batches.append(FeedBatch("bars:1m", panel.slice(a, b - a), int(ts[b]) if b < panel.num_rows else 0,
                                 0, b == panel.num_rows))
    h.run(iter(batches))
    got = by_stream(h.got["bot"])
    bars15 = pa.concat_tables([b.table for b in got["bars:15m"]])
    bars15 = bars15.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    ref = resample(panel, "15m")
    for c in ("symbol", "ts", "open", "high", "low", "close"):
        assert bars15[c].equals(ref[c])
    np.testing.assert_allclose(bars15["volume"].to_numpy(), ref["volume"].to_numpy(), rtol=1e-12)
    last = panel.to_pandas().groupby("symbol").last()
    for symbol, row in last.iterrows():
        assert core.ltp()[symbol] == (row["ts"].value + 60 * 10**9, row["close"])
    assert core.stats().bars_in == panel.num_rows


def test_subscription_and_intake_errors_name_the_field() -> None:
    core = MuxCore("mux:BTCUSDT", symbols=["BTCUSDT"])
    cases = [
        (("", {"trades"}, None), "sub_id"),
        (("a", set(), None), "streams"),
        (("a", {"candles"}, None), "streams"),
        (("a", {"bars:30s"}, None), "streams"),
        (("a", {"bars:7x"}, None), "streams"),
        (("a", {"trades"}, {"ETHUSDT"}), "symbols"),
        (("a", {"trades"}, set()), "symbols"),
    ]
    for args, field_name in cases:
        with pytest.raises(ParameterError) as err:
            core.subscribe(*args)
        assert err.value.field == field_name, args
    core.subscribe("a", {"trades"}, {"BTCUSDT"})
    with pytest.raises(ParameterError) as err:
        core.subscribe("a", {"quotes"})
    assert err.value.field == "sub_id"
    with pytest.raises(ParameterError) as err:
        core.unsubscribe("nobody")
    assert err.value.field == "sub_id"
    trades = load_btcusdt_trades()
    with pytest.raises(ParameterError) as err:
        core.ingest(FeedBatch("bars:1m", trades, 0, 0), 0)
    assert err.value.field == "stream"
    with pytest.raises(ParameterError) as err:
        core.ingest(FeedBatch("trades", trades.drop_columns(["side"]), 0, 0), 0)
    assert err.value.field == "table"
    with pytest.raises(ParameterError) as err:
        core.ack("a", 1)
    assert err.value.field == "n_batches"
    for kwargs, field_name in (({"max_rows": 0}, "max_rows"), ({"bars_from": "x"}, "bars_from"),
                               ({"max_queue": 4, "low_water": 4}, "low_water")):
        with pytest.raises(ParameterError) as err:
            MuxCore("m", **kwargs)
        assert err.value.field == field_name


def test_upstream_opened_once_for_many_subscribers() -> None:
    core = MuxCore("mux:BTCUSDT")
    assert core.upstream_streams() == set()
    for i in range(20):
        core.subscribe(f"bot:{i}", {"bars:1m", "bars:15m"} if i % 2 else {"ltp", "quotes"})
    assert core.upstream_streams() == {"trades", "quotes"}
    for i in range(0, 20, 2):
        core.unsubscribe(f"bot:{i}")
    assert core.upstream_streams() == {"trades"}


def test_calls_limited_deliveries_merge_into_one_batch_per_stream_and_lose_nothing() -> None:
    """With one call in flight per subscriber, what queues meanwhile goes out as one delivery, merged
    per stream (rows in order, last seq and watermark, oldest ingest time), and survives the bytes
    encoding the actor sends inline: every trade and bar arrives once, in order."""
    trades = merged_trades()
    core = MuxCore("mux:shard-0", max_rows=300, window_ns=2_000_000, max_queue=10_000)
    core.subscribe("fast", {"trades", "bars:1m"})
    core.subscribe("slow", {"trades", "bars:1m"})
    got: dict[str, list[MarketBatch]] = defaultdict(list)
    calls: dict[str, int] = defaultdict(int)
    in_flight: dict[str, tuple[int, int]] = {}  # sub -> (round due, batches)
    lag = {"fast": 0, "slow": 7}
    now = 0
    for rnd, batch in enumerate(itertools.chain(feed(trades, "trades", 3), [None] * 200)):
        now += 1_000_000
        if batch is not None:
            core.ingest(batch, now)
        core.flush(now, force=batch is None)
        for sub_id, (due, n) in list(in_flight.items()):
            if due <= rnd:
                core.ack(sub_id, n)
                del in_flight[sub_id]
        for sub_id, batches in core.deliveries(inflight_limit=64, calls_limit=1):
            assert sub_id not in in_flight  # never two calls in flight
            merged = merge_batches(batches)
            assert len({b.stream for b in merged}) == len(merged)
            for stream in {b.stream for b in batches}:
                parts = [b for b in batches if b.stream == stream]
                m = next(b for b in merged if b.stream == stream)
                assert (m.seq, m.watermark_ns) == (parts[-1].seq, parts[-1].watermark_ns)
                assert m.ingest_ns == min(b.ingest_ns for b in parts)
            got[sub_id].extend(decode_delivery(encode_delivery(merged)))
            calls[sub_id] += 1
            in_flight[sub_id] = (rnd + lag[sub_id], len(batches))
    for sub_id in ("fast", "slow"):
        streams = by_stream(got[sub_id])
        assert pa.concat_tables([b.table for b in streams["trades"]]).equals(trades)
        assert_bars_equal(pa.concat_tables([b.table for b in streams["bars:1m"]]), reference_bars(trades, "1m"))
        seqs = [b.seq for b in streams["trades"]]
        assert seqs == sorted(seqs) and seqs[-1] == core.stats().batches_cut["trades"]
    assert calls["slow"] < calls["fast"]  # the lagging subscriber got fewer, bigger deliveries
    with pytest.raises(ParameterError, match="calls_limit"):
        core.deliveries(4, calls_limit=0)
    with pytest.raises(ParameterError, match="payload"):
        decode_delivery(b"\x80\x05K\x01.")  # the int 1, not batches
