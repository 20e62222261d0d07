"""Throughput of the market-data multiplexer's core: ticks/s through MuxCore.ingest + flush + deliveries.

Input: the real Binance BTCUSDT trades (nautilus_binance_btcusdt_trades_2021-01-08.parquet, 2,001 ticks)
tiled to about 2M ticks (each tile shifted in time past the previous one), cut into feed batches of
``--batch`` rows with exact watermarks. Each configuration runs the full actor loop without transport:
ingest (trade stream, 1m bars, 5m/1h bars, LTP), flush, deliveries to every subscriber, immediate acks.
Baselines in the same process: a bare pyarrow pass over the same batches (min/max price, Σ size) and
the TickBarBuilder alone.

    .venv/bin/python bench/bench_mux_core.py [--tiles 1000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.feeds.base import FeedBatch
from engine.marketdata.bars import TickBarBuilder
from engine.marketdata.mux import MuxCore
from engine.marketdata.schemas import END_OF_STREAM, TRADES_SCHEMA

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nautilus_binance_btcusdt_trades_2021-01-08.parquet"


def load_tiled(tiles: int) -> pa.Table:
    """The BTCUSDT ticks as TRADES_SCHEMA, repeated ``tiles`` times, each copy shifted after the last."""
    t = pq.read_table(DATA)
    ts = pc.cast(pc.cast(t["timestamp"], pa.timestamp("ns", tz="UTC")), pa.int64()).to_numpy()
    span = int(ts[-1] - ts[0]) + 1_000_000
    n = t.num_rows
    all_ts = (ts[None, :] + np.arange(tiles, dtype=np.int64)[:, None] * span).ravel()
    side = np.where(np.asarray(t["buyer_maker"].to_pylist()) == "True", -1, 1).astype(np.int8)
    return pa.Table.from_arrays(
        [
            pa.array(["BTCUSDT"] * (n * tiles), pa.string()),
            pa.array(all_ts, pa.int64()).cast(TRADES_SCHEMA.field("ts").type),
            pa.array(np.tile(t["price"].to_numpy(), tiles)),
            pa.array(np.tile(t["quantity"].to_numpy(), tiles)),
            pa.array(np.tile(side, tiles)),
            pc.cast(pa.concat_arrays([t["trade_id"].combine_chunks()] * tiles), pa.string()),
        ],
        schema=TRADES_SCHEMA,
    )


def feed_batches(table: pa.Table, size: int) -> list[FeedBatch]:
    ts = pc.cast(table["ts"], pa.int64()).to_numpy()
    out = []
    for a in range(0, table.num_rows, size):
        b = min(table.num_rows, a + size)
        final = b == table.num_rows
        out.append(FeedBatch("trades", table.slice(a, b - a), END_OF_STREAM if final else int(ts[b]), 0, final))
    return out


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bare_pyarrow(batches: list[FeedBatch]) -> None:
    for b in batches:
        pc.min_max(b.table["price"])
        pc.sum(b.table["size"])


def builder_only(batches: list[FeedBatch]) -> None:
    builder = TickBarBuilder("1m")
    for b in batches:
        builder.ingest(b.table)
        builder.close_until(b.watermark_ns)


def mux(batches: list[FeedBatch], subscribers: int) -> MuxCore:
    core = MuxCore("mux:BTCUSDT", max_rows=4096, window_ns=10_000_000, max_queue=1_000_000)
    for i in range(subscribers):
        core.subscribe(f"bot:{i}", {"trades"})
    core.subscribe("bars", {"bars:1m", "bars:5m", "bars:1h", "ltp"})
    for b in batches:
        now = time.perf_counter_ns()
        core.ingest(b, now)
        core.flush(now)
        for sub_id, got in core.deliveries(8):
            core.ack(sub_id, len(got))
    core.flush(time.perf_counter_ns(), force=True)
    for sub_id, got in core.deliveries(1_000_000):
        core.ack(sub_id, len(got))
    return core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=1000, help="copies of the 2,001 real ticks (default 1000)")
    parser.add_argument("--batch", type=int, default=1000, help="rows per feed batch (default 1000)")
    args = parser.parse_args()
    table = load_tiled(args.tiles)
    batches = feed_batches(table, args.batch)
    n = table.num_rows
    print(f"{n:,} real BTCUSDT ticks ({args.tiles} tiles) in {len(batches):,} feed batches of {args.batch} rows")
    base = timed(lambda: bare_pyarrow(batches))
    print(f"{'baseline: bare pyarrow pass (min/max, sum)':48s} {n / base / 1e6:8.2f} M ticks/s")
    build = timed(lambda: builder_only(batches))
    print(f"{'TickBarBuilder alone (1m)':48s} {n / build / 1e6:8.2f} M ticks/s   ({build / base:5.1f}x baseline time)")
    for subs in (1, 10, 100):
        core = mux(batches, subs)  # check once that everything went through
        stats = core.stats()
        assert stats.rows_out["trades"] == n and not any(stats.queue_depth.values())
        secs = timed(lambda s=subs: mux(batches, s))  # type: ignore[misc]
        print(f"{f'MuxCore, {subs:3d} trade subscribers (+1 bars/ltp)':48s} {n / secs / 1e6:8.2f} M ticks/s"
              f"   ({secs / base:5.1f}x baseline time; {stats.batches_cut['trades']:,} trade batches, "
              f"{stats.batches_cut['bars:1m']:,} 1m bar batches)")


if __name__ == "__main__":
    main()
