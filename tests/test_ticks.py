"""Trade and quote tick loaders (engine.data.ticks) on every real tick file, checked against pandas."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.data.ticks import load_quotes, load_trades
from engine.errors import DataError, ParameterError
from engine.marketdata.schemas import QUOTES_SCHEMA, TRADES_SCHEMA

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NAUTILUS_TRADES = DATA / "nautilus_binance_btcusdt_trades_2021-01-08.parquet"
XRPETH_TRADES = DATA / "freqtrade_binance_xrpeth_trades_2019-10.parquet"
ETHUSDT_TRADES = DATA / "freqtrade_ethusdt_trades_2023-02-02.parquet"
KRAKEN_TRADES = DATA / "freqtrade_kraken_bcheur_trades_2023-01.csv"
NAUTILUS_QUOTES = DATA / "nautilus_binance_btcusdt_quotes_2021-01-08.parquet"
TRUEFX_QUOTES = DATA / "nautilus_truefx_usdjpy_ticks_2013-01.csv"
TICK_FILES = [NAUTILUS_TRADES, XRPETH_TRADES, ETHUSDT_TRADES, KRAKEN_TRADES, NAUTILUS_QUOTES, TRUEFX_QUOTES]

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")


def ns(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value)


def ts_ns(table: pa.Table) -> np.ndarray:
    return table["ts"].combine_chunks().cast(pa.int64()).to_numpy()


def row(table: pa.Table, i: int) -> dict[str, object]:
    r = table.slice(i % table.num_rows, 1).to_pylist()[0]
    r["ts"] = int(pd.Timestamp(r["ts"]).value)
    return r


def digests() -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in TICK_FILES}


@pytest.fixture(scope="module", autouse=True)
def files_unchanged() -> object:
    """Every test in this module leaves the real data files byte-for-byte unchanged."""
    before = digests()
    yield None
    assert digests() == before


# ------------------------------------------------------------------------------------------------ trades


def test_nautilus_binance_trades_buyer_maker_side() -> None:
    t = load_trades(NAUTILUS_TRADES, symbol="BTCUSDT")
    assert t.schema.equals(TRADES_SCHEMA)
    assert t.num_rows == 2001  # SOURCES.md
    assert row(t, 0) == {
        "symbol": "BTCUSDT",
        "ts": ns("2021-01-08 00:00:00.278"),
        "price": 39432.48,
        "size": 0.000263,
        "side": -1,  # buyer_maker "True": the seller hit the bid
        "trade_id": "553287559",
    }
    assert row(t, 1)["side"] == 1 and row(t, 1)["trade_id"] == "553287560"
    assert row(t, -1) == {
        "symbol": "BTCUSDT",
        "ts": ns("2021-01-08 00:00:46.355"),
        "price": 39491.76,
        "size": 0.014596000000000001,
        "side": -1,
        "trade_id": "553289559",
    }
    df = pd.read_parquet(NAUTILUS_TRADES)
    expected = np.where(df["buyer_maker"] == "True", -1, 1)
    np.testing.assert_array_equal(t["side"].to_numpy(), expected)
    np.testing.assert_array_equal(t["price"].to_numpy(), df["price"].to_numpy())
    np.testing.assert_array_equal(t["size"].to_numpy(), df["quantity"].to_numpy())
    assert t["trade_id"].to_pylist() == df["trade_id"].astype(str).tolist()
    assert (np.diff(ts_ns(t)) >= 0).all()


@pytest.mark.parametrize(
    ("path", "rows", "first", "last"),
    [
        (
            XRPETH_TRADES,
            12477,
            ("2019-10-11 00:00:11.620", 0.00141342, 23.0, -1, "13519807"),
            ("2019-10-13 11:19:28.844", 0.00152787, 130.0, -1, "13532283"),
        ),
        (
            ETHUSDT_TRADES,
            1000,
            ("2023-02-02 09:20:00.138", 1666.8, 26.062, 1, "1206419187"),
            ("2023-02-02 09:23:27.493", 1667.3, 0.018, 1, "1206420186"),
        ),
    ],
)
def test_ccxt_format_trades(path: Path, rows: int, first: tuple, last: tuple) -> None:  # type: ignore[type-arg]
    t = load_trades(path)
    assert t.num_rows == rows
    for r, (when, price, size, side, trade_id) in ((row(t, 0), first), (row(t, -1), last)):
        assert r == {
            "symbol": path.stem,  # no symbol column: the file stem
            "ts": ns(when),
            "price": price,
            "size": size,
            "side": side,
            "trade_id": trade_id,
        }
    df = pd.read_parquet(path)
    np.testing.assert_array_equal(t["side"].to_numpy(), df["side"].map({"buy": 1, "sell": -1}).to_numpy())
    np.testing.assert_array_equal(t["size"].to_numpy(), df["amount"].to_numpy())
    assert set(t["side"].to_pylist()) == {-1, 1}


def test_trades_with_equal_timestamps_keep_file_order() -> None:
    t = load_trades(XRPETH_TRADES)
    ts = ts_ns(t)
    assert (np.diff(ts) == 0).sum() > 0  # the file has simultaneous trades ...
    ids = np.array(t["trade_id"].to_pylist(), dtype=np.int64)
    assert (np.diff(ids) == 1).all()  # ... and they stay in file (id) order


def test_kraken_headerless_csv() -> None:
    t = load_trades(KRAKEN_TRADES, symbol="BCH/EUR")
    # The file has 148 data lines and no header (SOURCES.md's 147 counts the first line as a header).
    assert t.num_rows == len(KRAKEN_TRADES.read_text().splitlines()) == 148
    assert row(t, 0) == {
        "symbol": "BCH/EUR",
        "ts": 1672531436 * 10**9,
        "price": 90.54,
        "size": 1.1044842,
        "side": 0,
        "trade_id": "",
    }
    assert row(t, -1) == {
        "symbol": "BCH/EUR",
        "ts": 1672615187 * 10**9,
        "price": 90.53,
        "size": 1.0,
        "side": 0,
        "trade_id": "",
    }
    assert row(t, -1)["ts"] == ns("2023-01-01 23:19:47")


def test_trade_filters() -> None:
    t = load_trades(ETHUSDT_TRADES, start_ns=ns("2023-02-02 09:21:00"), end_ns=ns("2023-02-02 09:22:00"))
    ts = ts_ns(t)
    df = pd.read_parquet(ETHUSDT_TRADES)
    inside = (df["timestamp"] >= "2023-02-02 09:21:00+00:00") & (df["timestamp"] < "2023-02-02 09:22:00+00:00")
    assert t.num_rows == int(inside.sum()) > 0
    assert ts.min() >= ns("2023-02-02 09:21:00") and ts.max() < ns("2023-02-02 09:22:00")
    assert load_trades(ETHUSDT_TRADES, symbols=["ETH/USDT"])["symbol"][0].as_py() == "ETH/USDT"
    with pytest.raises(ParameterError, match="end_ns"):
        load_trades(ETHUSDT_TRADES, start_ns=5, end_ns=5)


# ------------------------------------------------------------------------------------------------ quotes


def test_nautilus_binance_quotes() -> None:
    q = load_quotes(NAUTILUS_QUOTES)
    assert q.schema.equals(QUOTES_SCHEMA)
    assert q.num_rows == 451
    assert row(q, 0) == {
        "symbol": "BTC/USDT",  # the file's symbol column
        "ts": ns("2021-01-08 00:00:01.076"),
        "bid": 39432.99,
        "bid_size": 0.0031,
        "ask": 39433.62,
        "ask_size": 0.066851,
    }
    assert row(q, -1) == {
        "symbol": "BTC/USDT",
        "ts": ns("2021-01-08 00:00:46.674"),
        "bid": 39490.97,
        "bid_size": 0.131467,
        "ask": 39490.98,
        "ask_size": 0.884984,
    }
    with pytest.raises(DataError) as info:
        load_quotes(NAUTILUS_QUOTES, symbols=["BTCUSDT"])
    assert str(info.value) == (
        f"{NAUTILUS_QUOTES}: column 'symbol': unknown symbol(s) ['BTCUSDT']; the file has ['BTC/USDT'] "
        "(rule: requested symbols must be in the file)"
    )


def test_truefx_quotes_without_sizes() -> None:
    q = load_quotes(TRUEFX_QUOTES, symbol="USDJPY")
    assert q.num_rows == 1000
    assert row(q, 0) == {
        "symbol": "USDJPY",
        "ts": ns("2013-01-01 22:00:00.295"),
        "bid": 86.655,
        "bid_size": 0.0,
        "ask": 86.728,
        "ask_size": 0.0,
    }
    assert row(q, -1) == {
        "symbol": "USDJPY",
        "ts": ns("2013-01-01 22:35:13.494"),
        "bid": 86.836,
        "bid_size": 0.0,
        "ask": 86.854,
        "ask_size": 0.0,
    }
    df = pd.read_csv(TRUEFX_QUOTES)
    np.testing.assert_array_equal(q["ask"].to_numpy(), df["ask"].to_numpy())


# ------------------------------------------------------------------------------------------------ errors


def write_parquet(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def patched(table: pa.Table, column: str, index: int, value: object) -> pa.Table:
    values = table[column].to_pylist()
    values[index] = value
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values, table[column].type))


def test_bad_trade_price_size_side_and_time(tmp_path: Path) -> None:
    raw = pq.read_table(NAUTILUS_TRADES).slice(0, 10)
    bad = write_parquet(tmp_path / "neg_price.parquet", patched(raw, "price", 3, -1.0))
    with pytest.raises(DataError) as info:
        load_trades(bad, symbol="BTCUSDT")
    assert (info.value.file, info.value.column) == (str(bad), "price")
    assert str(info.value) == (
        f"{bad}: column 'price': non-positive or infinite price price=-1.0 for BTCUSDT at "
        "2021-01-08T00:00:00.385Z (data row 3) (rule: price must be finite and > 0)"
    )
    bad = write_parquet(tmp_path / "nan_price.parquet", patched(raw, "price", 2, float("nan")))
    with pytest.raises(DataError, match=r"column 'price': NaN or null price for BTCUSDT .*\(data row 2\)"):
        load_trades(bad, symbol="BTCUSDT")
    bad = write_parquet(tmp_path / "inf_size.parquet", patched(raw, "quantity", 5, float("inf")))
    with pytest.raises(DataError) as info:
        load_trades(bad, symbol="BTCUSDT")
    assert info.value.column == "size"
    assert "negative or infinite size size=inf" in str(info.value)
    assert "(data row 5) (rule: size must be finite and >= 0)" in str(info.value)
    bad = write_parquet(tmp_path / "neg_size.parquet", patched(raw, "quantity", 0, -0.5))
    with pytest.raises(DataError, match=r"size=-0\.5 .*\(data row 0\)"):
        load_trades(bad, symbol="BTCUSDT")
    bad = write_parquet(tmp_path / "side.parquet", patched(raw, "buyer_maker", 7, "maybe"))
    with pytest.raises(DataError) as info:
        load_trades(bad, symbol="BTCUSDT")
    assert str(info.value) == (
        f"{bad}: column 'side': unrecognised side side='maybe' for BTCUSDT at 2021-01-08T00:00:00.610Z "
        "(data row 7) (rule: buyer_maker must be True or False (buyer maker: seller-initiated, side -1))"
    )
    text = raw.set_column(0, "timestamp", pa.array(["2021-01-08 00:00:01"] * 9 + ["soon"]))
    bad = write_parquet(tmp_path / "time.parquet", text)
    with pytest.raises(DataError) as info:
        load_trades(bad, symbol="BTCUSDT")
    assert str(info.value) == (
        f"{bad}: column 'ts': time column 'timestamp' holds text that is not a recognised time "
        "('soon' at data row 9) (rule: ISO 8601 or YYYYMMDD HH:MM:SS)"
    )
    # a bad row outside the requested time range does not block loading
    bad = write_parquet(tmp_path / "late_bad.parquet", patched(raw, "price", 9, 0.0))
    assert load_trades(bad, end_ns=ns("2021-01-08 00:00:00.650")).num_rows == 8


def test_bad_ccxt_side_and_missing_column(tmp_path: Path) -> None:
    raw = pq.read_table(ETHUSDT_TRADES).slice(0, 4)
    bad = write_parquet(tmp_path / "side.parquet", patched(raw, "side", 1, "long"))
    with pytest.raises(DataError, match=r"column 'side': unrecognised side side='long' .*\(data row 1\)"):
        load_trades(bad)
    bad = write_parquet(tmp_path / "noprice.parquet", raw.drop_columns(["price"]))
    with pytest.raises(DataError) as info:
        load_trades(bad)
    assert str(info.value) == (
        f"{bad}: column 'price': missing required column (expected 'price'; file has "
        "['timestamp', 'id', 'side', 'amount', 'cost']) (rule: required column)"
    )


def test_bad_quotes(tmp_path: Path) -> None:
    raw = pq.read_table(NAUTILUS_QUOTES).slice(0, 6)
    bad = write_parquet(tmp_path / "bid.parquet", patched(raw, "bid", 4, 0.0))
    with pytest.raises(DataError) as info:
        load_quotes(bad)
    assert str(info.value) == (
        f"{bad}: column 'bid': non-positive or infinite bid bid=0.0 for BTC/USDT at 2021-01-08T00:00:01.462Z "
        "(data row 4) (rule: bid must be finite and > 0)"
    )
    bad = write_parquet(tmp_path / "ask_size.parquet", patched(raw, "ask_size", 2, -3.0))
    with pytest.raises(DataError, match=r"column 'ask_size': negative or infinite ask_size ask_size=-3\.0"):
        load_quotes(bad)
    nan_size = write_parquet(tmp_path / "nan_size.parquet", patched(raw, "bid_size", 1, float("nan")))
    assert load_quotes(nan_size)["bid_size"][1].as_py() == 0.0
    csv = tmp_path / "quotes.csv"
    csv.write_text("timestamp,bid,ask\n2013-01-01 22:00:00+00:00,86.6,inf\n")
    with pytest.raises(DataError, match=r"column 'ask': non-positive or infinite ask ask=inf .*\(data row 0\)"):
        load_quotes(csv)


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_trades(tmp_path / "none.parquet")
    assert str(info.value) == f"{tmp_path / 'none.parquet'}: file not found"
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match=r"unknown file format '\.json' \(rule: \.parquet or \.csv\)"):
        load_quotes(tmp_path / "x.json")
