"""Black-Scholes-Merton against textbook values and put-call parity, the NSE chain loader against NSE's own
IVs, option strategy builders, and option legs marked by the model from the NIFTY index."""

from __future__ import annotations

import math
import random
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from engine.m2m import LegSpec, M2MAggregatorCore, M2MError
from engine.m2m.options import (
    NSE_IV_RATE,
    NSE_SNAPSHOT_TIMES,
    bs_price,
    bs_price_array,
    iron_condor,
    load_option_chain,
    norm_cdf,
    nse_lot_size,
    nse_option_symbol,
    short_straddle,
    year_fraction,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHAIN = DATA / "nse_option_chain_snapshots_nifty_banknifty_2024-04_05.parquet"
IST = ZoneInfo("Asia/Kolkata")
M = 60_000_000_000


def test_hull_textbook_example() -> None:
    # Hull, Options, Futures, and Other Derivatives, example 15.6: S=42, K=40, r=10 %, σ=20 %, T=0.5
    assert round(bs_price("C", 42, 40, 0.5, 0.2, 0.1), 2) == 4.76
    assert round(bs_price("P", 42, 40, 0.5, 0.2, 0.1), 2) == 0.81
    assert norm_cdf(0.0) == 0.5 and norm_cdf(1.959963984540054) == pytest.approx(0.975, abs=1e-12)


def test_put_call_parity_and_vectorised_prices() -> None:
    rng = random.Random(5)
    cases = [
        (
            rng.uniform(50, 150),
            rng.uniform(50, 150),
            rng.uniform(0.01, 3),
            rng.uniform(0.05, 0.9),
            rng.uniform(-0.02, 0.12),
            rng.uniform(0, 0.05),
        )
        for _ in range(200)
    ]
    for s, k, t, v, r, q in cases:
        c, p = bs_price("C", s, k, t, v, r, q), bs_price("P", s, k, t, v, r, q)
        assert c - p == pytest.approx(s * math.exp(-q * t) - k * math.exp(-r * t), abs=1e-9)
        assert c >= max(s * math.exp(-q * t) - k * math.exp(-r * t), 0) - 1e-12
    s, k, t, v, _, _ = (np.array(x) for x in zip(*cases, strict=True))
    for is_call in (True, False):
        vec = bs_price_array(is_call, s, k, t, v, 0.07, 0.01)
        scalar = [bs_price("C" if is_call else "P", *x, 0.07, 0.01) for x in zip(s, k, t, v, strict=True)]
        assert vec == pytest.approx(scalar, rel=1e-13, abs=1e-13)


def test_expiry_and_zero_vol_are_intrinsic() -> None:
    assert bs_price("C", 110, 100, 0.0, 0.3) == 10.0
    assert bs_price("P", 110, 100, -0.1, 0.3) == 0.0
    assert bs_price("P", 90, 100, 1.0, 0.0, 0.05) == pytest.approx(100 * math.exp(-0.05) - 90)
    assert bs_price_array([True, False], [110, 90], 100, [0.0, -1.0], 0.3).tolist() == [10.0, 10.0]
    assert year_fraction(0, 365 * 86_400 * 10**9) == 1.0


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("X", 100, 100, 1, 0.2), "option_type"),
        (("C", 0, 100, 1, 0.2), "spot"),
        (("C", 100, -5, 1, 0.2), "strike"),
        (("C", 100, 100, 1, -0.2), "vol"),
        (("C", 100, 100, float("nan"), 0.2), "t_years"),
    ],
)
def test_bad_pricing_inputs_name_the_field(args: tuple, field: str) -> None:
    with pytest.raises(M2MError) as err:
        bs_price(*args)
    assert err.value.field == field


def _index_close_mean(day: str) -> float:
    """Mean of the NIFTY 50 1m closes from 15:00 to 15:29 IST (NSE's close is a 15:00–15:30 average)."""
    t = pq.read_table(DATA / "nse_nifty50_index_1m_2024-01_2024-08.parquet")
    hm = pc.strftime(t["timestamp"], format="%Y-%m-%d %H:%M").to_pylist()
    closes = [c for c, s in zip(t["close"].to_pylist(), hm, strict=True) if s.startswith(day) and s[11:] >= "15:00"]
    return sum(closes) / len(closes)


@pytest.mark.parametrize(
    ("sid", "expiry", "day"),
    [
        ("S1", date(2024, 4, 25), "2024-04-24"),
        ("S1", date(2024, 5, 30), "2024-04-24"),
        ("S2", date(2024, 5, 9), "2024-04-30"),
        ("S2", date(2024, 6, 27), "2024-04-30"),
        ("S3", date(2024, 5, 9), "2024-05-03"),
        ("S3", date(2024, 5, 30), "2024-05-03"),
    ],
)
def test_chain_ivs_reprice_ltps_with_nse_rate(sid: str, expiry: date, day: str) -> None:
    """NSE's IVs come from Black-Scholes with r = 10 % and the index close: the spot that prices the ATM
    call at its LTP is the close (the index file's 15:00–15:29 mean) and reprices its neighbours."""
    chain = load_option_chain(CHAIN, "NIFTY", expiry, sid)
    assert chain.snapshot_id == sid and chain.snapshot_ts == NSE_SNAPSHOT_TIMES[sid]
    t = year_fraction(chain.snapshot_ts, chain.expiry_ts)
    i = int(np.nanargmin(np.abs(chain.call_ltp - chain.put_ltp)))
    k, ltp, iv = chain.strikes[i], chain.call_ltp[i], chain.call_iv[i]
    lo, hi = k * 0.9, k * 1.1
    for _ in range(80):  # bisection: the call price rises with the spot
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if bs_price("C", mid, k, t, iv, NSE_IV_RATE) > ltp else (mid, hi)
    spot = (lo + hi) / 2
    assert spot == pytest.approx(_index_close_mean(day), abs=6.0)
    checked = 0
    for j, strike in enumerate(chain.strikes):
        if abs(strike / spot - 1) < 0.02:
            for o, px, vol in (("C", chain.call_ltp[j], chain.call_iv[j]), ("P", chain.put_ltp[j], chain.put_iv[j])):
                if math.isfinite(vol) and px > 5:
                    assert bs_price(o, spot, strike, t, vol, NSE_IV_RATE) == pytest.approx(px, abs=0.5), (o, strike)
                    checked += 1
    assert checked >= 20


def test_chain_loader_rows_and_errors() -> None:
    chain = load_option_chain(CHAIN, "NIFTY", date(2024, 5, 9), "S3")
    assert chain.quote("C", 22500.0) == (137.0, pytest.approx(0.1135))
    assert len(chain.strikes) == 86 and np.all(np.diff(chain.strikes) > 0)
    assert chain.expiry_ts == int(datetime(2024, 5, 9, 15, 30, tzinfo=IST).timestamp()) * 10**9
    # by time: the latest snapshot at or before it
    between = NSE_SNAPSHOT_TIMES["S2"] + 3600 * 10**9
    assert load_option_chain(CHAIN, "NIFTY", date(2024, 5, 9), between).snapshot_id == "S2"
    with pytest.raises(M2MError, match="no 'NIFTY' options expiring 2024-05-10"):
        load_option_chain(CHAIN, "NIFTY", date(2024, 5, 10), "S3")
    with pytest.raises(M2MError, match="does not list"):
        load_option_chain(CHAIN, "NIFTY", date(2024, 5, 9), "S1")
    with pytest.raises(M2MError) as err:
        chain.quote("C", 22512.0)
    assert err.value.field == "strike"


def test_nse_lot_sizes_follow_the_data() -> None:
    assert nse_lot_size("NIFTY", date(2024, 4, 24)) == 50  # S1 quantities are multiples of 50
    assert nse_lot_size("NIFTY", date(2024, 4, 30)) == 25  # S2, S3: multiples of 25
    assert nse_lot_size("BANKNIFTY", date(2024, 5, 3)) == 15
    with pytest.raises(M2MError, match="pass lot_size"):
        nse_lot_size("NIFTY", date(2025, 1, 2))
    t = pq.read_table(CHAIN, columns=["snapshot_id", "underlying", "bid_qty"]).to_pylist()
    for sid, u, day in (
        ("S1", "NIFTY", date(2024, 4, 24)),
        ("S3", "NIFTY", date(2024, 5, 3)),
        ("S3", "BANKNIFTY", date(2024, 5, 3)),
    ):
        q = [r["bid_qty"] for r in t if r["snapshot_id"] == sid and r["underlying"] == u and r["bid_qty"]]
        assert math.gcd(*q) == nse_lot_size(u, day)


def test_iron_condor_opened_at_s2_marked_at_s3_prices() -> None:
    s2 = load_option_chain(CHAIN, "NIFTY", date(2024, 5, 9), "S2")
    s3 = load_option_chain(CHAIN, "NIFTY", date(2024, 5, 9), "S3")
    legs = iron_condor(s2, 22_604.8, short_offset=200, wing_width=200, lots=2)
    assert [(leg.option_type, leg.strike, leg.side) for leg in legs] == [
        ("C", 22_800.0, -1),
        ("C", 23_000.0, 1),
        ("P", 22_400.0, -1),
        ("P", 22_200.0, 1),
    ]
    assert all(leg.qty == 50 and leg.lot_size == 25 and leg.underlying == "NIFTY 50" for leg in legs)
    assert legs[0].symbol == "NIFTY09MAY2422800CE" == nse_option_symbol("NIFTY", date(2024, 5, 9), 22800.0, "C")
    assert [leg.entry_price for leg in legs] == [s2.quote(leg.option_type, leg.strike)[0] for leg in legs]
    core = M2MAggregatorCore()
    book = core.add_account("nse", "Asia/Kolkata", rate=NSE_IV_RATE)
    book.create_strategy("ic", "Iron condor", 0)
    for leg in legs:
        book.add_leg("ic", leg, NSE_SNAPSHOT_TIMES["S2"])
    ts = NSE_SNAPSHOT_TIMES["S3"]
    s3_px = [s3.quote(leg.option_type, leg.strike)[0] for leg in legs]
    core.on_prices([leg.symbol for leg in legs], s3_px, [ts] * 4)
    # hand formula: Σ (LTP_S3 − LTP_S2) × qty × side
    want = sum((p - leg.entry_price) * leg.qty * leg.side for p, leg in zip(s3_px, legs, strict=True))
    assert core.mark("nse", "ic").unrealized_pnl == pytest.approx(want)
    out = core.close_until(ts + M)
    (row,) = out.candles.to_pylist()
    assert row["close"] == pytest.approx(want) and row["model_mark"] is False


def test_short_straddle_marked_by_the_model_from_the_index() -> None:
    s3 = load_option_chain(CHAIN, "NIFTY", date(2024, 5, 30), "S3")
    legs = short_straddle(s3, 22_475.9)
    assert [(leg.option_type, leg.strike, leg.side, leg.qty) for leg in legs] == [
        ("C", 22500.0, -1, 25),
        ("P", 22500.0, -1, 25),
    ]
    core = M2MAggregatorCore()
    book = core.add_account("nse", "Asia/Kolkata", rate=NSE_IV_RATE)
    for leg in legs:
        book.add_leg(book.default_instance_id, leg, NSE_SNAPSHOT_TIMES["S3"])
    inst = book.default_instance_id
    # the next session's NIFTY 50 1m closes, one update per bar at +45 s
    t = pq.read_table(DATA / "nse_nifty50_index_1m_2024-01_2024-08.parquet")
    t = t.filter(pc.equal(pc.strftime(t["timestamp"], format="%Y-%m-%d"), "2024-05-06"))
    ts = pc.cast(pc.cast(t["timestamp"], pa.timestamp("ns", tz="UTC")), pa.int64()).to_numpy() + 45 * 10**9
    px = t["close"].to_numpy()

    def model(leg: LegSpec, s: float, at: int) -> float:  # the plain formula, leg by leg
        value = bs_price(
            leg.option_type, s, leg.strike, (leg.expiry_ts - at) / (365 * 86_400e9), leg.implied_vol, NSE_IV_RATE
        )
        return (value - leg.entry_price) * leg.qty * leg.side * leg.multiplier

    outs = [
        core.on_prices(["NIFTY 50"] * 100, px[:100], ts[:100]),
        core.on_prices(["NIFTY 50"] * 5, px[100:105], ts[100:105]),
    ]
    # plain loop: one update per minute, open = previous close (0 before the first price)
    prev, want = 0.0, []
    for s, at in zip(px[:105], ts[:105], strict=True):
        v = sum(model(leg, float(s), int(at)) for leg in legs)
        want.append((at - at % M, prev, max(prev, v), min(prev, v), v))
        prev = v
    # the call starts trading on its own: from that batch on it is marked at its LTP
    call_ltp = 150.0
    at = int(ts[105]) - 10**9
    outs.append(core.on_prices([legs[0].symbol, "NIFTY 50"], [call_ltp, float(px[105])], [at, int(ts[105])]))
    v_call = (call_ltp - legs[0].entry_price) * 25 * -1
    after = v_call + model(legs[1], float(px[105]), int(ts[105]))
    assert core.mark("nse", inst).unrealized_pnl == pytest.approx(after, rel=1e-12)
    # at the call's first price the put still holds its value from the previous update (carried, no jump)
    put_before = model(legs[1], float(px[104]), int(ts[104]))
    want.append(
        (at - at % M, prev, max(prev, v_call + put_before, after), min(prev, v_call + put_before, after), after)
    )
    outs.append(core.close_until(int(ts[105]) + M))
    rows = pa.concat_tables([o.candles for o in outs])
    got = rows.set_column(2, "ts", pc.cast(rows["ts"], pa.int64())).to_pylist()
    assert len(got) == len(want)
    for g, (m, o, h, lo, c) in zip(got, want, strict=True):
        assert g["ts"] == m and g["model_mark"] is True
        assert [g["open"], g["high"], g["low"], g["close"]] == pytest.approx([o, h, lo, c], rel=1e-10, abs=1e-8)
    # once the put trades too, no leg is marked by the model
    core.on_prices([legs[1].symbol], [140.0], [int(ts[106])])
    out = core.close_until(int(ts[106]) + M)
    assert out.candles["model_mark"].to_pylist() == [False]
    assert core.mark("nse", inst).unrealized_pnl == pytest.approx(v_call + (140.0 - legs[1].entry_price) * -25)


def test_builders_refuse_bad_input() -> None:
    chain = load_option_chain(CHAIN, "NIFTY", date(2024, 5, 9), "S3")
    with pytest.raises(M2MError) as err:
        iron_condor(chain, 22_475.0, short_offset=0, wing_width=100)
    assert err.value.field == "short_offset"
    with pytest.raises(M2MError) as err:
        short_straddle(chain, 22_475.0, lots=0)
    assert err.value.field == "lots"
    with pytest.raises(M2MError) as err:  # far wings without prices
        iron_condor(chain, 22_475.0, short_offset=5000, wing_width=1000)
    assert err.value.field == "strike"
