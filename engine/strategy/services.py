"""The typed services a strategy uses: orders, positions, risk, market data and the clock.

A strategy never touches a venue or a store: it receives one :class:`StrategyServices` and calls
these interfaces. The backtest wires them to the paper exchange; a live bot wires the same
interfaces to its own venue adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from engine.execution.account import Position
    from engine.execution.orders import Order
    from engine.instruments import Instrument
    from engine.strategy.funding import FundingRates
    from engine.strategy.series import Bar, Series


class OrderService(Protocol):
    """Place and cancel orders. Quantities in base units, prices in quote currency.

    ``order_type`` is "market", "limit", "stop" (stop-market) or "stop_limit". Orders made in a bar
    callback become active at the next bar (see :mod:`engine.execution.paper`).
    Raises :class:`engine.errors.OrderError` on an invalid request.
    """

    def buy(
        self,
        symbol: str,
        qty: float = 0.0,
        *,
        size_pct: float = 0.0,
        order_type: str = "market",
        price: float = 0.0,
        stop_price: float = 0.0,
        reduce_only: bool = False,
        stop_loss: float = 0.0,
        take_profit: float = 0.0,
        tag: str = "",
    ) -> Order: ...

    def sell(
        self,
        symbol: str,
        qty: float = 0.0,
        *,
        size_pct: float = 0.0,
        order_type: str = "market",
        price: float = 0.0,
        stop_price: float = 0.0,
        reduce_only: bool = False,
        stop_loss: float = 0.0,
        take_profit: float = 0.0,
        tag: str = "",
    ) -> Order: ...

    def close(self, symbol: str, tag: str = "") -> Order | None: ...

    def cancel(self, order_id: int) -> bool: ...

    def cancel_all(self, symbol: str | None = None) -> int: ...

    def open_orders(self, symbol: str | None = None) -> list[Order]: ...


class PositionService(Protocol):
    """Read positions and balances (quote currency)."""

    def qty(self, symbol: str) -> float: ...

    def position(self, symbol: str) -> Position: ...

    def cash(self) -> float: ...

    def equity(self) -> float: ...


class RiskService(Protocol):
    """Position sizing and pre-trade checks."""

    def size_for_risk(self, symbol: str, entry: float, stop: float, risk_pct: float) -> float: ...

    def max_qty(self, symbol: str, price: float) -> float: ...


class MarketDataService(Protocol):
    """Bars, indicators and last prices. Indicators are requested in ``on_init``."""

    @property
    def symbols(self) -> list[str]: ...

    @property
    def timeframe(self) -> str: ...

    def instrument(self, symbol: str) -> Instrument: ...

    def bar(self, symbol: str) -> Bar: ...

    def ltp(self, symbol: str) -> float: ...

    def series(self, field: str, symbol: str | None = None, *, timeframe: str | None = None) -> Series: ...

    def indicator(
        self,
        name: str,
        symbol: str | None = None,
        *,
        timeframe: str | None = None,
        source: str | None = None,
        **params: float,
    ) -> Series | tuple[Series, ...]: ...

    def funding_rates(self, symbol: str) -> FundingRates | None: ...

    def open_interest(self, symbol: str) -> Series | None: ...


class Clock(Protocol):
    """The current time in ns UTC (the bar's close time in a backtest, wall time live)."""

    def now_ns(self) -> int: ...


@dataclass(frozen=True)
class StrategyServices:
    """Everything a strategy may use."""

    orders: OrderService
    positions: PositionService
    risk: RiskService
    market_data: MarketDataService
    clock: Clock
