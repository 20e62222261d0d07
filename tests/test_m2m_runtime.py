"""The M2M aggregator actor end to end, through real Ray actors, on the real 1m perpetual panel.

Independent truth: a plain Python loop over the same bars (each bar's close is a price update at the
bar's close time; a strategy's M2M after each update is Σ (LTP − entry) × qty × side × multiplier over
its legs), grouped by UTC minute into open/high/low/close; and an uninterrupted run for the restart.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")

from actors.runtime import EngineRuntime  # noqa: E402
from engine.data.catalog import load_bars  # noqa: E402
from engine.errors import ParameterError  # noqa: E402
from engine.live.config import AccountConfig  # noqa: E402
from engine.store.base import open_store  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BARS = DATA / "binance_usdm_perp_1m_13sym_2026-01-04_2026-01-17.parquet"
pytestmark = pytest.mark.skipif(not BARS.exists(), reason="shared market data not available")

START = int(np.datetime64("2026-01-05T00:00:00", "ns").astype(np.int64))
END = int(np.datetime64("2026-01-05T12:00:00", "ns").astype(np.int64))
MINUTE = 60_000_000_000
LEGS = {  # desk-a's "hedge": long DOGE, short LINK (two multiplexers); desk-b's default: short SUI
    "desk-a": [("DOGEUSDT", 1, 20_000.0, 0.14), ("LINKUSDT", -1, 150.0, 13.5)],
    "desk-b": [("SUIUSDT", -1, 1_000.0, 1.75)],
}


def run(db: Path, *, kill_m2m: bool = False) -> dict[str, Any]:
    runtime = EngineRuntime(str(db), num_cpus=2).start()
    try:
        feed = {"kind": "replay", "path": str(BARS), "stream": "bars:1m", "start_ns": START, "end_ns": END,
                "speed": None, "batch_rows": 256, "window_ms": 5}  # fmt: skip
        runtime.set_feed(feed, "1m", 1)
        runtime.create_account(AccountConfig(id="desk-a", timezone="Asia/Kolkata"))
        runtime.create_account(AccountConfig(id="desk-b"))
        runtime.create_strategy("desk-a", "hedge", tags=["pair"])
        default_b = runtime.default_strategy("desk-b")["name"]
        for account, strategy in (("desk-a", "hedge"), ("desk-b", default_b)):
            for symbol, side, qty, entry in LEGS[account]:
                runtime.add_leg(account, strategy, {"symbol": symbol, "side": side, "qty": qty,
                                                    "entry_price": entry, "segment": "perp"})  # fmt: skip
        runtime.start_feeds()
        killed = False
        if kill_m2m:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if ray.get(runtime.m2m.stats.remote())["candles"] >= 200:
                    ray.kill(runtime.m2m, no_restart=False)
                    killed = True
                    break
                time.sleep(0.01)
        assert runtime.wait_feeds(timeout_s=300)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a restarted aggregator catches up on what the muxes resend
            wm = ray.get(runtime.m2m.stats.remote())["watermarks"]
            if all(v is not None and v >= END for v in wm.values()):  # the last update: 11:59 bar close
                break
            time.sleep(0.1)
        out: dict[str, Any] = {"killed": killed, "marks": {a: runtime.m2m_marks(a) for a in LEGS}}
        out["candles_5m"] = runtime.m2m_candles("desk-a", "hedge", "5m")
        with pytest.raises(ParameterError):  # another account's strategy is unknown
            runtime.m2m_candles("desk-b", "hedge")
        with pytest.raises(ParameterError):
            runtime.legs("desk-b", "hedge")
        with pytest.raises(ParameterError, match="default"):
            runtime.update_strategy("desk-b", default_b, name="renamed")
        with pytest.raises(ParameterError, match="default"):
            runtime.update_strategy("desk-b", default_b, archive=True)
        out["default_b"] = default_b
        out["recorder"] = runtime.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
    out["db"] = str(db)
    with open_store(str(db)) as store:
        out["candles"] = store.read_live("strategy_m2m_candles")
        out["legs"] = store.read_live("strategy_legs")
        out["daily"] = store.read_live("strategy_performance_daily")
    return out


def expected_candles(legs: list[tuple[str, int, float, float]]) -> dict[int, tuple[float, float, float, float]]:
    """Minute -> (open, high, low, close) of Σ leg M2M, from every bar close in time order."""
    symbols = [s for s, *_ in legs]
    bars = load_bars(BARS, symbols, START, END).to_pylist()
    updates = sorted(((int(b["ts"].value) + MINUTE, symbols.index(b["symbol"]), b["close"]) for b in bars),
                     key=lambda u: (u[0], symbols[u[1]]))  # time, then symbol name (the aggregator's order)
    last: dict[int, float] = {}
    out: dict[int, list[float]] = {}
    m2m = 0.0
    for ts, i, price in updates:
        minute = ts - ts % MINUTE
        if minute not in out:
            out[minute] = [m2m, m2m, m2m, m2m]
        last[i] = price
        m2m = sum((last[k] - legs[k][3]) * legs[k][2] * legs[k][1] for k in last)
        c = out[minute]
        c[1], c[2], c[3] = max(c[1], m2m), min(c[2], m2m), m2m
    return {m: (c[0], c[1], c[2], c[3]) for m, c in out.items()}


def candles_of(table: pa.Table, instance_id: str) -> dict[int, tuple[float, float, float, float]]:
    rows = [r for r in table.to_pylist() if r["instance_id"] == instance_id]
    return {int(np.datetime64(r["ts"].replace(tzinfo=None), "ns").astype(np.int64)):
            (r["open"], r["high"], r["low"], r["close"]) for r in rows}  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run(tmp_path_factory.mktemp("m2m") / "engine.duckdb")


def test_candles_equal_an_independent_recomputation_from_the_same_bars(uninterrupted: dict[str, Any]) -> None:
    for instance_id, legs in (("desk-a/hedge", LEGS["desk-a"]), ("desk-b:default", LEGS["desk-b"])):
        got = candles_of(uninterrupted["candles"], instance_id)
        want = expected_candles(legs)
        assert sorted(got) == sorted(want)  # every minute, no gap, no extra
        for minute, ohlc in want.items():
            assert got[minute] == pytest.approx(ohlc, rel=1e-12, abs=1e-9), minute
    # a short leg whose price rises shows a loss: desk-b is short SUI from 1.75
    b = {m["instance_id"]: m for m in uninterrupted["marks"]["desk-b"]}["desk-b:default"]
    sui_last = load_bars(BARS, ["SUIUSDT"], START, END).to_pylist()[-1]["close"]
    assert b["unrealized_pnl"] == pytest.approx((sui_last - 1.75) * 1_000.0 * -1)
    # the 5m rollup: open of the first minute, extremes, close of the last
    one = candles_of(uninterrupted["candles"], "desk-a/hedge")
    for row in uninterrupted["candles_5m"].to_pylist()[:50]:
        start = int(np.datetime64(row["ts"].replace(tzinfo=None), "ns").astype(np.int64))
        inside = [one[m] for m in sorted(one) if start <= m < start + 5 * MINUTE]
        assert row["open"] == pytest.approx(inside[0][0]) and row["close"] == pytest.approx(inside[-1][3])
        assert row["high"] == pytest.approx(max(c[1] for c in inside))
        assert row["low"] == pytest.approx(min(c[2] for c in inside))
    assert uninterrupted["recorder"]["dropped"] == 0, uninterrupted["recorder"]["errors"]
    # daily rows in the account's zone: 00:00-12:00 UTC is 05:30-17:30 of one day in Asia/Kolkata
    daily = uninterrupted["daily"].to_pylist()
    days = sorted(r["day"].isoformat() for r in daily if r["instance_id"] == "desk-a/hedge")
    assert days == ["2026-01-05"]


def test_killed_aggregator_restarts_with_no_gap_and_no_duplicate(
    uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    again = run(tmp_path / "engine.duckdb", kill_m2m=True)
    assert again["killed"]
    for instance_id in ("desk-a/hedge", "desk-b:default"):
        got = candles_of(again["candles"], instance_id)
        want = candles_of(uninterrupted["candles"], instance_id)
        assert len(again["candles"].filter(pa.compute.equal(again["candles"]["instance_id"], instance_id))) == len(got)
        assert sorted(got) == sorted(want)
        for minute in want:
            assert got[minute] == pytest.approx(want[minute], rel=1e-12, abs=1e-9)


def test_cli_reads_candles_daily_and_exports_the_report(
    uninterrupted: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import orjson
    import pyarrow.parquet as pq

    from engine.cli import main

    db = uninterrupted["db"]
    assert main(["m2m", "candles", "hedge", "--db", db, "--json", "--to", "2026-01-05T01:00:00"]) == 0
    rows = orjson.loads(capsys.readouterr().out)
    want = candles_of(uninterrupted["candles"], "desk-a/hedge")
    assert len(rows) == 59  # minutes 00:01 .. 00:59 (the first update is the 00:00 bar close, at 00:01)
    for r in rows:
        ts = int(np.datetime64(r["ts"].replace("+00:00", ""), "ns").astype(np.int64))
        assert (r["open"], r["high"], r["low"], r["close"]) == pytest.approx(want[ts])
    assert main(["m2m", "daily", "hedge", "--db", db, "--json"]) == 0
    assert [d["day"] for d in orjson.loads(capsys.readouterr().out)] == ["2026-01-05"]
    out = tmp_path / "report"
    assert main(["pnl", "export", "hedge", "--format", "parquet", "--out", str(out), "--db", db]) == 0
    legs = pq.read_table(out / "legs.parquet").to_pylist()
    assert sorted(leg["symbol"] for leg in legs) == ["DOGEUSDT", "LINKUSDT"]
    assert pq.read_table(out / "daily.parquet").num_rows == 1
    # another account's strategy is not found, naming the rule
    assert main(["m2m", "candles", "hedge", "--account", "desk-b", "--db", db]) == 2
    assert "no strategy 'hedge'" in capsys.readouterr().err


def test_nifty_config_marks_option_legs_by_the_model_and_ends_at_intrinsic_value(tmp_path: Path) -> None:
    """The shipped NIFTY config through the actors. Independent truth: at the 15:30 IST expiry the
    model price of an option is its intrinsic value, so the condor's and the straddle's final M2M are
    Σ (intrinsic − entry) × qty × side from the snapshot's LTPs and the index's last close (hand rule)."""
    from engine.live.config import load_run_config

    config = load_run_config(Path(__file__).resolve().parents[1] / "configs" / "nifty_m2m.yaml")
    runtime = EngineRuntime(str(tmp_path / "nifty.duckdb"), num_cpus=2).start()
    try:
        runtime.open_session(config)
        runtime.start_feeds()
        assert runtime.wait_feeds(timeout_s=300)
        legs = {name: runtime.legs("nse-desk", name) for name in ("nifty-iron-condor", "nifty-short-straddle")}
        runtime.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
    last = load_bars(config.dataset.bars, ["NIFTY 50"], None, config.end_ns, require_volume=False)
    spot = last.column("close")[-1].as_py()
    with open_store(str(tmp_path / "nifty.duckdb")) as store:
        candles = store.read_live("strategy_m2m_candles").to_pylist()
        daily = store.read_live("strategy_performance_daily").to_pylist()
    for name, strategy_legs in legs.items():
        assert len(strategy_legs) == (4 if "condor" in name else 2)
        want = 0.0
        for leg in strategy_legs:
            intrinsic = max(0.0, (spot - leg["strike"]) if leg["option_type"] == "C" else (leg["strike"] - spot))
            want += (intrinsic - leg["entry_price"]) * leg["qty"] * leg["side"] * leg["multiplier"]
        mine = [c for c in candles if c["instance_id"] == f"nse-desk/{name}"]
        assert mine and all(c["model_mark"] for c in mine)
        final = max(mine, key=lambda c: c["ts"])
        assert final["close"] == pytest.approx(want, abs=1e-6)
        days = sorted(d["day"].isoformat() for d in daily if d["instance_id"] == f"nse-desk/{name}")
        assert days == ["2024-05-06", "2024-05-08", "2024-05-09"]  # IST trading days in the data
    pair = [c for c in candles if c["instance_id"] == "crypto-desk/perp-pair"]
    assert pair and not any(c["model_mark"] for c in pair)
