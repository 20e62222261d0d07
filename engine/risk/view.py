"""What the risk manager sees: an order intent and a snapshot of the portfolio at that moment.

The portfolio (backtest or live) builds a :class:`RiskSnapshot` when a strategy submits an order
that opens or adds exposure; the risk manager is a pure function of the intent, the snapshot and its
limits. Units: prices in quote currency, quantities in base units, money in quote currency,
timestamps in ns UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An order a strategy wants to place, before it reaches the venue.

    Attributes:
        ts: submission time.
        strategy: the strategy instance's name.
        symbol: instrument.
        side: +1 BUY, -1 SELL.
        qty: base units (> 0; for percent-sized orders, the quantity estimated at ``price``).
        price: reference price: the limit or stop price, else the last price.
        stop: the protective stop-loss price attached to the order (0 = none).
        multiplier: contract multiplier of the instrument.
        leverage: the instrument's leverage for this strategy (margin = notional / leverage).
    """

    ts: int
    strategy: str
    symbol: str
    side: int
    qty: float
    price: float
    stop: float = 0.0
    multiplier: float = 1.0
    leverage: float = 1.0

    @property
    def notional(self) -> float:
        return self.qty * self.price * self.multiplier


@dataclass(frozen=True, slots=True)
class Exposure:
    """One strategy's open position in one symbol, or one of its unfilled entry orders.

    Attributes:
        qty: signed base units (long > 0).
        entry: average entry price (for a pending order, its reference price).
        mark: current mark price.
        stop: the price of the protective stop working for it (0 = none).
        pending: True for an entry order not filled yet.
    """

    strategy: str
    symbol: str
    qty: float
    entry: float
    mark: float
    multiplier: float = 1.0
    leverage: float = 1.0
    stop: float = 0.0
    pending: bool = False

    @property
    def notional(self) -> float:
        """|qty| × mark × multiplier."""
        return abs(self.qty) * self.mark * self.multiplier


@dataclass(frozen=True, slots=True)
class RiskSnapshot:
    """The portfolio as the risk manager sees it when an intent arrives.

    Attributes:
        ts: now.
        equity: portfolio equity (Σ strategy equities).
        day_start_equity: portfolio equity at the start of the current UTC day.
        allocated: strategy → allocated capital (allocation weight × portfolio equity).
        exposures: every open position and pending entry order of every strategy.
        blocked: strategy → reason, for strategies that may not open exposure now (breakers):
            the reason is "portfolio_halted" or "strategy_paused".
    """

    ts: int
    equity: float
    day_start_equity: float
    allocated: dict[str, float]
    exposures: list[Exposure] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)
