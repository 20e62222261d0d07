"""Throughput of the M2M aggregator core: leg updates per second through M2MAggregatorCore.on_prices.

Setup: one account, ``--strategies`` strategies (default 10,000) × ``--legs`` legs (default 4, on distinct
symbols) over ``--symbols`` symbols (default 200), added through the strategy book (random side,
quantity, multiplier 1, entry within ±1 % of the symbol's start price). Ticks: a seeded random walk
(log-returns N(0, 1e-4) per update) on symbols drawn uniformly, 1 ms apart, so a minute holds 60,000
updates; they are fed in batches of ``--batch`` updates (every minute close, i.e. one candle per strategy
per minute, is included in the timing).

Rates are per CPU second of this process (``time.process_time``; single-threaded, so one core),
which keeps the figure stable on a busy machine; the wall-clock rate is printed too. The core's compiled
kernel (numba) is loaded when the core is made, so that one-off cost is in the setup time, not the rate.

A *leg update* is one open leg re-marked by one price update of its symbol (the core counts them). The
baseline, in the same process, is a plain per-leg Python loop on the first ``--baseline-ticks`` updates:
for each update, each leg on that symbol adds its (p − p_prev) × qty × side × multiplier to its
strategy's M2M and the strategy's high/low/close are updated (no minute closes, so it is flattered).

    .venv/bin/python bench/bench_m2m.py [--strategies 10000] [--legs 4] [--symbols 200] [--ticks 200000]
                                        [--batch 2000] [--baseline-ticks 3000] [--seed 1]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from engine.m2m import LegSpec, M2MAggregatorCore

T0 = 1_700_000_000_000_000_000 - 1_700_000_000_000_000_000 % 60_000_000_000


def build(
    args: argparse.Namespace, start: np.ndarray
) -> tuple[M2MAggregatorCore, list[tuple[str, int, int, float, float]]]:
    rng = np.random.default_rng(args.seed)
    core = M2MAggregatorCore()
    for k in range(args.symbols):
        core.symbol_id(f"S{k:03d}")
    book = core.add_account("bench", "UTC")
    legs = []
    for i in range(args.strategies):
        inst = f"st{i}"
        book.create_strategy(inst, inst, 0)
        for k in rng.choice(args.symbols, size=args.legs, replace=False).tolist():
            side = int(rng.choice((-1, 1)))
            qty = float(rng.integers(1, 10))
            entry = float(start[k] * rng.uniform(0.99, 1.01))
            book.add_leg(inst, LegSpec(f"S{k:03d}", side, qty, entry), 0)
            legs.append((inst, k, side, qty, entry))
    return core, legs


def ticks(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(args.seed + 1)
    start = rng.uniform(10, 1000, args.symbols)
    sym = rng.integers(0, args.symbols, args.ticks)
    steps = rng.normal(0, 1e-4, args.ticks)
    price = np.empty(args.ticks)
    level = np.log(start)
    for k in range(args.symbols):  # each symbol's own walk
        mine = np.nonzero(sym == k)[0]
        price[mine] = np.exp(level[k] + np.cumsum(steps[mine]))
    ts = T0 + np.arange(args.ticks, dtype=np.int64) * 1_000_000
    return start, sym.astype(np.int64), price, ts


def baseline(
    legs: list[tuple[str, int, int, float, float]], start: np.ndarray, sym: np.ndarray, price: np.ndarray
) -> tuple[int, float]:
    by_sym: dict[int, list[tuple[str, int, float]]] = defaultdict(list)
    for inst, k, side, qty, _entry in legs:
        by_sym[k].append((inst, side, qty))
    last = start.tolist()
    m2m: dict[str, float] = defaultdict(float)
    high: dict[str, float] = defaultdict(float)
    low: dict[str, float] = defaultdict(float)
    n = 0
    t = time.process_time()
    for k, p in zip(sym.tolist(), price.tolist(), strict=True):
        dp = p - last[k]
        last[k] = p
        for inst, side, qty in by_sym[k]:
            v = m2m[inst] + dp * qty * side * 1.0
            m2m[inst] = v
            if v > high[inst]:
                high[inst] = v
            if v < low[inst]:
                low[inst] = v
            n += 1
    return n, time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", type=int, default=10_000)
    ap.add_argument("--legs", type=int, default=4)
    ap.add_argument("--symbols", type=int, default=200)
    ap.add_argument("--ticks", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--baseline-ticks", type=int, default=3_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    start, sym, price, ts = ticks(args)
    t, cpu = time.perf_counter(), time.process_time()
    core, legs = build(args, start)
    setup, setup_wall = time.process_time() - cpu, time.perf_counter() - t
    print(
        f"setup: {args.strategies:,} strategies × {args.legs} legs over {args.symbols} symbols "
        f"({len(legs):,} legs) through the book in {setup:.2f} s CPU ({setup_wall:.2f} s wall; "
        f"{(args.strategies + len(legs)) / setup:,.0f} book operations/s)"
    )

    candles = 0
    t, cpu = time.perf_counter(), time.process_time()
    for a in range(0, args.ticks, args.batch):
        out = core.on_prices(sym[a : a + args.batch], price[a : a + args.batch], ts[a : a + args.batch])
        candles += out.candles.num_rows
    out = core.close_until(int(ts[-1]) + 60_000_000_000)
    candles += out.candles.num_rows
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    rate = core.leg_updates / cpu
    print(
        f"core:     {args.ticks:,} price updates in batches of {args.batch:,}: {core.leg_updates:,} leg updates "
        f"in {cpu:.2f} s CPU ({wall:.2f} s wall) = {rate:,.0f} leg updates/s per core "
        f"({core.leg_updates / wall:,.0f}/s wall; {args.ticks / cpu:,.0f} price updates/s), "
        f"{candles:,} candles emitted"
    )

    nb = min(args.baseline_ticks, args.ticks)
    n, secs = baseline(legs, start, sym[:nb], price[:nb])
    base = n / secs
    print(
        f"baseline: plain per-leg Python loop, first {nb:,} updates: {n:,} leg updates in {secs:.2f} s CPU "
        f"= {base:,.0f} leg updates/s"
    )
    print(
        f"ratio:    core / baseline = {rate / base:.1f}×  (target: >= 1,000,000 leg updates/s: "
        f"{'met' if rate >= 1_000_000 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
