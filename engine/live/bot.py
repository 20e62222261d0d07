"""A bot: one strategy instance trading bar by bar on live or replayed market data.

:class:`BotEngine` is what a ``BotActor`` hosts (the actor adds transport, persistence and metrics).
It owns the instance's paper venue and sub-ledger (:class:`~engine.execution.paper.PaperExchange`,
:class:`~engine.execution.account.Account`, starting with the instance's allocated capital), its
growing market data (:class:`~engine.live.market_data.LiveMarketData`) and the strategy, and it
runs each completed bar exactly as the backtest runners do, so the same bars give the same fills:

1. the bar is appended to the market data (indicators update; the strategy cannot see it yet);
2. funding settled since the previous bar of the symbol is paid at its mark (first bar whose open
   is at or after the funding time; mark = the mark series' open, else the previous close);
3. the symbol's open orders are matched against the bar, then perpetual liquidation is checked;
4. the cursor moves to the bar (its close becomes the mark) and, once warmed up, ``on_bar`` runs;
5. after every symbol's bar of one open time: ``on_bars`` (when the plugin wants it).

Orders that open exposure pass the portfolio's pre-trade checks (:class:`PortfolioClient`; a
``PortfolioManager`` actor live, :class:`~engine.portfolio.live.LivePortfolio` in-process); the
bot sizes ``size_for_risk`` from its allocated capital.

**Error policy** (DESIGN.md): a strategy callback that raises is logged with its stack as an
``error`` signal and counted; a callback that returns after more than ``callback_timeout_s``
(5 s by default) counts as an error too (the time is measured, the callback is not interrupted);
``max_consecutive_errors`` (3) in a row pause the bot. A paused bot keeps appending bars and
matching its open orders (stops still protect positions); only the strategy is not called.
``resume`` clears the count.

**Records.** :meth:`BotEngine.drain` hands over what changed since the last call — new fills,
orders whose state changed, positions that changed, signals and portfolio events — as rows for the
store's live tables (ids are the venue's, so writing them twice is harmless).

**Checkpoints.** :meth:`BotEngine.checkpoint` pickles the whole engine (venue, ledger, market data,
strategy state, counters) except the portfolio client; :meth:`BotEngine.restore` rebuilds it. The
strategy's class must be importable in the restoring process (plugins are: discover the registry
first). ``last_ts`` per symbol tells which bars a restored bot has already seen.
"""

from __future__ import annotations

import math
import pickle
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from engine.backtest.runner import open_interest_by_symbol
from engine.errors import ParameterError
from engine.execution.account import Account
from engine.execution.orders import Fill, OrderStatus, OrderType
from engine.execution.paper import PaperExchange
from engine.execution.services import AccountPositions, CallableClock
from engine.instruments import Instrument
from engine.live.market_data import LiveMarketData
from engine.portfolio.events import FUNDING_SETTLEMENT, position_events
from engine.portfolio.live import PortfolioView
from engine.portfolio.services import AllocatedRisk, RiskCheckedOrders, venue_exposures
from engine.risk.manager import Rejection
from engine.risk.view import Exposure, OrderIntent
from engine.strategy.base import Strategy, StrategyParams
from engine.strategy.funding import funding_by_symbol
from engine.strategy.series import Tick
from engine.strategy.services import StrategyServices
from engine.timeframes import timeframe_ns

#: one complete bar: (symbol, open time ns UTC, open, high, low, close, volume)
BarRow = tuple[str, int, float, float, float, float, float]

RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"


class PortfolioClient(Protocol):
    """The portfolio a bot reports to and asks for pre-trade checks (see :mod:`engine.portfolio.live`)."""

    def check(
        self, key: tuple[str, int], intent: OrderIntent, equity: float, exposures: list[Exposure]
    ) -> Rejection | None: ...

    def report(
        self,
        name: str,
        ts: int,
        equity: float,
        exposures: list[Exposure],
        events: Sequence[tuple[int, str, str, dict[str, Any]]],
        points: Sequence[tuple[int, float]] = (),
    ) -> PortfolioView | None: ...


@dataclass(frozen=True)
class ErrorPolicy:
    """``max_consecutive_errors`` in a row pause the bot; a callback slower than
    ``callback_timeout_s`` seconds counts as an error."""

    max_consecutive_errors: int = 3
    callback_timeout_s: float = 5.0


@dataclass(frozen=True)
class BotSpec:
    """What a bot runs (validated at the edge by the run config).

    Attributes:
        bot_id, account_id: ids (the store's keys).
        name: the strategy instance's name, the portfolio's allocation key.
        params: the plugin's raw or validated parameters.
        symbols: traded symbols; bars of one open time are processed in sorted symbol order (as the
            backtest, whose bar tables are sorted by symbol).
        timeframe: base bar timeframe ("1m", "15m", ...).
        instruments: symbol → instrument (fees, tick and lot, leverage).
        capital: initial cash of the sub-ledger, quote currency.
        slippage_bps: adverse slippage of market and stop fills.
        warmup: minimum bars per symbol before ``on_bar`` (on top of the plugin's needs).
        start_ns: bars opening before this only warm up (None: trade as soon as warmed up).
    """

    bot_id: str
    account_id: str
    name: str
    strategy_type: str
    params: dict[str, Any]
    symbols: tuple[str, ...]
    timeframe: str
    instruments: dict[str, Instrument]
    capital: float
    slippage_bps: float = 0.0
    warmup: int = 0
    start_ns: int | None = None
    policy: ErrorPolicy = field(default_factory=ErrorPolicy)


class _Funding:
    """One symbol's funding events and mark opens, consumed bar by bar (see the module docstring)."""

    __slots__ = ("mark_open", "mark_ts", "next", "rate", "ts")

    def __init__(self, ts: np.ndarray, rate: np.ndarray, mark_ts: np.ndarray, mark_open: np.ndarray) -> None:
        self.ts = ts.tolist()
        self.rate = rate.tolist()
        self.mark_ts = mark_ts
        self.mark_open = mark_open
        self.next = 0

    def due(self, bar_open: int, first_bar: bool, prev_close: float) -> list[tuple[int, float, float]]:
        """Events settled at a bar opening at ``bar_open``: (ts, rate, mark); events at or before the
        first bar are dropped (no position can have paid them)."""
        out: list[tuple[int, float, float]] = []
        ts = self.ts
        while self.next < len(ts) and ts[self.next] <= bar_open:
            t, r = ts[self.next], self.rate[self.next]
            self.next += 1
            if first_bar:
                continue
            j = int(np.searchsorted(self.mark_ts, t, side="right")) - 1
            out.append((t, r, float(self.mark_open[j]) if j >= 0 else prev_close))
        return out


class _Gate:
    """:class:`~engine.portfolio.services.RiskGate` of a bot: its portfolio client and signal log."""

    def __init__(self, bot: BotEngine) -> None:
        self.bot = bot

    def check(self, intent: OrderIntent) -> Rejection | None:
        bot = self.bot
        bot.intent_seq += 1
        if bot.portfolio is None:
            return None
        return bot.portfolio.check((bot.spec.bot_id, bot.intent_seq), intent, bot.equity(), bot.exposures())

    def signal(self, ts: int, symbol: str, **data: Any) -> None:
        self.bot.signal(ts, symbol, **data)

    def allocated_capital(self) -> float:
        bot = self.bot
        view = bot.view
        if view is None:
            return bot.equity()
        return view.weight * (view.others + bot.equity())


class BotEngine:
    """One running strategy instance (see the module docstring).

    Args:
        spec: what to run.
        strategy_cls: the plugin class of ``spec.strategy_type``.
        portfolio: the portfolio client (None: no pre-trade checks, allocated capital = own equity).
        funding, marks, open_interest: optional tables as the catalog loaders return them.

    Raises:
        ParameterError: bad parameters, or a market type / timeframe the plugin does not support.
    """

    def __init__(
        self,
        spec: BotSpec,
        strategy_cls: type[Strategy],
        portfolio: PortfolioClient | None = None,
        funding: pa.Table | None = None,
        marks: pa.Table | None = None,
        open_interest: pa.Table | None = None,
    ) -> None:
        strategy_cls.check_compatibility(spec.timeframe, (i.kind for i in spec.instruments.values()))
        self.spec = spec
        self.symbols = sorted(spec.symbols)
        self.tf_ns = timeframe_ns(spec.timeframe)
        self.strategy_cls = strategy_cls
        self.params: StrategyParams = strategy_cls.validate_params(spec.params)
        self.portfolio = portfolio
        self.view: PortfolioView | None = None
        self.state = RUNNING
        self.state_reason = ""
        self.started = False
        self.errors = 0
        self.consecutive_errors = 0
        self.intent_seq = 0
        self.signal_seq = 0
        self.now_ns = 0
        #: open time of the last bar processed per symbol (restored bots skip what they have seen)
        self.last_ts: dict[str, int] = {}
        #: time of the last trade handed to ``on_tick`` per symbol
        self.last_tick_ts: dict[str, int] = {}
        instruments = {s: spec.instruments[s] for s in self.symbols}
        self.market_data = LiveMarketData(
            self.symbols,
            instruments,
            spec.timeframe,
            funding=funding_by_symbol(funding, self.symbols),
            open_interest=open_interest_by_symbol(open_interest, self.symbols),
        )
        self.account = Account(spec.capital)
        self.exchange = PaperExchange(
            self.account, instruments, slippage_bps=spec.slippage_bps, mark=self.mark, clock=self.clock
        )
        positions = AccountPositions(self.exchange)
        gate = _Gate(self)
        risk = AllocatedRisk(self.exchange, positions, gate)
        self.services = StrategyServices(
            orders=RiskCheckedOrders(self.exchange, risk, gate, self.clock, spec.name),
            positions=positions,
            risk=risk,
            market_data=self.market_data,
            clock=CallableClock(self.clock),
        )
        self._sizing = risk
        self.funding = {s: _funding_schedule(s, funding, marks) for s in self.symbols}
        self.strategy = strategy_cls(self.params, self.services)
        self.exchange.listeners.append(self._on_fill)
        # records not yet drained
        self._signals: list[dict[str, Any]] = []
        self._equity_points: list[tuple[int, float]] = []
        self._events: list[tuple[int, str, str, dict[str, Any]]] = []
        self._fills_sent = 0
        self._orders_sent: dict[int, tuple[int, float]] = {}
        self._order_watch: set[int] = set()
        self._next_order_seen = 1
        self._positions_sent: dict[str, tuple[float, float, float, float]] = {}

    # ------------------------------------------------------------------ clock and marks
    def clock(self) -> int:
        """Now, ns UTC: the close of the bar handed to ``on_bar``, the open while orders fill, the
        funding time while funding settles."""
        return self.now_ns

    def mark(self, symbol: str) -> float:
        """Last close of ``symbol`` (NaN before its first bar)."""
        return self.market_data.ltp(symbol)

    def equity(self) -> float:
        """cash + Σ position value at the marks (quote currency)."""
        account = self.account
        value = account.cash
        for s, p in account.open_positions.items():
            value += p.value(self.mark(s))
        return value

    def exposures(self) -> list[Exposure]:
        """Open positions and pending entry orders, as the risk manager sees them."""
        return venue_exposures(self.spec.name, self.exchange, self._sizing)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Run ``on_init`` once (idempotent). An exception counts as an error and leaves the bot
        paused; :meth:`resume` tries again."""
        if self.started:
            return
        if self._guard("on_init", "", self.strategy.on_init):
            self.started = True
        elif self.state == RUNNING:
            self._set_state(PAUSED, "on_init failed")

    def pause(self, reason: str = "manual") -> None:
        """Stop calling the strategy (bars and order matching go on)."""
        if self.state == RUNNING:
            self._set_state(PAUSED, reason)

    def resume(self) -> None:
        """Call the strategy again; clears the consecutive-error count."""
        if self.state == PAUSED:
            self.consecutive_errors = 0
            self._set_state(RUNNING, "resumed")
            self.start()

    def stop(self) -> None:
        """Run ``on_stop`` and stop processing bars (open orders and positions stay as they are)."""
        if self.state != STOPPED:
            if self.started:
                self._guard("on_stop", "", self.strategy.on_stop)
            self._set_state(STOPPED, "stopped")

    def emergency_stop(self) -> list[Fill]:
        """Cancel every open order, close every position now at its mark moved against the bot by
        the slippage (taker fills tagged ``emergency_stop``), then stop. Returns the closing fills."""
        fills: list[Fill] = []
        self.exchange.cancel_all()
        for symbol in list(self.account.open_positions):
            pos = self.account.positions[symbol]
            side = -1 if pos.qty > 0 else 1
            inst = self.exchange.instruments[symbol]
            price = inst.round_price(self.mark(symbol) * (1.0 + self.exchange.slip * side), side)
            feed = self.market_data.feeds[symbol]
            fill = self.exchange.close_at(symbol, price, self.now_ns, feed.cursor.i, "emergency_stop")
            if fill is not None:
                fills.append(fill)
        self._set_state(STOPPED, "emergency stop")
        return fills

    # ------------------------------------------------------------------ bars
    def on_bars(self, rows: Sequence[BarRow]) -> int:
        """Process complete bars in (open time, symbol) order; rows of other symbols and bars already
        seen are skipped. Returns the number of bars processed.

        Raises:
            ParameterError: rows out of time order.
        """
        if self.state == STOPPED:
            return 0
        if not self.started and self.state == RUNNING:
            self.start()
        done = 0
        acted = False
        slice_ts = -1
        tf = self.tf_ns
        md = self.market_data
        wants = self.strategy.wants_on_bars()
        for symbol, ts, o, h, low, c, v in rows:
            last = self.last_ts.get(symbol)
            if symbol not in self.funding or (last is not None and ts <= last):
                continue
            if ts != slice_ts:
                if ts < slice_ts:
                    raise ParameterError("ts", f"bars must come in time order ({symbol} at {ts} after {slice_ts})")
                if slice_ts >= 0:
                    self._end_slice(slice_ts + tf, acted and wants)
                acted = False
                slice_ts = ts
            try:
                k = md.append_bar(symbol, ts, o, h, low, c, v)
            except ParameterError as exc:  # a malformed bar from a feed: recorded and skipped, not fatal
                self.signal(ts, symbol, action="error", callback="market_data", message=str(exc), stack="")
                continue
            self.last_ts[symbol] = ts
            prev_close = md.feeds[symbol].close[k - 1] if k > 0 else math.nan
            for t, rate, mark in self.funding[symbol].due(ts, k == 0, prev_close):
                self.now_ns = t
                paid = self.account.settle_funding(symbol, rate, mark, t)
                if paid:
                    qty = self.account.positions[symbol].qty
                    self._events.append(
                        (t, FUNDING_SETTLEMENT, symbol, {"rate": rate, "mark": mark, "qty": qty, "payment": paid})
                    )
            self.now_ns = ts
            if self.exchange.book[symbol]:
                self.exchange.process_bar(symbol, ts, o, h, low, c, k)
            if self.account.positions[symbol].qty and self.exchange.instruments[symbol].is_perpetual:
                self.exchange.check_liquidation(symbol, ts, o, h, low, k)
            md.advance(symbol)
            self.now_ns = ts + tf
            done += 1
            if self.state == RUNNING and self.started and self._active(symbol, k, ts):
                acted = True
                self._guard("on_bar", symbol, self.strategy.on_bar, md.bar(symbol))
        if slice_ts >= 0:
            self._end_slice(slice_ts + tf, acted and wants)
        return done

    def on_ticks(self, rows: Sequence[tuple[str, int, float, float]]) -> int:
        """Hand trades ``(symbol, ts ns UTC, price, size)`` of the bot's symbols to ``on_tick``, in
        order, while the bot runs and its strategy overrides it. Ticks do not fill orders (the paper
        venue matches on bars, as in the backtests) and do not move marks. Returns ticks handed over.
        """
        if self.state != RUNNING or not self.strategy_cls.wants_on_tick():
            return 0
        if not self.started:
            self.start()
        done = 0
        on_tick = self.strategy.on_tick
        last = self.last_tick_ts
        for symbol, ts, price, size in rows:
            if symbol not in self.funding or ts < last.get(symbol, ts):
                continue  # not ours, or already seen before a restart (ticks at the same ns may repeat)
            last[symbol] = ts
            if self.state != RUNNING:
                break
            self.now_ns = ts
            self._guard("on_tick", symbol, on_tick, Tick(symbol, ts, price, size))
            done += 1
        return done

    def _active(self, symbol: str, k: int, ts: int) -> bool:
        spec = self.spec
        if k < max(spec.warmup, self.strategy_cls.warmup_bars, self.market_data.warmup_index(symbol)):
            return False
        return spec.start_ns is None or ts >= spec.start_ns

    def _end_slice(self, close_ns: int, call_on_bars: bool) -> None:
        """After every bar of one open time: ``on_bars`` (when wanted) and the equity point."""
        if call_on_bars and self.state == RUNNING:
            self.now_ns = close_ns
            self._guard("on_bars", "*", self.strategy.on_bars, close_ns)
        self._equity_points.append((close_ns, self.equity()))

    # ------------------------------------------------------------------ callbacks and errors
    def _guard(self, callback: str, symbol: str, fn: Callable[..., None], *args: Any) -> bool:
        """Run a strategy callback under the error policy; True when it succeeded in time."""
        started = time.perf_counter()
        try:
            fn(*args)
        except Exception as exc:
            self._error(callback, symbol, f"{type(exc).__name__}: {exc}", traceback.format_exc())
            return False
        elapsed = time.perf_counter() - started
        limit = self.spec.policy.callback_timeout_s
        if elapsed > limit:
            self._error(callback, symbol, f"took {elapsed:.3f} s, over the {limit:g} s limit", "")
            return False
        self.consecutive_errors = 0
        return True

    def _error(self, callback: str, symbol: str, message: str, stack: str) -> None:
        self.errors += 1
        self.consecutive_errors += 1
        self.signal(self.now_ns, symbol, action="error", callback=callback, message=message, stack=stack)
        limit = self.spec.policy.max_consecutive_errors
        if self.consecutive_errors >= limit and self.state == RUNNING:
            self._set_state(PAUSED, f"{self.consecutive_errors} consecutive errors; last in {callback}: {message}")

    def _on_fill(self, fill: Fill) -> None:
        pos = self.account.positions[fill.symbol]
        for kind, data in position_events(fill, pos, self.account.trades):
            self._events.append((fill.ts, kind, fill.symbol, data))
        if self.state == RUNNING and self.started:
            self._guard("on_order_filled", fill.symbol, self.strategy.on_order_filled, fill)

    def _set_state(self, state: str, reason: str) -> None:
        old = self.state
        self.state = state
        self.state_reason = reason
        self.signal(self.now_ns, "", action="state", old=old, new=state, reason=reason)

    def signal(self, ts: int, symbol: str, **data: Any) -> None:
        """Append a row to the bot's signal log (``strategy_signals``): ``action`` is entry, exit,
        skip, error or state; side, qty, price and order_id when they apply; the rest goes to
        ``detail``."""
        self.signal_seq += 1
        action = str(data.pop("action"))
        side = int(data.pop("side", 0) or 0)
        self._signals.append(
            {
                "account_id": self.spec.account_id,
                "bot_id": self.spec.bot_id,
                "seq": self.signal_seq,
                "ts": int(ts),
                "strategy": self.spec.name,
                "symbol": symbol,
                "action": action,
                "side": side if side in (-1, 1) else None,
                "qty": _num(data.pop("qty", None)),
                "price": _num(data.pop("price", None)),
                "order_id": data.pop("order_id", None),
                "detail": orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
            }
        )
        if action in ("entry", "exit", "skip"):
            last = self._signals[-1]
            event = {
                "action": action,
                "side": side,
                "qty": last["qty"],
                "price": last["price"],
                "order_id": last["order_id"],
                **data,
            }
            self._events.append((int(ts), "strategy:signal", symbol, event))

    # ------------------------------------------------------------------ records
    def drain(self) -> dict[str, list[dict[str, Any]]]:
        """Rows for the live tables changed since the last drain: ``live_fills``, ``live_orders``,
        ``live_positions``, ``strategy_signals`` (ts in ns UTC, money in quote currency)."""
        ids = {"account_id": self.spec.account_id, "bot_id": self.spec.bot_id}
        fills = [
            {
                **ids,
                "fill_id": f.fill_id,
                "order_id": f.order_id,
                "ts": f.ts,
                "symbol": f.symbol,
                "side": f.side,
                "qty": f.qty,
                "price": f.price,
                "fee": f.fee,
                "liquidity": f.liquidity,
                "realized_pnl": f.realized_pnl,
                "tag": f.tag,
            }
            for f in self.exchange.fills[self._fills_sent :]
        ]
        self._fills_sent = len(self.exchange.fills)
        orders = self._order_rows(ids)
        positions = []
        for symbol, pos in self.account.positions.items():
            key = (pos.qty, pos.avg_price, pos.realized_pnl, pos.funding)
            if self._positions_sent.get(symbol, (0.0, 0.0, 0.0, 0.0)) != key:
                self._positions_sent[symbol] = key
                positions.append(
                    {
                        **ids,
                        "symbol": symbol,
                        "qty": pos.qty,
                        "avg_price": pos.avg_price,
                        "realized_pnl": pos.realized_pnl,
                        "funding": pos.funding,
                        "updated_ts": self.now_ns,
                    }
                )
        signals, self._signals = self._signals, []
        return {"live_fills": fills, "live_orders": orders, "live_positions": positions, "strategy_signals": signals}

    def drain_equity(self) -> list[tuple[int, float]]:
        """(bar close time ns UTC, equity) after each time slice since the last call."""
        points, self._equity_points = self._equity_points, []
        return points

    def drain_events(self) -> list[tuple[int, str, str, dict[str, Any]]]:
        """Portfolio events (position opened/closed, funding settlements, signals) since the last call."""
        events, self._events = self._events, []
        return events

    def _order_rows(self, ids: dict[str, str]) -> list[dict[str, Any]]:
        orders = self.exchange.orders
        for oid in range(self._next_order_seen, self.exchange._next_order_id):
            self._order_watch.add(oid)
        self._next_order_seen = self.exchange._next_order_id
        rows = []
        for oid in sorted(self._order_watch):
            o = orders[oid]
            key = (int(o.status), o.filled_qty)
            if self._orders_sent.get(oid) == key:
                continue
            self._orders_sent[oid] = key
            rows.append(
                {
                    **ids,
                    "order_id": oid,
                    "created_ts": o.created_ts,
                    "symbol": o.symbol,
                    "side": o.side,
                    "order_type": _ORDER_TYPES[o.order_type],
                    "qty": o.qty,
                    "price": o.price or None,
                    "stop_price": o.stop_price or None,
                    "reduce_only": o.reduce_only,
                    "status": _STATUSES[o.status],
                    "filled_qty": o.filled_qty,
                    "fill_price": o.fill_price or None,
                    "tag": o.tag,
                    "reject_reason": o.reject_reason,
                    "updated_ts": self.now_ns,
                }
            )
        self._order_watch = {oid for oid in self._order_watch if orders[oid].status == OrderStatus.OPEN}
        return rows

    # ------------------------------------------------------------------ checkpoints
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["portfolio"] = None
        return state

    def checkpoint(self) -> bytes:
        """The whole engine pickled (without the portfolio client).

        Raises:
            ParameterError: something the strategy holds cannot be pickled (names it).
        """
        try:
            return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise ParameterError("strategy", f"state of {self.spec.name!r} cannot be checkpointed: {exc}") from exc

    @staticmethod
    def restore(blob: bytes, portfolio: PortfolioClient | None) -> BotEngine:
        """Rebuild a checkpointed engine and attach its portfolio client."""
        engine = pickle.loads(blob)
        if not isinstance(engine, BotEngine):
            raise ParameterError("checkpoint", f"not a bot checkpoint (got {type(engine).__name__})")
        engine.portfolio = portfolio
        return engine


_ORDER_TYPES = {
    OrderType.MARKET: "market",
    OrderType.LIMIT: "limit",
    OrderType.STOP_MARKET: "stop_market",
    OrderType.STOP_LIMIT: "stop_limit",
}
_STATUSES = {
    OrderStatus.OPEN: "open",
    OrderStatus.FILLED: "filled",
    OrderStatus.CANCELLED: "cancelled",
    OrderStatus.REJECTED: "rejected",
}


def _num(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _funding_schedule(symbol: str, funding: pa.Table | None, marks: pa.Table | None) -> _Funding:
    empty = np.zeros(0, dtype=np.int64)
    ft, rate = empty, np.zeros(0)
    if funding is not None:
        rows = funding.filter(pc.equal(funding.column("symbol"), symbol))
        ft = rows.column("ts").cast(pa.int64()).to_numpy()
        rate = rows.column("rate").to_numpy()
    mts, mopen = empty, np.zeros(0)
    if marks is not None:
        mrows = marks.filter(pc.equal(marks.column("symbol"), symbol))
        mts = mrows.column("ts").cast(pa.int64()).to_numpy()
        mopen = mrows.column("open").to_numpy()
    return _Funding(ft, rate, mts, mopen)
