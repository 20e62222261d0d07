"""Option pricing for model marks, and NSE option-chain snapshots with iron-condor / straddle builders.

**Black-Scholes-Merton** European price (Hull, *Options, Futures, and Other Derivatives*, 10th ed.,
ch. 15 "The Black-Scholes-Merton model", eqs. 15.20-15.21, with a continuous dividend yield q as in
ch. 17):

    d1 = (ln(S/K) + (r − q + σ²/2) T) / (σ √T),   d2 = d1 − σ √T
    call = S e^(−qT) N(d1) − K e^(−rT) N(d2),     put = K e^(−rT) N(−d2) − S e^(−qT) N(−d1)

S spot and K strike in quote currency per unit, T in years (ACT/365 from ns timestamps: calendar
days / 365), r the continuously compounded risk-free rate, q the dividend yield and σ the volatility,
all fractions per year. N is the standard normal CDF, computed as ½·erfc(−x/√2) with ``math.erfc``
(scipy is not a dependency). At or after expiry (T <= 0) or with σ = 0 the price is the discounted
intrinsic value max(±(S e^(−qT) − K e^(−rT)), 0).

**Risk-free rate.** Every function takes ``rate`` (default 0.0, the engine's convention "risk-free rate
0 unless set"). NSE's option-chain IVs are implied with r = 10 % from the index's official close: in
``nse_option_chain_snapshots_nifty_banknifty_2024-04_05.parquet`` a least-squares fit of r and spot to
the ATM ±5 % LTPs gives r = 0.10, and with r = 0.10 the spot that prices the ATM call at its LTP
(22,402.6 for S1, 22,604.8 for S2, 22,475.9 for S3) reprices every call and put within ±2 % of the
money to within 0.3 INR, and that spot is NSE's closing price: the mean of the 15:00–15:29 1m closes
in the NIFTY 50 index file is 22,402.5, 22,601.5 and 22,475.7 (NSE closes at a 15:00–15:30 average).
So mark legs whose IV comes from an NSE chain with :data:`NSE_IV_RATE`.

**Chain snapshots.** :func:`load_option_chain` reads the tidy NSE chain file (one row per snapshot,
underlying, expiry, strike and CE/PE; IV in % as NSE shows it, converted here to a fraction). The
files do not record the trading time of a snapshot; :data:`NSE_SNAPSHOT_TIMES` holds end-of-day
15:30 IST of 2024-04-24 (S1), 2024-04-30 (S2) and 2024-05-03 (S3). SOURCES.md guesses 04-29 for S2
("uncertain"), but only 04-30 makes the IVs consistent (the fit above; with 04-29 the same spot
misprices the 2-May and 9-May options by up to 47 and 20 INR). Options expire at 15:30 IST.

**Lot sizes.** :func:`nse_lot_size` knows the lots these data show: NIFTY 50 until 2024-04-25
(snapshot S1's bid/ask quantities are multiples of 50) and 25 from 2024-04-26 (NSE's revision; S2 and
S3 show multiples of 25) through 2024-11-19; BANKNIFTY 15 from 2023-07-01 through 2024-11-19 (S3 shows
multiples of 15). Other dates raise: pass ``lot_size`` explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.errors import DataError
from engine.m2m.legs import LegSpec, M2MError, _finite
from engine.timeframes import NS_PER_DAY

IST = ZoneInfo("Asia/Kolkata")
NS_PER_YEAR_365 = 365 * NS_PER_DAY
#: the rate NSE's option-chain IVs are implied with (see the module docstring)
NSE_IV_RATE = 0.10
#: trading time (ns UTC) of the chain snapshots: end of day 15:30 IST (see the module docstring)
NSE_SNAPSHOT_TIMES: dict[str, int] = {
    sid: int(datetime.combine(d, time(15, 30), IST).timestamp()) * 1_000_000_000
    for sid, d in (("S1", date(2024, 4, 24)), ("S2", date(2024, 4, 30)), ("S3", date(2024, 5, 3)))
}
#: the index symbol of each chain underlying, as in the NSE 1m index files (``index`` column)
NSE_UNDERLYING_SYMBOLS = {"NIFTY": "NIFTY 50", "BANKNIFTY": "NIFTY BANK"}
_LOTS: dict[str, list[tuple[date, date, int]]] = {
    "NIFTY": [(date(2021, 1, 1), date(2024, 4, 25), 50), (date(2024, 4, 26), date(2024, 11, 19), 25)],
    "BANKNIFTY": [(date(2023, 7, 1), date(2024, 11, 19), 15)],
}
_SQRT2 = math.sqrt(2.0)
_erfc_u = np.frompyfunc(math.erfc, 1, 1)

FloatArray = npt.NDArray[np.float64]


def norm_cdf(x: float) -> float:
    """Standard normal CDF N(x) = ½·erfc(−x/√2)."""
    return 0.5 * math.erfc(-x / _SQRT2)


def norm_cdf_array(x: npt.ArrayLike) -> FloatArray:
    """N(x) element-wise (``math.erfc`` per element: exact, about 0.1 µs per element)."""
    arr = np.asarray(x, dtype=np.float64)
    return 0.5 * np.asarray(_erfc_u(-arr / _SQRT2), dtype=np.float64)


def year_fraction(start_ns: int, end_ns: int) -> float:
    """ACT/365 year fraction between two ns UTC timestamps: (end − start) / 365 days (negative if end < start)."""
    return (end_ns - start_ns) / NS_PER_YEAR_365


def bs_price(
    option_type: str,
    spot: float,
    strike: float,
    t_years: float,
    vol: float,
    rate: float = 0.0,
    div_yield: float = 0.0,
) -> float:
    """Black-Scholes-Merton European price (quote currency per unit; formula in the module docstring).

    Args:
        option_type: "C" or "P". spot, strike: > 0. t_years: time to expiry (<= 0 means expired:
            intrinsic value). vol: σ >= 0 per year. rate, div_yield: r and q per year (continuous).

    Raises:
        M2MError: a bad option type, a non-positive spot or strike, a negative vol, a non-finite input.
    """
    if option_type not in ("C", "P"):
        raise M2MError("option_type", f"must be 'C' or 'P', got {option_type!r}")
    s = _finite("spot", spot, positive=True)
    k = _finite("strike", strike, positive=True)
    t = _finite("t_years", t_years)
    v = _finite("vol", vol, non_negative=True)
    r = _finite("rate", rate)
    q = _finite("div_yield", div_yield)
    tt = max(t, 0.0)
    fwd_s = s * math.exp(-q * tt)
    disc_k = k * math.exp(-r * tt)
    if t <= 0 or v == 0:
        return max(fwd_s - disc_k, 0.0) if option_type == "C" else max(disc_k - fwd_s, 0.0)
    sd = v * math.sqrt(t)
    d1 = (math.log(s / k) + (r - q + 0.5 * v * v) * t) / sd
    d2 = d1 - sd
    if option_type == "C":
        return fwd_s * norm_cdf(d1) - disc_k * norm_cdf(d2)
    return disc_k * norm_cdf(-d2) - fwd_s * norm_cdf(-d1)


def bs_price_array(
    is_call: npt.ArrayLike,
    spot: npt.ArrayLike,
    strike: npt.ArrayLike,
    t_years: npt.ArrayLike,
    vol: npt.ArrayLike,
    rate: float = 0.0,
    div_yield: float = 0.0,
) -> FloatArray:
    """:func:`bs_price` element-wise over broadcast arrays (no validation: the hot path's inputs are
    validated when legs are added). ``is_call`` is boolean; spot and strike > 0."""
    c = np.asarray(is_call, dtype=bool)
    s, k, t, v = (np.asarray(a, dtype=np.float64) for a in (spot, strike, t_years, vol))
    c, s, k, t, v = np.broadcast_arrays(c, s, k, t, v)
    tt = np.maximum(t, 0.0)
    fwd_s = s * np.exp(-div_yield * tt)
    disc_k = k * np.exp(-rate * tt)
    sign = np.where(c, 1.0, -1.0)
    out = np.maximum(sign * (fwd_s - disc_k), 0.0)
    live = (t > 0) & (v > 0)
    if live.any():
        sd = v[live] * np.sqrt(t[live])
        d1 = (np.log(s[live] / k[live]) + (rate - div_yield + 0.5 * v[live] ** 2) * t[live]) / sd
        d2 = d1 - sd
        sg = sign[live]
        out[live] = sg * (fwd_s[live] * norm_cdf_array(sg * d1) - disc_k[live] * norm_cdf_array(sg * d2))
    return out


# ---------------------------------------------------------------------- NSE chain
def nse_lot_size(underlying: str, on: date) -> int:
    """NSE lot size (units per lot) of ``underlying``'s index options on ``on`` (see the module docstring).

    Raises:
        M2MError: an underlying or date outside the known table (pass the lot size explicitly).
    """
    for start, end, lot in _LOTS.get(underlying, []):
        if start <= on <= end:
            return lot
    raise M2MError("lot_size", f"unknown NSE lot size of {underlying!r} on {on.isoformat()}: pass lot_size")


def nse_expiry_ts(expiry: date) -> int:
    """Expiry time of an NSE option expiring on ``expiry``: 15:30 IST, in ns UTC."""
    return int(datetime.combine(expiry, time(15, 30), IST).timestamp()) * 1_000_000_000


def nse_option_symbol(underlying: str, expiry: date, strike: float, option_type: str) -> str:
    """The engine's symbol of an NSE index option: ``<UNDERLYING><DDMONYY><STRIKE><CE|PE>``,
    e.g. ``NIFTY09MAY2422500CE`` (strike printed without a trailing ``.0``)."""
    k = f"{strike:g}" if float(strike) != int(strike) else str(int(strike))
    return f"{underlying}{expiry.strftime('%d%b%y').upper()}{k}{'CE' if option_type == 'C' else 'PE'}"


@dataclass(frozen=True)
class ChainSnapshot:
    """One underlying and expiry of an option-chain snapshot.

    Attributes:
        underlying: "NIFTY" / "BANKNIFTY". expiry: expiry date; expiry_ts: 15:30 IST in ns UTC.
        snapshot_id: "S1"... ; snapshot_ts: the snapshot's trading time, ns UTC.
        strikes: ascending strikes (INR). call_ltp, put_ltp: last traded prices (INR per unit, NaN when
            none). call_iv, put_iv: implied vols as fractions per year (NaN when NSE shows none or 0).
    """

    underlying: str
    expiry: date
    expiry_ts: int
    snapshot_id: str
    snapshot_ts: int
    strikes: FloatArray
    call_ltp: FloatArray
    call_iv: FloatArray
    put_ltp: FloatArray
    put_iv: FloatArray

    def atm_strike(self, spot: float) -> float:
        """The listed strike nearest to ``spot`` (the lower one on a tie)."""
        _finite("spot", spot, positive=True)
        return float(self.strikes[int(np.argmin(np.abs(self.strikes - spot)))])

    def quote(self, option_type: str, strike: float) -> tuple[float, float]:
        """(LTP, IV fraction) of the ``option_type`` ("C"/"P") at ``strike``; NaN where missing.

        Raises:
            M2MError: a strike not listed in the snapshot, or a bad option type.
        """
        if option_type not in ("C", "P"):
            raise M2MError("option_type", f"must be 'C' or 'P', got {option_type!r}")
        hit = np.nonzero(self.strikes == strike)[0]
        if not len(hit):
            raise M2MError(
                "strike", f"{strike:g} is not listed in {self.underlying} {self.expiry} ({self.snapshot_id})"
            )
        i = int(hit[0])
        if option_type == "C":
            return float(self.call_ltp[i]), float(self.call_iv[i])
        return float(self.put_ltp[i]), float(self.put_iv[i])


def load_option_chain(path: str | Path, underlying: str, expiry: date, snapshot: str | int) -> ChainSnapshot:
    """The strikes, LTPs and IVs of ``underlying``'s ``expiry`` in one snapshot of the tidy NSE chain file.

    Args:
        path: ``nse_option_chain_snapshots_*.parquet`` (columns snapshot_id, commit_time_ist, underlying,
            expiry, strike, option_type CE/PE, iv in %, ltp, ...).
        snapshot: a snapshot id ("S3"), or a time in ns UTC: the latest snapshot at or before it that
            lists this underlying and expiry.

    Raises:
        DataError: the file lacks a needed column. M2MError: no such underlying/expiry/snapshot.
    """
    need = ["snapshot_id", "commit_time_ist", "underlying", "expiry", "strike", "option_type", "iv", "ltp"]
    schema = pq.read_schema(path)
    for col in need:
        if col not in schema.names:
            raise DataError(str(path), col, "missing column")
    t = pq.read_table(path, columns=need)
    t = t.filter(pc.and_(pc.equal(t["underlying"], underlying), pc.equal(t["expiry"], expiry)))
    if t.num_rows == 0:
        raise M2MError("expiry", f"no {underlying!r} options expiring {expiry.isoformat()} in {path}")
    ids = sorted(set(t["snapshot_id"].to_pylist()))
    times = {}
    for sid in ids:
        if sid in NSE_SNAPSHOT_TIMES:
            times[sid] = NSE_SNAPSHOT_TIMES[sid]
        else:  # unknown snapshot: fall back to its commit time
            first = t.filter(pc.equal(t["snapshot_id"], sid))["commit_time_ist"][0].as_py()
            times[sid] = int(datetime.fromisoformat(first).timestamp()) * 1_000_000_000
    if isinstance(snapshot, str):
        if snapshot not in times:
            raise M2MError(
                "snapshot", f"{snapshot!r} does not list {underlying} {expiry.isoformat()} (has {', '.join(ids)})"
            )
        sid = snapshot
    else:
        before = [s for s in ids if times[s] <= snapshot]
        if not before:
            raise M2MError("snapshot", f"no snapshot of {underlying} {expiry.isoformat()} at or before ts {snapshot}")
        sid = max(before, key=lambda s: times[s])
    t = t.filter(pc.equal(t["snapshot_id"], sid))
    strikes = np.unique(t["strike"].to_numpy())
    cols = {k: np.full(len(strikes), np.nan) for k in ("CE_ltp", "CE_iv", "PE_ltp", "PE_iv")}
    pos = np.searchsorted(strikes, t["strike"].to_numpy())
    ot = t["option_type"].to_pylist()
    ltp = t["ltp"].to_numpy(zero_copy_only=False)
    iv = t["iv"].to_numpy(zero_copy_only=False)
    for i, o in enumerate(ot):
        if o not in ("CE", "PE"):
            raise DataError(str(path), "option_type", f"must be CE or PE, got {o!r}")
        cols[f"{o}_ltp"][pos[i]] = ltp[i]
        cols[f"{o}_iv"][pos[i]] = iv[i] / 100.0 if iv[i] > 0 else np.nan
    return ChainSnapshot(
        underlying,
        expiry,
        nse_expiry_ts(expiry),
        sid,
        times[sid],
        strikes,
        cols["CE_ltp"],
        cols["CE_iv"],
        cols["PE_ltp"],
        cols["PE_iv"],
    )


def _option_leg(
    chain: ChainSnapshot,
    option_type: str,
    strike: float,
    side: int,
    qty: float,
    lot_size: float,
    underlying_symbol: str,
    exchange: str,
    note: str,
) -> LegSpec:
    ltp, iv = chain.quote(option_type, strike)
    if not (math.isfinite(ltp) and ltp >= 0):
        raise M2MError(
            "strike", f"{option_type} {strike:g} has no LTP in {chain.underlying} {chain.expiry} ({chain.snapshot_id})"
        )
    return LegSpec(
        symbol=nse_option_symbol(chain.underlying, chain.expiry, strike, option_type),
        side=side,
        qty=qty,
        entry_price=ltp,
        exchange=exchange,
        segment="option",
        lot_size=lot_size,
        multiplier=1.0,
        option_type=option_type,
        strike=float(strike),
        expiry_ts=chain.expiry_ts,
        underlying=underlying_symbol,
        implied_vol=iv if math.isfinite(iv) else None,
        notes=note,
    )


def _sizing(chain: ChainSnapshot, lots: int, lot_size: float | None) -> tuple[float, float]:
    if isinstance(lots, bool) or not isinstance(lots, int) or lots <= 0:
        raise M2MError("lots", f"must be an int > 0, got {lots!r}")
    if lot_size is None:
        day = datetime.fromtimestamp(chain.snapshot_ts / 1e9, IST).date()
        lot_size = nse_lot_size(chain.underlying, day)
    lot = _finite("lot_size", lot_size, positive=True)
    return lot * lots, lot


def short_straddle(
    chain: ChainSnapshot,
    spot: float,
    *,
    lots: int = 1,
    lot_size: float | None = None,
    underlying_symbol: str | None = None,
    exchange: str = "NFO",
) -> list[LegSpec]:
    """A short straddle at the ATM strike (nearest to ``spot``): SELL the call and SELL the put, entered at
    the snapshot's LTPs, ``lots`` × lot size units each (lot size from :func:`nse_lot_size` when None).

    Raises:
        M2MError: bad spot/lots/lot size, or an ATM option without an LTP.
    """
    qty, lot = _sizing(chain, lots, lot_size)
    u = underlying_symbol or NSE_UNDERLYING_SYMBOLS.get(chain.underlying, chain.underlying)
    k = chain.atm_strike(spot)
    return [_option_leg(chain, o, k, -1, qty, lot, u, exchange, "short straddle") for o in ("C", "P")]


def iron_condor(
    chain: ChainSnapshot,
    spot: float,
    *,
    short_offset: float,
    wing_width: float,
    lots: int = 1,
    lot_size: float | None = None,
    underlying_symbol: str | None = None,
    exchange: str = "NFO",
) -> list[LegSpec]:
    """A short iron condor around the ATM strike K (nearest to ``spot``), strike offsets in index points:
    SELL call K+short_offset, BUY call K+short_offset+wing_width, SELL put K−short_offset,
    BUY put K−short_offset−wing_width; entered at the snapshot's LTPs (order: short call, long call,
    short put, long put).

    Raises:
        M2MError: offsets that are not > 0, a strike not listed or without LTP, bad lots or lot size.
    """
    _finite("short_offset", short_offset, positive=True)
    _finite("wing_width", wing_width, positive=True)
    qty, lot = _sizing(chain, lots, lot_size)
    u = underlying_symbol or NSE_UNDERLYING_SYMBOLS.get(chain.underlying, chain.underlying)
    k = chain.atm_strike(spot)
    plan = (
        ("C", k + short_offset, -1),
        ("C", k + short_offset + wing_width, 1),
        ("P", k - short_offset, -1),
        ("P", k - short_offset - wing_width, 1),
    )
    return [_option_leg(chain, o, strike, side, qty, lot, u, exchange, "iron condor") for o, strike, side in plan]
