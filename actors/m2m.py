"""The M2M aggregator actor (``m2m`` in the dashboard): per-strategy mark-to-market in real time.

It hosts one :class:`engine.m2m.M2MAggregatorCore` per trading account (each account's minute clock is
its own feed time, so accounts replaying different periods do not disturb each other) and:

* subscribes to the multiplexers of every symbol its legs hold (an option leg's underlying included)
  and takes **every price update**: each trade of a trades feed, each bar close (at the bar's close
  time) of a bars feed; the multiplexer's conflated ``ltp`` stream is not used, since a candle's high
  and low must see every update;
* applies leg changes: legs added, exited or removed by hand through the runtime, strategies closed,
  and bots' fills (:meth:`on_fills`, sent by each bot actor with its fills);
* writes through the recorder the legs, exits, closed 1-minute candles (``strategy_m2m_candles``)
  and daily rows (``strategy_performance_daily``), gathered and sent at most every
  ``checkpoint_interval_s`` (at once after a leg change) together with every account's snapshot
  (``m2m_checkpoints``), in one call and so one store transaction;
* keeps the target/stop events of every account (:meth:`events`) and reports ``ray.util.metrics``
  (price updates, leg updates, candles, tick-to-M2M latency, total P&L per strategy).

Restart (``max_restarts=-1``): a new incarnation restores each account from its last checkpoint and
subscribes again with the checkpoint's watermark; the multiplexers resend the kept batches after it and
the core skips updates it had processed (per-symbol watermarks), so the candle series has no gap, and
candles are insert-or-ignore by (strategy, minute), so none is duplicated.

Leg operations apply at the account's current feed time (see :mod:`engine.m2m.aggregator`); a bot's
fill arrives after the prices it traded on, so its leg starts in the minute the aggregator is in.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.util import metrics

from actors.inbox import Inbox, serialized
from engine.errors import ParameterError
from engine.m2m import BookChange, BotFill, LegSpec, M2MAggregatorCore, M2MEvent, M2MOutput
from engine.marketdata.bars import float_array, ts_ns_array
from engine.marketdata.schemas import (
    BARS_PREFIX,
    END_OF_STREAM,
    TRADES,
    MarketBatch,
    decode_delivery,
    stream_timeframe_ns,
)
from engine.store.live import LIVE_TABLES
from engine.timeframes import NS_PER_DAY

DEFAULT_STRATEGY_TYPE = "manual"


def change_rows(change: BookChange) -> dict[str, list[dict[str, Any]]]:
    """The store rows (``strategy_legs``, ``strategy_leg_exits``) of one book change."""
    legs = {leg.leg_id: leg for leg in change.legs}
    out: dict[str, list[dict[str, Any]]] = {"strategy_legs": [], "strategy_leg_exits": []}
    for leg in change.legs:
        out["strategy_legs"].append(leg.to_row())
    for ex in change.exits:
        owner = legs.get(ex.leg_id)
        if owner is None:
            raise ParameterError("exits", f"exit {ex.exit_id} of leg {ex.leg_id!r} without the leg's state")
        out["strategy_leg_exits"].append(
            {**ex.to_row(), "account_id": owner.account_id, "instance_id": owner.instance_id}
        )
    return out


def instance_row(
    strategy: dict[str, Any], strategy_type: str = DEFAULT_STRATEGY_TYPE, params: str = "{}"
) -> dict[str, Any]:
    """A ``strategy_instances`` row for a strategy of the book (``Strategy.to_row()``), a legs container."""
    return {
        "instance_id": strategy["instance_id"],
        "account_id": strategy["account_id"],
        "name": strategy["name"],
        "strategy_type": strategy_type,
        "params": params,
        "status": strategy["status"],
        "created_at": strategy["created_ts"] or time.time_ns(),
        "updated_at": strategy["updated_ts"] or time.time_ns(),
        "is_default": strategy["is_default"],
        "tags": orjson.dumps(list(strategy["tags"])).decode(),
        "target_profit": strategy["target_profit"],
        "stop_loss": strategy["stop_loss"],
    }


#: up to this many accounts, a delivery is filtered by every account instead of routed by symbol
_FEW_ACCOUNTS = 4

#: checkpoints take at most 1/this of the aggregator's time (see M2MAggregator._flush)
_CHECKPOINT_SHARE = 50


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
@serialized
class M2MAggregator:
    """See the module docstring.

    Args:
        recorder: the recorder actor (writes and checkpoint reads).
        checkpoint_interval_s: wall seconds between an account's checkpoints (0: after every delivery);
            the least spacing: when books are big, checkpoints are spaced so that taking them costs at
            most 1/50 of the time (a 10,000-strategy book's snapshot takes about 0.6 s here).
        events_kept: events kept for :meth:`events`.
    """

    _serial_lock: threading.RLock  # see actors.inbox.serialized

    def __init__(self, recorder: Any, checkpoint_interval_s: float = 1.0, events_kept: int = 10_000) -> None:
        self.recorder = recorder
        self.checkpoint_interval_s = checkpoint_interval_s
        self.cores: dict[str, M2MAggregatorCore] = {}
        self.zones: dict[str, str] = {}
        self.routes: dict[str, set[str]] = {}  # symbol -> accounts holding it
        self.held: dict[str, set[str]] = {}  # account -> symbols its legs hold (see _route)
        self._held_arrays: dict[str, pa.Array] = {}
        self.muxes: dict[str, Any] = {}  # mux name -> handle
        self.streams: dict[str, str] = {}  # mux name -> the stream taken (trades or bars:<tf>)
        self.mux_symbols: dict[str, set[str]] = {}
        self.gens: dict[str, int] = {}
        self.bounds: dict[str, int] = {}  # per mux: updates with ts below it are complete
        # per account: price updates waiting for the watermarks of the account's multiplexers
        self._buf: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._rows: dict[str, list[pa.Table]] = {}  # rows waiting for the next checkpoint (see _flush)
        self._last_flush = time.monotonic()  # the first checkpoint one interval after the start
        self._interval_s = checkpoint_interval_s  # the current spacing of checkpoints (see _flush)
        self._events: deque[dict[str, Any]] = deque(maxlen=events_kept)
        self._latency: deque[tuple[int, int, int]] = deque(maxlen=events_kept * 20)
        self._pending_lat: list[tuple[int, int]] = []
        self._event_seq = 0
        self.price_updates = 0
        self.deliveries = 0
        self.busy_s = 0.0  # wall time spent in on_market_data
        self.candles = 0
        self.errors: list[str] = []
        tags = ("account",)
        self._m_updates = metrics.Counter("m2m_price_updates", "price updates into the M2M aggregator", tags)
        self._m_legs = metrics.Counter("m2m_leg_updates", "legs re-marked by price updates", tags)
        self._m_candles = metrics.Counter("m2m_candles", "1-minute M2M candles closed", tags)
        self._m_latency = metrics.Histogram(
            "m2m_tick_latency_ms", "oldest tick of a delivery entering the mux -> M2M updated, ms",
            [1, 2, 5, 10, 20, 50, 100, 500], ("mux",),
        )  # fmt: skip
        self._m_total = metrics.Gauge("m2m_total_pnl", "strategy total P&L (realized + M2M)", ("account", "strategy"))
        # multiplexers on this machine deliver here (shared memory + a socket), not by Ray calls
        self.inbox = Inbox(self.on_market_data, self._serial_lock, ray.get_runtime_context().get_node_id())
        restored = self._restore_all()
        if restored:
            ray.get_runtime_context().current_actor.resubscribe.remote()

    # ------------------------------------------------------------------ accounts
    def _restore_all(self) -> int:
        rows = ray.get(self.recorder.read.remote("m2m_checkpoints")).to_pylist()
        for row in rows:
            state = orjson.loads(bytes(row["state"]))
            core = M2MAggregatorCore.restore(state["core"])
            account_id = row["account_id"]
            self.cores[account_id] = core
            self.zones[account_id] = state.get("timezone", "UTC")
            for mux, info in state.get("muxes", {}).items():
                try:  # alive: this actor was restarted mid-session; gone: a new session subscribes anew
                    self.muxes[mux] = ray.get_actor(mux)
                except ValueError:
                    continue
                self.streams[mux] = info["stream"]
                self.mux_symbols.setdefault(mux, set()).update(info["symbols"])
            self._route(account_id)
        return len(rows)

    def open_account(self, account_id: str, timezone: str = "UTC", rate: float = 0.0, ts: int = 0) -> dict[str, Any]:
        """Serve ``account_id`` (idempotent): a new account gets its book with the default strategy,
        whose ``strategy_instances`` row is written at once. Returns the default strategy's row."""
        if account_id not in self.cores:
            core = M2MAggregatorCore()
            book = core.add_account(account_id, timezone, rate=rate, ts=ts or time.time_ns())
            self.cores[account_id] = core
            self.zones[account_id] = timezone
            default = next(s for s in book.strategies() if s.is_default)
            ray.get(self.recorder.write_now.remote({"strategy_instances": [instance_row(default.to_row())]}))
            self._flush(force=True)
        book = self.cores[account_id].book(account_id)
        return instance_row(next(s for s in book.strategies() if s.is_default).to_row())

    def _core(self, account_id: str) -> M2MAggregatorCore:
        core = self.cores.get(account_id)
        if core is None:
            raise ParameterError("account_id", f"unknown trading account {account_id!r}")
        return core

    def _route(self, account_id: str, legs: Any = None) -> None:
        """Note the symbols (and option underlyings) of ``legs`` (default: every open leg of the
        account) as held by the account: their price updates are routed to its core. A symbol stays
        noted after its legs close (its updates are then ignored by the core)."""
        if legs is None:
            legs = self.cores[account_id].book(account_id).legs(open_only=True)
        held = self.held.setdefault(account_id, set())
        self._held_arrays.pop(account_id, None)
        for leg in legs:
            for symbol in (leg.symbol, leg.underlying):
                if symbol:
                    held.add(symbol)
                    self.routes.setdefault(symbol, set()).add(account_id)

    # ------------------------------------------------------------------ strategies and legs
    def create_strategy(
        self,
        account_id: str,
        instance_id: str,
        name: str,
        tags: list[str] | None = None,
        target_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> dict[str, Any]:
        """Mirror a strategy instance in the account's book (idempotent; the runtime stores its row)."""
        book = self._core(account_id).book(account_id)
        if not book.has_strategy(instance_id):
            book.create_strategy(
                instance_id, name, time.time_ns(), tags=tags or [], target_profit=target_profit, stop_loss=stop_loss
            )
            self._flush(force=True)
        return book.strategy(instance_id).to_row()

    def update_strategy(self, account_id: str, instance_id: str, **changes: Any) -> dict[str, Any]:
        """Rename, re-tag, set target/stop or archive a strategy (the book's rules apply: the default
        strategy cannot be renamed or archived). Returns the instance row to store."""
        book = self._core(account_id).book(account_id)
        now = time.time_ns()
        if "name" in changes:
            book.rename_strategy(instance_id, changes["name"], now)
        if "tags" in changes:
            book.set_tags(instance_id, changes["tags"], now)
        if "target_profit" in changes or "stop_loss" in changes:
            current = book.strategy(instance_id)
            book.set_limits(
                instance_id,
                now,
                target_profit=changes.get("target_profit", current.target_profit),
                stop_loss=changes.get("stop_loss", current.stop_loss),
            )
        if changes.get("archive"):
            book.archive_strategy(instance_id, now)
        self._flush(force=True)
        return book.strategy(instance_id).to_row()

    def add_leg(
        self, account_id: str, instance_id: str, spec: dict[str, Any], leg_id: str | None = None
    ) -> dict[str, Any]:
        """Add a manual leg (``spec``: the fields of :class:`engine.m2m.LegSpec`). Returns the leg."""
        book = self._core(account_id).book(account_id)
        change = book.add_leg(instance_id, LegSpec(**spec), time.time_ns(), leg_id=leg_id)
        self._after_change(account_id, change)
        return change.legs[0].to_row()

    def add_legs_bulk(self, account_id: str, legs: list[tuple[str, dict[str, Any]]]) -> int:
        """Many manual legs at once: ``(instance_id, LegSpec fields)`` pairs; strategies that do not
        exist are created (type ``manual``, named by their id) with their ``strategy_instances`` rows;
        everything is stored in one flush. Returns the legs added."""
        book = self._core(account_id).book(account_id)
        now = time.time_ns()
        created = []
        for instance_id in dict.fromkeys(i for i, _ in legs):
            if not book.has_strategy(instance_id):
                book.create_strategy(instance_id, instance_id.split("/")[-1], now)
                created.append(instance_row(book.strategy(instance_id).to_row()))
        if created:
            ray.get(self.recorder.write_now.remote({"strategy_instances": created}))
        for instance_id, spec in legs:
            self._after_change(account_id, book.add_leg(instance_id, LegSpec(**spec), now), flush=False)
        self._flush(force=True)
        return len(legs)

    def exit_leg(self, account_id: str, leg_id: str, qty: float, price: float) -> list[dict[str, Any]]:
        """Exit ``qty`` units of a leg at ``price`` (realized P&L booked). Returns the exits."""
        book = self._core(account_id).book(account_id)
        change = book.exit_leg(leg_id, qty, price, time.time_ns())
        self._after_change(account_id, change)
        return [e.to_row() for e in change.exits]

    def remove_leg(self, account_id: str, leg_id: str) -> dict[str, Any]:
        """Remove a leg entered by mistake (no P&L booked)."""
        book = self._core(account_id).book(account_id)
        change = book.remove_leg(leg_id, time.time_ns())
        self._after_change(account_id, change)
        return change.legs[0].to_row()

    def close_strategy(
        self, account_id: str, instance_id: str, prices: dict[str, float] | None = None
    ) -> list[dict[str, Any]]:
        """Exit every open leg of a strategy at ``prices`` (default: the last prices seen)."""
        core = self._core(account_id)
        book = core.book(account_id)
        marks = dict(prices or {})
        for leg in book.open_legs(instance_id):
            if leg.symbol not in marks:
                last = core.last_price(leg.symbol)
                if last is None:
                    raise ParameterError("prices", f"no price for {leg.symbol!r}: pass one to close the strategy")
                marks[leg.symbol] = last
        change = book.close_strategy(instance_id, marks, time.time_ns())
        self._after_change(account_id, change)
        return [e.to_row() for e in change.exits]

    def on_fills(self, account_id: str, instance_id: str, bot_id: str, fills: list[dict[str, Any]]) -> int:
        """A bot's fills (``live_fills`` rows) become legs of its strategy instance: a fill opposite
        to the bot's open legs on the symbol exits them first in, first out; the rest opens a leg.
        Fills seen before are ignored (a restarted bot resends). Returns the legs changed."""
        core = self.cores.get(account_id)
        if core is None:
            return 0
        book = core.book(account_id)
        if not book.has_strategy(instance_id):
            return 0
        changed = 0
        for f in fills:
            fill = BotFill(
                fill_id=int(f["fill_id"]), symbol=f["symbol"], side=int(f["side"]), qty=float(f["qty"]),
                price=float(f["price"]), ts=int(f["ts"]),
            )  # fmt: skip
            change = book.apply_fill(instance_id, bot_id, fill)
            if not change.empty:
                changed += len(change.legs)
                self._after_change(account_id, change, flush=False)
        self._flush()
        return changed

    def _after_change(self, account_id: str, change: BookChange, flush: bool = True) -> None:
        if change.empty:
            return
        self._route(account_id, change.legs)
        self._add_rows(change_rows(change))
        priced = set()  # an option leg with an underlying is marked from it (the model): it needs no price of its own
        for leg in change.legs:
            model = leg.segment == "option" and leg.underlying
            priced |= {leg.underlying} if model else {leg.symbol, leg.underlying}
        self._ensure_subscribed(sorted(s for s in priced if s))
        if flush:
            self._flush(force=True)

    # ------------------------------------------------------------------ market data
    def subscribe_mux(self, mux_name: str, symbols: list[str], stream: str) -> None:
        """Take ``stream`` ("trades" or "bars:<tf>") of ``symbols`` from the multiplexer ``mux_name``."""
        if stream != TRADES and not stream.startswith(BARS_PREFIX):
            raise ParameterError("stream", f"the M2M aggregator takes trades or bars, got {stream!r}")
        self.muxes[mux_name] = ray.get_actor(mux_name)
        self.streams[mux_name] = stream
        self.mux_symbols.setdefault(mux_name, set()).update(symbols)
        self._subscribe(mux_name, since_ns=None)

    def _ensure_subscribed(self, symbols: list[str]) -> None:
        served = set().union(*self.mux_symbols.values()) if self.mux_symbols else set()
        for symbol in symbols:
            if symbol not in served:
                self.errors = [*self.errors[-19:], f"no multiplexer subscribed for {symbol!r} (call subscribe_mux)"]

    def _subscribe(self, mux_name: str, since_ns: int | None) -> None:
        handle = ray.get_runtime_context().current_actor
        mux = self.muxes[mux_name]
        self.gens[mux_name] = ray.get(
            mux.subscribe.remote(
                "m2m",
                handle,
                [self.streams[mux_name]],
                sorted(self.mux_symbols[mux_name]),
                since_ns,
                self.inbox.address(),
            )
        )

    def resubscribe(self) -> None:
        """After a restart: subscribe again from the oldest account watermark (kept batches after it
        are resent; updates already processed are skipped by each account's core)."""
        # an account that had processed nothing yet needs everything the multiplexers kept (since 0)
        marks = [c.watermark if c.watermark is not None else 1 for c in self.cores.values()]
        since = min(marks) - 1 if marks else None
        for mux_name in list(self.muxes):
            self._subscribe(mux_name, since)

    def on_market_data(self, gen: int, payload: Any) -> int:
        """One delivery from a multiplexer. Price updates are merged across multiplexers by watermark,
        per account: an account's updates wait until every multiplexer of its symbols has passed them,
        then go to its core in time order (same-ts updates by symbol), so a candle sees its minute's
        updates of all feeds whatever order the deliveries arrive in; the released watermark closes
        the account's minutes. Accounts on different feeds (and periods) do not wait for each other.
        Closed candles, daily rows and (when due) checkpoints go to the recorder in one write.
        Returns the price updates released."""
        started = time.perf_counter()
        for b in decode_delivery(payload):
            if self.gens.get(b.source) != gen:
                continue
            prices, ts, arrow_symbols = _price_updates(b)
            if len(ts):
                for account_id in self._accounts_of(arrow_symbols):
                    held = self._held_set(account_id)
                    mask = pc.is_in(arrow_symbols, value_set=held).to_numpy(zero_copy_only=False)
                    if mask.any():
                        # the account core's symbol ids (vectorised), not strings: no per-tick Python
                        ids = self.cores[account_id].symbol_ids(arrow_symbols.filter(pa.array(mask)))
                        self._buf.setdefault(account_id, []).append((ids, prices[mask], ts[mask]))
                self._m_latency.observe((time.time_ns() - b.ingest_ns) / 1e6, {"mux": b.source})
            if len(ts):
                self._pending_lat.append((b.ingest_ns, int(ts[0])))
            wm = b.watermark_ns
            bound = END_OF_STREAM if wm >= END_OF_STREAM else (wm if b.stream == TRADES else wm + 1)
            self.bounds[b.source] = max(self.bounds.get(b.source, 0), bound)
        self.deliveries += 1
        updates = 0
        for account_id in sorted(self.cores):
            updates += self._release(account_id, self._safe(account_id), self._rows)
        if updates and self._pending_lat:  # deliveries whose oldest tick's M2M is now computed
            done = time.time_ns()
            upto = min(self._safe(a) for a in self.cores)
            self._latency.extend((i, f, done) for i, f in self._pending_lat if f < upto)
            self._pending_lat = [(i, f) for i, f in self._pending_lat if f >= upto]
        self._flush()
        self.busy_s += time.perf_counter() - started
        return updates

    def latency_samples(self) -> list[tuple[int, int, int]]:
        """Per delivery with ticks (the last ``events_kept``): (wall ns its oldest tick entered the
        multiplexer, that tick's event ts, wall ns its updates had been applied)."""
        return list(self._latency)

    def _held_set(self, account_id: str) -> pa.Array:
        arr = self._held_arrays.get(account_id)
        if arr is None:
            arr = self._held_arrays[account_id] = pa.array(sorted(self.held.get(account_id, ())), pa.string())
        return arr

    def _safe(self, account_id: str) -> int:
        """Feed time below which the account's updates are complete: the smallest bound of the
        multiplexers serving its symbols (0 while one has not reported)."""
        held = self.held.get(account_id, set())
        feeds = [name for name, symbols in self.mux_symbols.items() if symbols & held]
        return min((self.bounds.get(name, 0) for name in feeds), default=0)

    def _release(self, account_id: str, safe: int, out_rows: dict[str, list[dict[str, Any]]]) -> int:
        """Process the account's buffered updates with ts < ``safe`` in time order; close its minutes
        before ``safe``. Returns the updates processed."""
        core = self.cores[account_id]
        released = 0
        buf = self._buf.get(account_id)
        if buf:
            symbols = np.concatenate([u[0] for u in buf])
            prices = np.concatenate([u[1] for u in buf])
            ts = np.concatenate([u[2] for u in buf])
            ready = ts < safe
            keep = ~ready
            self._buf[account_id] = [(symbols[keep], prices[keep], ts[keep])] if keep.any() else []
            if ready.any():
                symbols, prices, ts = symbols[ready], prices[ready], ts[ready]
                # time order, then symbol name: the M2M path inside a minute does not depend on which
                # multiplexer's delivery came first (same-ts updates of two feeds)
                order = np.lexsort((core.symbol_ranks()[symbols], ts))
                before = core.leg_updates
                self._collect(account_id, core.on_prices(symbols[order], prices[order], ts[order]), out_rows)
                released = len(ts)
                self.price_updates += released
                if core.leg_updates > before:  # (Ray counters take positive increments only)
                    self._m_legs.inc(core.leg_updates - before, {"account": account_id})
                self._m_updates.inc(released, {"account": account_id})
        if 0 < safe < END_OF_STREAM and core.watermark is not None and core.minute is not None:
            self._collect(account_id, core.close_until(safe), out_rows)
        return released

    def _collect(self, account_id: str, out: M2MOutput, rows: dict[str, list[Any]]) -> None:
        """Keep what the core emitted for the next flush (Arrow tables, as they are)."""
        n = out.candles.num_rows
        if n:
            rows.setdefault("strategy_m2m_candles", []).append(out.candles)
            self.candles += n
            self._m_candles.inc(n, {"account": account_id})
            for c in out.candles.slice(max(0, n - 64)).to_pylist():  # the gauge follows the latest few
                self._m_total.set(c["total_pnl"], {"account": account_id, "strategy": c["instance_id"]})
        if out.daily.num_rows:
            stamp = pa.array(np.full(out.daily.num_rows, time.time_ns(), dtype=np.int64)).cast(
                pa.timestamp("ns", "UTC")
            )
            rows.setdefault("strategy_performance_daily", []).append(out.daily.append_column("updated_at", stamp))
        for ev in out.events:
            self._event(ev)

    def _event(self, ev: M2MEvent) -> None:
        self._event_seq += 1
        self._events.append({"seq": self._event_seq, **_event_row(ev)})

    def drain(self) -> dict[str, int]:
        """End of a session: release what still waits for a watermark, checkpoint every account (the
        state at its last update, which a resumed session restores), then close each account's open
        minute and day and write the candles and daily rows they emit (a resumed session's later rows
        of the same day replace that daily row: it is an upsert by newer ``updated_at``)."""
        for account_id in self.cores:
            self._release(account_id, END_OF_STREAM, self._rows)
        checkpoints = [self._checkpoint_row(a) for a in sorted(self.cores)]  # before the closing below
        for account_id, core in self.cores.items():
            if core.watermark is not None:
                self._collect(account_id, core.close_until(core.watermark + 2 * NS_PER_DAY), self._rows)
        rows = self._take_rows()
        rows["m2m_checkpoints"] = checkpoints
        self._last_flush = time.monotonic()
        ray.get(self.recorder.write_now.remote(rows))
        return {k: (v.num_rows if isinstance(v, pa.Table) else len(v)) for k, v in rows.items()}

    # ------------------------------------------------------------------ checkpoints
    def _add_rows(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        for name, r in rows.items():
            if r:
                self._rows.setdefault(name, []).append(pa.Table.from_pylist(r, schema=LIVE_TABLES[name].schema))

    def _take_rows(self) -> dict[str, Any]:
        """The gathered tables, one per store table, and an empty buffer."""
        parts, self._rows = self._rows, {}
        return {name: pa.concat_tables(p) for name, p in parts.items() if p}

    def _accounts_of(self, symbols: pa.Array) -> list[str]:
        """The accounts whose legs may hold some of ``symbols`` (each then filters its own): with a
        few accounts, all of them (one vectorised filter each beats routing every symbol in Python)."""
        if len(self.cores) <= _FEW_ACCOUNTS:
            return sorted(self.cores)
        present = pc.unique(symbols).to_pylist()
        return sorted(set().union(*(self.routes.get(x, set()) for x in present)))

    def _flush(self, force: bool = False) -> None:
        """Send the rows gathered since the last flush **with a checkpoint of every account**, in one
        recorder call (one store transaction), at most every ``checkpoint_interval_s`` unless
        ``force``. A stored checkpoint therefore never runs ahead of the stored candles: if this
        actor dies with a call in flight, the call is lost whole, and the restarted actor resumes
        from the previous checkpoint and emits those candles again."""
        now = time.monotonic()
        if not force and now - self._last_flush < self._interval_s:
            return
        self._last_flush = now
        rows = self._take_rows()
        rows["m2m_checkpoints"] = [self._checkpoint_row(a) for a in sorted(self.cores)]
        self.recorder.write.remote(rows)
        # a checkpoint snapshots whole books (about 0.6 s for 10,000 strategies of 4 legs): space them
        # so that they take at most 1/CHECKPOINT_SHARE of the time (rows reach the store later)
        took = time.monotonic() - now
        self._interval_s = max(self.checkpoint_interval_s, took * _CHECKPOINT_SHARE)

    def _checkpoint_row(self, account_id: str) -> dict[str, Any]:
        core = self.cores[account_id]
        muxes = {
            name: {"stream": self.streams[name], "symbols": sorted(self.mux_symbols.get(name, ()))}
            for name in self.muxes
        }
        state = {"core": core.snapshot(), "timezone": self.zones.get(account_id, "UTC"), "muxes": muxes}
        return {
            "account_id": account_id,
            "watermark_ns": core.watermark if core.watermark is not None else 0,
            "state": orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY),
            "created_at": time.time_ns(),
        }

    # ------------------------------------------------------------------ queries
    def marks(self, account_id: str) -> list[dict[str, Any]]:
        """Current unrealized, realized and total P&L of every strategy of the account."""
        table: pa.Table = self._core(account_id).marks()
        return [r for r in table.to_pylist() if r["account_id"] == account_id]

    def last_prices(self, symbols: list[str]) -> dict[str, float]:
        """The last price seen of each of ``symbols`` (by any account's core; symbols never priced left out)."""
        out: dict[str, float] = {}
        for core in self.cores.values():
            for s in symbols:
                p = core.last_price(s)
                if p is not None:
                    out[s] = p
        return out

    def legs(self, account_id: str, instance_id: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
        book = self._core(account_id).book(account_id)
        if instance_id is not None:
            book.strategy(instance_id)  # unknown (or another account's): refused
        return [leg.to_row() for leg in book.legs(instance_id, open_only=open_only)]

    def events(self, account_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """Target/stop events of the account after ``after_seq``."""
        self._core(account_id)
        return [e for e in self._events if e["seq"] > after_seq and e["account_id"] == account_id]

    def stats(self) -> dict[str, Any]:
        return {
            "accounts": sorted(self.cores),
            "muxes": sorted(self.muxes),
            "deliveries": self.deliveries,
            "busy_s": self.busy_s,
            "price_updates": self.price_updates,
            "leg_updates": sum(c.leg_updates for c in self.cores.values()),
            "candles": self.candles,
            "events": self._event_seq,
            "watermarks": {a: c.watermark for a, c in self.cores.items()},
            "errors": list(self.errors),
        }


def _price_updates(b: MarketBatch) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """(prices, ts ns, symbols as an Arrow string array) of a trades batch (every trade) or a bars
    batch (each close, at the bar's close time), in time order."""
    t = b.table
    if t.num_rows == 0:
        return np.array([], dtype=np.float64), np.array([], dtype=np.int64), pa.array([], pa.string())
    ts = ts_ns_array(t["ts"])
    if b.stream == TRADES:
        prices = float_array(t["price"])
    else:
        prices = float_array(t["close"])
        ts = ts + stream_timeframe_ns(b.stream)
    order = np.argsort(ts, kind="stable")
    arrow = pc.take(t.column("symbol"), pa.array(order)).combine_chunks()
    if pa.types.is_dictionary(arrow.type):
        arrow = arrow.cast(pa.string())
    return prices[order], ts[order], arrow


def _event_row(ev: M2MEvent) -> dict[str, Any]:
    return {
        "account_id": ev.account_id,
        "instance_id": ev.instance_id,
        "kind": ev.kind,
        "ts": ev.ts,
        "total_pnl": ev.total_pnl,
        "threshold": ev.threshold,
    }


__all__ = ["M2MAggregator", "change_rows", "instance_row"]
