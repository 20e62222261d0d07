"""Throughput and peak memory of the backtest loop.

    python bench/bench_backtest.py [--bars 1000000] [--panel PATH]

Runs ``sma_crossover`` (fast 10, slow 30, all-in, 0.1 % fee, lot 0.001) on
1. ``--bars`` generated 1-minute bars (geometric random walk, seed 42), and
2. the real 32-symbol 1h panel (``binance_usdm_perp_1h_32sym…``, 285,504 bars),
and, as the in-process baseline, a loop that only walks the same bars through the same cursor
(``cursor.i = k`` and one close read per bar). It reports bars/s for each, the ratio engine/baseline,
and the peak resident memory of a fresh child process per case (``ru_maxrss``). Each timing is
the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PANEL = ROOT.parent / "shared" / "data" / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"


def generated_bars(n: int, seed: int = 42) -> dict[str, dict[str, np.ndarray]]:
    """n one-minute OHLCV bars of a geometric random walk (fixed seed)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    spread = np.abs(rng.normal(0.0, 0.0005, n)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    ts = (np.int64(1_700_000_000) * 1_000_000_000) + np.arange(n, dtype=np.int64) * 60_000_000_000
    volume = rng.uniform(1.0, 100.0, n)
    return {"SYN": {"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume}}


def panel_bars(path: Path) -> dict[str, dict[str, np.ndarray]]:
    from engine.backtest.runner import split_bars
    from engine.data import load_bars

    return split_bars(load_bars(path))


def run_engine(bars: dict[str, dict[str, np.ndarray]], timeframe: str) -> tuple[float, int, float]:
    from engine.backtest.runner import Backtest, BacktestSettings
    from engine.instruments import Instrument
    from engine.strategy.registry import StrategyRegistry

    cls = StrategyRegistry().discover().get("sma_crossover")
    instruments = {s: Instrument(symbol=s, taker_fee=0.001, maker_fee=0.001, lot_size=0.001) for s in bars}
    t0 = time.perf_counter()
    bt = Backtest(
        cls,
        {"fast": 10, "slow": 30, "size_pct": 100},
        bars,
        timeframe,
        instruments,
        BacktestSettings(cash=100_000.0),
    )
    result = bt.run()
    elapsed = time.perf_counter() - t0
    return elapsed, int(result.metrics["trades"]), float(result.metrics["final_equity"])


def run_baseline(bars: dict[str, dict[str, np.ndarray]]) -> float:
    """The floor any bar loop pays: walk every bar through a cursor and read one value."""
    from engine.strategy.series import Cursor

    t0 = time.perf_counter()
    total = 0.0
    for arrays in bars.values():
        close = arrays["close"].tolist()
        cur = Cursor()
        for k in range(len(close)):
            cur.i = k
            total += close[cur.i]
    return time.perf_counter() - t0


def _child(case: str, n: int, queue: mp.Queue) -> None:
    bars = generated_bars(n) if case == "generated" else panel_bars(PANEL)
    elapsed, trades, equity = run_engine(bars, "1m" if case == "generated" else "1h")
    queue.put((elapsed, trades, equity, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))


def measure(case: str, n: int, repeat: int) -> dict[str, float]:
    bars = generated_bars(n) if case == "generated" else panel_bars(PANEL)
    count = sum(len(a["ts"]) for a in bars.values())
    base = min(run_baseline(bars) for _ in range(repeat))
    best = float("inf")
    trades, equity = 0, 0.0
    for _ in range(repeat):
        elapsed, trades, equity = run_engine(bars, "1m" if case == "generated" else "1h")
        best = min(best, elapsed)
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(case, n, queue))
    proc.start()
    _, _, _, peak_mb = queue.get()
    proc.join()
    return {
        "bars": count,
        "seconds": best,
        "bars_per_s": count / best,
        "baseline_bars_per_s": count / base,
        "ratio_to_baseline": base / best,
        "peak_rss_mb": peak_mb,
        "trades": trades,
        "final_equity": equity,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-panel", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    cases = ["generated"] + ([] if args.skip_panel else ["panel"])
    print(
        f"{'case':<10} {'bars':>10} {'seconds':>8} {'bars/s':>12} {'baseline/s':>12} {'engine/base':>11} "
        f"{'peak MB':>8} {'trades':>7}"
    )
    for case in cases:
        r = measure(case, args.bars, args.repeat)
        print(
            f"{case:<10} {r['bars']:>10,} {r['seconds']:>8.3f} {r['bars_per_s']:>12,.0f} "
            f"{r['baseline_bars_per_s']:>12,.0f} {r['ratio_to_baseline']:>11.3f} {r['peak_rss_mb']:>8.1f} "
            f"{r['trades']:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
