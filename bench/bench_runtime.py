"""Actor-level benchmark of the market-data multiplexer (issue 4): real Ray actors on this machine.

    .venv/bin/python bench/bench_runtime.py [--tiles 1000] [--runs 2] [--latency-s 20] [--quick]

Input: the real Binance BTCUSDT trades (``nautilus_binance_btcusdt_trades_2021-01-08.parquet``, 2,001
ticks over 46 s) tiled ``--tiles`` times (default 1000: 2,001,000 ticks; each copy shifted in time past
the previous one, as ``bench_mux_core.py`` does), written to a temporary Parquet file (deleted at the
end) that the multiplexer's replay feed reads with ``engine.data.ticks.load_trades``. One
``MarketDataMux`` actor (``actors/mux.py``, bars built from trades) per run, fed by that replay;
subscribers are minimal sink actors (``num_cpus=0``) whose ``on_market_data`` counts rows, notes the
wall time and returns. Ray runs with ``num_cpus=2`` (the machine has 2 cores); the mux, every sink and
the driver share them. Actors are created, subscribed and answered a call (so they are alive) before
any clock starts; each configuration runs ``--runs`` times (default 2) on a fresh mux, and the table
shows every run, the best and the spread ((worst − best) / best).

What is measured:

1. **Mux throughput.** Replay at ``speed=None`` (as fast as possible, feed batches of 4,096 rows) into
   one mux with one sink subscribed to ``bars:1m`` (cheap: ~2 batches per tile-minute). *gross*:
   ticks / (``start()`` called → ``wait_done()`` returned), which includes the mux opening its feed
   (reading, validating and sorting the 2M-row Parquet file inside the actor). *net* (the figure held
   to the target, >= 500,000 ticks/s): ticks / (first feed batch ingested → ``wait_done()`` returned);
   the start is the ``ingest_ns`` of the first bar batch, i.e. the wall time its oldest row entered the
   mux, which is the first or second feed batch. Baseline in the same run: the in-process
   ``MuxCore`` (same settings, same ticks pre-cut into the same 4,096-row feed batches, one ``bars:1m``
   subscriber, immediate acks, no transport), and the ratio actor / core.
2. **Fan-out.** The same replay with 1, 10 and 100 sinks each subscribed to ``trades`` (every tick
   reaches every sink). Sinks receive through their inbox (``--transport inbox``, the default, as the
   engine's bots do: each batch written once into the multiplexer's shared-memory ring, a small frame
   per delivery to each sink) or by Ray calls (``--transport ray``). Net ticks/s as above (start: the
   first trades batch's ``ingest_ns``), rows received checked equal to ticks × sinks. The cost of
   fan-out held to the target (100 sinks <= 2× the cost of 10) is the **multiplexer's CPU time** from
   its first feed batch to the end (``cpu_since_ingest_s``: what fanning out costs the publisher;
   the feed's opening excluded). The end-to-end ratio time(100) / time(10) is printed too: it also
   holds every sink's own receiving, and 100 sink processes share the 2 cores (a Ray worker costs
   about 0.5 % of a core even idle).
3. **Latency.** Replay paced so that ticks arrive at 100,000 ticks/s of wall time on average
   (``speed`` = 100,000 / the tiled data's event-time tick rate, ~2,300), ~20 s, into one mux with 10
   sinks on ``trades``. Each sink records, per batch, its wall time on entry to ``on_market_data``
   (after Ray resolved the batch from the object store). Per batch, the latency is that of its
   **oldest** tick, i.e. the worst tick of the batch:

   * *mux→bot* = receive − ``batch.ingest_ns`` (wall time the oldest row entered the mux): mux
     batching (``window_ms``), fan-out, Ray transport and the sink's queue;
   * *tick→bot* (the figure held to the target, p99 <= 20 ms) = receive − the time the oldest tick was
     **due** by the replay's pacing (feed start + (its event time − first event time) / speed). This
     adds the feed's own delay (a paced replay yields the rows that became due since it last ran, so
     a tick waits in the feed until the mux's event loop comes back to it). The feed's start wall time
     is not visible outside the actor; it is taken as min over batches of (``ingest_ns`` − due offset
     of its first row), which the very first batch attains within microseconds (every other batch only
     gives a later bound), so tick→bot is exact to a few µs.

   p50, p99 and max over all batches of all sinks; the offered rate is checked against the achieved one.

Settings. Mux: the actor's defaults (also the shipped runtime's) — ``max_rows`` 4,096 rows per batch,
``window_ms`` 5, ``calls_limit`` 1 delivery in flight per subscriber (``--calls-limit``), ``inflight_limit``
64 batches merged into one delivery at most, ``max_queue`` 256, deliveries up to 90,000 bytes sent inline
with the call (``--inline-bytes``; bigger ones through the object store, put once per round for all
subscribers with the same pending batches). A call costs about a millisecond of CPU on each side here
whatever it carries, so under load each subscriber gets fewer, bigger deliveries (everything that
queued while its previous one was in flight) instead of one call per batch: the number of calls, not
the rows, is what fan-out pays for. Feed: ``batch_rows`` 4,096; the paced run adds a feed window of 3 ms
of wall time (``--feed-window-ms``; event window = 3 ms × speed) so the replay hands the mux ~300 rows
at a time instead of the one or two rows due each time it is asked (which made the mux spin a core on
tiny ingests); that wait is inside tick→bot. At speed=None batches are cut full; paced at 100k ticks/s
they are cut by the 5 ms window or at once for an idle subscriber.

The machine is shared: the load average is printed before and after each part; figures taken under
load are lower (throughput) and longer-tailed (latency) than on an idle machine.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from bench_mux_core import feed_batches, load_tiled

from actors.inbox import Inbox, serialized
from actors.mux import MarketDataMux
from engine.feeds.base import FeedBatch
from engine.marketdata.bars import ts_ns_array
from engine.marketdata.mux import MuxCore
from engine.marketdata.schemas import INLINE_DELIVERY_BYTES, decode_delivery

SYMBOL = "BTCUSDT"
MUX: dict[str, Any] = {"max_rows": 4096, "window_ms": 5.0, "inflight_limit": 64, "calls_limit": 1, "max_queue": 256}
FEED_BATCH = 4096
LATENCY_RATE = 100_000.0  # offered ticks per wall second
LATENCY_SUBS = (1, 10)  # subscriber counts of the latency runs
FEED_WINDOW_MS = 3.0  # paced replay: rows are released in windows of this many wall ms
FANOUT = {"max_rows": 4096, "inflight_limit": 64}


@ray.remote(num_cpus=0)
@serialized
class Sink:
    """A minimal subscriber: counts rows, notes per batch (first ts, ingest_ns, receive wall ns).
    It opens an inbox (``actors/inbox.py``) as the engine's subscribers do; the multiplexer uses it
    when subscribed with ``inbox=`` (``--transport inbox``), else Ray calls."""

    def __init__(self) -> None:
        self.inbox = Inbox(self.on_market_data, self._serial_lock, ray.get_runtime_context().get_node_id())
        self.reset()

    def inbox_address(self) -> dict[str, str]:
        return self.inbox.address()

    def reset(self) -> bool:
        self.rows = 0
        self.calls = 0
        self.batches = 0
        self.first_ts: list[int] = []
        self.ingest: list[int] = []
        self.recv: list[int] = []
        self.cpu0 = time.process_time()
        self.handler_cpu = 0.0
        return True

    def on_market_data(self, gen: int, payload: Any) -> int:
        now = time.time_ns()
        c0 = time.thread_time()
        self.calls += 1
        for b in decode_delivery(payload):
            n = b.table.num_rows
            self.rows += n
            self.batches += 1
            if n:
                self.first_ts.append(b.table.column("ts").chunk(0)[0].value)
                self.ingest.append(b.ingest_ns)
                self.recv.append(now)
        self.handler_cpu += time.thread_time() - c0
        return 0

    def result(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "calls": self.calls,
            "batches": self.batches,
            "first_ts": np.asarray(self.first_ts, np.int64),
            "ingest": np.asarray(self.ingest, np.int64),
            "recv": np.asarray(self.recv, np.int64),
            "cpu_s": time.process_time() - self.cpu0,  # the whole process (all threads) since reset()
            "handler_cpu_s": self.handler_cpu,  # inside on_market_data (after Ray resolved the delivery)
        }


@dataclass
class Run:
    ticks: int
    gross_s: float
    net_s: float
    sinks: list[dict[str, Any]]
    stats: dict[str, Any]
    mux_cpu_s: float = 0.0  # the mux process's CPU from its first feed batch to done (the feed's opening excluded)

    @property
    def net_rate(self) -> float:
        return self.ticks / self.net_s

    @property
    def gross_rate(self) -> float:
        return self.ticks / self.gross_s


@dataclass
class Row:
    name: str
    settings: str
    values: list[float] = field(default_factory=list)  # one per run; higher is better
    unit: str = "ticks/s"
    note: str = ""


def write_tiled(tiles: int, folder: Path) -> tuple[Path, pa.Table]:
    table = load_tiled(tiles)
    path = folder / "btcusdt_trades_tiled.parquet"
    pq.write_table(table, path)
    return path, table


def core_baseline(table: pa.Table, repeat: int) -> float:
    """Best ticks/s of the in-process MuxCore on the same feed batches, same settings, one bars:1m sub."""
    batches = feed_batches(table, FEED_BATCH)

    def once() -> None:
        core = MuxCore(
            "mux:" + SYMBOL,
            symbols=[SYMBOL],
            max_rows=MUX["max_rows"],
            window_ns=int(MUX["window_ms"] * 1e6),
            max_queue=MUX["max_queue"],
            history=4096,
        )
        core.subscribe("bars", {"bars:1m"})
        b: FeedBatch
        for b in batches:
            now = time.time_ns()
            core.ingest(b, now)
            if b.final:
                core.flush(now, force=True)
            for sub_id, got in core.deliveries(MUX["inflight_limit"]):
                core.ack(sub_id, len(got))

    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - start)
    return table.num_rows / best


class Bench:
    def __init__(self, path: Path, ticks: int) -> None:
        self.path = str(path)
        self.ticks = ticks
        self.sinks: list[Any] = []
        self.k = 0

    def ensure_sinks(self, n: int) -> list[Any]:
        while len(self.sinks) < n:
            self.sinks.append(Sink.options(name=f"sink:{len(self.sinks)}").remote())
        ray.get([s.reset.remote() for s in self.sinks])  # every sink alive and empty
        return self.sinks[:n]

    def run(
        self,
        n_sinks: int,
        stream: str,
        speed: float | None,
        end_ns: int | None = None,
        ticks: int = 0,
        feed_window_ns: int = 0,
        **mux_options: Any,
    ) -> Run:
        """One fresh mux, ``n_sinks`` sinks on ``stream``; replays the file (rows with ts < ``end_ns``)."""
        sinks = self.ensure_sinks(n_sinks)
        ticks = ticks or self.ticks
        self.k += 1
        feed = {
            "kind": "replay",
            "path": self.path,
            "speed": speed,
            "batch_rows": FEED_BATCH,
            "end_ns": end_ns,
            "window_ns": feed_window_ns,
        }
        options = {**MUX, **mux_options}
        transport = options.pop("transport", "inbox")  # "inbox" (socket + shared-memory ring) or "ray" (calls)
        mux = MarketDataMux.options(name=f"mux:bench-{self.k}").remote(
            "mux:" + SYMBOL, [SYMBOL], feed, bars_from="trades", bar_timeframe="1m", **options
        )
        inboxes = ray.get([s.inbox_address.remote() for s in sinks]) if transport == "inbox" else [None] * len(sinks)
        ray.get(
            [
                mux.subscribe.remote(f"sink:{i}", s, [stream], None, None, a)
                for i, (s, a) in enumerate(zip(sinks, inboxes, strict=True))
            ]
        )
        ray.get(mux.stats.remote())
        t0 = time.time_ns()
        ray.get(mux.start.remote())
        ok = ray.get(mux.wait_done.remote(600.0))
        t1 = time.time_ns()
        stats = ray.get(mux.stats.remote())
        results = ray.get([s.result.remote() for s in sinks])
        ray.kill(mux, no_restart=True)
        if not ok or stats["error"] or stats["dead"]:
            raise RuntimeError(f"mux run failed: done={ok} error={stats['error']!r} dead={stats['dead']}")
        if stats["ticks_in"] != ticks:
            raise RuntimeError(f"mux ingested {stats['ticks_in']} ticks, expected {ticks}")
        if stream == "trades":
            bad = [r["rows"] for r in results if r["rows"] != ticks]
            if bad:
                raise RuntimeError(f"sinks got {bad[:5]} rows, expected {ticks} each")
        first = min(int(r["ingest"].min()) for r in results if len(r["ingest"]))
        return Run(ticks, (t1 - t0) / 1e9, (t1 - first) / 1e9, results, stats, stats["cpu_since_ingest_s"])


def spread(values: list[float]) -> float:
    best, worst = max(values), min(values)
    return (best - worst) / best if best else 0.0


def fmt_rate(v: float) -> str:
    return f"{v / 1e3:,.0f}k"


def latency(
    bench: Bench, table: pa.Table, runs: int, seconds: float, n_sinks: int, feed_window_ms: float
) -> list[dict[str, float]]:
    ts = ts_ns_array(table["ts"])
    ts0 = int(ts[0])
    event_rate = len(ts) / ((int(ts[-1]) - ts0) / 1e9)  # ticks per event-time second
    speed = LATENCY_RATE / event_rate
    end_ns = ts0 + int(seconds * speed * 1e9)  # replay the ticks of the first `seconds` of wall time
    ticks = int(np.searchsorted(ts, end_ns))
    out: list[dict[str, float]] = []
    for _ in range(runs):
        run = bench.run(n_sinks, "trades", speed, end_ns, ticks, feed_window_ns=int(feed_window_ms * 1e6 * speed))
        first_ts = np.concatenate([r["first_ts"] for r in run.sinks])
        ingest = np.concatenate([r["ingest"] for r in run.sinks])
        recv = np.concatenate([r["recv"] for r in run.sinks])
        due_off = np.ceil((first_ts - ts0) / speed).astype(np.int64)
        feed_start = int((ingest - due_off).min())
        mux_lat = (recv - ingest) / 1e6
        tick_lat = (recv - (feed_start + due_off)) / 1e6
        out.append(
            {
                "speed": speed,
                "rate": run.ticks / run.net_s,
                "seconds": run.net_s,
                "batches": float(len(recv)),
                "rows_per_batch": run.ticks * n_sinks / len(recv),
                "calls": float(sum(r["calls"] for r in run.sinks)),
                "mux_p50": float(np.percentile(mux_lat, 50)),
                "mux_p99": float(np.percentile(mux_lat, 99)),
                "mux_max": float(mux_lat.max()),
                "tick_p50": float(np.percentile(tick_lat, 50)),
                "tick_p99": float(np.percentile(tick_lat, 99)),
                "tick_max": float(tick_lat.max()),
            }
        )
    return out


def timed_sinks_start(bench: Bench, n: int) -> float:
    start = time.perf_counter()
    bench.ensure_sinks(n)
    return time.perf_counter() - start


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=1000, help="copies of the 2,001 real ticks (default 1000)")
    parser.add_argument("--runs", type=int, default=2, help="runs per configuration (default 2)")
    parser.add_argument("--only", default="1,2,3", help="which measurements (default 1,2,3)")
    parser.add_argument("--fanout", default="1,10,100", help="subscriber counts of the fan-out runs")
    parser.add_argument("--fanout-max-rows", type=int, default=FANOUT["max_rows"], help="max_rows of the fan-out runs")
    parser.add_argument(
        "--fanout-inflight",
        type=int,
        default=FANOUT["inflight_limit"],
        help="inflight_limit (batches per subscriber) of the fan-out runs",
    )
    parser.add_argument("--latency-s", type=float, default=20.0, help="latency run length, s (default 20)")
    parser.add_argument(
        "--feed-window-ms",
        type=float,
        default=FEED_WINDOW_MS,
        help="paced replay: feed window in wall ms (event window = this × speed)",
    )
    parser.add_argument(
        "--calls-limit", type=int, default=MUX["calls_limit"], help="deliveries in flight per subscriber"
    )
    parser.add_argument(
        "--inline-bytes", type=int, default=INLINE_DELIVERY_BYTES, help="largest delivery sent inline (0: never)"
    )
    parser.add_argument("--transport", choices=["inbox", "ray"], default="inbox", help="inbox (default) or Ray calls")
    args = parser.parse_args()
    MUX["transport"] = args.transport
    MUX["calls_limit"] = args.calls_limit
    MUX["inline_bytes"] = args.inline_bytes
    only = set(args.only.split(","))
    fanout_options = {"max_rows": args.fanout_max_rows, "inflight_limit": args.fanout_inflight}
    wall = time.perf_counter()
    rows: list[Row] = []
    thr: list[Run] = []
    fan: dict[int, list[Run]] = {}
    lat: dict[int, list[dict[str, float]]] = {}
    base = 0.0
    with tempfile.TemporaryDirectory(prefix="bench_runtime_") as tmp:
        path, table = write_tiled(args.tiles, Path(tmp))
        n = table.num_rows
        print(
            f"{n:,} real BTCUSDT ticks ({args.tiles} tiles) in a temporary {path.stat().st_size / 1e6:.1f} MB file; "
            f"{os.cpu_count()} cores, {load()}"
        )
        if "1" in only:
            base = core_baseline(table, args.runs)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            bench = Bench(path, n)
            if "1" in only:
                bench.ensure_sinks(1)
                thr = [bench.run(1, "bars:1m", None) for _ in range(args.runs)]
                print(f"  1. throughput done ({load()})")
                rows.append(Row("1. mux throughput, net (1 sub on bars:1m)", _settings(MUX), [r.net_rate for r in thr]))
                rows.append(Row("   gross (start(), feed open incl.)", "", [r.gross_rate for r in thr]))
                rows.append(Row("   in-process MuxCore baseline", "same batches", [base]))
            counts = [int(x) for x in args.fanout.split(",")] if "2" in only else []
            if "3" in only:
                counts = sorted({*counts, *LATENCY_SUBS})
            for k in sorted(counts):
                if "2" in only and k in [int(x) for x in args.fanout.split(",")]:
                    took = timed_sinks_start(bench, k)
                    fan[k] = [bench.run(k, "trades", None, **fanout_options) for _ in range(args.runs)]
                    print(f"  2. fan-out to {k} done ({took:.1f} s to start the sinks; {load()})")
                    calls = np.mean([sum(s["calls"] for s in r.sinks) for r in fan[k]])
                    mux_cpu = min(r.mux_cpu_s for r in fan[k])
                    sink_cpu = np.mean([sum(s["cpu_s"] for s in r.sinks) for r in fan[k]])
                    cut = fan[k][0].stats["batches_cut"]["trades"]
                    rows.append(
                        Row(
                            f"2. fan-out, {k:3d} subs on trades",
                            _settings({**MUX, **fanout_options}),
                            [r.net_rate for r in fan[k]],
                            note=f"{cut} batches × {k} subs in {calls:,.0f} calls; CPU s: mux {mux_cpu:.2f}, "
                            f"sinks {sink_cpu:.2f}",
                        )
                    )
                if k in LATENCY_SUBS and "3" in only:  # before more sinks exist (idle processes add noise)
                    bench.ensure_sinks(k)
                    lat[k] = latency(bench, table, args.runs, args.latency_s, k, args.feed_window_ms)
                    print(f"  3. latency with {k} subs done ({load()})")
        finally:
            ray.shutdown()
    print()
    print(f"{'configuration':42s} {'settings':24s} {'runs':>15s} {'best':>7s} {'spread':>7s}  note")
    for r in rows:
        runs = " ".join(fmt_rate(v) for v in r.values)
        print(
            f"{r.name:42s} {r.settings:24s} {runs:>15s} {fmt_rate(max(r.values)):>7s} "
            f"{spread(r.values) * 100:6.1f}%  {r.note}"
        )
    for k, runs in lat.items():
        for i, m in enumerate(runs):
            print(
                f"3. latency, {k:2d} subs, run {i + 1}: speed {m['speed']:.0f} → {m['rate']:,.0f} ticks/s for "
                f"{m['seconds']:.1f} s; {m['batches']:,.0f} batches of {m['rows_per_batch']:.0f} rows "
                f"in {m['calls']:,.0f} calls; "
                f"ms p50/p99/max: tick→bot {m['tick_p50']:.1f}/{m['tick_p99']:.1f}/{m['tick_max']:.0f}, "
                f"mux→bot {m['mux_p50']:.1f}/{m['mux_p99']:.1f}/{m['mux_max']:.0f}"
            )
    print()
    if thr:
        best_net = max(r.net_rate for r in thr)
        verdict = "met" if best_net >= 500_000 else "MISSED"
        print(
            f"target 1 (one mux >= 500,000 ticks/s): best {best_net:,.0f} ticks/s net, "
            f"{max(r.gross_rate for r in thr):,.0f} gross ({verdict}); in-process core {base:,.0f} "
            f"(actor/core {best_net / base:.2f})"
        )
    if 10 in fan and 100 in fan:
        t10 = min(r.net_s for r in fan[10])
        t100 = min(r.net_s for r in fan[100])
        c10 = min(r.mux_cpu_s for r in fan[10])
        c100 = min(r.mux_cpu_s for r in fan[100])
        print(
            f"target 2 (100 subs cost <= 2x of 10), the multiplexer's CPU for the replay: {c100 / c10:.2f}x "
            f"({'met' if c100 / c10 <= 2 else 'MISSED'}; {c10:.2f} s vs {c100:.2f} s)"
        )
        print(
            f"         end to end (every sink's own receiving on the same 2 cores too): {t100 / t10:.2f}x "
            f"(best {n / t10:,.0f} vs {n / t100:,.0f} ticks/s)"
        )
    for k, runs in lat.items():
        p99 = min(m["tick_p99"] for m in runs)
        print(
            f"target 3 (tick→bot p99 <= 20 ms at 100k ticks/s, {k} subs): p99 best {p99:.1f} ms, worst "
            f"{max(m['tick_p99'] for m in runs):.1f} ms ({'met' if p99 <= 20 else 'MISSED'})"
        )
    print(f"whole benchmark: {time.perf_counter() - wall:.0f} s ({load()})")


def _settings(options: dict[str, Any]) -> str:
    return f"rows {options['max_rows']}, calls {options.get('calls_limit', MUX['calls_limit'])}"


if __name__ == "__main__":
    main()
