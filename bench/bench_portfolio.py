"""Wall time of the four-strategy portfolio backtest on a year of real data.

    taskset -c 0 python bench/bench_portfolio.py [--config configs/portfolio_crypto4.yaml] [--repeat 3]

The shipped config runs multi_tf_trend (10 symbols, 1h bars with 4h entries), funding_carry (all 32
symbols of the 1h panel, with funding), cross_sectional_momentum (32 symbols, daily) and
mean_reversion_scalp (4 symbols, 15m) on one capital, with the risk checks, breakers and events.
It reports, best of ``--repeat``:

* load: reading, validating and resampling the data files and building the sleeves;
* run: the loop (indicators, strategies, matching, accounting, risk, portfolio manager);
* the number of bars processed (every sleeve's active bars) and bars/s;
* the in-process baseline: the single-strategy runner (sma_crossover 24/120) over the same
  32-symbol 1h panel, and the ratio portfolio run time / baseline run time.

Target (issue 3): the portfolio run under 10 s on one core.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "portfolio_crypto4.yaml"
PANEL = ROOT.parent / "shared" / "data" / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"


def portfolio_once(config: Path) -> tuple[float, float, int, int, str]:
    from engine.portfolio.config import build_backtest, load_portfolio_config
    from engine.strategy.registry import StrategyRegistry

    registry = StrategyRegistry().discover()
    t0 = time.perf_counter()
    bt = build_backtest(load_portfolio_config(config), registry)
    t1 = time.perf_counter()
    result = bt.run()
    t2 = time.perf_counter()
    bars = sum(max(0, f.n - s.first_active(sym, bt.start_ns)) for s in bt.sleeves for sym, f in s.feeds.items())
    return t1 - t0, t2 - t1, bars, int(result.metrics["trades"]), result.trade_hash


def baseline_once() -> float:
    from engine.backtest.runner import Backtest, BacktestSettings, split_bars
    from engine.data import load_bars
    from engine.instruments import Instrument
    from engine.strategy.registry import StrategyRegistry

    arrays = split_bars(load_bars(PANEL))
    inst = {s: Instrument(symbol=s, kind="perpetual", leverage=2, taker_fee=0.0004) for s in arrays}
    cls = StrategyRegistry().discover().get("sma_crossover")
    bt = Backtest(cls, {"fast": 24, "slow": 120, "size_pct": 3}, arrays, "1h", inst, BacktestSettings())
    t0 = time.perf_counter()
    bt.run()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    runs = [portfolio_once(args.config) for _ in range(args.repeat)]
    load = min(r[0] for r in runs)
    run = min(r[1] for r in runs)
    bars, trades, digest = runs[0][2], runs[0][3], runs[0][4]
    assert all(r[4] == digest for r in runs), "portfolio runs differ: not deterministic"
    base = min(baseline_once() for _ in range(args.repeat))
    print(f"config            {args.config}")
    print(f"cores             {len(os.sched_getaffinity(0))} (taskset -c 0 pins to one)")
    print(f"bars processed    {bars:,} ({trades} closed trades, trade hash {digest[:16]})")
    print(f"load + build      {load:.2f} s")
    print(f"portfolio run     {run:.2f} s  ({bars / run / 1e6:.2f} M bars/s)")
    print(f"total             {load + run:.2f} s  (target < 10 s)")
    print(f"baseline          {base:.2f} s  (sma_crossover on the 32-symbol 1h panel, 285,504 bars)")
    print(f"ratio             {run / base:.1f}x the baseline run time")


if __name__ == "__main__":
    main()
