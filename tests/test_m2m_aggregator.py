"""M2M aggregator against an independent truth: a plain Python loop that, at every price update,
recomputes every strategy's M2M from all its legs with DESIGN.md's formula and keeps the minute's
open/high/low/close, on real ticks (Binance BTCUSDT trades, an ETHUSDT trade list, NIFTY 50 / NIFTY BANK
1m bars). Batching must not change a single candle."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from engine.m2m import CANDLE_SCHEMA, DAILY_SCHEMA, LegSpec, M2MAggregatorCore, M2MError, M2MOutput, StrategyBook
from engine.m2m._kernel import SegmentPaths, segment_paths
from engine.m2m._paths_jit import PathKernel
from engine.m2m.options import NSE_IV_RATE, NSE_SNAPSHOT_TIMES, load_option_chain, short_straddle

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHAIN = DATA / "nse_option_chain_snapshots_nifty_banknifty_2024-04_05.parquet"
M = 60_000_000_000
CANDLE_COLS = ["open", "high", "low", "close", "realized_pnl", "total_pnl"]


def _ns(col: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(pc.cast(col, pa.timestamp("ns", tz="UTC")), pa.int64()).to_numpy()


def crypto_ticks() -> list[tuple[int, str, float]]:
    """1,000 real ETHUSDT trades (09:20:00–09:23:27 UTC) merged with the 2,001 real BTCUSDT trades of
    nautilus (46 s), re-timed (×4.5, from 09:20:00.100) into the same window so both symbols move in
    every minute. Prices are untouched."""
    eth = pq.read_table(DATA / "freqtrade_ethusdt_trades_2023-02-02.parquet")
    btc = pq.read_table(DATA / "nautilus_binance_btcusdt_trades_2021-01-08.parquet")
    e_ts, b_ts = _ns(eth["timestamp"]), _ns(btc["timestamp"])
    start = int(e_ts[0] - e_ts[0] % M)
    b_ts = start + 100_000_000 + ((b_ts - b_ts[0]) * 4.5).astype(np.int64)
    ticks = [(int(t), "ETHUSDT", float(p)) for t, p in zip(e_ts, eth["price"].to_numpy(), strict=True)]
    ticks += [(int(t), "BTCUSDT", float(p)) for t, p in zip(b_ts, btc["price"].to_numpy(), strict=True)]
    ticks.sort(key=lambda x: x[0])  # stable: ties keep ETH first
    return ticks


def nse_ticks(days: list[str]) -> list[tuple[int, str, float]]:
    """NIFTY 50 and NIFTY BANK 1m bars of ``days`` (IST dates) as 4 updates per bar: open at +0 s, high
    at +15 s, low at +30 s, close at +45 s."""
    out = []
    for f, sym in (
        ("nse_nifty50_index_1m_2024-01_2024-08.parquet", "NIFTY 50"),
        ("nse_banknifty_index_1m_2024-01_2024-08.parquet", "NIFTY BANK"),
    ):
        t = pq.read_table(DATA / f)
        local = pc.strftime(t["timestamp"], format="%Y-%m-%d").to_pylist()
        keep = pa.array([d in days for d in local])
        t = t.filter(keep)
        ts = _ns(t["timestamp"])
        for i, col in enumerate(("open", "high", "low", "close")):
            out += [(int(x) + i * 15_000_000_000, sym, float(p)) for x, p in zip(ts, t[col].to_numpy(), strict=True)]
    out.sort(key=lambda x: (x[0], x[1]))
    return out


# ---------------------------------------------------------------------- the independent oracle
@dataclass
class OLeg:
    leg_id: str
    symbol: str
    side: int
    qty: float
    entry: float
    mult: float = 1.0


@dataclass
class Oracle:
    """Straightforward M2M candles: at every update, every strategy holding the symbol is recomputed
    from scratch: Σ (LTP − entry) × qty × side × multiplier over its open legs (entry when no LTP)."""

    tz: dict[str, str]
    legs: dict[tuple[str, str], list[OLeg]] = field(default_factory=lambda: defaultdict(list))
    realized: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    last: dict[str, float] = field(default_factory=dict)
    minute: int | None = None
    cand: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)
    candles: list[dict] = field(default_factory=list)
    ops: list[tuple[tuple[str, str], int, float]] = field(default_factory=list)  # (strategy, minute, realized)

    def m2m(self, s: tuple[str, str]) -> float:
        return sum(
            (self.last.get(leg.symbol, leg.entry) - leg.entry) * leg.qty * leg.side * leg.mult
            for leg in self.legs[s]
            if leg.qty > 0
        )

    def _touch(self, s: tuple[str, str], before: float, after: float, update: bool) -> None:
        c = self.cand.setdefault(s, [before, before, before, 0])
        c[1], c[2] = max(c[1], after), min(c[2], after)
        c[3] += 1 if update else 0
        self.live.add(s[0])

    def tick(self, ts: int, sym: str, price: float) -> None:
        m = ts - ts % M
        if self.minute is None:
            self.minute = m
        elif m > self.minute:
            self.close()
            self.minute = m
        holders = [s for s, legs in list(self.legs.items()) if any(leg.symbol == sym and leg.qty > 0 for leg in legs)]
        before = {s: self.m2m(s) for s in holders}
        self.last[sym] = price
        for s in holders:
            self._touch(s, before[s], self.m2m(s), True)

    def op(self, s: tuple[str, str], change) -> None:
        before = self.m2m(s)
        realized = change(self.legs[s])
        self.realized[s] += realized
        if self.minute is not None:
            self._touch(s, before, self.m2m(s), False)
        self.ops.append((s, self.minute, realized))

    def close_until(self, ts: int) -> None:
        if self.minute is not None and ts >= self.minute + M:
            self.close()
            self.minute = ts - ts % M

    def close(self) -> None:
        for s in sorted(self.legs):
            c = self.cand.get(s)
            has_open = any(leg.qty > 0 for leg in self.legs[s])
            if c is None and not (has_open and s[0] in self.live):
                continue
            close = self.m2m(s)
            o, h, lo, upd = c if c is not None else (close, close, close, 0)
            self.candles.append(
                dict(
                    account_id=s[0],
                    instance_id=s[1],
                    ts=self.minute,
                    open=o,
                    high=h,
                    low=lo,
                    close=close,
                    realized_pnl=self.realized[s],
                    total_pnl=close + self.realized[s],
                    updates=upd,
                )
            )
        self.cand.clear()
        self.live.clear()

    def daily(self) -> list[dict]:
        """Daily rows from the oracle's candles and operations, days in each account's zone."""

        def day(acct: str, ts: int) -> date:
            return datetime.fromtimestamp(ts / 1e9, ZoneInfo(self.tz[acct])).date()

        rows: dict[tuple, dict] = {}
        for c in self.candles:
            key = (c["account_id"], c["instance_id"], day(c["account_id"], c["ts"]))
            r = rows.setdefault(key, dict(max_m2m=-math.inf, min_m2m=math.inf, realized_pnl=0.0, trades=0))
            r["max_m2m"], r["min_m2m"] = max(r["max_m2m"], c["high"]), min(r["min_m2m"], c["low"])
            r["unrealized_pnl"], r["total_pnl"] = c["close"], c["total_pnl"]
        first = min(c["ts"] for c in self.candles)
        for s, minute, realized in self.ops:  # operations before the first update count on the first day
            r = rows[(s[0], s[1], day(s[0], first if minute is None else minute))]
            r["realized_pnl"] += realized
            r["trades"] += 1
        return [dict(account_id=k[0], instance_id=k[1], day=k[2], **v) for k, v in sorted(rows.items())]


def _rows(table: pa.Table) -> list[dict]:
    """Rows with ``ts`` as int ns."""
    if "ts" in table.column_names:
        table = table.set_column(table.column_names.index("ts"), "ts", pc.cast(table["ts"], pa.int64()))
    return table.to_pylist()


def _sorted_rows(table: pa.Table, keys: list[str]) -> list[dict]:
    return sorted(_rows(table), key=lambda r: tuple(r[k] for k in keys))


def assert_candles_match(table: pa.Table, oracle: Oracle) -> None:
    assert table.schema == CANDLE_SCHEMA
    got = _sorted_rows(table, ["ts", "account_id", "instance_id"])
    want = sorted(oracle.candles, key=lambda r: (r["ts"], r["account_id"], r["instance_id"]))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["ts"] == w["ts"]
        assert (g["account_id"], g["instance_id"], g["updates"]) == (w["account_id"], w["instance_id"], w["updates"])
        for col in CANDLE_COLS:
            assert g[col] == pytest.approx(w[col], rel=1e-9, abs=1e-6), (col, g, w)


class Feed:
    """Feeds the same ticks to a core in batches, applying book operations between batches."""

    def __init__(self, core: M2MAggregatorCore) -> None:
        self.core = core
        self.out: list[M2MOutput] = []

    def run(self, ticks: list[tuple[int, str, float]], cuts: list[int]) -> None:
        for a, b in zip([0, *cuts], [*cuts, len(ticks)], strict=True):
            if b > a:
                chunk = ticks[a:b]
                self.out.append(
                    self.core.on_prices([t[1] for t in chunk], [t[2] for t in chunk], [t[0] for t in chunk])
                )

    def candles(self) -> pa.Table:
        return pa.concat_tables([o.candles for o in self.out])

    def daily(self) -> pa.Table:
        return pa.concat_tables([o.daily for o in self.out])


def _random_strategies(rng: random.Random, n: int, prices: dict[str, float]) -> dict[str, list[tuple]]:
    syms = sorted(prices)
    out = {}
    for i in range(n):
        legs = []
        for _ in range(rng.randint(1, 4)):
            sym = rng.choice(syms)
            legs.append(
                (
                    sym,
                    rng.choice((1, -1)),
                    round(rng.uniform(0.1, 3.0), 3),
                    round(prices[sym] * rng.uniform(0.99, 1.01), 2),
                    rng.choice((1.0, 1.0, 0.001)),
                )
            )
        out[f"s{i}"] = legs
    return out


def _setup(tz: str, strategies: dict[str, list[tuple]], account: str = "A") -> tuple[M2MAggregatorCore, Oracle]:
    core = M2MAggregatorCore()
    book = core.add_account(account, tz)
    oracle = Oracle({account: tz})
    for name, legs in strategies.items():
        book.create_strategy(name, name, 0)
        for j, (sym, side, qty, entry, mult) in enumerate(legs):
            book.add_leg(name, LegSpec(sym, side, qty, entry, multiplier=mult), 0, leg_id=f"{name}.{j}")
            leg = OLeg(f"{name}.{j}", sym, side, qty, entry, mult)
            oracle.op((account, name), lambda legs, leg=leg: legs.append(leg) or 0.0)
    return core, oracle


@pytest.mark.parametrize("batching", ["one", "ticks", "random"])
def test_candles_equal_plain_loop_on_real_crypto_ticks(batching: str) -> None:
    ticks = crypto_ticks()
    rng = random.Random(7)
    strategies = _random_strategies(rng, 40, {"ETHUSDT": 1666.0, "BTCUSDT": 39_450.0})
    core, oracle = _setup("UTC", strategies)
    for t in ticks:
        oracle.tick(*t)
    end = ticks[-1][0] - ticks[-1][0] % M + M
    oracle.close_until(end)
    n = len(ticks)
    cuts = {"one": [], "ticks": list(range(1, n)), "random": sorted(rng.sample(range(1, n), 60))}[batching]
    feed = Feed(core)
    feed.run(ticks, cuts)
    feed.out.append(core.close_until(end))
    assert len(oracle.candles) == 40 * 4  # every strategy, every minute (no gaps)
    assert_candles_match(feed.candles(), oracle)
    assert core.leg_updates == sum(
        sum(1 for leg in legs if leg[0] == t[1]) for t in ticks for legs in strategies.values()
    )


def test_long_gains_short_loses_in_candles() -> None:
    core = M2MAggregatorCore()
    book = core.add_account("A")
    book.create_strategy("long", "L", 0)
    book.create_strategy("short", "S", 0)
    book.add_leg("long", LegSpec("BTCUSDT", 1, 2.0, 100.0), 0)
    book.add_leg("short", LegSpec("BTCUSDT", -1, 2.0, 100.0), 0)
    out = core.on_prices(["BTCUSDT"] * 3, [101.0, 99.0, 110.0], [10 * M, 10 * M + 1, 10 * M + 2])
    out = core.close_until(11 * M)
    rows = {r["instance_id"]: r for r in out.candles.to_pylist()}
    # long: path 0 (minute start) -> 2 -> −2 -> 20 ; short: the mirror image
    assert [rows["long"][k] for k in ("open", "high", "low", "close")] == [0.0, 20.0, -2.0, 20.0]
    assert [rows["short"][k] for k in ("open", "high", "low", "close")] == [0.0, 2.0, -20.0, -20.0]
    assert rows["long"]["updates"] == 3 and rows["long"]["total_pnl"] == 20.0


def test_leg_operations_mid_stream_match_plain_loop() -> None:
    ticks = crypto_ticks()
    rng = random.Random(11)
    strategies = _random_strategies(rng, 12, {"ETHUSDT": 1666.0, "BTCUSDT": 39_450.0})
    core, oracle = _setup("UTC", strategies)
    book = core.book("A")
    feed = Feed(core)
    pos = 0
    for stop in (300, 900, 1500, 2200, 2800):
        for t in ticks[pos:stop]:
            oracle.tick(*t)
        feed.run(ticks[pos:stop], [])
        pos = stop
        # exit half of a leg at the LTP, open a new leg, remove another, at the current feed time
        name = f"s{stop % 12}"
        leg = next(lg for lg in book.open_legs(name))
        px = core.last_price(leg.symbol) or leg.entry_price
        q = leg.qty / 2

        def part_exit(legs, leg_id=leg.leg_id, q=q, px=px):
            ol = next(x for x in legs if x.leg_id == leg_id)
            ol.qty -= q
            return (px - ol.entry) * q * ol.side * ol.mult

        ch = book.exit_leg(leg.leg_id, q, px, 0)
        oracle.op(("A", name), part_exit)
        assert ch.exits[0].realized_pnl == pytest.approx((px - leg.entry_price) * q * leg.side * leg.multiplier)
        sym = rng.choice(["ETHUSDT", "BTCUSDT"])
        entry = (core.last_price(sym) or 100.0) * 1.001
        ch = book.add_leg(name, LegSpec(sym, -1, 0.5, entry), 0, leg_id=f"new{stop}")

        def add(legs, sym=sym, entry=entry, stop=stop):
            legs.append(OLeg(f"new{stop}", sym, -1, 0.5, entry))
            return 0.0

        oracle.op(("A", name), add)
    for t in ticks[pos:]:
        oracle.tick(*t)
    feed.run(ticks[pos:], [])
    end = ticks[-1][0] - ticks[-1][0] % M + M
    oracle.close_until(end)
    feed.out.append(core.close_until(end))
    assert_candles_match(feed.candles(), oracle)
    # exits moved M2M into realized: totals stay consistent with a fresh recomputation
    for name in strategies:
        mark = core.mark("A", name)
        assert mark.unrealized_pnl == pytest.approx(oracle.m2m(("A", name)), abs=1e-6)
        assert mark.realized_pnl == pytest.approx(oracle.realized[("A", name)], abs=1e-9)


def test_daily_rows_split_at_kolkata_midnight_on_nifty() -> None:
    days = ["2024-05-02", "2024-05-03", "2024-05-06"]
    ticks = nse_ticks(days)
    strategies = {
        "fut": [("NIFTY 50", 1, 25.0, 22_600.0, 1.0)],
        "spread": [("NIFTY 50", -1, 25.0, 22_600.0, 1.0), ("NIFTY BANK", 1, 15.0, 49_300.0, 1.0)],
        "bank": [("NIFTY BANK", -1, 15.0, 49_300.0, 1.0)],
    }
    core, oracle = _setup("Asia/Kolkata", strategies, account="ind")
    book = core.book("ind")
    feed = Feed(core)
    # exit 10 units of "fut" at the LTP in the middle of the second day
    noon = int(datetime(2024, 5, 3, 12, 0, tzinfo=ZoneInfo("Asia/Kolkata")).timestamp()) * 1_000_000_000
    mid = next(i for i, t in enumerate(ticks) if t[0] >= noon)
    for t in ticks[:mid]:
        oracle.tick(*t)
    feed.run(ticks[:mid], [500, 1200, 2000])
    px = core.last_price("NIFTY 50")
    assert px is not None
    book.exit_leg("fut.0", 10.0, px, 0)

    def ex(legs, px=px):
        legs[0].qty -= 10.0
        return (px - 22_600.0) * 10.0

    oracle.op(("ind", "fut"), ex)
    for t in ticks[mid:]:
        oracle.tick(*t)
    feed.run(ticks[mid:], [100, 1700])
    end = int(datetime(2024, 5, 7, 0, 0, tzinfo=ZoneInfo("Asia/Kolkata")).timestamp()) * 1_000_000_000
    oracle.close_until(end)
    feed.out.append(core.close_until(end))
    assert_candles_match(feed.candles(), oracle)
    daily = feed.daily()
    assert daily.schema == DAILY_SCHEMA
    got = _sorted_rows(daily, ["account_id", "instance_id", "day"])
    want = oracle.daily()
    assert [(r["instance_id"], r["day"]) for r in got] == [(r["instance_id"], r["day"]) for r in want]
    assert {r["day"] for r in got} == {date.fromisoformat(d) for d in days}
    for g, w in zip(got, want, strict=True):
        for col in ("realized_pnl", "unrealized_pnl", "total_pnl", "max_m2m", "min_m2m"):
            assert g[col] == pytest.approx(w[col], rel=1e-9, abs=1e-6), (col, g, w)
        assert g["trades"] == w["trades"] and g["model_mark"] is False
    fut = {r["day"]: r for r in got if r["instance_id"] == "fut"}
    assert fut[date(2024, 5, 3)]["realized_pnl"] == pytest.approx((px - 22_600.0) * 10.0)
    assert fut[date(2024, 5, 2)]["realized_pnl"] == 0.0 and fut[date(2024, 5, 2)]["trades"] == 1  # the entry
    assert fut[date(2024, 5, 3)]["trades"] == 1 and fut[date(2024, 5, 6)]["trades"] == 0
    # NSE closes at 15:30 IST: no candles overnight (the account is not live), a gap-free session
    ts = sorted({r["ts"] for r in _rows(feed.candles())})
    ist = ZoneInfo("Asia/Kolkata")
    assert len(ts) == 3 * 375 and all(9 <= datetime.fromtimestamp(t / 1e9, ist).hour < 16 for t in ts)


def test_daily_rows_split_at_local_midnight_not_utc() -> None:
    """The same ticks straddling 18:30 UTC (= 00:00 IST): an Asia/Kolkata account gets two days, a UTC one."""
    base = int(datetime(2024, 5, 2, 18, 28, tzinfo=ZoneInfo("UTC")).timestamp()) * 1_000_000_000
    prices = [100.0, 101.0, 99.0, 103.0, 102.0]
    ts = [base + i * M for i in range(5)]
    core = M2MAggregatorCore()
    for acct, tz in (("ist", "Asia/Kolkata"), ("utc", "UTC")):
        b = core.add_account(acct, tz)
        b.add_leg(b.default_instance_id, LegSpec("BTCUSDT", 1, 1.0, 100.0), 0)
    out = [core.on_prices(["BTCUSDT"] * 5, prices, ts)]
    out.append(core.close_until(base + 10 * M))
    out.append(core.close_until(int(datetime(2024, 5, 4, 0, 0, tzinfo=ZoneInfo("UTC")).timestamp()) * 1_000_000_000))
    daily = pa.concat_tables([o.daily for o in out]).to_pylist()
    ist = [r for r in daily if r["account_id"] == "ist"]
    utc = [r for r in daily if r["account_id"] == "utc"]
    assert [r["day"] for r in ist] == [date(2024, 5, 2), date(2024, 5, 3)]
    assert [r["day"] for r in utc] == [date(2024, 5, 2)]
    # IST 2024-05-02: minutes 18:28, 18:29 UTC (M2M 0 -> 1); 2024-05-03: from 18:30 (−1, 3, 2)
    assert ist[0]["unrealized_pnl"] == 1.0 and (ist[0]["max_m2m"], ist[0]["min_m2m"]) == (1.0, 0.0)
    assert ist[1]["unrealized_pnl"] == 2.0 and (ist[1]["max_m2m"], ist[1]["min_m2m"]) == (3.0, -1.0)
    assert utc[0]["unrealized_pnl"] == 2.0 and (utc[0]["max_m2m"], utc[0]["min_m2m"]) == (3.0, -1.0)


@pytest.mark.parametrize("aligned", [True, False])
def test_snapshot_restore_mid_stream_equals_uninterrupted_run(aligned: bool) -> None:
    """Stop mid-stream, snapshot through JSON, restore, replay every symbol from its watermark
    (inclusive, so it overlaps what was processed). With the replay cut into the same batches the
    output is bit-identical; cut differently, intermediate sums round differently (≤ 1e-12 relative)."""
    ticks = crypto_ticks()
    rng = random.Random(3)
    strategies = _random_strategies(rng, 25, {"ETHUSDT": 1666.0, "BTCUSDT": 39_450.0})
    cuts = sorted(rng.sample(range(1, len(ticks)), 40))
    end = ticks[-1][0] - ticks[-1][0] % M + M

    def build() -> M2MAggregatorCore:
        core, _ = _setup("Asia/Kolkata", strategies)
        core.book("A").set_limits("s1", 0, target_profit=5.0, stop_loss=5.0)
        return core

    full = Feed(build())
    full.run(ticks, cuts)
    full.out.append(full.core.close_until(end))
    split = cuts[20] if aligned else 1234  # at a batch boundary, or mid-batch
    first = Feed(build())
    first.run(ticks[:split], [c for c in cuts if c < split])
    snap = json.loads(json.dumps(first.core.snapshot()))
    restored = M2MAggregatorCore.restore(snap)
    wm = min(restored.symbol_watermarks().values())
    start = next(i for i, t in enumerate(ticks) if t[0] >= wm)
    assert start < split  # the replay overlaps what was processed
    replay = ticks[start:]
    second = Feed(restored)
    second.run(replay, [c - start for c in cuts if c > split] if aligned else [17, 400, 401, 900])
    second.out.append(restored.close_until(end))
    assert restored.stale_dropped == split - start
    got = pa.concat_tables([first.candles(), second.candles()])
    want = full.candles()
    events = [e for o in first.out + second.out for e in o.events]
    want_events = [e for o in full.out for e in o.events]
    assert len(want_events) > 2
    if aligned:
        assert got.equals(want)
        assert events == want_events
        assert restored.marks().equals(full.core.marks())
    else:
        g, w = _sorted_rows(got, ["ts", "instance_id"]), _sorted_rows(want, ["ts", "instance_id"])
        assert len(g) == len(w)
        for a, b in zip(g, w, strict=True):
            assert (a["ts"], a["instance_id"], a["updates"]) == (b["ts"], b["instance_id"], b["updates"])
            for col in CANDLE_COLS:
                assert a[col] == pytest.approx(b[col], rel=1e-12, abs=1e-9)
        assert [(e.instance_id, e.kind, e.ts) for e in events] == [(e.instance_id, e.kind, e.ts) for e in want_events]
        assert [e.total_pnl for e in events] == pytest.approx([e.total_pnl for e in want_events], rel=1e-12)
    assert restored.leg_updates == full.core.leg_updates


def test_target_and_stop_fire_once_per_crossing() -> None:
    core = M2MAggregatorCore()
    book = core.add_account("A")
    book.create_strategy("s", "S", 0, target_profit=10.0, stop_loss=5.0)
    book.add_leg("s", LegSpec("X", 1, 1.0, 100.0), 0)
    # totals: 5, 12 (target), 15, 9, 11 (target again), 94 (−6: stop), 96, 94 (stop again? no: still below)
    px = [105.0, 112.0, 115.0, 109.0, 111.0, 94.0, 94.5, 93.0, 96.0, 94.0]
    ts = [M + i for i in range(len(px))]
    out = core.on_prices(["X"] * 5, px[:5], ts[:5])
    out2 = core.on_prices(["X"] * 5, px[5:], ts[5:])
    ev = [(e.kind, e.ts, e.total_pnl, e.threshold) for e in out.events + out2.events]
    assert ev == [
        ("target", ts[1], 12.0, 10.0),
        ("target", ts[4], 11.0, 10.0),
        ("stop", ts[5], -6.0, -5.0),
        ("stop", ts[9], -6.0, -5.0),
    ]
    # an exit that realises the loss keeps the total, so no new event; setting limits re-checks at once
    book.exit_leg(f"{book.account_id}:m1", 1.0, 94.0, 0)
    assert core.drain().events == []
    book.set_limits("s", 0, target_profit=None, stop_loss=2.0)
    assert [(e.kind, e.total_pnl) for e in core.drain().events] == [("stop", -6.0)]


def test_flat_candles_only_while_the_account_is_live() -> None:
    core = M2MAggregatorCore()
    book = core.add_account("A")
    book.create_strategy("eth", "E", 0)
    book.create_strategy("btc", "B", 0)
    book.create_strategy("empty", "N", 0)
    book.add_leg("eth", LegSpec("ETH", 1, 1.0, 10.0), 0)
    book.add_leg("btc", LegSpec("BTC", 1, 1.0, 100.0), 0)
    outs = [core.on_prices(["ETH", "BTC"], [11.0, 101.0], [M, M + 1])]
    outs.append(core.on_prices(["BTC"], [102.0], [2 * M]))  # minute 2: only BTC moves; ETH gets a flat candle
    outs.append(core.on_prices(["BTC"], [103.0], [9 * M]))  # minutes 3–8: nothing moves: no candles
    outs.append(core.close_until(10 * M))
    all_rows = _rows(pa.concat_tables([o.candles for o in outs]))
    mins = sorted({r["ts"] // M for r in all_rows})
    assert mins == [1, 2, 9]
    eth = [r for r in all_rows if r["instance_id"] == "eth"]
    assert [(r["open"], r["high"], r["low"], r["close"], r["updates"]) for r in eth] == [
        (0.0, 1.0, 0.0, 1.0, 1),
        (1.0, 1.0, 1.0, 1.0, 0),
        (1.0, 1.0, 1.0, 1.0, 0),
    ]
    assert not [r for r in all_rows if r["instance_id"] == "empty"]


def test_late_and_stale_updates() -> None:
    core = M2MAggregatorCore()
    book = core.add_account("A")
    book.add_leg(book.default_instance_id, LegSpec("X", 1, 1.0, 100.0), 0)
    book.add_leg(book.default_instance_id, LegSpec("Y", 1, 1.0, 100.0), 0)
    core.on_prices(["X"], [101.0], [5 * M + 10])
    core.on_prices(["Y"], [102.0], [4 * M])  # older than the open minute: counts in minute 5
    core.on_prices(["X"], [150.0], [5 * M])  # older than X's last update: stale, dropped
    assert core.stale_dropped == 1
    out = core.close_until(6 * M)
    (row,) = out.candles.to_pylist()
    assert row["close"] == 3.0 and row["updates"] == 2 and row["high"] == 3.0


def test_bad_batches_are_refused_whole() -> None:
    core = M2MAggregatorCore()
    book = core.add_account("A")
    book.add_leg(book.default_instance_id, LegSpec("X", 1, 1.0, 100.0), 0)
    core.on_prices(["X"], [101.0], [M])
    before = core.snapshot()
    for args, field_ in (
        ((["X", "X"], [102.0, float("nan")], [M + 1, M + 2]), "prices"),
        ((["X", "X"], [102.0, -1.0], [M + 1, M + 2]), "prices"),
        ((["X", "X"], [102.0, 103.0], [M + 2, M + 1]), "ts_ns"),
        ((["X", "X"], [102.0, 103.0], [M + 1]), "ts_ns"),
        ((["X"], [102.0, 103.0], [M + 1, M + 2]), "symbols"),
        ((np.array([5]), [102.0], [M + 1]), "symbols"),
    ):
        with pytest.raises(M2MError) as err:
            core.on_prices(*args)
        assert err.value.field == field_
    assert core.snapshot() == before
    with pytest.raises(M2MError, match="IANA"):
        core.add_account("B", "Mars/Olympus")
    with pytest.raises(M2MError, match="unknown account"):
        core.book("B")
    with pytest.raises(M2MError, match="unknown strategy instance"):
        core.mark("A", "nope")


def test_symbol_ids_and_arrow_inputs() -> None:
    core = M2MAggregatorCore()
    book = core.add_account("A")
    book.add_leg(book.default_instance_id, LegSpec("X", -1, 2.0, 100.0), 0)
    x = core.symbol_id("X")
    assert core.symbol_id("X") == x and core.symbols == ["X"]
    core.on_prices(np.array([x, x]), np.array([99.0, 98.0]), np.array([M, M + 1]))
    t = pa.table({"symbol": ["X"], "ts": pa.array([2 * M], pa.timestamp("ns", tz="UTC")), "price": [97.0]})
    out = core.on_prices(t["symbol"], t["price"].to_numpy(), t["ts"])
    (row,) = out.candles.to_pylist()
    assert (row["open"], row["high"], row["low"], row["close"]) == (0.0, 4.0, 0.0, 4.0)
    assert core.mark("A", book.default_instance_id).unrealized_pnl == 6.0
    assert core.watermark == 2 * M and core.symbol_watermarks() == {"X": 2 * M}


def test_bot_fills_move_m2m_into_realized_and_total_stays_continuous() -> None:
    from engine.m2m import BotFill

    core = M2MAggregatorCore()
    book = core.add_account("A")
    book.create_strategy("bot-1", "Bot", 0)
    core.on_prices(["BTC"], [100.0], [M])
    book.apply_fill("bot-1", "b1", BotFill(1, "BTC", 1, 2.0, 100.0, M + 1))
    core.on_prices(["BTC"], [110.0], [M + 2])  # M2M (110 − 100) × 2 = 20
    assert core.mark("A", "bot-1").total_pnl == 20.0
    book.apply_fill("bot-1", "b1", BotFill(2, "BTC", -1, 1.5, 110.0, M + 3))  # exit at the LTP
    mark = core.mark("A", "bot-1")
    assert (mark.unrealized_pnl, mark.realized_pnl, mark.total_pnl) == (5.0, 15.0, 20.0)
    book.apply_fill("bot-1", "b1", BotFill(2, "BTC", -1, 1.5, 110.0, M + 3))  # a repeat is ignored
    assert core.mark("A", "bot-1").realized_pnl == 15.0
    out = core.close_until(2 * M)
    (row,) = _rows(out.candles)
    # minute start 0 (no legs) -> 0 at entry -> 20 -> 5 after the exit (15 realized)
    assert (row["open"], row["high"], row["low"], row["close"]) == (0.0, 20.0, 0.0, 5.0)
    assert (row["realized_pnl"], row["total_pnl"], row["updates"]) == (15.0, 20.0, 1)


def test_rebuilt_from_stored_rows_marks_the_same() -> None:
    core = M2MAggregatorCore()
    book = core.add_account("A", "Asia/Kolkata")
    book.create_strategy("s", "S", 0)
    book.add_leg("s", LegSpec("X", 1, 3.0, 100.0), 0)
    book.add_leg("s", LegSpec("Y", -1, 2.0, 50.0), 0)
    book.exit_leg(f"{book.account_id}:m1", 1.0, 104.0, 0)
    core.on_prices(["X", "Y"], [105.0, 48.0], [M, M + 1])
    rows = book.to_rows()
    again = M2MAggregatorCore()
    again.add_account("A", "Asia/Kolkata", book=StrategyBook.from_rows("A", **rows))
    again.on_prices(["X", "Y"], [105.0, 48.0], [M, M + 1])
    assert again.mark("A", "s") == core.mark("A", "s")
    # (105 − 100) × 2 + (48 − 50) × 2 × (−1) = 14 ; realized (104 − 100) × 1 = 4
    assert core.mark("A", "s").unrealized_pnl == 14.0 and core.mark("A", "s").realized_pnl == 4.0


def test_undrained_output_survives_a_snapshot() -> None:
    core = M2MAggregatorCore()
    book = core.add_account("A")
    book.add_leg(book.default_instance_id, LegSpec("X", 1, 1.0, 100.0), 0)
    core.on_prices(["X"], [101.0], [M])
    book.set_limits(book.default_instance_id, 0, target_profit=0.5, stop_loss=None)  # fires at once
    restored = M2MAggregatorCore.restore(json.loads(json.dumps(core.snapshot())))
    assert [(e.kind, e.total_pnl) for e in restored.drain().events] == [("target", 1.0)]
    assert restored.close_until(2 * M).candles.num_rows == 1


# ---------------------------------------------------------------------- compiled kernel vs numpy reference
class _CheckedPaths(PathKernel):
    """The compiled path kernel, checked at every segment against the numpy reference
    (:func:`engine.m2m._kernel.segment_paths`, run on a copy of the pair values): every output array and
    the pairs' new values must be bit-for-bit the same."""

    def __init__(self) -> None:
        super().__init__()
        self.segments = 0
        self.entries = 0
        self.model_segments = 0

    def paths(self, sym, price, ts, n_symbols, pairs, m2m, model_values):  # type: ignore[no-untyped-def]
        ref_pairs = dataclasses.replace(pairs, V=pairs.V.copy())
        want = segment_paths(sym, price, ts, n_symbols, ref_pairs, m2m, model_values)
        got = super().paths(sym, price, ts, n_symbols, pairs, m2m, model_values)
        assert pairs.V.tobytes() == ref_pairs.V.tobytes()
        assert (got is None) == (want is None)
        if got is not None and want is not None:
            for f in dataclasses.fields(SegmentPaths):
                g, w = getattr(got, f.name), getattr(want, f.name)
                if isinstance(g, np.ndarray):
                    assert g.dtype == w.dtype and g.tobytes() == w.tobytes(), f.name
                else:
                    assert g == w, f.name
            self.segments += 1
            self.entries += len(got.path)
            self.model_segments += bool(pairs.model[pairs.order].any())
        return got


def test_compiled_paths_equal_numpy_reference_on_real_crypto_ticks() -> None:
    """Real ETH/BTC trades in random batches, strategies with several legs per symbol, target/stop limits,
    and leg operations between batches (pairs added and dropped, so the symbol index is rebuilt)."""
    ticks = crypto_ticks()
    rng = random.Random(21)
    strategies = _random_strategies(rng, 60, {"ETHUSDT": 1666.0, "BTCUSDT": 39_450.0})
    core, _ = _setup("UTC", strategies)
    checked = core._paths = _CheckedPaths()
    book = core.book("A")
    for i in range(0, 60, 3):
        book.set_limits(f"s{i}", 0, target_profit=rng.uniform(1, 30), stop_loss=rng.uniform(1, 30))
    cuts = sorted(rng.sample(range(1, len(ticks)), 80))
    feed = Feed(core)
    for n, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(ticks)], strict=True)):
        feed.run(ticks[a:b], [])
        if n % 7 == 3:  # exit a whole leg (its pair may go) and open one on the other symbol
            name = f"s{rng.randrange(60)}"
            legs = book.open_legs(name)
            if legs:
                leg = legs[0]
                book.exit_leg(leg.leg_id, leg.qty, core.last_price(leg.symbol) or leg.entry_price, 0)
            sym = rng.choice(["ETHUSDT", "BTCUSDT"])
            book.add_leg(name, LegSpec(sym, rng.choice((1, -1)), 0.7, (core.last_price(sym) or 100.0) * 0.999), 0)
    feed.out.append(core.close_until(ticks[-1][0] - ticks[-1][0] % M + M))
    assert checked.segments >= 80 and checked.entries > 100_000
    assert sum(len(o.events) for o in feed.out) > 0


def test_compiled_paths_equal_numpy_reference_with_model_marked_options() -> None:
    """NIFTY 50 1m closes mark a short straddle by the model, in a strategy that also holds a NIFTY 50
    future (one pair with linear and model legs) next to plain NIFTY futures; then the call, later the put,
    start trading."""
    s3 = load_option_chain(CHAIN, "NIFTY", date(2024, 5, 30), "S3")
    legs = short_straddle(s3, 22_475.9)
    core = M2MAggregatorCore()
    checked = core._paths = _CheckedPaths()
    book = core.add_account("nse", "Asia/Kolkata", rate=NSE_IV_RATE)
    book.create_strategy("hedged", "H", 0, target_profit=2_000.0, stop_loss=2_000.0)
    for leg in legs:
        book.add_leg("hedged", leg, NSE_SNAPSHOT_TIMES["S3"])
    book.add_leg("hedged", LegSpec("NIFTY 50", 1, 25.0, 22_450.0), 0)
    for i, side in enumerate((1, -1, 1)):
        book.create_strategy(f"fut{i}", "F", 0)
        book.add_leg(f"fut{i}", LegSpec("NIFTY 50", side, 25.0 * (i + 1), 22_500.0), 0)
    t = pq.read_table(DATA / "nse_nifty50_index_1m_2024-01_2024-08.parquet")
    t = t.filter(pc.equal(pc.strftime(t["timestamp"], format="%Y-%m-%d"), "2024-05-06"))
    ts = [int(x) for x in _ns(t["timestamp"])]
    px = t["close"].to_numpy().tolist()
    ticks = [(x + k * 15_000_000_000, "NIFTY 50", p) for x, p in zip(ts, px, strict=True) for k in range(3)]
    ticks.sort(key=lambda x: x[0])
    half, late = len(ticks) // 2, len(ticks) * 3 // 4
    feed = Feed(core)
    feed.run(ticks[:half], list(range(7, half, 13)))
    feed.run([(ticks[half][0] - 1, legs[0].symbol, 150.0)], [])  # the call trades: marked at its LTP from now
    feed.run(ticks[half:late], list(range(11, late - half, 17)))
    feed.run([(ticks[late][0] - 1, legs[1].symbol, 140.0)], [])  # then the put: no leg is marked by the model
    feed.run(ticks[late:], list(range(5, len(ticks) - late, 9)))
    feed.out.append(core.close_until(ticks[-1][0] - ticks[-1][0] % M + M))
    assert checked.model_segments >= 10 and checked.segments > checked.model_segments
    assert core.mark("nse", "hedged").unrealized_pnl != 0.0


def test_symbol_ids_vectorised_equal_one_by_one_interning() -> None:
    """symbol_ids (pyarrow index_in) gives what symbol_id gives symbol by symbol, new symbols in
    order of first appearance, whatever the input's form; nulls and non-strings are refused."""
    names = ["ETHUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCUSDT", "ADAUSDT"]
    one_by_one = M2MAggregatorCore()
    one_by_one.symbol_id("BTCUSDT")
    expected = [one_by_one.symbol_id(s) for s in names]
    for form in (names, np.asarray(names, dtype=object), pa.array(names), pa.array(names).dictionary_encode(),
                 pa.chunked_array([names[:2], names[2:]])):  # fmt: skip
        core = M2MAggregatorCore()
        core.symbol_id("BTCUSDT")
        assert core.symbol_ids(form).tolist() == expected
        assert core.symbols == one_by_one.symbols
    ranks = one_by_one.symbol_ranks()
    assert [one_by_one.symbols[i] for i in np.argsort(ranks)] == sorted(one_by_one.symbols)
    with pytest.raises(M2MError, match="symbol"):
        M2MAggregatorCore().symbol_ids(pa.array(["BTCUSDT", None]))
    with pytest.raises(M2MError, match="symbols"):
        M2MAggregatorCore().symbol_ids(pa.array([1, 2]))
