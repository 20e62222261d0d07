"""Sweep scaling on Ray: the same real-data backtests with 1 worker and with 2 workers.

    python bench/bench_sweep.py [--runs 10] [--no-serial] [--json]

The runs are ``sma_crossover`` on the 32-symbol 1h perpetual panel
(``binance_usdm_perp_1h_32sym…``, 285,504 bars) with real funding settlements at the mark price,
shorts allowed, 4 bps fees and 1 bp slippage: a grid over ``fast`` × ``slow`` (about 3–4 s per run on
this machine, so Ray's per-task overhead is small). In one process the script

1. runs them serially in-process with ``run_request`` (the baseline without Ray, unless ``--no-serial``),
2. starts one local Ray (``num_cpus=2``), warms both worker processes with two tiny runs,
3. runs the sweep with ``workers=1`` and then with ``workers=2`` (fresh in-memory stores, different
   sweep names, so nothing is skipped),

checks that both sweeps produced the same trade hashes, and prints the wall times, the speed-up
(1-worker wall / 2-worker wall; the target is ≥ 1.8 on 2 cores), the mean run time measured inside
the workers, and the share of a run spent loading its data (bars, funding, marks), which each task
does itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
PANEL = DATA / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"
FUNDING = DATA / "binance_usdm_funding_rates_40sym_2019_2026.parquet"
MARKS = DATA / "binance_usdm_mark_1h_10sym_2025-05-01_2026-05-07.parquet"
GOOG = DATA / "backtestingpy_GOOG_daily_2004_2013.csv"
TARGET = 1.8

FAST = (6, 12, 24, 48, 96)
SLOW = (120, 240, 480)


def base_request() -> dict[str, Any]:
    """The shared part of every benchmark run (units: bps of notional, percent of cash)."""
    return {
        "strategy_type": "sma_crossover",
        "data": str(PANEL),
        "funding": str(FUNDING),
        "marks": str(MARKS),
        "fee_bps": 4,
        "slippage_bps": 1,
        "params": {"size_pct": 3, "allow_short": True},
    }


def grid(runs: int) -> dict[str, list[int]]:
    """A fast × slow grid of exactly ``runs`` points (as many fast values as possible)."""
    for n_fast in range(len(FAST), 0, -1):
        if runs % n_fast == 0 and runs // n_fast <= len(SLOW):
            return {"fast": list(FAST[:n_fast]), "slow": list(SLOW[: runs // n_fast])}
    raise SystemExit(f"--runs {runs} must be n_fast × n_slow with n_fast ≤ {len(FAST)} and n_slow ≤ {len(SLOW)}")


def make_sweep(name: str, runs: int, folder: Path) -> Any:
    from actors.sweep_config import SweepConfig, resolve_sweep
    from engine.strategy.registry import StrategyRegistry

    config = SweepConfig.parse({"name": name, "backtest": base_request(), "grid": grid(runs)})
    return resolve_sweep(config, StrategyRegistry().discover(), base_dir=folder)


def load_seconds() -> float:
    """Wall time of the data loading one run does (bars, funding, marks for all symbols), best of 3."""
    from engine.backtest.config import _symbols_in
    from engine.data import load_bars, load_funding, load_marks

    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        bars = load_bars(PANEL)
        symbols = list(dict.fromkeys(bars.column("symbol").to_pylist()))
        funded = [s for s in symbols if s in _symbols_in(FUNDING)]
        load_funding(FUNDING, symbols=funded)
        marked = [s for s in symbols if s in _symbols_in(MARKS)]
        load_marks(MARKS, symbols=marked)
        best = min(best, time.perf_counter() - t0)
    return best


def serial_seconds(sweep: Any) -> tuple[float, list[str]]:
    """Wall time and trade hashes of the runs done one after another in this process (no Ray)."""
    from engine.backtest.config import BacktestRequest, run_request
    from engine.strategy.registry import StrategyRegistry

    registry = StrategyRegistry().discover()
    hashes = []
    t0 = time.perf_counter()
    for spec in sweep.plan():
        result = run_request(BacktestRequest.parse(sweep.request_for(spec.params)), registry)
        hashes.append(result.trade_hash)
    return time.perf_counter() - t0, hashes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="backtests per sweep (default 10)")
    parser.add_argument("--no-serial", action="store_true", help="skip the in-process serial baseline")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)

    import ray

    from actors.sweep import run_sweep

    figures: dict[str, Any] = {"runs": args.runs, "cpus": 2, "panel_bars": 285_504}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        figures["load_s"] = load_seconds()
        if not args.no_serial:
            serial_wall, serial_hashes = serial_seconds(make_sweep("serial", args.runs, folder))
            figures["serial_in_process_s"] = serial_wall

        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
        figures["ray_start_s"] = time.perf_counter() - t0
        try:
            from actors.sweep_config import SweepConfig, resolve_sweep
            from engine.strategy.registry import StrategyRegistry

            warm = SweepConfig.parse(
                {
                    "name": "warm-up",
                    "backtest": {"strategy_type": "sma_crossover", "data": str(GOOG)},
                    "grid": {"fast": [5, 10], "slow": [30]},
                }
            )
            run_sweep(resolve_sweep(warm, StrategyRegistry().discover()), db="duckdb://:memory:", workers=2)

            outcomes = {}
            for workers in (1, 2):
                sweep = make_sweep(f"bench-{workers}w", args.runs, folder)
                outcomes[workers] = run_sweep(sweep, db="duckdb://:memory:", workers=workers)
        finally:
            ray.shutdown()

    one, two = outcomes[1], outcomes[2]
    hashes1 = one.runs["trade_hash"].to_pylist()
    if hashes1 != two.runs["trade_hash"].to_pylist() or None in hashes1:
        print("error: the 1-worker and 2-worker sweeps differ (or a run failed)", file=sys.stderr)
        return 1
    if not args.no_serial and hashes1 != serial_hashes:
        print("error: the sweep differs from the in-process runs", file=sys.stderr)
        return 1
    durations = one.runs["duration_s"].to_pylist()
    figures |= {
        "wall_1_worker_s": one.wall_s,
        "wall_2_workers_s": two.wall_s,
        "speedup": one.wall_s / two.wall_s,
        "mean_run_s": sum(durations) / len(durations),
        "mean_run_2_workers_s": sum(two.runs["duration_s"].to_pylist()) / two.runs.num_rows,
    }
    figures["load_share"] = figures["load_s"] / figures["mean_run_s"]
    figures["target_met"] = figures["speedup"] >= TARGET
    if args.json:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))
        return 0
    print(f"sweep scaling: {args.runs} × sma_crossover on the 32-symbol 1h panel (perpetual, funding, marks)")
    print(f"  data load per run          {figures['load_s']:8.2f} s  ({figures['load_share']:.0%} of a run)")
    if not args.no_serial:
        print(f"  serial, in process         {figures['serial_in_process_s']:8.2f} s")
    print(f"  Ray start (local, 2 CPUs)  {figures['ray_start_s']:8.2f} s  (not in the sweep times)")
    print(f"  mean run (in the worker)   {figures['mean_run_s']:8.2f} s  with 1 worker, "
          f"{figures['mean_run_2_workers_s']:.2f} s with 2")  # fmt: skip
    print(f"  sweep, 1 worker            {figures['wall_1_worker_s']:8.2f} s")
    print(f"  sweep, 2 workers           {figures['wall_2_workers_s']:8.2f} s")
    verdict = "met" if figures["target_met"] else "NOT met"
    print(f"  speed-up                   {figures['speedup']:8.2f} ×  (target ≥ {TARGET}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
