"""The actor runtime end to end, through real Ray actors, on the real 1m perpetual panel.

Independent truth: the single-strategy backtest runner (``engine.backtest.runner.Backtest``) over the
same bars, funding, fees and slippage; an uninterrupted session for the restart tests.
"""

from __future__ import annotations

import time
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

ray = pytest.importorskip("ray")

from actors.runtime import EngineRuntime  # noqa: E402
from engine.backtest.runner import Backtest, BacktestSettings, split_bars  # noqa: E402
from engine.data.catalog import BAR_SCHEMA, load_bars, load_funding  # noqa: E402
from engine.errors import ParameterError  # noqa: E402
from engine.live.config import load_run_config  # noqa: E402
from engine.strategy.registry import StrategyRegistry  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BARS = DATA / "binance_usdm_perp_1m_13sym_2026-01-04_2026-01-17.parquet"
FUNDING = DATA / "binance_usdm_funding_rates_40sym_2019_2026.parquet"
pytestmark = pytest.mark.skipif(not BARS.exists(), reason="shared market data not available")

START, END = "2026-01-04T00:00:00", "2026-01-06T00:00:00"
OPEN = {  # risk limits that never bind, so every bot's fills must equal its own backtest
    "max_risk_per_trade_pct": None,
    "max_total_open_risk_pct": None,
    "daily_loss_limit_pct": None,
    "max_open_positions": None,
    "max_leverage": None,
    "enforce_allocation": False,
}
NO_BREAKERS = {"halt_drawdown_pct": 100, "pause_drawdown_pct": 100, "resume_drawdown_pct": 1}
BOTS = [
    {"name": "doge-sma", "type": "sma_crossover", "params": {"fast": 10, "slow": 60, "size_pct": 30,
     "allow_short": True}, "allocation": 40, "symbols": ["DOGEUSDT"], "leverage": 2},
    {"name": "pair-rsi", "type": "rsi_reversion", "allocation": 30, "symbols": ["LINKUSDT", "SUIUSDT"],
     "timeframe": "5m", "leverage": 2},
]  # fmt: skip


TON = {"name": "ton-ema", "type": "ema_crossover", "allocation": 50, "symbols": ["TONUSDT"]}


def write_config(tmp: Path, *, speed: Any = "max", bots: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    config = {
        "name": "t",
        "start": START,
        "end": END,
        "dataset": {"bars": str(BARS), "funding": str(FUNDING)},
        "feed": {"speed": speed, "batch_rows": 512, "window_ms": 5, "shard_size": 2},
        "slippage_bps": 1,
        "venue": {"maker_fee_bps": 2, "taker_fee_bps": 4},
        "checkpoint_every_s": 0.3,
        "accounts": [
            {"id": "desk-a", "capital": 100_000, "risk": OPEN, "breakers": NO_BREAKERS, "bots": bots or BOTS},
            {"id": "desk-b", "capital": 10_000, "risk": OPEN, "breakers": NO_BREAKERS, "bots": [TON]},
        ],
        **extra,
    }
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_session(config_path: Path, db: Path, *, kill: str | None = None, folders: list[str] | None = None) -> dict:
    """Run a whole session; with ``kill`` (a bot id), kill that bot actor once it has processed bars."""
    runtime = EngineRuntime(str(db), strategy_folders=folders, num_cpus=2).start()
    try:
        config = load_run_config(config_path)
        runtime.open_session(config)
        runtime.start_feeds()
        killed = False
        if kill is not None:
            handle = runtime.bots[kill]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                st = ray.get(handle.status.remote())
                if st["fills"] >= 3:
                    ray.kill(handle, no_restart=False)
                    killed = True
                    break
                time.sleep(0.05)
        assert runtime.wait_feeds(timeout_s=300)
        # restarted bots may still be catching up on what the multiplexers resend
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = {bid: ray.get(h.status.remote()) for bid, h in runtime.bots.items()}
            if all(s["pending_bars"] == 0 for s in status.values()):
                break
            time.sleep(0.2)
        out = {
            "status": {bid: ray.get(h.status.remote()) for bid, h in runtime.bots.items()},
            "killed": killed,
            "muxes": runtime.mux_stats(),
            "summary": {a.id: runtime.portfolio_summary(a.id) for a in config.accounts},
        }
        runtime.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
    from engine.store.base import open_store

    with open_store(str(db)) as store:
        out["fills"] = store.read_live("live_fills")
        out["positions"] = store.read_live("live_positions")
        out["signals"] = store.read_live("strategy_signals")
        out["snapshots"] = store.read_live("portfolio_snapshots")
        out["bots"] = store.read_live("bots")
    return out


def fills_of(table: pa.Table, bot_id: str) -> list[tuple[Any, ...]]:
    t = table.filter(pa.compute.equal(table.column("bot_id"), bot_id))
    cols = [t.column(c).to_pylist() for c in ("fill_id", "symbol", "side", "qty", "price", "fee")]
    ts = t.column("ts").cast(pa.int64()).to_pylist()
    return list(zip(ts, *cols, strict=True))


def backtest_fills(bot: dict[str, Any], capital: float) -> list[tuple[Any, ...]]:
    """The bot's fills from the single-strategy backtest runner on the same data (ts floored to µs as stored)."""
    from engine.instruments import Instrument

    start = int(np.datetime64(START, "ns").astype(np.int64))
    end = int(np.datetime64(END, "ns").astype(np.int64))
    bars = load_bars(BARS, bot["symbols"], start, end)
    tf = bot.get("timeframe", "1m")
    if tf != "1m":
        from engine.data.resample import resample

        bars = resample(bars, tf)
    funding = load_funding(FUNDING, bot["symbols"])
    inst = {
        s: Instrument(symbol=s, kind="perpetual", maker_fee=0.0002, taker_fee=0.0004, leverage=bot.get("leverage", 1))
        for s in bot["symbols"]
    }
    return fills_on(bars, bot["type"], bot.get("params", {}), capital, inst, tf, funding)


def fills_on(
    bars: pa.Table,
    strategy_type: str,
    params: dict[str, Any],
    cash: float,
    instruments: dict[str, Any],
    timeframe: str = "1m",
    funding: pa.Table | None = None,
) -> list[tuple[Any, ...]]:
    """Fills of the single-strategy backtest runner on ``bars``, as the store keeps them (ts floored to
    the microsecond, NUMERIC(38, 18) money) in :func:`fills_of`'s shape."""
    cls = StrategyRegistry().discover().get(strategy_type)
    settings = BacktestSettings(cash=cash, slippage_bps=1)
    f = Backtest(cls, params, split_bars(bars), timeframe, instruments, settings, funding=funding).run().fills
    ts = (f.column("ts").cast(pa.int64()).to_numpy() // 1000 * 1000).tolist()
    cols = [f.column(c).to_pylist() for c in ("fill_id", "symbol", "side")]
    cols += [[numeric(x) for x in f.column(c).to_pylist()] for c in ("qty", "price", "fee")]
    return list(zip(ts, *cols, strict=True))


def numeric(x: float) -> float:
    """``x`` as the store's NUMERIC(38, 18) keeps it (18 decimals, half-even), read back as float."""
    return float(Decimal(repr(x)).quantize(Decimal("1e-18"), rounding=ROUND_HALF_EVEN))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("rt")
    return run_session(write_config(tmp), tmp / "a.duckdb")


def test_session_stores_everything_and_matches_the_backtest(uninterrupted: dict) -> None:
    out = uninterrupted
    assert {m["name"] for m in out["muxes"]} and all(m["done"] and not m["error"] for m in out["muxes"])
    for bot in BOTS:
        bot_id = f"desk-a/{bot['name']}"
        live = fills_of(out["fills"], bot_id)
        assert len(live) > 5, bot_id
        assert live == backtest_fills(bot, 100_000 * bot["allocation"] / 100), bot_id
    assert out["signals"].num_rows > 0
    assert set(out["signals"].column("action").to_pylist()) >= {"entry", "exit"}
    assert out["snapshots"].num_rows > 0
    assert out["positions"].num_rows > 0
    assert set(out["bots"].column("status").to_pylist()) == {"running"}


def test_killed_bot_restarts_and_ends_with_the_same_fills(uninterrupted: dict, tmp_path: Path) -> None:
    out = run_session(write_config(tmp_path, speed=2000), tmp_path / "k.duckdb", kill="desk-a/doge-sma")
    assert out["killed"]
    assert out["status"]["desk-a/doge-sma"]["restored"]
    for bot_id in ("desk-a/doge-sma", "desk-a/pair-rsi", "desk-b/ton-ema"):
        assert fills_of(out["fills"], bot_id) == fills_of(uninterrupted["fills"], bot_id), bot_id
    key = ["bot_id", "symbol", "qty", "avg_price", "realized_pnl"]
    assert out["positions"].select(key).to_pylist() == uninterrupted["positions"].select(key).to_pylist()
    seqs = out["signals"].select(["bot_id", "seq"]).to_pylist()
    assert len(seqs) == len({(r["bot_id"], r["seq"]) for r in seqs})


def test_restarted_runtime_resumes_active_bots(uninterrupted: dict, tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    first = run_session(write_config(tmp_path, end="2026-01-05T00:00:00"), db)
    assert first["fills"].num_rows < uninterrupted["fills"].num_rows
    second = run_session(write_config(tmp_path), db)
    assert all(s["restored"] for s in second["status"].values())
    for bot_id in ("desk-a/doge-sma", "desk-a/pair-rsi", "desk-b/ton-ema"):
        assert fills_of(second["fills"], bot_id) == fills_of(uninterrupted["fills"], bot_id), bot_id


RAISING = '''
from engine.strategy import Strategy, StrategyParams


class Raiser(Strategy):
    type = "raiser"
    display_name = "Raiser"
    description = "raises in on_bar after its tenth bar (error-policy tests)"
    version = "1.0.0"
    author = "tests"

    def on_bar(self, bar):
        if bar.index >= 10:
            raise RuntimeError(f"boom at {bar.index}")
'''


def test_raising_strategy_is_paused_after_three_errors_while_others_go_on(
    uninterrupted: dict, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "raiser.py").write_text(RAISING)
    bots = [*BOTS, {"name": "raiser", "type": "raiser", "allocation": 10, "symbols": ["DOGEUSDT"]}]
    out = run_session(write_config(tmp_path, bots=bots), tmp_path / "e.duckdb", folders=[str(plugins)])
    st = out["status"]["desk-a/raiser"]
    assert st["state"] == "paused" and st["errors"] == 3 and "3 consecutive errors" in st["reason"]
    sig = out["signals"].filter(pa.compute.equal(out["signals"].column("bot_id"), "desk-a/raiser"))
    assert sig.column("action").to_pylist() == ["error", "error", "error", "state"]
    for bot_id in ("desk-a/doge-sma", "desk-a/pair-rsi"):
        assert fills_of(out["fills"], bot_id) == fills_of(uninterrupted["fills"], bot_id)


def test_accounts_are_isolated(tmp_path: Path) -> None:
    runtime = EngineRuntime(str(tmp_path / "i.duckdb"), num_cpus=2).start()
    try:
        runtime.open_session(load_run_config(write_config(tmp_path)))
        with pytest.raises(ParameterError, match="no bot 'doge-sma' in account 'desk-b'"):
            runtime.pause_bot("desk-b", "doge-sma")
        with pytest.raises(ParameterError, match="no strategy instance 'doge-sma' in account 'desk-b'"):
            runtime.archive_instance("desk-b", "doge-sma")
        default = runtime.default_strategy("desk-b")  # every account has one (legs entered by hand)
        assert default["is_default"] and default["strategy_type"] == "manual"
        assert sorted(r["name"] for r in runtime.list_instances("desk-b")) == sorted(["ton-ema", default["name"]])
        assert {b["name"] for b in runtime.status("desk-a")} == {"doge-sma", "pair-rsi"}
        with pytest.raises(ParameterError, match="unknown trading account"):
            runtime.status("desk-z")
        assert runtime.read("desk-b", "bots").column("name").to_pylist() == ["ton-ema"]
    finally:
        runtime.shutdown()


SLOW = '''
import time

from engine.strategy import Strategy


class Slow(Strategy):
    type = "slow"
    display_name = "Slow"
    description = "sleeps in every on_bar (back-pressure tests)"
    version = "1.0.0"
    author = "tests"

    def on_bar(self, bar):
        time.sleep(0.004)
'''


def test_slow_bot_does_not_stall_the_others_and_loses_no_bar(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slow.py").write_text(SLOW)
    bots = [*BOTS, {"name": "slow", "type": "slow", "allocation": 10, "symbols": ["DOGEUSDT", "LINKUSDT"]}]
    runtime = EngineRuntime(str(tmp_path / "s.duckdb"), strategy_folders=[str(plugins)], num_cpus=2).start()
    try:
        config = load_run_config(write_config(tmp_path, bots=bots))
        runtime.open_session(config)
        expected = {  # bars per bot: 2 days of 1m bars (5m for pair-rsi), every symbol
            "desk-a/doge-sma": 2880, "desk-a/pair-rsi": 2 * 576, "desk-b/ton-ema": 2880, "desk-a/slow": 2 * 2880,
        }  # fmt: skip
        runtime.start_feeds()
        finished: dict[str, float] = {}
        t0 = time.monotonic()
        while len(finished) < len(expected) and time.monotonic() - t0 < 240:
            for bot_id, handle in runtime.bots.items():
                if bot_id not in finished and ray.get(handle.status.remote())["bars"] == expected[bot_id]:
                    finished[bot_id] = time.monotonic() - t0
            time.sleep(0.02)
        assert runtime.wait_feeds(timeout_s=60)
        status = {bid: ray.get(h.status.remote()) for bid, h in runtime.bots.items()}
        runtime.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
    # the slow bot needs ≥ 5,760 × 4 ms ≈ 23 s; the others are done long before and lost nothing
    assert {b: s["bars"] for b, s in status.items()} == expected
    assert finished["desk-a/slow"] > 20
    for bot_id in ("desk-a/doge-sma", "desk-a/pair-rsi", "desk-b/ton-ema"):
        assert finished[bot_id] < finished["desk-a/slow"] / 2, finished


METRICS = [
    "ray_bot_bars_total{",
    'bot="t/xrp-sma"',
    "ray_mux_rows_in_total{",
    'mux="mux:XRPETH"',
    "ray_portfolio_equity{",
    "ray_bot_batch_latency_ms_bucket{",
]


def dashboard_metrics(needles: list[str], timeout_s: float = 40.0) -> dict[str, bool]:
    """Which ``needles`` appear on the node's Prometheus endpoint (what the Ray dashboard charts)."""
    import urllib.request

    port = ray.nodes()[0]["MetricsExportPort"]
    deadline = time.monotonic() + timeout_s
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        found = {n: n in text for n in needles}
        if all(found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(1.0)


TRADES_FILE = DATA / "freqtrade_binance_xrpeth_trades_2019-10.parquet"
TICKER = '''
from engine.strategy import Strategy


class Ticker(Strategy):
    type = "ticker"
    display_name = "Ticker"
    description = "checks that trades arrive in time order (tick tests)"
    version = "1.0.0"
    author = "tests"

    def on_init(self):
        self.last = 0

    def on_tick(self, tick):
        if tick.ts < self.last or tick.price <= 0:
            raise RuntimeError(f"tick out of order at {tick.ts}")
        self.last = tick.ts
'''


def minute_bars(trades: Any) -> pa.Table:
    """Independent 1m OHLCV of a ccxt-format trades frame (pandas groupby), as XRPETH bars."""
    import pandas as pd

    g = trades.groupby(trades["timestamp"].dt.floor("1min"))
    ref = pd.DataFrame({"open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
                        "close": g["price"].last(), "volume": g["amount"].sum()}).reset_index(names="ts")  # fmt: skip
    ref.insert(0, "symbol", "XRPETH")
    return pa.Table.from_pandas(ref, preserve_index=False).cast(BAR_SCHEMA)


def test_bars_built_from_ticks_reach_the_bots(tmp_path: Path) -> None:
    """A trades replay: the multiplexer builds 1m and 5m bars from the ticks; a bar bot's fills equal the
    backtest on bars aggregated independently with pandas, and an on_tick bot sees every trade in order."""
    import pandas as pd

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "ticker.py").write_text(TICKER)
    sma = {"name": "xrp-sma", "type": "sma_crossover", "params": {"fast": 5, "slow": 20, "size_pct": 50},
           "allocation": 50, "symbols": ["XRPETH"]}  # fmt: skip
    config = {
        "name": "ticks",
        "dataset": {"trades": str(TRADES_FILE)},
        "feed": {"speed": "max", "batch_rows": 1000, "bar_timeframe": "1m"},
        "slippage_bps": 1,
        "venue": {"maker_fee_bps": 2, "taker_fee_bps": 4},
        "accounts": [{"id": "t", "capital": 1000, "risk": OPEN, "breakers": NO_BREAKERS, "bots": [
            sma, {"name": "ticker", "type": "ticker", "allocation": 10, "symbols": ["XRPETH"]}]}],
    }  # fmt: skip
    path = tmp_path / "ticks.yaml"
    path.write_text(yaml.safe_dump(config))
    runtime = EngineRuntime(str(tmp_path / "t.duckdb"), strategy_folders=[str(plugins)], num_cpus=2).start()
    try:
        runtime.open_session(load_run_config(path))
        runtime.start_feeds()
        assert runtime.wait_feeds(timeout_s=120)
        status = {s["name"]: s for s in runtime.status("t")}
        fills = runtime.read("t", "live_fills")
        exported = dashboard_metrics(METRICS)
        runtime.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
    trades = pd.read_parquet(TRADES_FILE)
    assert all(exported.values()), exported
    assert status["ticker"]["ticks"] == len(trades) and status["ticker"]["errors"] == 0
    bars = minute_bars(trades)
    assert status["xrp-sma"]["bars"] == bars.num_rows
    from engine.instruments import Instrument

    inst = {"XRPETH": Instrument(symbol="XRPETH", kind="perpetual", maker_fee=0.0002, taker_fee=0.0004)}
    want = fills_on(bars, "sma_crossover", sma["params"], 500, inst)
    assert len(want) > 10
    assert fills_of(fills, "t/xrp-sma") == want


def test_live_feed_session_from_a_recording(tmp_path: Path) -> None:
    """``feed.source: live`` through the actors, offline: a recorded ccxt.pro session (real XRP/ETH trades
    with a dropped connection) plays back through the live feed; the bars the multiplexer builds reach the
    bots, which trade them exactly as the backtest on the same (closed) minutes, and the drop is reported."""
    import pandas as pd

    from engine.data.ticks import load_trades
    from engine.feeds.recorded import trades_recording, write_recording

    trades = load_trades(TRADES_FILE, symbol="XRPETH")
    recording = write_recording(
        trades_recording(trades, {"XRPETH": "XRP/ETH"}, chunk=100, drops_after=[40]), tmp_path / "rec.jsonl"
    )
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "ticker.py").write_text(TICKER)
    sma = {"name": "xrp-sma", "type": "sma_crossover", "params": {"fast": 5, "slow": 20, "size_pct": 50},
           "allocation": 50, "symbols": ["XRPETH"]}  # fmt: skip
    config = {
        "name": "live",
        "feed": {"source": "live", "exchange": "binance", "symbol_map": {"XRPETH": "XRP/ETH"},
                 "playback": str(recording), "bar_timeframe": "1m"},
        "slippage_bps": 1,
        "venue": {"maker_fee_bps": 2, "taker_fee_bps": 4},
        "accounts": [{"id": "t", "capital": 1000, "risk": OPEN, "breakers": NO_BREAKERS, "bots": [
            sma, {"name": "ticker", "type": "ticker", "allocation": 10, "symbols": ["XRPETH"]}]}],
    }  # fmt: skip
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(config))
    frame = pd.read_parquet(TRADES_FILE)
    minutes = frame["timestamp"].dt.floor("1min")
    closed = minutes.nunique() - 1  # a live feed never closes the last minute
    runtime = EngineRuntime(str(tmp_path / "l.duckdb"), strategy_folders=[str(plugins)], num_cpus=2).start()
    try:
        runtime.open_session(load_run_config(path))
        runtime.start_feeds()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = {s["name"]: s for s in runtime.status("t")}
            if status["ticker"]["ticks"] == len(frame) and status["xrp-sma"]["bars"] == closed:
                break
            time.sleep(0.1)
        gaps = [g for m in runtime.mux_stats() for g in m["gaps"]]
        fills = runtime.read("t", "live_fills")
        runtime.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert status["ticker"]["ticks"] == len(frame) and status["ticker"]["errors"] == 0
    assert status["xrp-sma"]["bars"] == closed
    assert "reconnect" in {g["reason"] for g in gaps}
    bars = minute_bars(frame)
    bars = bars.slice(0, bars.num_rows - 1)
    from engine.instruments import Instrument

    inst = {"XRPETH": Instrument(symbol="XRPETH", kind="perpetual", maker_fee=0.0002, taker_fee=0.0004)}
    want = fills_on(bars, "sma_crossover", sma["params"], 500, inst)
    assert len(want) > 10 and fills_of(fills, "t/xrp-sma") == want
