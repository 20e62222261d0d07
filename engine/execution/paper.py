"""The paper exchange: order validation and matching against OHLC bars.

Fill rules (one bar = open O, high H, low L, close C):

1. **Orders placed while bar k is processed become active at bar k+1.** A market order fills at the
   next bar's open, moved against the trader by the slippage (BUY × (1 + bps/10⁴), SELL × (1 − bps/10⁴))
   and rounded to the tick against the trader.
2. **Intrabar path.** The price is assumed to travel O → nearer extreme → farther extreme → C (the
   extreme closer to the open is visited first; NautilusTrader's bar-execution convention). Orders
   trigger in the order the path reaches their prices; ties keep submission order.
3. **Limit** orders fill at their limit price when the path reaches it, or at the open when the bar
   opens through it (a better price). They are maker fills and take no slippage.
4. **Stop-market** orders trigger when the path reaches the stop and fill at the stop price, or at
   the open when the bar gaps through it; slippage applies; taker fills.
5. **Stop-limit** orders trigger like stops; at the trigger price T a BUY fills at T if T ≤ limit
   (a SELL if T ≥ limit) as a taker; otherwise it rests as a limit order from that point of the
   path on (maker).
6. **Brackets.** An entry with ``stop_loss`` / ``take_profit`` places, on its fill, a reduce-only
   stop-market (stop loss) and limit (take profit) for the filled quantity, one-cancels-the-other.
   They are live from the entry's point on the path, so a stop hit later in the entry bar fills.
7. **Reduce-only** orders are capped to the opposite position's size at fill time and cancelled
   when there is none.
8. **Sizing by ``size_pct``** happens at the fill price: units = floor(cash × pct/100 /
   (price × multiplier × (1 + fee rate))) rounded down to the lot (spot); for perpetuals cash is
   replaced by free margin × leverage and the fee by fee × leverage.
9. **Affordability** is checked at fill time: spot buys need cash ≥ notional + fee; spot sells may
   not go short; perpetual orders need free margin ≥ new initial margin + fee. Failing orders are
   REJECTED with a reason (``PaperExchange.rejected``).
10. Fees: maker rate for limit fills (and resting stop-limits), taker rate otherwise, as a fraction
    of traded notional.
11. **Liquidation** (perpetuals): after the bar's orders, an open position is liquidated when the
    path reaches the price P at which equity = maintenance margin (rate × |qty| × P × multiplier),
    other positions valued at their marks: P = (qty × entry × mult − E₀) / (qty × mult × (1 ∓ rate))
    (− for longs, + for shorts; E₀ = cash + other positions' value). It is closed at P, or at the
    open if the bar gapped through P, as a taker fill tagged ``liquidation``; its open orders are
    cancelled. Stops placed nearer than P therefore fill first.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

from engine.errors import OrderError
from engine.execution.account import Account
from engine.execution.orders import BUY, SELL, Fill, Order, OrderStatus, OrderType
from engine.instruments import Instrument

Path = tuple[float, float, float, float]
_MARKET = OrderType.MARKET
_LIMIT = OrderType.LIMIT
_STOP = OrderType.STOP_MARKET
_STOP_LIMIT = OrderType.STOP_LIMIT


def _price_at(path: Path, pos: float) -> float:
    j = int(pos)
    if j >= 3:
        return path[3]
    a = path[j]
    return a + (path[j + 1] - a) * (pos - j)


def _first_reach(path: Path, start: float, level: float, up: bool) -> tuple[float, bool] | None:
    """First path position >= ``start`` where the price is >= level (``up``) or <= level.

    Returns (position, through) where ``through`` means the condition already held at ``start``
    (the fill then happens at the path price, e.g. the open on a gap), or None if never reached.
    """
    current = _price_at(path, start)
    if (current >= level) if up else (current <= level):
        return start, True
    j = int(start)
    while j < 3:
        b = path[j + 1]
        if (b >= level) if up else (b <= level):
            span = b - path[j]
            frac = (level - path[j]) / span if span else 0.0
            return max(j + frac, start), False
        j += 1
    return None


class PaperExchange:
    """Simulated venue: validates orders, matches them on bars, books fills in an :class:`Account`.

    Args:
        account: the account fills are booked into.
        instruments: symbol → instrument (tick/lot size, fees, leverage).
        slippage_bps: adverse slippage of market and stop-market fills, in basis points.
        mark: callable giving the current mark price of a symbol (last close), used for margin.
        clock: callable giving the current time in ns UTC (order timestamps).
    """

    def __init__(
        self,
        account: Account,
        instruments: dict[str, Instrument],
        slippage_bps: float = 0.0,
        mark: Callable[[str], float] | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if slippage_bps < 0 or not math.isfinite(slippage_bps):
            raise OrderError(f"slippage_bps must be a finite number >= 0, got {slippage_bps}")
        self.account = account
        self.instruments = instruments
        self.slip = slippage_bps / 10_000.0
        self.mark = mark or (lambda symbol: math.nan)
        self.clock = clock or (lambda: 0)
        #: open orders per symbol; the list objects are never replaced (the loop holds them)
        self.book: dict[str, list[Order]] = {s: [] for s in instruments}
        self.orders: dict[int, Order] = {}
        self.fills: list[Fill] = []
        self.rejected: list[Order] = []
        self.listeners: list[Callable[[Fill], None]] = []
        self._next_order_id = 1
        self._next_fill_id = 1
        for inst in instruments.values():
            account.register(inst)

    # ------------------------------------------------------------------ requests
    def submit(
        self,
        symbol: str,
        side: int,
        qty: float = 0.0,
        *,
        size_pct: float = 0.0,
        order_type: OrderType = _MARKET,
        price: float = 0.0,
        stop_price: float = 0.0,
        reduce_only: bool = False,
        stop_loss: float = 0.0,
        take_profit: float = 0.0,
        tag: str = "",
    ) -> Order:
        """Validate and queue an order; it becomes active from the next bar.

        Raises:
            OrderError: unknown symbol, bad side, neither/both of qty and size_pct, non-positive or
                non-finite prices, a missing limit/stop price, or bracket prices on the wrong side.
        """
        inst = self.instruments.get(symbol)
        if inst is None:
            raise OrderError(f"order 'symbol': unknown symbol {symbol!r}")
        if side not in (BUY, SELL):
            raise OrderError(f"order 'side': must be +1 (BUY) or -1 (SELL), got {side!r}")
        if qty and size_pct:
            raise OrderError("order 'qty'/'size_pct': give one of them, not both")
        if size_pct:
            if not 0 < size_pct <= 100:
                raise OrderError(f"order 'size_pct': must be in (0, 100], got {size_pct}")
        elif not (qty > 0 and math.isfinite(qty)):
            if not reduce_only:
                raise OrderError(f"order 'qty': must be a finite number > 0, got {qty}")
            if qty < 0 or not math.isfinite(qty):
                raise OrderError(f"order 'qty': must be a finite number >= 0, got {qty}")
        if qty:
            qty = inst.round_qty(qty)
        if order_type in (_LIMIT, _STOP_LIMIT):
            if not (price > 0 and math.isfinite(price)):
                raise OrderError(f"order 'price': a {order_type.name} order needs a limit price > 0, got {price}")
            price = inst.round_price(price)
        if order_type in (_STOP, _STOP_LIMIT):
            if not (stop_price > 0 and math.isfinite(stop_price)):
                raise OrderError(f"order 'stop_price': a {order_type.name} order needs a stop > 0, got {stop_price}")
            stop_price = inst.round_price(stop_price)
        for name, value in (("stop_loss", stop_loss), ("take_profit", take_profit)):
            if value and not (value > 0 and math.isfinite(value)):
                raise OrderError(f"order '{name}': must be a finite price > 0, got {value}")
        if stop_loss and take_profit and (stop_loss - take_profit) * side >= 0:
            raise OrderError(
                "order 'stop_loss': must be below take_profit for a BUY and above it for a SELL "
                f"(got stop_loss={stop_loss}, take_profit={take_profit})"
            )
        order = self._new_order(
            symbol,
            side,
            order_type,
            qty,
            size_pct=size_pct,
            price=price,
            stop_price=stop_price,
            reduce_only=reduce_only,
            stop_loss=inst.round_price(stop_loss) if stop_loss else 0.0,
            take_profit=inst.round_price(take_profit) if take_profit else 0.0,
            tag=tag,
            created_ts=self.clock(),
        )
        if qty == 0.0 and not size_pct and not reduce_only:
            self._reject(order, "quantity rounds to zero at the lot size")
            return order
        self.book[symbol].append(order)
        return order

    def _new_order(self, *args: Any, **kwargs: Any) -> Order:
        """Create an order with the next id and register it (``Order``'s arguments after the id)."""
        order = Order(self._next_order_id, *args, **kwargs)
        self._next_order_id += 1
        self.orders[order.order_id] = order
        return order

    def cancel(self, order_id: int) -> bool:
        """Cancel an open order; returns False when it is unknown or no longer open."""
        order = self.orders.get(order_id)
        if order is None or not order.is_open:
            return False
        order.status = OrderStatus.CANCELLED
        book = self.book[order.symbol]
        if order in book:
            book.remove(order)
        return True

    def cancel_all(self, symbol: str | None = None) -> int:
        """Cancel every open order (of ``symbol`` if given); returns how many were cancelled."""
        count = 0
        for s, book in self.book.items():
            if symbol is not None and s != symbol:
                continue
            for order in book:
                order.status = OrderStatus.CANCELLED
                count += 1
            book.clear()
        return count

    # ------------------------------------------------------------------ matching
    def process_bar(self, symbol: str, ts: int, o: float, h: float, low: float, c: float, bar: int) -> None:
        """Match the open orders of ``symbol`` against one bar (see the module docstring)."""
        book = self.book[symbol]
        path: Path = (o, h, low, c) if h - o <= o - low else (o, low, h, c)
        heap: list[tuple[float, int, Order, float, str]] = []
        for order in book:
            self._schedule(heap, order, path, 0.0)
        while heap:
            pos, _, order, price, liquidity = heapq.heappop(heap)
            if order.status != OrderStatus.OPEN:
                continue
            for child in self._execute(order, price, liquidity, ts, bar):
                self._schedule(heap, child, path, pos)
        book[:] = [order for order in book if order.status == OrderStatus.OPEN]

    def _schedule(self, heap: list, order: Order, path: Path, start: float) -> None:
        hit = self._trigger(order, path, start)
        if hit is not None:
            heapq.heappush(heap, (hit[0], order.order_id, order, hit[1], hit[2]))

    def _trigger(self, order: Order, path: Path, start: float) -> tuple[float, float, str] | None:
        """(path position, fill price, liquidity) of ``order`` on this bar from ``start``, or None."""
        kind = order.order_type
        buy = order.side > 0
        if kind == _MARKET:
            return start, self._slipped(order, _price_at(path, start)), "taker"
        if kind == _LIMIT or (kind == _STOP_LIMIT and order.triggered):
            hit = _first_reach(path, start, order.price, up=not buy)
            if hit is None:
                return None
            return hit[0], (_price_at(path, hit[0]) if hit[1] else order.price), "maker"
        hit = _first_reach(path, start, order.stop_price, up=buy)
        if hit is None:
            return None
        trigger_price = _price_at(path, hit[0]) if hit[1] else order.stop_price
        if kind == _STOP:
            return hit[0], self._slipped(order, trigger_price), "taker"
        # stop-limit: marketable at the trigger price, or rests as a limit from there on
        order.triggered = True
        if (trigger_price <= order.price) if buy else (trigger_price >= order.price):
            return hit[0], trigger_price, "taker"
        rest = _first_reach(path, hit[0], order.price, up=not buy)
        if rest is None:
            return None
        return rest[0], order.price, "maker"

    def _slipped(self, order: Order, price: float) -> float:
        if self.slip:
            price *= 1.0 + self.slip * order.side
        return self.instruments[order.symbol].round_price(price, order.side)

    def _reject(self, order: Order, reason: str) -> None:
        order.status = OrderStatus.REJECTED
        order.reject_reason = reason
        self.rejected.append(order)

    def _execute(self, order: Order, price: float, liquidity: str, ts: int, bar: int) -> list[Order]:
        """Fill ``order`` at ``price`` if it is allowed; returns bracket children to schedule."""
        inst = self.instruments[order.symbol]
        account = self.account
        pos = account.positions[order.symbol]
        side = order.side
        rate = inst.maker_fee if liquidity == "maker" else inst.taker_fee
        mult = inst.multiplier
        held = pos.qty
        if order.reduce_only:
            if held == 0.0 or (held > 0) == (side > 0):
                order.status = OrderStatus.CANCELLED
                order.reject_reason = "reduce-only order with no opposite position"
                return []
            cap = abs(held)
            qty = cap if order.size_pct or not order.qty else min(order.qty, cap)
            if order.size_pct:
                qty = inst.round_qty(cap * order.size_pct / 100.0) if order.size_pct < 100 else cap
        elif order.size_pct:
            if inst.is_perpetual:
                budget = self.free_margin(order.symbol, price) * inst.leverage
                qty = budget * order.size_pct / 100.0 / (price * mult * (1.0 + rate * inst.leverage))
            else:
                qty = account.cash * order.size_pct / 100.0 / (price * mult * (1.0 + rate))
            qty = inst.round_qty(qty)
        else:
            qty = order.qty
        if qty <= 0.0 or qty < inst.min_qty:
            self._reject(order, f"quantity {qty} is below the minimum {inst.min_qty or inst.lot_size}")
            return []
        fee = qty * price * mult * rate
        # affordability of the part that opens or adds exposure
        opening = qty if held == 0.0 or (held > 0) == (side > 0) else max(0.0, qty - abs(held))
        if opening > 0.0:
            if not inst.is_perpetual:
                if side < 0:
                    self._reject(order, "short selling is not allowed on a spot instrument")
                    return []
                if qty * price * mult + fee > account.cash * (1.0 + 1e-12):
                    self._reject(
                        order,
                        f"insufficient cash: need {qty * price * mult + fee:.2f}, have {account.cash:.2f}",
                    )
                    return []
            else:
                need = opening * price * mult / inst.leverage + fee
                free = self.free_margin(order.symbol, price)
                if need > free * (1.0 + 1e-12) + 1e-9:
                    self._reject(order, f"insufficient margin: need {need:.2f}, free {free:.2f}")
                    return []
        realized = account.apply_fill(order.symbol, side, qty, price, fee, ts, bar)
        order.status = OrderStatus.FILLED
        order.filled_qty = qty
        order.fill_price = price
        fill = Fill(
            self._next_fill_id,
            order.order_id,
            ts,
            order.symbol,
            side,
            qty,
            price,
            fee,
            liquidity,
            realized,
            order.tag,
        )
        self._next_fill_id += 1
        self.fills.append(fill)
        if order.oco is not None and order.oco.status == OrderStatus.OPEN:
            order.oco.status = OrderStatus.CANCELLED
        children = self._bracket(order, qty) if (order.stop_loss or order.take_profit) else []
        for listener in self.listeners:
            listener(fill)
        return children

    def check_liquidation(self, symbol: str, ts: int, o: float, h: float, low: float, bar: int) -> bool:
        """Liquidate ``symbol``'s perpetual position if this bar reached its liquidation price (rule 11).

        Returns True when a liquidation fill happened.
        """
        account = self.account
        pos = account.positions[symbol]
        qty = pos.qty
        if qty == 0.0 or not pos.perpetual:
            return False
        inst = pos.instrument
        mult = pos.multiplier
        rate = inst.maintenance_margin
        others = account.cash
        for s, p in account.open_positions.items():
            if s != symbol:
                others += p.value(self.mark(s))
        if qty > 0:
            price = (qty * pos.avg_price * mult - others) / (qty * mult * (1.0 - rate))
            if low > price:
                return False
            price = min(o, price)
        else:
            price = (qty * pos.avg_price * mult - others) / (qty * mult * (1.0 + rate))
            if h < price:
                return False
            price = max(o, price)
        self.close_at(symbol, max(price, 0.0), ts, bar, "liquidation")
        return True

    def close_at(self, symbol: str, price: float, ts: int, bar: int, tag: str) -> Fill | None:
        """Cancel ``symbol``'s open orders and close its position now at ``price`` (quote currency) as
        a reduce-only taker fill tagged ``tag`` (liquidations, emergency stops). Returns the fill,
        or None when the position is flat."""
        qty = self.account.positions[symbol].qty
        self.cancel_all(symbol)
        if qty == 0.0:
            return None
        side = SELL if qty > 0 else BUY
        order = self._new_order(symbol, side, _MARKET, abs(qty), reduce_only=True, tag=tag, created_ts=ts)
        self._execute(order, price, "taker", ts, bar)
        return self.fills[-1] if order.status == OrderStatus.FILLED else None

    def free_margin(self, symbol: str, price: float) -> float:
        """equity − initial margin in use, valuing ``symbol`` at ``price`` and others at their mark."""
        account = self.account
        equity = account.cash
        used = 0.0
        for s, p in account.open_positions.items():
            mark = price if s == symbol else self.mark(s)
            equity += p.value(mark)
            if p.perpetual:
                used += abs(p.qty) * mark * p.multiplier / p.instrument.leverage
        return equity - used

    def _bracket(self, entry: Order, qty: float) -> list[Order]:
        """The reduce-only stop-loss (stop-market) and take-profit (limit) children of a filled entry."""
        legs = []
        if entry.stop_loss:
            legs.append(("sl", _STOP, {"stop_price": entry.stop_loss}))
        if entry.take_profit:
            legs.append(("tp", _LIMIT, {"price": entry.take_profit}))
        children = [
            self._new_order(
                entry.symbol,
                -entry.side,
                kind,
                qty,
                reduce_only=True,
                tag=f"{entry.tag}:{name}" if entry.tag else name,
                created_ts=entry.created_ts,
                parent_id=entry.order_id,
                **prices,
            )
            for name, kind, prices in legs
        ]
        if len(children) == 2:
            children[0].oco = children[1]
            children[1].oco = children[0]
        self.book[entry.symbol].extend(children)
        return children
