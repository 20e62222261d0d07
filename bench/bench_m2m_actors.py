"""The M2M aggregator through real Ray actors (issue 5): leg updates/s and tick-to-M2M latency.

    .venv/bin/python bench/bench_m2m_actors.py [--strategies 10000] [--legs 4] [--symbols 200]
        [--tiles 100] [--rate 100000] [--latency-s 10] [--latency-strategies 10000,1000]

Book: ``--strategies`` strategies of ``--legs`` legs each over ``--symbols`` symbols (seeded: each
strategy holds ``--legs`` distinct symbols, random sides and sizes), entered through the aggregator in
one bulk call. Market data: the real Binance BTCUSDT trades tiled ``--tiles`` times, each tick
assigned to one of the symbols in turn (``S000`` … ``S199``; prices as traded), written to a
temporary Parquet file that one multiplexer (all symbols in one shard) replays as trades. The
``m2m`` actor subscribes to the trades, re-marks every strategy holding a traded symbol, builds the
1-minute candles from every update and writes them through the recorder (checkpoints every 60 s so
that snapshots of the 40,000-leg book stay out of the measurement).

1. **Throughput** (replay as fast as possible): leg updates per second of wall time from the first
   delivery to the last processed update (a leg update = one open leg re-marked by one price update);
   baseline in the same process: the same book and ticks through ``M2MAggregatorCore`` without actors.
2. **Latency** at ``--rate`` ticks/s offered (paced replay, 3 ms feed windows). With ``--timing wall``
   (default) the first ``rate × latency-s`` ticks are re-stamped at exactly the offered rate (prices
   and order as traded) and replayed in real time, starting 5 s before a minute boundary: event time
   runs like wall time, so minutes (and their 10,000 candles) close once a minute as on a live feed,
   one of them inside the run. ``--timing compressed`` replays the tiled ticks' own times ~2,300×
   faster instead: a minute closes every ~26 ms of wall time, 380,000 candles a second, a stress case
   no live feed produces. Per delivery, the
   aggregator notes the wall time after its updates were applied; tick→M2M = that time − the time the
   delivery's oldest tick was due by the pacing (feed lag, multiplexer batching, transport, the
   watermark merge and the M2M computation included), p50/p99/max; run for each of
   ``--latency-strategies`` book sizes.

Figures depend on the machine's load: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from bench_mux_core import load_tiled

from actors.runtime import EngineRuntime
from engine.live.config import AccountConfig
from engine.m2m import LegSpec, M2MAggregatorCore
from engine.marketdata.bars import ts_ns_array


def book(
    n_strategies: int, n_legs: int, n_symbols: int, prices: dict[str, float], seed: int
) -> list[tuple[str, dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_strategies):
        for s in rng.choice(n_symbols, n_legs, replace=False):
            symbol = f"S{s:03d}"
            out.append((f"bench/s{k}", {"symbol": symbol, "side": int(rng.choice([-1, 1])),
                                        "qty": float(rng.integers(1, 10)), "entry_price": prices[symbol],
                                        "segment": "perp"}))  # fmt: skip
    return out


def write_ticks(tiles: int, n_symbols: int, folder: Path) -> tuple[Path, pa.Table]:
    t = load_tiled(tiles)
    names = np.array([f"S{i:03d}" for i in range(n_symbols)], dtype=object)[np.arange(t.num_rows) % n_symbols]
    t = t.set_column(0, "symbol", pa.array(names, pa.string()))
    path = folder / "ticks_200sym.parquet"
    pq.write_table(t, path)
    return path, t


def core_baseline(legs: list[tuple[str, dict[str, Any]]], table: pa.Table, batch: int) -> float:
    """Leg updates per second of the in-process core on the same book and ticks (batches of ``batch``)."""
    core = M2MAggregatorCore()
    b = core.add_account("bench")
    for inst in sorted({i for i, _ in legs}):
        b.create_strategy(inst, inst, 0)
    for inst, spec in legs:
        b.add_leg(inst, LegSpec(**spec), 0)
    sym = np.asarray(table.column("symbol").to_pylist(), dtype=object)
    px = table.column("price").to_numpy()
    ts = ts_ns_array(table["ts"])
    start = time.perf_counter()
    for a in range(0, len(ts), batch):
        core.on_prices(sym[a : a + batch], px[a : a + batch], ts[a : a + batch])
    took = time.perf_counter() - start
    return core.leg_updates / took


def run(path: Path, legs: list[tuple[str, dict[str, Any]]], speed: float | None, end_ns: int | None,
        window_ns: int) -> dict[str, Any]:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_m2m_db_") as tmp:
        runtime = EngineRuntime(str(Path(tmp) / "m2m.duckdb"), num_cpus=2, m2m_checkpoint_s=60.0).start()
        try:
            runtime.set_feed({"kind": "replay", "path": str(path), "stream": "trades", "speed": speed,
                              "end_ns": end_ns, "batch_rows": 4096, "window_ns": window_ns, "window_ms": 5.0},
                             "1m", shard_size=10_000)  # fmt: skip
            runtime.create_account(AccountConfig(id="bench"))
            symbols = sorted({spec["symbol"] for _, spec in legs})
            ray.get(runtime.m2m.add_legs_bulk.remote("bench", legs))
            runtime._subscribe_m2m(symbols)
            before = ray.get(runtime.m2m.stats.remote())
            runtime.start_feeds()
            assert runtime.wait_feeds(timeout_s=1800)
            stats = ray.get(runtime.m2m.stats.remote())
            samples = ray.get(runtime.m2m.latency_samples.remote())
            runtime.shutdown()
        finally:
            if ray.is_initialized():
                ray.shutdown()
    return {"before": before, "stats": stats, "samples": samples}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", type=int, default=10_000)
    parser.add_argument("--legs", type=int, default=4)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--tiles", type=int, default=100, help="copies of the 2,001 real ticks (default 100)")
    parser.add_argument("--rate", type=float, default=100_000.0, help="offered ticks/s of the latency runs")
    parser.add_argument("--latency-s", type=float, default=10.0)
    parser.add_argument("--latency-strategies", default="10000,1000")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--timing",
        choices=["wall", "compressed"],
        default="wall",
        help="latency runs: ticks re-stamped at the offered rate and replayed in real time (wall, default), "
        "or the tiled ticks' own times replayed ~2,300x faster (compressed: a minute closes every ~26 ms)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_m2m_") as tmp:
        path, table = write_ticks(args.tiles, args.symbols, Path(tmp))
        first = {s: p for s, p in zip(table.column("symbol").to_pylist()[: args.symbols],
                                      table.column("price").to_pylist()[: args.symbols], strict=True)}  # fmt: skip
        legs = book(args.strategies, args.legs, args.symbols, first, args.seed)
        print(
            f"{table.num_rows:,} ticks over {args.symbols} symbols; "
            f"{args.strategies:,} strategies × {args.legs} legs; {load()}"
        )
        base = core_baseline(legs, table, 4096)
        out = run(path, legs, None, None, 0)
        st, samples = out["stats"], out["samples"]
        recv = np.array([s[2] for s in samples], dtype=np.int64)
        ingest = np.array([s[0] for s in samples], dtype=np.int64)
        span = (recv.max() - ingest.min()) / 1e9
        updates = st["leg_updates"] - out["before"]["leg_updates"]
        busy = st["busy_s"] - out["before"]["busy_s"]
        print(f"   aggregator: {st['deliveries'] - out['before']['deliveries']} deliveries, {busy:.2f} s busy")
        print(
            f"1. throughput: {updates:,} leg updates in {span:.2f} s = {updates / span / 1e6:.2f} M/s through the "
            f"actors; in-process core {base / 1e6:.2f} M/s (actor/core {updates / span / base:.2f}); {load()}"
        )
        if args.timing == "wall":
            # the same real ticks (prices, order) stamped at exactly the offered rate, replayed in real
            # time: event time runs like wall time, minutes close once a minute (one close falls inside
            # the run, 5 s after its start), as on a live feed
            n_ticks = min(table.num_rows, int(args.rate * args.latency_s))
            start_ns = (int(ts_ns_array(table["ts"])[0]) // 60_000_000_000 + 1) * 60_000_000_000 - 5_000_000_000
            stamps = start_ns + (np.arange(n_ticks) * (1e9 / args.rate)).astype(np.int64)
            lat_table = table.slice(0, n_ticks).set_column(
                table.schema.get_field_index("ts"), "ts", pa.array(stamps, pa.timestamp("ns", "UTC"))
            )
            lat_path = Path(tmp) / "ticks_retimed.parquet"
            pq.write_table(lat_table, lat_path)
        else:  # "compressed": the tiled ticks' own times, replayed fast enough to offer the rate
            lat_table, lat_path = table, path
        ts = ts_ns_array(lat_table["ts"])
        event_rate = len(ts) / ((int(ts[-1]) - int(ts[0])) / 1e9)
        speed = args.rate / event_rate
        end_ns = int(ts[0]) + int(args.latency_s * speed * 1e9)
        for n in (int(x) for x in args.latency_strategies.split(",")):
            sub = [leg for leg in legs if int(leg[0].split("/s")[1]) < n]
            res = run(lat_path, sub, speed, end_ns, int(3e6 * speed))
            s = np.array(res["samples"], dtype=np.int64)  # (ingest_ns, first tick ts, done_ns)
            due_off = np.ceil((s[:, 1] - int(ts[0])) / speed).astype(np.int64)
            feed_start = int((s[:, 0] - due_off).min())
            lat = (s[:, 2] - (feed_start + due_off)) / 1e6
            ticks = int(np.searchsorted(ts, end_ns))
            took = (s[:, 2].max() - feed_start) / 1e9
            print(
                f"2. latency, {n:,} strategies × {args.legs} legs: offered {args.rate:,.0f} ticks/s, achieved "
                f"{ticks / took:,.0f}; tick→M2M ms p50 {np.percentile(lat, 50):.1f} p99 {np.percentile(lat, 99):.1f} "
                f"max {lat.max():.1f} over {len(lat):,} deliveries; {load()}"
            )


if __name__ == "__main__":
    main()
