"""Bars from real trade ticks (TickBarBuilder) and higher timeframes from real 1m bars (BarAggregator).

References are independent: a pandas groupby over the whole tick file, and
``engine.data.resample.resample`` (DuckDB) over the whole bar panel. The builders are fed the same data
in random batch splits (hypothesis, derandomized) with watermarks advanced between batches.
OHLC must be equal bit for bit; volumes to a relative 1e-12 (different summation order).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data import load_bars, resample
from engine.errors import ParameterError
from engine.marketdata.bars import BarAggregator, TickBarBuilder
from engine.marketdata.schemas import BARS_SCHEMA, END_OF_STREAM, TRADES_SCHEMA
from engine.timeframes import NS_PER_MINUTE, timeframe_ns

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
BTC_TRADES = DATA_DIR / "nautilus_binance_btcusdt_trades_2021-01-08.parquet"
XRP_TRADES = DATA_DIR / "freqtrade_binance_xrpeth_trades_2019-10.parquet"
PERP_1M = DATA_DIR / "binance_usdm_perp_1m_13sym_2026-01-04_2026-01-17.parquet"

pytestmark = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"real data not found at {DATA_DIR}")

SETTINGS = settings(max_examples=12, derandomize=True, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
OHLC = ["open", "high", "low", "close"]


def _ns(column: pa.ChunkedArray) -> pa.Array:
    return pc.cast(pc.cast(column, pa.timestamp("ns", tz="UTC")), pa.int64())


def _trades(symbol: str, ts_ns: pa.Array, price: pa.Array, size: pa.Array, side: np.ndarray, ids: pa.Array) -> pa.Table:
    n = len(ts_ns)
    return pa.Table.from_arrays(
        [pa.array([symbol] * n, pa.string()), pc.cast(ts_ns, TRADES_SCHEMA.field("ts").type),
         pc.cast(price, pa.float64()), pc.cast(size, pa.float64()), pa.array(side, pa.int8()),
         pc.cast(ids, pa.string())],
        schema=TRADES_SCHEMA,
    )


def load_btcusdt_trades(shift_ns: int = 0) -> pa.Table:
    """Nautilus' Binance BTCUSDT ticks as TRADES_SCHEMA (buyer_maker True → seller aggressor, −1)."""
    t = pq.read_table(BTC_TRADES)
    side = np.where(np.asarray(t["buyer_maker"].to_pylist()) == "True", -1, 1)
    ts = pc.add(_ns(t["timestamp"]), shift_ns)
    return _trades("BTCUSDT", ts, t["price"], t["quantity"], side, t["trade_id"].combine_chunks())


def load_xrpeth_trades(shift_ns: int = 0) -> pa.Table:
    """freqtrade's ccxt-format Binance XRP/ETH ticks as TRADES_SCHEMA (side buy → +1, sell → −1)."""
    t = pq.read_table(XRP_TRADES)
    side = np.where(np.asarray(t["side"].to_pylist()) == "buy", 1, -1)
    ts = pc.add(_ns(t["timestamp"]), shift_ns)
    return _trades("XRPETH", ts, t["price"], t["amount"], side, t["id"].combine_chunks())


def merged_trades() -> pa.Table:
    """Both real tick files on one clock (XRPETH shifted to start 10 s before BTCUSDT), in time order
    (stable: ties keep XRPETH first): a two-symbol stream with interleaved and lone stretches."""
    btc = load_btcusdt_trades()
    xrp = load_xrpeth_trades()
    shift = _ns(btc["ts"])[0].as_py() - _ns(xrp["ts"])[0].as_py() - 10_000_000_000
    xrp = load_xrpeth_trades(shift)
    both = pa.concat_tables([xrp, btc])
    order = np.argsort(_ns(both["ts"]).to_numpy(), kind="stable")
    return both.take(pa.array(order))


def reference_bars(trades: pa.Table, timeframe: str) -> pd.DataFrame:
    """Independent pandas aggregation, ordered by (open time, symbol order of first appearance)."""
    df = trades.select(["symbol", "ts", "price", "size"]).to_pandas()
    tf = timeframe_ns(timeframe)
    ts = df["ts"].astype("int64")
    df["bucket"] = ts - ts % tf
    rank = {s: i for i, s in enumerate(pd.unique(df["symbol"]))}
    g = df.groupby(["symbol", "bucket"], sort=False)
    out = pd.DataFrame({"open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
                        "close": g["price"].last(), "volume": g["size"].sum()}).reset_index()
    out["rank"] = out["symbol"].map(rank)
    return out.sort_values(["bucket", "rank"]).reset_index(drop=True)


def assert_bars_equal(got: pa.Table, ref: pd.DataFrame, rtol: float = 1e-12) -> None:
    assert got.schema.equals(BARS_SCHEMA)
    g = got.to_pandas()
    assert len(g) == len(ref)
    assert g["symbol"].tolist() == ref["symbol"].tolist()
    assert (g["ts"].astype("int64").to_numpy() == ref["bucket"].to_numpy()).all()
    for c in OHLC:
        assert (g[c].to_numpy() == ref[c].to_numpy()).all(), c
    np.testing.assert_allclose(g["volume"].to_numpy(), ref["volume"].to_numpy(), rtol=rtol, atol=0)


def split(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    points = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return list(itertools.pairwise(points))


@pytest.fixture(scope="module")
def trades2() -> pa.Table:
    return merged_trades()


@pytest.mark.parametrize("timeframe", ["1s", "1m", "1h"])
@SETTINGS
@given(cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=40),
       close_every=st.integers(min_value=1, max_value=5))
def test_tick_bars_equal_pandas_in_any_batch_split(trades2: pa.Table, timeframe: str, cuts: list[int],
                                                   close_every: int) -> None:
    builder = TickBarBuilder(timeframe)
    ts = _ns(trades2["ts"]).to_numpy()
    emitted = []
    for i, (a, b) in enumerate(split(trades2.num_rows, cuts)):
        builder.ingest(trades2.slice(a, b - a))
        if i % close_every == 0:  # the last ts seen is a valid watermark: later trades are not earlier
            emitted.append(builder.close_until(int(ts[b - 1])))
    emitted.append(builder.close_until(END_OF_STREAM))
    assert_bars_equal(pa.concat_tables(emitted), reference_bars(trades2, timeframe))
    assert builder.symbols == ["XRPETH", "BTCUSDT"]
    assert builder.ticks == trades2.num_rows and builder.late_ticks == 0


@SETTINGS
@given(cuts=st.lists(st.integers(min_value=0, max_value=2_100), max_size=30))
def test_tick_bars_single_symbol_seconds(cuts: list[int]) -> None:
    trades = load_btcusdt_trades()
    builder = TickBarBuilder("1s")
    for a, b in split(trades.num_rows, cuts):
        builder.ingest(trades.slice(a, b - a))
    assert_bars_equal(builder.close_until(END_OF_STREAM), reference_bars(trades, "1s"))


def test_bars_emitted_only_when_closed_and_in_order(trades2: pa.Table) -> None:
    builder = TickBarBuilder("1m")
    builder.ingest(trades2)
    first_ts = _ns(trades2["ts"])[0].as_py()
    minute = first_ts - first_ts % NS_PER_MINUTE
    assert builder.close_until(minute + NS_PER_MINUTE - 1).num_rows == 0  # not closed yet
    one = builder.close_until(minute + NS_PER_MINUTE)
    assert one.num_rows == 1 and _ns(one["ts"])[0].as_py() == minute
    assert builder.close_until(minute + NS_PER_MINUTE).num_rows == 0  # never twice
    rest = builder.close_until(END_OF_STREAM)
    closes = _ns(rest["ts"]).to_numpy()
    assert (np.diff(closes) >= 0).all()


def test_late_ticks_are_dropped_and_counted() -> None:
    trades = load_btcusdt_trades()
    builder = TickBarBuilder("10s")
    builder.ingest(trades.slice(0, 500))
    wm = _ns(trades["ts"])[499].as_py()
    closed = builder.close_until(wm + 20_000_000_000)  # a watermark ahead of the data (a broken promise)
    assert closed.num_rows >= 1
    builder.ingest(trades.slice(500))
    late = int((_ns(trades["ts"]).to_numpy()[500:] < (wm + 20_000_000_000) // 10**10 * 10**10).sum())
    assert builder.late_ticks == late > 0


def test_tick_builder_rejects_bad_input() -> None:
    trades = load_btcusdt_trades()
    builder = TickBarBuilder("1m")
    with pytest.raises(ParameterError) as err:
        builder.ingest(trades.take(pa.array([2000, 0])))
    assert err.value.field == "table.ts"
    builder.ingest(trades.slice(1000, 5))
    with pytest.raises(ParameterError) as err:
        builder.ingest(trades.slice(0, 5))  # earlier than the previous batch
    assert err.value.field == "table.ts"
    with pytest.raises(ParameterError) as err:
        builder.ingest(trades.drop_columns(["price"]))
    assert err.value.field == "table"
    with pytest.raises(ParameterError) as err:
        TickBarBuilder("1x")
    assert err.value.field == "timeframe"


# ------------------------------------------------------------------ higher timeframes


@pytest.fixture(scope="module")
def panel_1m() -> pa.Table:
    bars = load_bars(PERP_1M)  # sorted by (symbol, ts); a feed delivers in time order
    return bars.sort_by([("ts", "ascending"), ("symbol", "ascending")])


HIGHER = ["5m", "15m", "1h", "4h", "1d", "1w"]


def assert_resample_equal(got: pa.Table, base: pa.Table, timeframe: str) -> None:
    ref = resample(base, timeframe)  # sorted by (symbol, ts)
    g = got.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    assert g.schema.equals(BARS_SCHEMA)
    assert g.num_rows == ref.num_rows
    for c in ("symbol", "ts", *OHLC):
        assert g[c].equals(ref[c]), (timeframe, c)
    np.testing.assert_allclose(g["volume"].to_numpy(), ref["volume"].to_numpy(), rtol=1e-12, atol=0)


@settings(max_examples=4, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cuts=st.lists(st.integers(min_value=0, max_value=262_080), min_size=1, max_size=60),
       drop_seed=st.integers(min_value=0, max_value=2**31 - 1), drop_share=st.sampled_from([0.0, 0.02, 0.3]))
def test_higher_timeframes_equal_resample(panel_1m: pa.Table, cuts: list[int], drop_seed: int,
                                          drop_share: float) -> None:
    base = panel_1m
    if drop_share:  # missing base bars: the buckets are still emitted, like resample keeps them
        keep = np.random.default_rng(drop_seed).random(base.num_rows) >= drop_share
        base = base.filter(pa.array(keep))
    agg = BarAggregator("1m", HIGHER)
    ts = _ns(base["ts"]).to_numpy()
    out: dict[str, list[pa.Table]] = {tf: [] for tf in HIGHER}
    for a, b in split(base.num_rows, cuts):
        agg.ingest(base.slice(a, b - a))
        # bars of the last open time may continue in the next slice: complete up to that open time
        for tf, table in agg.close_until(int(ts[b - 1])).items():
            out[tf].append(table)
    for tf, table in agg.close_until(END_OF_STREAM).items():
        out[tf].append(table)
    for tf in HIGHER:
        got = pa.concat_tables(out[tf])
        opens = _ns(got["ts"]).to_numpy()
        assert (np.diff(opens) >= 0).all()  # emitted in time order
        assert_resample_equal(got, base, tf)


def test_partial_bucket_is_emitted_at_its_close(panel_1m: pa.Table) -> None:
    # 2026-01-04 is a Sunday: its week (from Monday 2025-12-29) is partial and closes on 2026-01-05 00:00
    agg = BarAggregator("1m", ["1w", "1d"])
    day = 24 * 60 * NS_PER_MINUTE
    first = _ns(panel_1m["ts"])[0].as_py()
    one_day = panel_1m.filter(pc.less(_ns(panel_1m["ts"]), first + day))
    agg.ingest(one_day)
    assert agg.close_until(first + day - 1) == {"1w": BARS_SCHEMA.empty_table(), "1d": BARS_SCHEMA.empty_table()}
    closed = agg.close_until(first + day)
    assert closed["1w"].num_rows == 13 and closed["1d"].num_rows == 13
    monday = pd.Timestamp("2025-12-29", tz="UTC").value
    assert set(_ns(closed["1w"]["ts"]).to_pylist()) == {monday}
    assert_resample_equal(closed["1w"], one_day, "1w")


def test_timeframe_added_mid_stream_starts_at_next_boundary(panel_1m: pa.Table) -> None:
    agg = BarAggregator("1m", ["5m"])
    ts = _ns(panel_1m["ts"]).to_numpy()
    cut = int(np.searchsorted(ts, ts[0] + 7 * NS_PER_MINUTE))  # 7 minutes in: inside a 15m bucket
    agg.ingest(panel_1m.slice(0, cut))
    assert agg.add_timeframe("15m") == "15m" and agg.timeframes == ["5m", "15m"]
    agg.ingest(panel_1m.slice(cut))
    got = agg.close_until(END_OF_STREAM)["15m"]
    assert _ns(got["ts"])[0].as_py() == ts[0] + 15 * NS_PER_MINUTE
    later = panel_1m.filter(pc.greater_equal(_ns(panel_1m["ts"]), ts[0] + 15 * NS_PER_MINUTE))
    assert_resample_equal(got, later, "15m")


@pytest.mark.parametrize(("base", "tf"), [("1m", "30s"), ("1m", "1m"), ("1h", "90m"), ("3d", "1w"), ("1m", "1x")])
def test_aggregator_rejects_unbuildable_timeframes(base: str, tf: str) -> None:
    with pytest.raises(ParameterError) as err:
        BarAggregator(base, [tf])
    assert err.value.field == "timeframes"


def test_aggregator_rejects_bars_off_grid(panel_1m: pa.Table) -> None:
    agg = BarAggregator("1h", ["4h"])
    with pytest.raises(ParameterError) as err:
        agg.ingest(panel_1m.slice(13, 1))  # 13 symbols per minute: row 13 opens at 00:01, off the hourly grid
    assert err.value.field == "table.ts"
