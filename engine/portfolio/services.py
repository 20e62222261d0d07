"""The services a strategy sees inside a portfolio: risk-checked orders and allocation-based sizing.

They wrap the paper-exchange services of the strategy's sleeve (:mod:`engine.execution.services`):

* :class:`RiskCheckedOrders` sends every order that opens or adds exposure through the portfolio's
  risk manager first. A rejected order is returned with status REJECTED and its reason (the
  strategy is not interrupted), recorded as a risk rejection and as a ``skip`` signal; accepted
  orders are recorded as ``entry`` or ``exit`` signals. Orders that only reduce exposure always pass.
* :class:`AllocatedRisk` sizes positions from risk % of the strategy's *allocated* capital
  (allocation weight × portfolio equity) and the stop distance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import OrderError
from engine.execution.orders import ORDER_TYPE_NAMES, Order, OrderType
from engine.execution.services import ExchangeOrders, ExchangeRisk
from engine.portfolio.events import SIGNAL
from engine.risk.manager import position_size
from engine.risk.view import OrderIntent

if TYPE_CHECKING:
    from engine.portfolio.sleeve import PortfolioContext, Sleeve


class RiskCheckedOrders(ExchangeOrders):
    """:class:`~engine.strategy.services.OrderService` of one sleeve, gated by the risk manager."""

    def __init__(self, sleeve: Sleeve, context: PortfolioContext) -> None:
        super().__init__(sleeve.exchange)
        self._sleeve = sleeve
        self._ctx = context

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
            want = qty if qty else self._sleeve.risk.max_qty(symbol, price) * size_pct / 100.0
            opening = want if held == 0.0 or (held > 0) == (side > 0) else max(0.0, want - abs(held))
        ctx = self._ctx
        now = ctx.now()
        name = self._sleeve.name
        tag = str(kw.get("tag") or "")
        if opening > 0.0 and price > 0.0:
            intent = OrderIntent(
                ts=now,
                strategy=name,
                symbol=symbol,
                side=side,
                qty=opening,
                price=price,
                stop=float(kw.get("stop_loss") or 0.0),
                multiplier=inst.multiplier,
                leverage=inst.leverage,
            )
            rejection = ctx.risk.check(intent, ctx.snapshot(now))
            if rejection is not None:
                order = x._new_order(symbol, side, kind, qty, created_ts=now, tag=tag, **_order_fields(kw))
                x._reject(order, f"risk check '{rejection.check}': {rejection.message}")
                ctx.events.emit(
                    now,
                    SIGNAL,
                    name,
                    symbol,
                    action="skip",
                    side=side,
                    qty=opening,
                    price=price,
                    check=rejection.check,
                    tag=tag,
                )
                return order
        order = x.submit(symbol, side, qty, order_type=kind, **kw)
        ctx.events.emit(
            now,
            SIGNAL,
            name,
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
            now = self._ctx.now()
            self._ctx.events.emit(
                now,
                SIGNAL,
                self._sleeve.name,
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
    """:class:`~engine.strategy.services.RiskService` sizing from the strategy's allocated capital."""

    def __init__(self, sleeve: Sleeve, context: PortfolioContext) -> None:
        super().__init__(sleeve.exchange, sleeve.positions)
        self._sleeve = sleeve
        self._ctx = context

    def size_for_risk(self, symbol: str, entry: float, stop: float, risk_pct: float) -> float:
        """qty = allocated capital × risk_pct / 100 / (|entry − stop| × multiplier), rounded down to the
        lot and capped by what the sleeve can afford (fixed-fractional sizing, seed 003).

        Raises:
            OrderError: non-positive or non-finite prices, entry == stop, risk_pct outside (0, 100].
        """
        inst = self._x.instruments[symbol]
        allocated = self._ctx.allocated_capital(self._sleeve.name)
        qty = position_size(allocated, entry, stop, risk_pct, inst.multiplier)
        return inst.round_qty(min(qty, self.max_qty(symbol, entry)))
