"""Grid trading: resting limit orders at evenly spaced price levels, each paired with an exit one level away."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from engine.strategy import BUY, SELL, Bar, Compatibility, Field, Fill, Order, Strategy, StrategyParams


class GridTradingParams(StrategyParams):
    grid_levels: int = Field(
        10, ge=2, le=20, description="number of price levels in the grid, lower and upper included"
    )
    grid_spacing_pct: float = Field(
        1.0,
        ge=0.1,
        le=10.0,
        description=(
            "spacing used for the default range, percent: lower/upper = first close × (1 ∓ spacing/100 × "
            "grid_levels/2); ignored when lower_price and upper_price are given"
        ),
    )
    lower_price: float | None = Field(
        None, gt=0.0, le=1e12, description="lowest grid level, quote currency; None = from grid_spacing_pct"
    )
    upper_price: float | None = Field(
        None, gt=0.0, le=1e12, description="highest grid level, quote currency; None = from grid_spacing_pct"
    )
    mode: Literal["long", "short", "neutral"] = Field(
        "long",
        description=(
            "long: buy levels below the price, sell one level up; short (perpetuals): sell levels above the "
            "price, buy back one level down; neutral (perpetuals): both"
        ),
    )
    order_size_pct: float = Field(
        10.0,
        gt=0.0,
        le=100.0,
        description="notional per level as a percent of equity at grid setup (qty = equity × pct/100 / level price)",
    )
    order_qty: float = Field(
        0.0, ge=0.0, le=1e12, description="fixed quantity per level, base units; 0 = size by order_size_pct"
    )
    stop_pct: float = Field(
        0.0,
        ge=0.0,
        lt=100.0,
        description=(
            "stop the grid when a bar closes below lower × (1 − stop_pct/100) (above upper × (1 + stop_pct/100) "
            "for short grids): cancel all orders, close the position; 0 = no stop"
        ),
    )
    recenter: bool = Field(
        False,
        description=(
            "when a bar closes outside [lower, upper] (and the stop did not fire), close the position and rebuild "
            "the same-shaped grid centred on that close"
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> GridTradingParams:
        if (self.lower_price is None) != (self.upper_price is None):
            raise ValueError("lower_price and upper_price must be given together (or neither)")
        if self.lower_price is not None and self.upper_price is not None and not self.lower_price < self.upper_price:
            raise ValueError(f"lower_price ({self.lower_price}) must be below upper_price ({self.upper_price})")
        if self.lower_price is None and self.grid_spacing_pct * self.grid_levels / 2.0 >= 100.0:
            raise ValueError(
                f"grid_spacing_pct × grid_levels / 2 ({self.grid_spacing_pct * self.grid_levels / 2.0:g} %) must be "
                "below 100 so that the default lower bound stays above 0"
            )
        if {"order_qty", "order_size_pct"} <= self.model_fields_set and self.order_qty > 0.0:
            raise ValueError("give order_size_pct or order_qty, not both")
        return self


class _Grid:
    """One symbol's grid: level prices, per-level entry side and quantity, and the live orders."""

    __slots__ = ("entries", "exits", "halted", "levels", "lower", "qty", "side", "upper")

    def __init__(self) -> None:
        self.lower = 0.0
        self.upper = 0.0
        self.levels: list[float] = []
        self.side: list[int] = []  # entry side of each level: BUY, SELL or 0 (no entry here)
        self.qty: list[float] = []  # entry quantity of each level, base units
        self.entries: list[Order | None] = []  # resting entry order of each level
        self.exits: list[Order | None] = []  # resting exit order of the lot bought/sold at each level
        self.halted = False


class GridTradingStrategy(Strategy):
    """Grid trading (source: seed 002, ``GridTradingStrategy``; exits and re-arming made explicit).

    Units: prices in quote currency, quantities in base units, times in ns UTC.

    Rules, per traded symbol:

    1. **Setup** at the close C of the first bar: ``lower``/``upper`` are the parameters, or
       ``C × (1 ∓ grid_spacing_pct/100 × grid_levels/2)``. The ``grid_levels`` levels are evenly spaced:
       ``level_i = lower + i × (upper − lower)/(grid_levels − 1)``, i = 0 … grid_levels − 1.
    2. **Entries.** ``long`` mode: a resting limit BUY at every level strictly below C (the top level
       excepted, it has no level above). ``short`` mode (perpetuals): a limit SELL at every level strictly
       above C (the bottom level excepted). ``neutral`` (perpetuals): both. Quantity per level:
       ``order_qty`` if > 0, else ``equity × order_size_pct/100 / level_i`` (equity at setup, marked at
       C), rounded down to the lot.
    3. **Exits.** When the entry at level i fills (quantity q), a limit order for q on the other side is
       placed one level away: a SELL at ``level_{i+1}`` for a long lot, a BUY at ``level_{i−1}`` for a
       short lot (the seed's take-profit "one spacing above", placed on the grid's own levels). In long
       and short modes it is reduce-only; in neutral mode long and short lots net in one position, so
       exits are plain limits (the net position always equals the sum of the open lots).
    4. **Re-arm.** When the exit of level i fills, the entry at level i is placed again.
    5. **Stop** (``stop_pct`` > 0): when a bar closes below ``lower × (1 − stop_pct/100)`` (long and
       neutral) or above ``upper × (1 + stop_pct/100)`` (short and neutral), every order of the symbol
       is cancelled, the position is closed at market and the grid stays off.
    6. **Re-centring** (``recenter``): when a bar closes outside ``[lower, upper]`` without stopping,
       every order is cancelled, the position is closed at market and a grid of the same shape is built
       around that close: ``lower' = C × lower/m``, ``upper' = C × upper/m`` with ``m = (lower + upper)/2``,
       sized from the equity at that close (rules 1-2).

    Orders placed in a bar (in ``on_bar`` or on a fill) are active from the next bar (paper rules): a
    limit fills at its price when the bar's path reaches it, or at the open when the bar opens through
    it. An entry rejected by the venue (e.g. not enough cash) is placed again at the next bar close; an
    exit cancelled by the venue drops its lot and re-arms the entry. A liquidation halts the grid.
    """

    type = "grid_trading"
    display_name = "Grid Trading"
    description = (
        "Places resting limit orders at evenly spaced price levels; each filled level is paired with an exit one "
        "level away and re-armed when that exit fills. Long, short or neutral grids, optional stop and re-centring."
    )
    version = "1.0.0"
    author = "tradengine"
    compatibility = Compatibility(market_types=("spot", "perpetual"))
    Params = GridTradingParams
    params: GridTradingParams

    def on_init(self) -> None:
        md = self.market_data
        if self.params.mode != "long":
            spot = [s for s in md.symbols if not md.instrument(s).is_perpetual]
            if spot:
                raise ValueError(f"mode {self.params.mode!r} needs perpetual instruments; spot: {', '.join(spot)}")
        self._grids: dict[str, _Grid] = {s: _Grid() for s in md.symbols}
        #: order id → (symbol, level, is_entry) of every live grid order
        self._orders: dict[int, tuple[str, int, bool]] = {}

    # ------------------------------------------------------------------ grid construction
    def _setup(self, symbol: str, close: float, lower: float, upper: float) -> None:
        p = self.params
        grid = self._grids[symbol]
        n = p.grid_levels
        step = (upper - lower) / (n - 1)
        grid.lower, grid.upper = lower, upper
        grid.levels = [lower + i * step for i in range(n)]
        inst = self.market_data.instrument(symbol)
        equity = self.positions.equity()
        budget = equity * p.order_size_pct / 100.0
        grid.side, grid.qty = [], []
        for i, level in enumerate(grid.levels):
            side = 0
            if p.mode != "short" and level < close and i < n - 1:
                side = BUY
            elif p.mode != "long" and level > close and i > 0:
                side = SELL
            qty = inst.round_qty(p.order_qty if p.order_qty > 0.0 else budget / level)
            if side and (qty <= 0.0 or qty < inst.min_qty):
                field = "order_qty" if p.order_qty > 0.0 else "order_size_pct"
                raise ValueError(
                    f"{field}: the quantity at level {level:g} ({qty:g}) is below the instrument's minimum "
                    f"(lot {inst.lot_size:g}, min {inst.min_qty:g})"
                )
            grid.side.append(side)
            grid.qty.append(qty)
        grid.entries = [None] * n
        grid.exits = [None] * n
        for i in range(n):
            if grid.side[i]:
                self._place_entry(symbol, grid, i)

    def _place_entry(self, symbol: str, grid: _Grid, i: int) -> None:
        side = grid.side[i]
        send = self.orders.buy if side == BUY else self.orders.sell
        order = send(symbol, grid.qty[i], order_type="limit", price=grid.levels[i], tag=f"entry:{i}")
        grid.entries[i] = order
        self._orders[order.order_id] = (symbol, i, True)

    def _place_exit(self, symbol: str, grid: _Grid, i: int, qty: float) -> None:
        side = grid.side[i]
        j = i + 1 if side == BUY else i - 1
        send = self.orders.sell if side == BUY else self.orders.buy
        reduce_only = self.params.mode != "neutral"
        order = send(symbol, qty, order_type="limit", price=grid.levels[j], reduce_only=reduce_only, tag=f"exit:{i}")
        grid.exits[i] = order
        self._orders[order.order_id] = (symbol, i, False)

    def _flatten(self, symbol: str, tag: str) -> None:
        """Cancel every order of ``symbol``, forget them and close its position at market."""
        self.orders.cancel_all(symbol)
        grid = self._grids[symbol]
        for orders in (grid.entries, grid.exits):
            for k, order in enumerate(orders):
                if order is not None:
                    self._orders.pop(order.order_id, None)
                    orders[k] = None
        self.orders.close(symbol, tag=tag)

    # ------------------------------------------------------------------ callbacks
    def on_bar(self, bar: Bar) -> None:
        grid = self._grids[bar.symbol]
        if grid.halted:
            return
        p = self.params
        close = bar.close
        if not grid.levels:
            if p.lower_price is not None and p.upper_price is not None:
                lower, upper = p.lower_price, p.upper_price
            else:
                half = p.grid_spacing_pct / 100.0 * p.grid_levels / 2.0
                lower, upper = close * (1.0 - half), close * (1.0 + half)
            self._setup(bar.symbol, close, lower, upper)
            return
        if p.stop_pct > 0.0:
            below = p.mode != "short" and close < grid.lower * (1.0 - p.stop_pct / 100.0)
            above = p.mode != "long" and close > grid.upper * (1.0 + p.stop_pct / 100.0)
            if below or above:
                self._flatten(bar.symbol, "stop")
                grid.halted = True
                return
        if p.recenter and not grid.lower <= close <= grid.upper:
            mid = (grid.lower + grid.upper) / 2.0
            lower, upper = close * grid.lower / mid, close * grid.upper / mid
            self._flatten(bar.symbol, "recenter")
            self._setup(bar.symbol, close, lower, upper)
            return
        # orders the venue rejected or cancelled (never filled: fills replace them in on_order_filled)
        for i in range(len(grid.levels)):
            entry = grid.entries[i]
            if entry is not None and not entry.is_open:
                self._orders.pop(entry.order_id, None)
                self._place_entry(bar.symbol, grid, i)
            exit_ = grid.exits[i]
            if exit_ is not None and not exit_.is_open:
                self._orders.pop(exit_.order_id, None)
                grid.exits[i] = None
                self._place_entry(bar.symbol, grid, i)

    def on_order_filled(self, fill: Fill) -> None:
        if fill.tag == "liquidation":
            grid = self._grids[fill.symbol]
            self._flatten(fill.symbol, "liquidation")
            grid.halted = True
            return
        known = self._orders.pop(fill.order_id, None)
        if known is None:  # a stop / re-centring close
            return
        symbol, i, is_entry = known
        grid = self._grids[symbol]
        if is_entry:
            grid.entries[i] = None
            self._place_exit(symbol, grid, i, fill.qty)
        else:
            grid.exits[i] = None
            self._place_entry(symbol, grid, i)


__all__ = ["GridTradingParams", "GridTradingStrategy"]
