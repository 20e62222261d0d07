"""The bot actor (``bot:<account>/<name>`` in the dashboard): one strategy instance, live.

It hosts an :class:`engine.live.bot.BotEngine` and wires it to the rest of the runtime:

* market data: it subscribes to the multiplexers of its symbols for ``bars:<timeframe>``; each call
  brings batches (object-store references resolved by Ray, shared with every other subscriber),
  merged into ordered time slices by :class:`engine.live.merge.BarMerger`;
* the portfolio actor: a blocking pre-trade check for each opening order, a non-blocking report
  (equity, exposures, events) after each call;
* the recorder: the rows the engine drained (fills, orders, positions, signals) and, every
  ``checkpoint_every_s``, its pickled state with the watermark it covers.

Restarts: Ray restarts a dead bot actor with its constructor arguments; the constructor loads the
last checkpoint through the recorder and, if the bot had been started, resubscribes from the
checkpoint's watermark, so the multiplexers resend what the checkpoint does not cover. Re-running
those bars reproduces the same orders, fills and signals with the same ids (pre-trade verdicts are
memoised by the portfolio), which the store ignores or upserts: nothing is lost or doubled.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
from ray.util import metrics

from actors.inbox import Inbox, serialized
from engine.data.catalog import load_funding, load_marks
from engine.live.bot import PAUSED, RUNNING, STOPPED, BotEngine, BotSpec
from engine.live.merge import BarMerger
from engine.marketdata.schemas import TRADES, bars_stream, decode_delivery
from engine.portfolio.live import PortfolioView
from engine.risk.manager import Rejection
from engine.risk.view import Exposure, OrderIntent
from engine.strategy.registry import StrategyRegistry


class _PortfolioProxy:
    """:class:`engine.live.bot.PortfolioClient` over the portfolio actor: checks wait for the verdict,
    reports do not (the view of the previous report is used once it has arrived)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self._pending: Any = None
        self._view: PortfolioView | None = None

    def check(
        self, key: tuple[str, int], intent: OrderIntent, equity: float, exposures: list[Exposure]
    ) -> Rejection | None:
        verdict: Rejection | None = ray.get(self.handle.check.remote(key, intent, equity, exposures))
        return verdict

    def report(
        self, name: str, ts: int, equity: float, exposures: list[Exposure], events: Any, points: Any = ()
    ) -> PortfolioView | None:
        if self._pending is not None:
            ready, _ = ray.wait([self._pending], timeout=0)
            if ready:
                self._view = ray.get(self._pending)
                self._pending = None
        ref = self.handle.report.remote(name, ts, equity, exposures, list(events), list(points))
        if self._pending is None:
            self._pending = ref
        return self._view


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
@serialized
class BotActor:
    """See the module docstring.

    Args:
        spec: the bot.
        muxes: source name ("mux:<symbol or shard>") → multiplexer handle, for the bot's symbols.
        portfolio, recorder: actor handles.
        strategy_folders: extra plugin folders (the default ``strategies/`` is always searched).
        funding_path, marks_path: optional funding and mark files (replayed perpetuals).
        checkpoint_every_s: wall seconds between checkpoints.
    """

    _serial_lock: threading.RLock  # see actors.inbox.serialized

    def __init__(
        self,
        spec: BotSpec,
        muxes: dict[str, Any],
        portfolio: Any,
        recorder: Any,
        strategy_folders: list[str] | None = None,
        funding_path: str | None = None,
        marks_path: str | None = None,
        checkpoint_every_s: float = 30.0,
    ) -> None:
        self.spec = spec
        self.muxes = muxes
        self.recorder = recorder
        try:  # the M2M aggregator, when the runtime runs one (fills -> legs)
            self.m2m: Any = ray.get_actor("m2m")
        except ValueError:
            self.m2m = None
        self.proxy = _PortfolioProxy(portfolio)
        self.checkpoint_every_s = checkpoint_every_s
        registry = StrategyRegistry([Path(p) for p in strategy_folders or []]).discover()
        self.stream = bars_stream(spec.timeframe)
        self.streams = [self.stream]
        self.merger = BarMerger(sorted(muxes), list(spec.symbols), _tf_ns(spec.timeframe))
        stored = ray.get(recorder.load_checkpoint.remote(spec.bot_id))
        self.restored = stored is not None
        if stored is not None:
            self.engine = BotEngine.restore(stored[2], self.proxy)
        else:
            held = _present(funding_path, spec.symbols) if funding_path else []
            funding = load_funding(funding_path, symbols=held) if funding_path and held else None
            held = _present(marks_path, spec.symbols) if marks_path else []
            marks = load_marks(marks_path, symbols=held) if marks_path and held else None
            self.engine = BotEngine(spec, registry.get(spec.strategy_type), self.proxy, funding, marks)
        if self.engine.strategy_cls.wants_on_tick():
            self.streams.append(TRADES)
        self.subscribed = False
        self.ticks = 0
        self.gens: dict[str, int] = {}
        # multiplexers on this machine deliver here (shared memory + a socket), not by Ray calls
        self.inbox = Inbox(self.on_market_data, self._serial_lock, ray.get_runtime_context().get_node_id())
        self._last_checkpoint = time.monotonic()
        tags = ("account", "bot", "strategy")
        self._tags = {"account": spec.account_id, "bot": spec.bot_id, "strategy": spec.strategy_type}
        self._m_bars = metrics.Counter("bot_bars", "bars processed by a bot", tags)
        self._m_fills = metrics.Counter("bot_fills", "fills of a bot", tags)
        self._m_orders = metrics.Counter("bot_orders", "order updates of a bot", tags)
        self._m_latency = metrics.Histogram(
            "bot_batch_latency_ms",
            "multiplexer ingest to bot processing, ms",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 250, 1000],
            tag_keys=tags,
        )
        self._m_equity = metrics.Gauge("bot_equity_live", "a bot's equity (quote currency)", tags)
        self._m_pending = metrics.Gauge("bot_pending_bars", "bars waiting for a slower source", tags)
        if self.restored and self.engine.state in (RUNNING, PAUSED) and self.engine.started:
            # subscribe once the constructor has returned: deliveries to an actor still in its
            # constructor fail as "unavailable", and the multiplexer would drop the subscription
            ray.get_runtime_context().current_actor.resubscribe.remote()

    # ------------------------------------------------------------------ control
    def _subscribe(self) -> None:
        since = min(self.engine.last_ts.values()) if len(self.engine.last_ts) == len(self.spec.symbols) else None
        handle = ray.get_runtime_context().current_actor
        names = sorted(self.muxes)
        inbox = self.inbox.address()
        refs = [
            self.muxes[n].subscribe.remote(self.spec.bot_id, handle, self.streams, None, since, inbox) for n in names
        ]
        self.gens = dict(zip(names, ray.get(refs), strict=True))
        self.subscribed = True

    def resubscribe(self) -> None:
        """Subscribe again from the checkpoint's watermark (a restarted actor calls it on itself)."""
        if not self.subscribed:
            self._subscribe()

    def start(self) -> dict[str, Any]:
        """Run ``on_init`` (once) and subscribe to the market data."""
        if self.engine.state == STOPPED:
            return self.status()
        self.engine.start()
        if not self.subscribed:
            self._subscribe()
        self._publish()
        return self.status()

    def pause(self, reason: str = "manual") -> dict[str, Any]:
        self.engine.pause(reason)
        self._publish()
        return self.status()

    def resume(self) -> dict[str, Any]:
        self.engine.resume()
        self._publish()
        return self.status()

    def stop(self) -> dict[str, Any]:
        self.engine.stop()
        self._unsubscribe()
        self._publish(checkpoint=True)
        return self.status()

    def emergency_stop(self) -> dict[str, Any]:
        """Cancel every order, flatten every position at the mark, stop."""
        self.engine.emergency_stop()
        self._unsubscribe()
        self._publish(checkpoint=True)
        return self.status()

    def quiesce(self) -> int:
        """Shutdown's first step: stop taking market data (the strategy is no longer called), flush the
        records and write a final checkpoint. The stored status is kept, so the next start resumes the
        bot. Returns the checkpoint's size in bytes."""
        self._unsubscribe()
        return self._publish(checkpoint=True)

    def _unsubscribe(self) -> None:
        if self.subscribed:
            ray.get([mux.unsubscribe.remote(self.spec.bot_id) for mux in self.muxes.values()])
            self.subscribed = False

    def status(self) -> dict[str, Any]:
        """State, counters and money of the bot (JSON-ready)."""
        e = self.engine
        return {
            "bot_id": self.spec.bot_id,
            "account_id": self.spec.account_id,
            "name": self.spec.name,
            "strategy_type": self.spec.strategy_type,
            "state": e.state,
            "reason": e.state_reason,
            "errors": e.errors,
            "consecutive_errors": e.consecutive_errors,
            "time_ns": e.now_ns,
            "equity": e.equity(),
            "cash": e.account.cash,
            "fills": len(e.exchange.fills),
            "open_orders": sum(len(b) for b in e.exchange.book.values()),
            "positions": {s: {"qty": p.qty, "avg_price": p.avg_price} for s, p in e.account.open_positions.items()},
            "realized_pnl": sum(p.realized_pnl for p in e.account.positions.values()),
            "fees": e.account.fees_paid,
            "restored": self.restored,
            "pending_bars": self.merger.pending(),
            "bars": sum(f.n for f in e.market_data.feeds.values()),
            "ticks": self.ticks,
        }

    def checkpoint(self) -> int:
        """Flush records and write a checkpoint now; returns its size in bytes."""
        return self._publish(checkpoint=True)

    # ------------------------------------------------------------------ market data
    def on_market_data(self, gen: int, payload: Any) -> int:
        """One delivery from a multiplexer (resolved from the object store; one batch per stream) for
        subscription ``gen``;
        calls addressed to an earlier subscription (a previous life of this actor) are ignored.
        Returns bars processed."""
        now = time.time_ns()
        ticked = 0
        for b in decode_delivery(payload):
            if self.gens.get(b.source) != gen:
                continue
            if b.stream == self.stream:
                self.merger.add(b.source, b.stream, b.seq, b.table, b.watermark_ns)
            elif b.stream == TRADES and b.table.num_rows:
                t = b.table
                ticks = zip(
                    t.column("symbol").to_pylist(),
                    t.column("ts").cast(pa.int64()).to_pylist(),
                    t.column("price").to_pylist(),
                    t.column("size").to_pylist(),
                    strict=True,
                )
                ticked += self.engine.on_ticks(list(ticks))
            self._m_latency.observe((now - b.ingest_ns) / 1e6, self._tags)
        rows = self.merger.ready()
        done = self.engine.on_bars(rows) if rows else 0
        self.ticks += ticked
        if done:
            self._m_bars.inc(done, self._tags)
        if done or ticked:
            self._publish()
        self._m_pending.set(self.merger.pending(), self._tags)
        return done

    def _publish(self, checkpoint: bool = False) -> int:
        """Send drained rows to the recorder and a report to the portfolio; checkpoint when due."""
        e = self.engine
        rows = e.drain()
        if rows["live_fills"]:
            self._m_fills.inc(len(rows["live_fills"]), self._tags)
        if rows["live_orders"]:
            self._m_orders.inc(len(rows["live_orders"]), self._tags)
        rows["bots"] = [self._bot_row()]
        size = 0
        if checkpoint or time.monotonic() - self._last_checkpoint >= self.checkpoint_every_s:
            blob = e.checkpoint()
            size = len(blob)
            rows["bot_checkpoints"] = [
                {
                    "bot_id": self.spec.bot_id,
                    "account_id": self.spec.account_id,
                    "watermark_ns": min(e.last_ts.values()) if e.last_ts else 0,
                    "seq": e.signal_seq,
                    "state": blob,
                    "created_at": time.time_ns(),
                }
            ]
            self._last_checkpoint = time.monotonic()
        self.recorder.write.remote(rows)
        if rows["live_fills"] and self.m2m is not None:  # the bot's fills become legs of its strategy's M2M
            self.m2m.on_fills.remote(self.spec.account_id, self.spec.bot_id, self.spec.bot_id, rows["live_fills"])
        equity = e.equity()
        self._m_equity.set(equity, self._tags)
        view = self.proxy.report(self.spec.name, e.now_ns, equity, e.exposures(), e.drain_events(), e.drain_equity())
        if view is not None:
            e.view = view
        return size

    def _bot_row(self) -> dict[str, Any]:
        e = self.engine
        state = "paused" if e.state == PAUSED else "stopped" if e.state == STOPPED else "running"
        return {
            "bot_id": self.spec.bot_id,
            "account_id": self.spec.account_id,
            "instance_id": self.spec.bot_id,
            "name": self.spec.name,
            "symbols": list(self.spec.symbols),
            "timeframe": self.spec.timeframe,
            "settings": _settings_json(self.spec),
            "status": state,
            "status_reason": e.state_reason,
            "error_count": e.consecutive_errors,
            "created_at": time.time_ns(),
            "updated_at": time.time_ns(),
        }


def _tf_ns(timeframe: str) -> int:
    from engine.timeframes import timeframe_ns

    return timeframe_ns(timeframe)


def _present(path: str, symbols: tuple[str, ...]) -> list[str]:
    """The bot's symbols that the file holds (funding and mark files may cover fewer symbols)."""
    import pyarrow.parquet as pq

    if not path.endswith(".parquet"):
        return list(symbols)
    table = pq.read_table(path, columns=["symbol"])
    held = set(pa.compute.unique(table.column("symbol")).to_pylist())
    return [s for s in symbols if s in held]


def _settings_json(spec: BotSpec) -> str:
    import orjson

    return orjson.dumps(
        {
            "strategy_type": spec.strategy_type,
            "capital": spec.capital,
            "slippage_bps": spec.slippage_bps,
            "warmup": spec.warmup,
            "instruments": {s: i.model_dump() for s, i in spec.instruments.items()},
        }
    ).decode()
