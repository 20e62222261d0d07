"""A sleeve: one strategy instance of a portfolio with its own sub-ledger, venue and services.

Each strategy instance trades through its own :class:`~engine.execution.paper.PaperExchange` and
:class:`~engine.execution.account.Account` (a sub-ledger, like an exchange sub-account) that starts
with its allocated share of the capital. That keeps per-strategy equity, P&L, fees, funding and
drawdown exact, and the portfolio's equity is the sum of the sleeves' equities plus any unallocated
reserve. Positions of different strategies on one symbol are kept apart (hedging mode); whether
opposite ones may coexist is the risk manager's ``conflict_mode``.

:class:`PortfolioContext` is the state the sleeves share: the clock, the mark book (last close of
every symbol seen so far, from any sleeve's bars), the portfolio and risk managers and the event log.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from engine.backtest.runner import funding_events, open_interest_by_symbol
from engine.execution.account import Account
from engine.execution.paper import PaperExchange
from engine.execution.services import AccountPositions, CallableClock
from engine.instruments import Instrument
from engine.portfolio.events import SIGNAL, EventLog
from engine.portfolio.manager import PortfolioManager
from engine.portfolio.services import AllocatedRisk, RiskCheckedOrders, venue_exposures
from engine.risk.manager import Rejection, RiskManager
from engine.risk.view import Exposure, OrderIntent, RiskSnapshot
from engine.strategy.base import Strategy, StrategyParams
from engine.strategy.feed import BarMarketData, SymbolFeed
from engine.strategy.funding import funding_by_symbol
from engine.strategy.services import StrategyServices


class PortfolioContext:
    """Shared state of one portfolio run (clock, marks, managers, events, sleeves)."""

    def __init__(self, manager: PortfolioManager, risk: RiskManager, events: EventLog) -> None:
        self.manager = manager
        self.risk = risk
        self.events = events
        #: symbol → last close seen (quote currency); the mark price of every sleeve's positions
        self.marks: dict[str, float] = {}
        self.sleeves: list[Sleeve] = []
        self.time_ns = 0

    def now(self) -> int:
        """The run's current time, ns UTC."""
        return self.time_ns

    def mark(self, symbol: str) -> float:
        return self.marks.get(symbol, math.nan)

    def equity(self) -> float:
        """Portfolio equity now: reserve + Σ sleeve equity at the current marks."""
        return self.manager.reserve + sum(s.equity() for s in self.sleeves)

    def allocated_capital(self, strategy: str) -> float:
        """weight × current portfolio equity."""
        return self.manager.allocated_capital(strategy, self.equity())

    def snapshot(self, ts: int) -> RiskSnapshot:
        """The :class:`RiskSnapshot` the risk manager checks an intent against."""
        equity = self.equity()
        exposures: list[Exposure] = []
        for sleeve in self.sleeves:
            exposures.extend(sleeve.exposures())
        return RiskSnapshot(
            ts=ts,
            equity=equity,
            day_start_equity=self.manager.day_start_equity,
            allocated={s.name: self.manager.allocated_capital(s.name, equity) for s in self.sleeves},
            exposures=exposures,
            blocked=self.manager.blocked(),
        )


class Sleeve:
    """One strategy instance inside a portfolio (see the module docstring).

    Args:
        name: the instance's unique name.
        strategy_cls, params: the plugin class and its raw or validated parameters.
        bars: per-symbol numpy arrays on ``timeframe`` (see :func:`engine.backtest.runner.split_bars`).
        instruments: symbol → instrument (leverage and fees of this instance).
        capital: the sleeve's initial cash (its allocated share), quote currency.
        context: the shared :class:`PortfolioContext`.
        funding, marks, open_interest: optional tables as the data loaders return them.

    Raises:
        ParameterError: bad parameters, or a market type / timeframe the plugin does not support.
    """

    def __init__(
        self,
        name: str,
        strategy_cls: type[Strategy],
        params: dict[str, Any] | StrategyParams,
        bars: dict[str, dict[str, np.ndarray]],
        timeframe: str,
        instruments: dict[str, Instrument],
        capital: float,
        context: PortfolioContext,
        slippage_bps: float = 0.0,
        funding: pa.Table | None = None,
        marks: pa.Table | None = None,
        open_interest: pa.Table | None = None,
        warmup: int = 0,
    ) -> None:
        self.name = name
        self.strategy_cls = strategy_cls
        self.params = params if isinstance(params, StrategyParams) else strategy_cls.validate_params(params)
        strategy_cls.check_compatibility(timeframe, (i.kind for i in instruments.values()), f"strategies.{name}.")
        self.timeframe = timeframe
        self.warmup = warmup
        self.symbols = list(bars)
        self.instruments = {s: instruments[s] for s in self.symbols}
        self.feeds = {s: SymbolFeed(s, bars[s], timeframe) for s in self.symbols}
        self.market_data = BarMarketData(
            self.feeds,
            self.instruments,
            timeframe,
            funding=funding_by_symbol(funding, self.symbols),
            open_interest=open_interest_by_symbol(open_interest, self.symbols),
        )
        self.account = Account(capital)
        self.exchange = PaperExchange(
            self.account, self.instruments, slippage_bps=slippage_bps, mark=context.mark, clock=context.now
        )
        self.positions = AccountPositions(self.exchange)
        self.gate = SleeveGate(name, context)
        self.risk = AllocatedRisk(self.exchange, self.positions, self.gate)
        self.orders = RiskCheckedOrders(self.exchange, self.risk, self.gate, context.now, name)
        self.services = StrategyServices(
            orders=self.orders,
            positions=self.positions,
            risk=self.risk,
            market_data=self.market_data,
            clock=CallableClock(context.now),
        )
        self.funding = {s: funding_events(self.feeds[s], funding, marks, s) for s in self.symbols}
        self.strategy = strategy_cls(self.params, self.services)
        self.context = context

    def equity(self) -> float:
        """cash + Σ position value at the context's marks (quote currency)."""
        marks = self.context.marks
        value = self.account.cash
        for s, p in self.account.open_positions.items():
            value += p.qty * (marks[s] - p.ref) * p.multiplier
        return value

    def first_active(self, symbol: str, start_ns: int | None) -> int:
        """First bar index of ``symbol`` that reaches ``on_bar`` (warm-up and start applied)."""
        feed = self.feeds[symbol]
        first = max(self.warmup, self.strategy_cls.warmup_bars, self.market_data.warmup_index(symbol))
        if start_ns is not None:
            first = max(first, int(np.searchsorted(feed.arrays["ts"], start_ns, side="left")))
        return first

    def exposures(self) -> list[Exposure]:
        """Open positions (with the nearest protective stop working for each) and pending entries."""
        return venue_exposures(self.name, self.exchange, self.risk)


class SleeveGate:
    """:class:`~engine.portfolio.services.RiskGate` of one sleeve over the shared context."""

    def __init__(self, name: str, context: PortfolioContext) -> None:
        self.name = name
        self.context = context

    def check(self, intent: OrderIntent) -> Rejection | None:
        ctx = self.context
        return ctx.risk.check(intent, ctx.snapshot(intent.ts))

    def signal(self, ts: int, symbol: str, **data: Any) -> None:
        self.context.events.emit(ts, SIGNAL, self.name, symbol, **data)

    def allocated_capital(self) -> float:
        return self.context.allocated_capital(self.name)
