"""Order, position, risk and clock services over a :class:`PaperExchange` and its account.

These are what a strategy sees as ``self.orders``, ``self.positions``, ``self.risk`` and
``self.clock`` when it runs against the paper exchange (backtests and paper trading).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from engine.errors import OrderError
from engine.execution.account import Position
from engine.execution.orders import BUY, ORDER_TYPE_NAMES, SELL, Order
from engine.execution.paper import PaperExchange


class ExchangeOrders:
    """:class:`~engine.strategy.services.OrderService` over a paper exchange."""

    def __init__(self, exchange: PaperExchange) -> None:
        self._x = exchange

    def _submit(self, side: int, symbol: str, qty: float, order_type: str, **kw: object) -> Order:
        kind = ORDER_TYPE_NAMES.get(order_type)
        if kind is None:
            raise OrderError(f"order 'order_type': must be one of {', '.join(ORDER_TYPE_NAMES)}, got {order_type!r}")
        return self._x.submit(symbol, side, qty, order_type=kind, **kw)  # type: ignore[arg-type]

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
    ) -> Order:
        """Submit a BUY (see :meth:`PaperExchange.submit`)."""
        return self._submit(
            BUY,
            symbol,
            qty,
            order_type,
            size_pct=size_pct,
            price=price,
            stop_price=stop_price,
            reduce_only=reduce_only,
            stop_loss=stop_loss,
            take_profit=take_profit,
            tag=tag,
        )

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
    ) -> Order:
        """Submit a SELL (see :meth:`PaperExchange.submit`)."""
        return self._submit(
            SELL,
            symbol,
            qty,
            order_type,
            size_pct=size_pct,
            price=price,
            stop_price=stop_price,
            reduce_only=reduce_only,
            stop_loss=stop_loss,
            take_profit=take_profit,
            tag=tag,
        )

    def close(self, symbol: str, tag: str = "") -> Order | None:
        """Market order flattening ``symbol`` (reduce-only, sized at fill); None when already flat."""
        qty = self._x.account.positions[symbol].qty
        if qty == 0.0:
            return None
        side = SELL if qty > 0 else BUY
        return self._x.submit(symbol, side, 0.0, size_pct=100.0, reduce_only=True, tag=tag or "close")

    def cancel(self, order_id: int) -> bool:
        return self._x.cancel(order_id)

    def cancel_all(self, symbol: str | None = None) -> int:
        return self._x.cancel_all(symbol)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        if symbol is not None:
            return list(self._x.book.get(symbol, ()))
        return [o for book in self._x.book.values() for o in book]


class AccountPositions:
    """:class:`~engine.strategy.services.PositionService` over the exchange's account."""

    def __init__(self, exchange: PaperExchange) -> None:
        self._x = exchange
        self._account = exchange.account

    def qty(self, symbol: str) -> float:
        """Signed position in base units (long > 0)."""
        return self._account.positions[symbol].qty

    def position(self, symbol: str) -> Position:
        """The live position object (read it, do not modify it)."""
        return self._account.positions[symbol]

    def cash(self) -> float:
        """Cash (spot) / wallet balance (perpetuals), quote currency."""
        return self._account.cash

    def equity(self) -> float:
        """cash + Σ position value at the current marks, quote currency."""
        account = self._account
        return account.cash + sum(p.value(self._x.mark(s)) for s, p in account.open_positions.items())


class ExchangeRisk:
    """:class:`~engine.strategy.services.RiskService`: sizing by risk and by affordability."""

    def __init__(self, exchange: PaperExchange, positions: AccountPositions) -> None:
        self._x = exchange
        self._positions = positions

    def size_for_risk(self, symbol: str, entry: float, stop: float, risk_pct: float) -> float:
        """Quantity whose loss from ``entry`` to ``stop`` is ``risk_pct`` % of equity, rounded down to
        the lot and capped by :meth:`max_qty`.

        qty = equity × risk_pct / 100 / (|entry − stop| × multiplier)   (fixed-fractional sizing).

        Raises:
            OrderError: non-positive prices, entry == stop, or risk_pct outside (0, 100].
        """
        if not (entry > 0 and stop > 0 and math.isfinite(entry) and math.isfinite(stop)):
            raise OrderError(f"risk 'entry'/'stop': must be finite prices > 0, got {entry}, {stop}")
        if entry == stop:
            raise OrderError("risk 'stop': must differ from the entry price")
        if not 0 < risk_pct <= 100:
            raise OrderError(f"risk 'risk_pct': must be in (0, 100], got {risk_pct}")
        inst = self._x.instruments[symbol]
        qty = self._positions.equity() * risk_pct / 100.0 / (abs(entry - stop) * inst.multiplier)
        return inst.round_qty(min(qty, self.max_qty(symbol, entry)))

    def max_qty(self, symbol: str, price: float) -> float:
        """Largest quantity affordable at ``price`` with the taker fee reserved (cash for spot, free
        margin × leverage for perpetuals), rounded down to the lot."""
        inst = self._x.instruments[symbol]
        if inst.is_perpetual:
            budget = self._x.free_margin(symbol, price) * inst.leverage
            qty = budget / (price * inst.multiplier * (1.0 + inst.taker_fee * inst.leverage))
        else:
            qty = self._x.account.cash / (price * inst.multiplier * (1.0 + inst.taker_fee))
        return inst.round_qty(max(qty, 0.0))


class CallableClock:
    """:class:`~engine.strategy.services.Clock` reading a callable (the backtest's bar clock)."""

    def __init__(self, now: Callable[[], int]) -> None:
        self._now = now

    def now_ns(self) -> int:
        return self._now()
