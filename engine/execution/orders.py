"""Orders and fills.

Plain ``__slots__`` classes: they are created per order and per fill (never per bar) and read on
the hot path, so they avoid validation overhead; requests are validated once in
:class:`engine.execution.paper.PaperExchange.submit`.

Units: prices in quote currency, quantities in base units, timestamps in ns UTC.
Sides: BUY = +1, SELL = -1.
"""

from __future__ import annotations

from enum import IntEnum

BUY = 1
SELL = -1


class OrderType(IntEnum):
    MARKET = 0
    LIMIT = 1
    STOP_MARKET = 2
    STOP_LIMIT = 3


class OrderStatus(IntEnum):
    OPEN = 0
    FILLED = 1
    CANCELLED = 2
    REJECTED = 3


ORDER_TYPE_NAMES = {
    "market": OrderType.MARKET,
    "limit": OrderType.LIMIT,
    "stop": OrderType.STOP_MARKET,
    "stop_market": OrderType.STOP_MARKET,
    "stop_limit": OrderType.STOP_LIMIT,
}


class Order:
    """An order as the paper exchange holds it.

    Attributes:
        order_id: unique, increasing per exchange.
        symbol, side (+1/-1), order_type.
        qty: quantity in base units; 0 when ``size_pct`` sizes the order at fill time.
        size_pct: percent of available cash (spot) or free margin × leverage (perpetual) to commit,
            sized at the fill price with the fee reserved; 0 when ``qty`` is given.
        price: limit price (LIMIT, STOP_LIMIT); stop_price: trigger (STOP_MARKET, STOP_LIMIT).
        reduce_only: may only reduce an opposite position; capped to its size at fill time.
        stop_loss, take_profit: bracket prices; on the entry's fill the exchange places a reduce-only
            stop-market and limit order for the filled quantity, one-cancels-the-other.
        oco: the sibling order cancelled when this one fills (bracket children).
        triggered: a STOP_LIMIT whose stop has been hit and now rests as a limit.
    """

    __slots__ = (
        "created_ts",
        "fill_price",
        "filled_qty",
        "oco",
        "order_id",
        "order_type",
        "parent_id",
        "price",
        "qty",
        "reduce_only",
        "reject_reason",
        "side",
        "size_pct",
        "status",
        "stop_loss",
        "stop_price",
        "symbol",
        "tag",
        "take_profit",
        "triggered",
    )

    def __init__(
        self,
        order_id: int,
        symbol: str,
        side: int,
        order_type: OrderType,
        qty: float,
        size_pct: float = 0.0,
        price: float = 0.0,
        stop_price: float = 0.0,
        reduce_only: bool = False,
        stop_loss: float = 0.0,
        take_profit: float = 0.0,
        tag: str = "",
        created_ts: int = 0,
        parent_id: int = 0,
    ) -> None:
        self.order_id = order_id
        self.symbol = symbol
        self.side = side
        self.order_type = order_type
        self.qty = qty
        self.size_pct = size_pct
        self.price = price
        self.stop_price = stop_price
        self.reduce_only = reduce_only
        self.stop_loss = stop_loss
        self.take_profit = take_profit
        self.tag = tag
        self.created_ts = created_ts
        self.parent_id = parent_id
        self.status = OrderStatus.OPEN
        self.filled_qty = 0.0
        self.fill_price = 0.0
        self.oco: Order | None = None
        self.triggered = False
        self.reject_reason = ""

    @property
    def is_open(self) -> bool:
        return self.status == OrderStatus.OPEN

    def __repr__(self) -> str:
        return (
            f"Order(id={self.order_id}, {self.symbol}, {'BUY' if self.side > 0 else 'SELL'}, "
            f"{self.order_type.name}, qty={self.qty}, price={self.price}, stop={self.stop_price}, "
            f"status={self.status.name})"
        )


class Fill:
    """One execution. ``realized_pnl`` is the gross P&L realised by the closing part (before fees)."""

    __slots__ = (
        "fee",
        "fill_id",
        "liquidity",
        "order_id",
        "price",
        "qty",
        "realized_pnl",
        "side",
        "symbol",
        "tag",
        "ts",
    )

    def __init__(
        self,
        fill_id: int,
        order_id: int,
        ts: int,
        symbol: str,
        side: int,
        qty: float,
        price: float,
        fee: float,
        liquidity: str,
        realized_pnl: float,
        tag: str,
    ) -> None:
        self.fill_id = fill_id
        self.order_id = order_id
        self.ts = ts
        self.symbol = symbol
        self.side = side
        self.qty = qty
        self.price = price
        self.fee = fee
        self.liquidity = liquidity
        self.realized_pnl = realized_pnl
        self.tag = tag

    def __repr__(self) -> str:
        return (
            f"Fill({self.symbol} {'BUY' if self.side > 0 else 'SELL'} {self.qty} @ {self.price}, "
            f"fee={self.fee}, {self.liquidity})"
        )
