"""Loading and validation of real market-data files (engine.data.catalog), checked against pandas."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.data import (
    BAR_SCHEMA,
    FUNDING_SCHEMA,
    MARK_SCHEMA,
    describe,
    load_bars,
    load_funding,
    load_marks,
)
from engine.errors import DataError, ParameterError

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
PANEL_1H = DATA_DIR / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"
PERP_4H = DATA_DIR / "binance_usdm_perp_4h_10sym_2025-02_2026-05.parquet"
MARK_1H = DATA_DIR / "binance_usdm_mark_1h_10sym_2025-05-01_2026-05-07.parquet"
FUNDING = DATA_DIR / "binance_usdm_funding_rates_40sym_2019_2026.parquet"
LEAN_FUNDING = DATA_DIR / "lean_perp_funding_rates.csv"
GOOG = DATA_DIR / "backtestingpy_GOOG_daily_2004_2013.csv"
FTX_1M = DATA_DIR / "nautilus_ftx_btcperp_1m_2021-12-31_2022-02-01.parquet"
BTCPAIRS_5M = DATA_DIR / "freqtrade_binance_btcpairs_5m_10sym_2018-01.parquet"
LEAN_EQUITY = DATA_DIR / "lean_us_equity_daily_10sym_1998_2021_unadjusted.parquet"
LEAN_TRADEBARS = DATA_DIR / "lean_perp_tradebars_1m_2022-12-13.parquet"

pytestmark = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"real data not found at {DATA_DIR}")


def ns(text: str) -> int:
    """ISO text (UTC) to ns since the epoch."""
    return int(pd.Timestamp(text, tz="UTC").value)


def ts_ns(table: pa.Table) -> np.ndarray:
    return table["ts"].combine_chunks().cast(pa.int64()).to_numpy()


@pytest.fixture(scope="module")
def panel() -> pa.Table:
    return load_bars(PANEL_1H)


@pytest.fixture(scope="module")
def panel_df() -> pd.DataFrame:
    return pd.read_parquet(PANEL_1H)


@pytest.fixture()
def btc_rows(panel_df: pd.DataFrame) -> pd.DataFrame:
    """A few real 1h rows of two symbols, in the file's own layout (long format, ``date`` column)."""
    rows = panel_df[panel_df["symbol"].isin(["BTCUSDT", "ETHUSDT"])]
    rows = rows[rows["date"] < pd.Timestamp("2025-05-01 06:00", tz="UTC")]
    return rows.reset_index(drop=True)


@contextmanager
def expect_error(column: str | None, *fragments: str) -> Iterator[None]:
    """Assert the block raises a DataError on ``column`` whose message holds every fragment."""
    with pytest.raises(DataError) as info:
        yield
    err = info.value
    assert err.column == column, str(err)
    for fragment in fragments:
        assert fragment in str(err), f"{fragment!r} not in {err}"


# --------------------------------------------------------------------------------------------- real files


def test_panel_schema_rows_and_order(panel: pa.Table) -> None:
    assert panel.schema == BAR_SCHEMA
    assert panel.num_rows == 285_504
    counts = panel.group_by("symbol").aggregate([("ts", "count")])
    assert counts.num_rows == 32
    assert set(counts["ts_count"].to_pylist()) == {8_922}
    df = panel.to_pandas()
    assert df.equals(df.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True))
    assert df["ts"].min() == pd.Timestamp("2025-05-01 00:00", tz="UTC")
    assert df["ts"].max() == pd.Timestamp("2026-05-07 17:00", tz="UTC")


def test_panel_values_equal_pandas(panel: pa.Table, panel_df: pd.DataFrame) -> None:
    want = panel_df.sort_values(["symbol", "date"]).reset_index(drop=True)
    got = panel.to_pandas()
    np.testing.assert_array_equal(got["symbol"].to_numpy(), want["symbol"].to_numpy())
    np.testing.assert_array_equal(ts_ns(panel), want["date"].dt.as_unit("ns").astype("int64").to_numpy())
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy())


@pytest.mark.parametrize(
    ("name", "rows", "n_symbols"),
    [
        ("binance_usdm_perp_4h_10sym_2025-02_2026-05.parquet", 27_724, 10),
        ("binance_usdm_perp_15m_4sym_2025-08_2026-05.parquet", 104_976, 4),
        ("binance_usdm_perp_5m_18sym_2026-04-07_2026-05-16.parquet", 203_472, 18),
        ("binance_usdm_perp_1m_13sym_2026-01-04_2026-01-17.parquet", 262_080, 13),
        ("binance_usdm_perp_1h_long_4sym_2019_2026.parquet", 226_783, 4),
        ("binance_spot_1h_2025-05-01_2026-05-07.parquet", 142_752, 16),
        ("freqtrade_binance_btcpairs_5m_10sym_2018-01.parquet", 57_546, 10),
        ("lean_us_equity_daily_10sym_1998_2021_unadjusted.parquet", 53_280, 10),
    ],
)
def test_row_counts_from_sources(name: str, rows: int, n_symbols: int) -> None:
    table = load_bars(DATA_DIR / name)
    assert table.schema == BAR_SCHEMA
    assert table.num_rows == rows
    assert len(set(table["symbol"].to_pylist())) == n_symbols


def test_goog_csv_with_unnamed_date_index() -> None:
    table = load_bars(GOOG, symbol="GOOG")
    assert table.schema == BAR_SCHEMA
    assert table.num_rows == 2_148
    assert set(table["symbol"].to_pylist()) == {"GOOG"}
    assert ts_ns(table)[0] == ns("2004-08-19")
    assert ts_ns(table)[-1] == ns("2013-03-01")
    want = pd.read_csv(GOOG, index_col=0, parse_dates=True)
    np.testing.assert_array_equal(ts_ns(table), want.index.tz_localize("UTC").as_unit("ns").asi8)
    for col in ("Open", "High", "Low", "Close", "Volume"):
        np.testing.assert_array_equal(table[col.lower()].to_numpy(), want[col].to_numpy(dtype=float))


def test_single_symbol_naming_rules() -> None:
    assert set(load_bars(GOOG)["symbol"].to_pylist()) == {GOOG.stem}
    assert set(load_bars(GOOG, symbols=["GOOG"])["symbol"].to_pylist()) == {"GOOG"}
    with expect_error("symbol", "unknown symbol", "GOOG"):
        load_bars(GOOG, symbols=["GOOG", "AAPL"])


def test_ftx_timestamp_column_and_time_filter() -> None:
    table = load_bars(FTX_1M, symbol="BTC-PERP")
    assert table.num_rows == 45_031
    assert ts_ns(table)[0] == ns("2021-12-31 23:01")
    start, end = ns("2022-01-10"), ns("2022-01-11")
    day = load_bars(FTX_1M, symbol="BTC-PERP", start_ns=start, end_ns=end)
    df = pd.read_parquet(FTX_1M)
    stamps = df["timestamp"]
    want = df[(stamps >= pd.Timestamp(start, tz="UTC")) & (stamps < pd.Timestamp(end, tz="UTC"))]
    assert day.num_rows == len(want) == 1_440
    np.testing.assert_array_equal(day["close"].to_numpy(), want["close"].to_numpy())


def test_symbol_and_window_filter_equals_pandas(panel_df: pd.DataFrame) -> None:
    start, end = ns("2025-09-01 05:00"), ns("2025-09-03 17:00")
    table = load_bars(PANEL_1H, symbols=["SOLUSDT", "BTCUSDT"], start_ns=start, end_ns=end)
    df = panel_df
    mask = df["symbol"].isin(["SOLUSDT", "BTCUSDT"]) & (df["date"] >= pd.Timestamp(start, tz="UTC"))
    mask &= df["date"] < pd.Timestamp(end, tz="UTC")
    want = df[mask].sort_values(["symbol", "date"])
    assert table.num_rows == len(want) == 2 * 60
    assert table["symbol"].to_pylist() == want["symbol"].tolist()
    np.testing.assert_array_equal(ts_ns(table), want["date"].dt.as_unit("ns").astype("int64").to_numpy())
    np.testing.assert_array_equal(table["volume"].to_numpy(), want["volume"].to_numpy())
    assert ts_ns(table).min() == start  # start inclusive
    assert ts_ns(table).max() == end - 3_600_000_000_000  # end exclusive


def test_symbol_keyword_filters_a_long_file() -> None:
    table = load_bars(PERP_4H, symbol="ETHUSDT", end_ns=ns("2025-02-02"))
    assert table["symbol"].to_pylist() == ["ETHUSDT"] * 6
    with pytest.raises(ParameterError):
        load_bars(PERP_4H, symbol="ETHUSDT", symbols=["BTCUSDT"])


def test_unknown_symbol_lists_file_symbols() -> None:
    with expect_error("symbol", str(PERP_4H), "NOPEUSDT", "BTCUSDT", "XRPUSDT", "rule:"):
        load_bars(PERP_4H, symbols=["BTCUSDT", "NOPEUSDT"])


def test_bad_window_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError):
        load_bars(PERP_4H, start_ns=ns("2025-03-01"), end_ns=ns("2025-02-01"))


def test_date32_time_column() -> None:
    table = load_bars(LEAN_EQUITY, symbols=["GOOG"])
    df = pd.read_parquet(LEAN_EQUITY)
    want = df[df["symbol"] == "GOOG"]
    assert table.num_rows == len(want)
    dates = pd.to_datetime(want["date"]).dt.tz_localize("UTC").dt.as_unit("ns")
    np.testing.assert_array_equal(ts_ns(table), dates.astype("int64").to_numpy())


def test_exchange_filter_and_mixed_exchange_duplicates() -> None:
    with expect_error("ts", "duplicate timestamp", "BTCUSD", "2022-12-13T00:00:00Z", "exchange="):
        load_bars(LEAN_TRADEBARS)
    binance = load_bars(LEAN_TRADEBARS, exchange="binance")
    df = pd.read_parquet(LEAN_TRADEBARS)
    assert binance.num_rows == int((df["exchange"] == "binance").sum())


def test_marks() -> None:
    marks = load_marks(MARK_1H)
    assert marks.schema == MARK_SCHEMA
    assert marks.num_rows == 89_220
    assert len(set(marks["symbol"].to_pylist())) == 10
    with expect_error("volume", "missing required column", str(MARK_1H), "rule:"):
        load_bars(MARK_1H)


def test_describe_matches_pandas() -> None:
    summary = describe(PERP_4H)
    df = pd.read_parquet(PERP_4H)
    want = df.groupby("symbol")["date"].agg(["min", "max", "count"])
    assert [s["symbol"] for s in summary] == list(want.index)
    for s in summary:
        row = want.loc[s["symbol"]]
        assert s["first_ts_ns"] == row["min"].value
        assert s["last_ts_ns"] == row["max"].value
        assert s["rows"] == row["count"]
    panel_summary = describe(PANEL_1H)
    assert len(panel_summary) == 32 and {s["rows"] for s in panel_summary} == {8_922}
    assert describe(GOOG) == [
        {"symbol": GOOG.stem, "first_ts_ns": ns("2004-08-19"), "last_ts_ns": ns("2013-03-01"), "rows": 2_148}
    ]


# --------------------------------------------------------------------------------------------- funding


def test_binance_funding() -> None:
    table = load_funding(FUNDING)
    assert table.schema == FUNDING_SCHEMA
    assert table.num_rows == 73_702
    assert len(set(table["symbol"].to_pylist())) == 40
    start, end = ns("2025-06-01"), ns("2025-07-01")
    window = load_funding(FUNDING, symbols=["BTCUSDT", "KASUSDT"], start_ns=start, end_ns=end)
    df = pd.read_parquet(FUNDING)
    mask = df["symbol"].isin(["BTCUSDT", "KASUSDT"]) & (df["funding_time"] >= pd.Timestamp(start, tz="UTC"))
    mask &= df["funding_time"] < pd.Timestamp(end, tz="UTC")
    want = df[mask].sort_values(["symbol", "funding_time"])
    assert window.num_rows == len(want) > 0
    np.testing.assert_array_equal(window["rate"].to_numpy(), want["funding_rate"].to_numpy())
    np.testing.assert_array_equal(ts_ns(window), want["funding_time"].dt.as_unit("ns").astype("int64"))


def test_lean_funding_compact_time_text() -> None:
    binance = load_funding(LEAN_FUNDING, exchange="binance")
    assert binance.num_rows == 13
    btc = load_funding(LEAN_FUNDING, symbols=["BTCUSD"], end_ns=ns("2021-01-01"))
    assert btc.num_rows == 9
    assert ts_ns(btc)[0] == ns("2020-12-29 00:00")
    assert btc["rate"][0].as_py() == pytest.approx(0.0002003, abs=0)
    # binance and bybit both list BTCUSD at 2022-12-13 00:00 with different rates
    with expect_error("rate", "two different rates", "BTCUSD", "2022-12-13T00:00:00Z", "rule:"):
        load_funding(LEAN_FUNDING)


def test_funding_duplicates(tmp_path: Path) -> None:
    df = pd.read_parquet(FUNDING)
    rows = df[df["symbol"] == "ETHUSDT"].head(5).reset_index(drop=True)
    same = pd.concat([rows, rows.iloc[[2]]], ignore_index=True)
    path = tmp_path / "funding_dupe.parquet"
    same.to_parquet(path)
    assert load_funding(path).num_rows == 5
    changed = same.copy()
    changed.loc[5, "funding_rate"] += 1e-6
    changed.to_parquet(path)
    with expect_error("rate", str(path), "two different rates", "ETHUSDT",
                      "rule: one rate per symbol and time"):
        load_funding(path)
    nan = rows.copy()
    nan.loc[3, "funding_rate"] = np.nan
    nan.to_parquet(path)
    with expect_error("rate", "NaN", "ETHUSDT", "data row 3", "rule:"):
        load_funding(path)


# --------------------------------------------------------------------------------------------- rejections


def _write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_missing_required_column(btc_rows: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    path = _write(btc_rows.drop(columns=["close"]), tmp_path / f"bars{suffix}")
    with expect_error("close", path.name, "missing required column", "rule: required column"):
        load_bars(path)


def test_missing_time_column(btc_rows: pd.DataFrame, tmp_path: Path) -> None:
    path = _write(btc_rows.drop(columns=["date"]), tmp_path / "bars.parquet")
    with expect_error("ts", path.name, "missing time column"):
        load_bars(path)


def test_duplicate_timestamp(btc_rows: pd.DataFrame, tmp_path: Path) -> None:
    df = pd.concat([btc_rows, btc_rows.iloc[[4]]], ignore_index=True)
    path = _write(df, tmp_path / "bars.parquet")
    sym = btc_rows.loc[4, "symbol"]
    iso = btc_rows.loc[4, "date"].strftime("%Y-%m-%dT%H:%M:%SZ")
    with expect_error("ts", path.name, "duplicate timestamp", sym, iso, f"data row {len(btc_rows)}",
                      "rule: sorted and unique per symbol"):
        load_bars(path)


def test_unsorted_timestamps(btc_rows: pd.DataFrame, tmp_path: Path) -> None:
    eth = btc_rows.index[btc_rows["symbol"] == "ETHUSDT"]
    order = list(btc_rows.index)
    i, j = order.index(eth[1]), order.index(eth[3])
    order[i], order[j] = order[j], order[i]  # ETH 01:00 and 03:00 swap places
    df = btc_rows.loc[order].reset_index(drop=True)
    path = _write(df, tmp_path / "bars.csv")
    with expect_error("ts", path.name, "not strictly increasing", "ETHUSDT", "2025-05-01T02:00:00Z",
                      "rule: sorted and unique per symbol"):
        load_bars(path)


@pytest.mark.parametrize(
    ("column", "value", "fragment"),
    [
        ("open", np.nan, "NaN or null price"),
        ("close", None, "NaN or null price"),
        ("low", 0.0, "non-positive"),
        ("high", -5.0, "non-positive"),
        ("close", np.inf, "infinite"),
    ],
)
def test_bad_prices(btc_rows: pd.DataFrame, tmp_path: Path, column: str, value: float | None,
                    fragment: str) -> None:
    df = btc_rows.copy()
    df[column] = df[column].astype(object) if value is None else df[column]
    df.loc[7, column] = value
    path = _write(df, tmp_path / "bars.parquet")
    sym = df.loc[7, "symbol"]
    iso = df.loc[7, "date"].strftime("%Y-%m-%dT%H:%M:%SZ")
    with expect_error(column, path.name, fragment, sym, iso, "data row 7",
                      "rule: open/high/low/close must be finite and > 0"):
        load_bars(path)


def test_null_price_in_csv(btc_rows: pd.DataFrame, tmp_path: Path) -> None:
    df = btc_rows.copy()
    df.loc[2, "close"] = np.nan  # written as an empty CSV field
    path = _write(df, tmp_path / "bars.csv")
    with expect_error("close", "NaN or null price", "data row 2"):
        load_bars(path)


def test_high_below_low(btc_rows: pd.DataFrame, tmp_path: Path) -> None:
    df = btc_rows.copy()
    df.loc[5, ["high", "low"]] = [df.loc[5, "low"], df.loc[5, "high"]]
    path = _write(df, tmp_path / "bars.parquet")
    with expect_error("high", path.name, "high below low", df.loc[5, "symbol"], "rule: high >= low"):
        load_bars(path)


@pytest.mark.parametrize(("value", "fragment"), [(-1.0, "negative"), (np.nan, "NaN or null volume")])
def test_bad_volume(btc_rows: pd.DataFrame, tmp_path: Path, value: float, fragment: str) -> None:
    df = btc_rows.copy()
    df.loc[9, "volume"] = value
    path = _write(df, tmp_path / "bars.parquet")
    with expect_error("volume", path.name, fragment, df.loc[9, "symbol"],
                      "rule: volume must be finite and >= 0"):
        load_bars(path)
    load_marks(path)  # marks ignore volume


def test_bad_row_outside_the_request_is_not_checked(btc_rows: pd.DataFrame, tmp_path: Path) -> None:
    df = btc_rows.copy()
    df.loc[df["symbol"] == "ETHUSDT", "volume"] = -1.0
    path = _write(df, tmp_path / "bars.parquet")
    assert load_bars(path, symbols=["BTCUSDT"]).num_rows == 6


def test_non_numeric_price(btc_rows: pd.DataFrame, tmp_path: Path) -> None:
    df = btc_rows.astype({"open": object})
    df.loc[1, "open"] = "n/a?"
    path = _write(df, tmp_path / "bars.csv")
    with expect_error("open", path.name, "not numeric"):
        load_bars(path)


def test_file_level_errors(tmp_path: Path) -> None:
    with expect_error(None, "missing.parquet", "file not found"):
        load_bars(tmp_path / "missing.parquet")
    odd = tmp_path / "bars.feather"
    odd.write_bytes(b"not really")
    with expect_error(None, "bars.feather", "unknown file format"):
        load_bars(odd)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with expect_error(None, "broken.parquet", "unreadable Parquet"):
        load_bars(broken)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with expect_error(None, "empty.csv", "empty CSV"):
        load_bars(empty)


def test_unparseable_time_text(btc_rows: pd.DataFrame, tmp_path: Path) -> None:
    df = btc_rows.copy()
    df["date"] = df["date"].dt.strftime("%Y-%m-%d %H:%M:%S")
    df.loc[3, "date"] = "yesterday noon"
    path = _write(df, tmp_path / "bars.parquet")
    with expect_error("ts", path.name, "'date'", "yesterday noon", "data row 3"):
        load_bars(path)


# --------------------------------------------------------------------------------------------- time encodings


@pytest.fixture()
def btc(btc_rows: pd.DataFrame) -> pd.DataFrame:
    return btc_rows[btc_rows["symbol"] == "BTCUSDT"].reset_index(drop=True)


def _expected_ns(btc: pd.DataFrame) -> np.ndarray:
    return btc["date"].dt.as_unit("ns").astype("int64").to_numpy()


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_epoch_integers(btc: pd.DataFrame, tmp_path: Path, unit: str, suffix: str) -> None:
    df = btc.copy()
    df["timestamp"] = df.pop("date").dt.as_unit(unit).astype("int64")
    path = _write(df, tmp_path / f"bars{suffix}")
    table = load_bars(path)
    np.testing.assert_array_equal(ts_ns(table), _expected_ns(btc))
    np.testing.assert_array_equal(table["close"].to_numpy(), btc["close"].to_numpy())


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_tz_aware_and_naive_iso_text(btc: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    df = btc.copy()
    berlin = df["date"].dt.tz_convert("Europe/Berlin").dt.strftime("%Y-%m-%dT%H:%M:%S%z")  # +0200
    naive = df["date"].dt.strftime("%Y-%m-%d %H:%M:%S")
    df["Time"] = berlin.where(df.index % 2 == 0, naive)  # mixed: zoned and naive(UTC)
    df = df.drop(columns=["date"])
    assert df["Time"].iloc[0] == "2025-05-01T02:00:00+0200"
    path = _write(df, tmp_path / f"bars{suffix}")
    np.testing.assert_array_equal(ts_ns(load_bars(path)), _expected_ns(btc))
    df["Time"] = btc["date"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = _write(df, tmp_path / f"zulu{suffix}")
    np.testing.assert_array_equal(ts_ns(load_bars(path)), _expected_ns(btc))


def test_compact_text_and_case_insensitive_columns(btc: pd.DataFrame, tmp_path: Path) -> None:
    df = btc.rename(columns=str.upper).rename(columns={"DATE": "Open_Time"})
    df["Open_Time"] = df["Open_Time"].dt.strftime("%Y%m%d %H:%M:%S")
    path = _write(df, tmp_path / "bars.csv")
    table = load_bars(path)
    assert table["symbol"].to_pylist() == ["BTCUSDT"] * len(btc)
    np.testing.assert_array_equal(ts_ns(table), _expected_ns(btc))


def test_non_utc_arrow_timestamp(btc: pd.DataFrame, tmp_path: Path) -> None:
    df = btc.copy()
    df["date"] = df["date"].dt.tz_convert("Asia/Kolkata").dt.as_unit("us")
    path = _write(df, tmp_path / "bars.parquet")
    assert pq.read_schema(path).field("date").type == pa.timestamp("us", tz="Asia/Kolkata")
    np.testing.assert_array_equal(ts_ns(load_bars(path)), _expected_ns(btc))


def test_pandas_index_in_parquet(btc: pd.DataFrame, tmp_path: Path) -> None:
    unnamed = btc.drop(columns=["symbol"]).set_index("date").rename_axis(None)
    path = tmp_path / "BTCUSDT.parquet"
    unnamed.to_parquet(path)  # stored as __index_level_0__ plus pandas metadata
    table = load_bars(path)
    assert table["symbol"].to_pylist() == ["BTCUSDT"] * len(btc)
    np.testing.assert_array_equal(ts_ns(table), _expected_ns(btc))
    other = btc.drop(columns=["symbol"]).set_index("date").rename_axis("when")
    other.to_parquet(path)  # a named index that is not a known time name
    np.testing.assert_array_equal(ts_ns(load_bars(path, symbol="X")), _expected_ns(btc))


def test_unnamed_csv_index_written_by_pandas(btc: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "btc.csv"
    btc.drop(columns=["symbol"]).set_index("date").rename_axis(None).to_csv(path)  # header starts with ","
    assert path.read_text().startswith(",open")
    np.testing.assert_array_equal(ts_ns(load_bars(path, symbol="BTCUSDT")), _expected_ns(btc))
    resaved = pd.read_csv(path)  # pandas re-reads the index as "Unnamed: 0"
    resaved.to_csv(path, index=False)
    assert path.read_text().startswith("Unnamed: 0,")
    np.testing.assert_array_equal(ts_ns(load_bars(path, symbol="BTCUSDT")), _expected_ns(btc))
