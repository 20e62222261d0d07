"""Resampling real bars (engine.data.resample) against pandas and against Binance's own 4h candles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.data import BAR_SCHEMA, infer_timeframe_ns, load_bars, resample
from engine.errors import ParameterError
from engine.timeframes import NS_PER_DAY, NS_PER_HOUR, NS_PER_MINUTE

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
PERP_1M = DATA_DIR / "binance_usdm_perp_1m_13sym_2026-01-04_2026-01-17.parquet"
PANEL_1H = DATA_DIR / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"
PERP_4H = DATA_DIR / "binance_usdm_perp_4h_10sym_2025-02_2026-05.parquet"
BTCPAIRS_5M = DATA_DIR / "freqtrade_binance_btcpairs_5m_10sym_2018-01.parquet"
GOOG = DATA_DIR / "backtestingpy_GOOG_daily_2004_2013.csv"

pytestmark = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"real data not found at {DATA_DIR}")

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "1000PEPEUSDT"]
PANDAS_RULE = {"5m": "5min", "15m": "15min", "1h": "1h", "4h": "4h", "1d": "1D"}


@pytest.fixture(scope="module")
def bars_1m() -> pa.Table:
    return load_bars(PERP_1M)


@pytest.fixture(scope="module")
def bars_1h() -> pa.Table:
    # six symbols keep the pandas reference fast; the engine handles the full panel in the same way
    return load_bars(PANEL_1H, symbols=SYMBOLS)


def pandas_resample(table: pa.Table, rule: str, **kwargs: object) -> pd.DataFrame:
    """Independent reference: pandas resample per symbol, left-closed/left-labelled, empty buckets dropped."""
    df = table.to_pandas().set_index("ts")
    frames = []
    for symbol, group in df.groupby("symbol", sort=True):
        r = group.resample(rule, label="left", closed="left", **kwargs)  # type: ignore[arg-type]
        agg = pd.DataFrame({
            "open": r["open"].first(),
            "high": r["high"].max(),
            "low": r["low"].min(),
            "close": r["close"].last(),
            "volume": r["volume"].sum(),
            "n": r["open"].count(),
        })
        agg = agg[agg["n"] > 0].drop(columns="n")
        agg.insert(0, "symbol", symbol)
        frames.append(agg)
    return pd.concat(frames).rename_axis("ts").reset_index()


def assert_same_bars(got: pa.Table, want: pd.DataFrame) -> None:
    assert got.schema == BAR_SCHEMA
    assert got.num_rows == len(want)
    assert got["symbol"].to_pylist() == want["symbol"].tolist()
    got_ts = got["ts"].combine_chunks().cast(pa.int64()).to_numpy()
    np.testing.assert_array_equal(got_ts, want["ts"].dt.as_unit("ns").astype("int64").to_numpy())
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)
    # sums are taken in a different order than pandas' compensated sum: equal up to float rounding
    np.testing.assert_allclose(got["volume"].to_numpy(), want["volume"].to_numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("timeframe", ["5m", "15m", "1h"])
def test_1m_to_higher_matches_pandas(bars_1m: pa.Table, timeframe: str) -> None:
    assert_same_bars(resample(bars_1m, timeframe), pandas_resample(bars_1m, PANDAS_RULE[timeframe]))


@pytest.mark.parametrize("timeframe", ["4h", "1d"])
def test_1h_to_higher_matches_pandas(bars_1h: pa.Table, timeframe: str) -> None:
    got = resample(bars_1h, timeframe)
    assert_same_bars(got, pandas_resample(bars_1h, PANDAS_RULE[timeframe]))
    if timeframe == "1d":  # days start at 00:00 UTC
        assert (got["ts"].combine_chunks().cast(pa.int64()).to_numpy() % NS_PER_DAY == 0).all()


def test_bars_with_gaps_match_pandas() -> None:
    bars = load_bars(BTCPAIRS_5M)  # a few 5m bars are missing in the source
    assert_same_bars(resample(bars, "1h"), pandas_resample(bars, "1h"))


def test_weekly_buckets_start_on_monday() -> None:
    daily = load_bars(GOOG, symbol="GOOG")
    got = resample(daily, "1w")
    # pandas' W-MON with closed/label "left" gives [Monday, next Monday) stamped Monday
    assert_same_bars(got, pandas_resample(daily, "W-MON"))
    assert set(got.to_pandas()["ts"].dt.day_of_week) == {0}


def test_buckets_before_the_epoch_are_floored() -> None:
    bars = load_bars(PANEL_1H, symbols=["BTCUSDT"], end_ns=int(pd.Timestamp("2025-05-04", tz="UTC").value))
    shift = int(pd.Timestamp("2025-05-02 13:00", tz="UTC").value)  # moves the series to straddle 1970-01-01
    moved = bars.set_column(1, "ts", pa.array(bars["ts"].combine_chunks().cast(pa.int64()).to_numpy() - shift,
                                               pa.timestamp("ns", tz="UTC")))
    assert_same_bars(resample(moved, "1d"), pandas_resample(moved, "1D"))


def test_1h_to_4h_equals_binance_4h_candles(bars_1h: pa.Table) -> None:
    """Binance's own 4h candles equal the 4h resample of its 1h candles where the 1h panel covers them."""
    end = int(pd.Timestamp("2026-05-06 16:00", tz="UTC").value)  # the 4h file ends at 12:00 (open time)
    mine = resample(bars_1h, "4h")
    mine = mine.filter(pc.less(bars_ts(mine), end))
    start = int(pd.Timestamp("2025-05-01", tz="UTC").value)
    theirs = load_bars(PERP_4H, symbols=SYMBOLS, start_ns=start, end_ns=end)
    assert mine.num_rows == theirs.num_rows == 6 * 2_224
    assert mine["symbol"].equals(theirs["symbol"])
    assert mine["ts"].equals(theirs["ts"])
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(mine[col].to_numpy(), theirs[col].to_numpy(), err_msg=col)
    np.testing.assert_allclose(mine["volume"].to_numpy(), theirs["volume"].to_numpy(), rtol=1e-6)


def bars_ts(table: pa.Table) -> pa.Array:
    return table["ts"].combine_chunks().cast(pa.int64())


def test_infer_timeframe(bars_1m: pa.Table, bars_1h: pa.Table) -> None:
    assert infer_timeframe_ns(bars_1m) == NS_PER_MINUTE
    assert infer_timeframe_ns(bars_1h) == NS_PER_HOUR
    assert infer_timeframe_ns(load_bars(GOOG)) == NS_PER_DAY  # weekends and holidays are gaps
    assert infer_timeframe_ns(resample(bars_1h, "4h")) == 4 * NS_PER_HOUR
    with pytest.raises(ParameterError):
        infer_timeframe_ns(bars_1h.slice(0, 1))


@pytest.mark.parametrize("timeframe", ["30m", "90m", "1m", "150m"])
def test_target_must_be_a_multiple_of_the_source(bars_1h: pa.Table, timeframe: str) -> None:
    with pytest.raises(ParameterError) as info:
        resample(bars_1h, timeframe)
    assert info.value.field == "timeframe"


def test_bad_input_is_rejected(bars_1h: pa.Table) -> None:
    with pytest.raises(ParameterError):
        resample(bars_1h, "4x")
    with pytest.raises(ParameterError):
        resample(bars_1h.drop_columns(["volume"]), "4h")
    with pytest.raises(ParameterError):
        resample(pa.concat_tables([bars_1h.slice(0, 5), bars_1h.slice(2, 1)]), "4h")


def test_same_timeframe_and_empty_table(bars_1h: pa.Table) -> None:
    same = resample(bars_1h, "1h")
    assert same.equals(bars_1h)
    empty = resample(bars_1h.slice(0, 0), "1d")
    assert empty.schema == BAR_SCHEMA and empty.num_rows == 0
