"""The services a strategy sees inside a portfolio: risk-checked orders and allocation-based sizing.

They wrap the paper-exchange services of one strategy instance (:mod:`engine.execution.services`)
and talk to the portfolio through a :class:`RiskGate`, so the same code runs in the portfolio
backtest (the gate is the in-process :class:`~engine.portfolio.sleeve.PortfolioContext`) and in a
live bot (the gate asks the portfolio manager actor):

* :class:`RiskCheckedOrders` sends every order that opens or adds exposure through the gate's risk
  check first. A rejected order is returned with status REJECTED and its reason (the strategy is
  not interrupted) and recorded as a ``skip`` signal; accepted orders are recorded as ``entry`` or
  ``exit`` signals. Orders that only reduce exposure always pass.
* :class:`AllocatedRisk` sizes positions from risk % of the strategy's *allocated* capital
  (allocation weight × portfolio equity) and the stop distance.
* :func:`venue_exposures` is what the risk manager sees of one instance: its open positions (with
  the protective stop working for each) and its pending entry orders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from engine.errors import OrderError
from engine.execution.orders import ORDER_TYPE_NAMES, Order, OrderType
from engine.execution.paper import PaperExchange
from engine.execution.services import AccountPositions, ExchangeOrders, ExchangeRisk
from engine.risk.manager import Rejection, position_size
from engine.risk.view import Exposure, OrderIntent

_STOPS = (OrderType.STOP_MARKET, OrderType.STOP_LIMIT)


class RiskGate(Protocol):
    """The portfolio as one strategy instance sees it."""

    def check(self, intent: OrderIntent) -> Rejection | None:
        """Run the pre-trade checks on ``intent`` (and record a rejection); None = accepted."""
        ...

    def signal(self, ts: int, symbol: str, **data: Any) -> None:
        """Record a ``strategy:signal`` (action entry / exit / skip, side, qty, price, order id, tag)."""
        ...

    def allocated_capital(self) -> float:
        """The instance's allocated capital now: weight × portfolio equity (quote currency)."""
        ...


class RiskCheckedOrders(ExchangeOrders):
    """:class:`~engine.strategy.services.OrderService` of one instance, gated by the risk manager.

    Args:
        exchange: the instance's venue.
        sizing: its risk service (estimates the quantity of percent-sized orders).
        gate: the portfolio (see :class:`RiskGate`).
        clock: now in ns UTC.
        name: the instance's name (the intent's ``strategy``).
    """

    def __init__(
        self, exchange: PaperExchange, sizing: ExchangeRisk, gate: RiskGate, clock: Callable[[], int], name: str
    ) -> None:
        super().__init__(exchange)
        self._sizing = sizing
        self._gate = gate
        self._clock = clock
        self._name = name

    def _submit(self, side: int, symbol: str, qty: float, order_type: str, **kw: Any) -> Order:
        kind = ORDER_TYPE_NAMES.get(order_type)
        if kind is None:
            raise OrderError(f"order 'order_type': must be one of {', '.join(ORDER_TYPE_NAMES)}, got {order_type!r}")
        x = self._x
        inst = x.instruments.get(symbol)
        if inst is None:
            raise OrderError(f"order 'symbol': unknown symbol {symbol!r}")
        held = x.account.positions[symbol].qty
        price = self._reference_price(symbol, kind, kw)
        opening = 0.0
        if not kw.get("reduce_only"):
            size_pct = float(kw.get("size_pct") or 0.0)
            want = qty if qty else self._sizing.max_qty(symbol, price) * size_pct / 100.0
            opening = want if held == 0.0 or (held > 0) == (side > 0) else max(0.0, want - abs(held))
        now = self._clock()
        tag = str(kw.get("tag") or "")
        if opening > 0.0 and price > 0.0:
            intent = OrderIntent(
                ts=now,
                strategy=self._name,
                symbol=symbol,
                side=side,
                qty=opening,
                price=price,
                stop=float(kw.get("stop_loss") or 0.0),
                multiplier=inst.multiplier,
                leverage=inst.leverage,
            )
            rejection = self._gate.check(intent)
            if rejection is not None:
                order = x._new_order(symbol, side, kind, qty, created_ts=now, tag=tag, **_order_fields(kw))
                x._reject(order, f"risk check '{rejection.check}': {rejection.message}")
                self._gate.signal(
                    now,
                    symbol,
                    action="skip",
                    side=side,
                    qty=opening,
                    price=price,
                    check=rejection.check,
                    order_id=order.order_id,
                    tag=tag,
                )
                return order
        order = x.submit(symbol, side, qty, order_type=kind, **kw)
        self._gate.signal(
            now,
            symbol,
            action="entry" if opening > 0.0 else "exit",
            side=side,
            qty=order.qty,
            price=price,
            order_id=order.order_id,
            tag=tag,
        )
        return order

    def close(self, symbol: str, tag: str = "") -> Order | None:
        order = super().close(symbol, tag)
        if order is not None:
            self._gate.signal(
                self._clock(),
                symbol,
                action="exit",
                side=order.side,
                qty=0.0,
                price=self._x.mark(symbol),
                order_id=order.order_id,
                tag=order.tag,
            )
        return order

    def _reference_price(self, symbol: str, kind: OrderType, kw: dict[str, Any]) -> float:
        if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) and kw.get("price"):
            return float(kw["price"])
        if kind == OrderType.STOP_MARKET and kw.get("stop_price"):
            return float(kw["stop_price"])
        return float(self._x.mark(symbol))


def _order_fields(kw: dict[str, Any]) -> dict[str, Any]:
    keep = ("size_pct", "price", "stop_price", "reduce_only", "stop_loss", "take_profit")
    return {k: kw[k] for k in keep if k in kw}


class AllocatedRisk(ExchangeRisk):
    """:class:`~engine.strategy.services.RiskService` sizing from the instance's allocated capital."""

    def __init__(self, exchange: PaperExchange, positions: AccountPositions, gate: RiskGate) -> None:
        super().__init__(exchange, positions)
        self._gate = gate

    def size_for_risk(self, symbol: str, entry: float, stop: float, risk_pct: float) -> float:
        """qty = allocated capital × risk_pct / 100 / (|entry − stop| × multiplier), rounded down to the
        lot and capped by what the instance can afford (fixed-fractional sizing, seed 003).

        Raises:
            OrderError: non-positive or non-finite prices, entry == stop, risk_pct outside (0, 100].
        """
        inst = self._x.instruments[symbol]
        qty = position_size(self._gate.allocated_capital(), entry, stop, risk_pct, inst.multiplier)
        return inst.round_qty(min(qty, self.max_qty(symbol, entry)))


def venue_exposures(name: str, exchange: PaperExchange, sizing: ExchangeRisk) -> list[Exposure]:
    """Open positions (with the nearest protective stop working for each) and pending entry orders of
    one strategy instance, valued at the venue's marks (quote currency, base units)."""
    out: list[Exposure] = []
    mark = exchange.mark
    book = exchange.book
    for symbol, pos in exchange.account.open_positions.items():
        stop = 0.0
        for order in book[symbol]:
            if order.reduce_only and order.order_type in _STOPS and order.side * pos.qty < 0:
                nearer = stop == 0.0 or (order.stop_price > stop if pos.qty > 0 else order.stop_price < stop)
                if nearer:
                    stop = order.stop_price
        inst = pos.instrument
        out.append(Exposure(name, symbol, pos.qty, pos.avg_price, mark(symbol), inst.multiplier, inst.leverage, stop))
    for symbol, orders in book.items():
        for order in orders:
            if order.reduce_only:
                continue
            inst = exchange.instruments[symbol]
            ref = order.price or order.stop_price or mark(symbol)
            qty = order.qty or sizing.max_qty(symbol, ref) * order.size_pct / 100.0
            if not (qty > 0 and ref > 0):
                continue
            out.append(
                Exposure(
                    name, symbol, order.side * qty, ref, ref, inst.multiplier, inst.leverage, order.stop_loss, True
                )
            )
    return out
