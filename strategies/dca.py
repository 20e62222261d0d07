"""Dollar-cost averaging bot: a base order, safety orders on dips and a take-profit on the average entry."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from engine.strategy import BUY, SELL, Bar, Compatibility, Field, Fill, Order, Strategy, StrategyParams


def safety_deviations(step_pct: float, step_scale: float, count: int) -> list[float]:
    """Price deviations (percent from the base fill price) of the safety orders 1 … ``count``:
    d₁ = step, dₖ = dₖ₋₁ + step × step_scale^(k−1)."""
    out: list[float] = []
    total = 0.0
    for k in range(count):
        total += step_pct * step_scale**k
        out.append(total)
    return out


class DcaParams(StrategyParams):
    mode: Literal["safety_orders", "periodic"] = Field(
        "safety_orders",
        description=(
            "safety_orders: base order + safety orders on adverse moves + take-profit (a DCA bot); "
            "periodic: a fixed quote amount every periodic_interval_bars bars (classic dollar-cost averaging)"
        ),
    )
    side: Literal["long", "short"] = Field("long", description="deal direction; short needs perpetuals")
    base_order_pct: float = Field(
        10.0, gt=0.0, le=100.0, description="base order notional, percent of equity at the deal start (safety_orders)"
    )
    safety_order_pct: float = Field(
        5.0,
        gt=0.0,
        le=100.0,
        description="first safety order notional, percent of equity at the deal start (safety_orders)",
    )
    max_safety_orders: int = Field(5, ge=0, le=50, description="number of safety orders per deal (safety_orders)")
    safety_step_pct: float = Field(
        1.5, gt=0.0, lt=100.0, description="deviation of the first safety order from the base fill price, percent"
    )
    step_scale: float = Field(
        1.2, ge=0.1, le=10.0, description="each safety order's deviation step is the previous step × step_scale"
    )
    volume_scale: float = Field(
        1.5, ge=0.1, le=10.0, description="each safety order's notional is the previous one's × volume_scale"
    )
    take_profit_pct: float = Field(
        1.5,
        ge=0.0,
        le=1000.0,
        description="take-profit distance from the average entry, percent; 0 = none (periodic mode only)",
    )
    stop_loss_pct: float = Field(
        0.0,
        ge=0.0,
        lt=100.0,
        description="close the deal when a bar closes this percent beyond the average entry (against it); 0 = none",
    )
    cooldown_bars: int = Field(
        0, ge=0, le=1_000_000, description="bars to wait after a deal closes before the next one starts"
    )
    periodic_amount: float = Field(
        1000.0, gt=0.0, le=1e12, description="quote amount bought every interval (periodic mode), quote currency"
    )
    periodic_interval_bars: int = Field(
        24, ge=1, le=1_000_000, description="bars between two periodic buys (periodic mode)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> DcaParams:
        if self.mode == "safety_orders" and self.take_profit_pct <= 0.0:
            raise ValueError("take_profit_pct must be > 0 in safety_orders mode (a deal closes at its take-profit)")
        if self.side == "short" and self.take_profit_pct >= 100.0:
            raise ValueError(f"take_profit_pct ({self.take_profit_pct:g}) must be below 100 for short deals")
        if self.mode == "safety_orders" and self.max_safety_orders:
            last = safety_deviations(self.safety_step_pct, self.step_scale, self.max_safety_orders)[-1]
            if last >= 100.0:
                raise ValueError(
                    f"safety_step_pct / step_scale / max_safety_orders: the last safety order's deviation "
                    f"({last:g} %) must be below 100 %"
                )
        return self


class _Deal:
    """One symbol's deal state."""

    __slots__ = ("closed", "entry", "equity", "next_buy", "open", "resume_at", "safety", "tp")

    def __init__(self) -> None:
        self.open = False  # a deal is running (its first entry was placed)
        self.closed = False  # the deal's position was closed in the current bar (cooldown starts at its close)
        self.resume_at = 0  # bar index from which a new deal may start
        self.equity = 0.0  # equity at the deal start, quote currency
        self.entry: Order | None = None  # pending market entry (base order or periodic buy)
        self.safety: list[Order] = []
        self.tp: Order | None = None
        self.next_buy = 0  # bar index of the next periodic buy


class DcaStrategy(Strategy):
    """DCA bot (source: seed 002 names a DCA strategy without rules; this is the common DCA-bot design).

    Units: prices in quote currency, quantities in base units, times in ns UTC; percents of price or of
    equity. ``s`` = +1 for long deals, −1 for short deals (perpetuals); "below" means "against the deal".

    **safety_orders mode** (default), per symbol:

    1. **Base order.** When no deal is running (and the cooldown is over), at the close C of bar k: a
       market order for ``E × base_order_pct/100 / C`` (rounded down to the lot), E = equity at that
       close. It fills at the next bar's open (the base price B).
    2. **Safety orders.** On the base fill, ``max_safety_orders`` resting limit orders are placed at
       ``B × (1 − s × dₖ/100)`` with d₁ = ``safety_step_pct`` and dₖ = dₖ₋₁ + safety_step_pct ×
       step_scale^(k−1); safety order k has notional ``E × safety_order_pct/100 × volume_scale^(k−1)``
       and quantity = notional / its price, rounded down to the lot.
    3. **Take-profit.** After every entry fill (base or safety), the take-profit is (re)placed as one
       reduce-only limit order for the whole position at ``A × (1 + s × take_profit_pct/100)``, A = the
       position's average entry price; the previous one is cancelled.
    4. **Stop-loss** (``stop_loss_pct`` > 0): when a bar closes beyond ``A × (1 − s × stop_loss_pct/100)``
       the deal's orders are cancelled and the position is closed at market (next open).
    5. **Deal end and cooldown.** When a fill leaves the position flat (take-profit, stop, liquidation)
       the remaining orders are cancelled; if that happened in bar j, the next deal's base order is
       placed at the close of bar ``j + cooldown_bars``.

    **periodic mode** (classic dollar-cost averaging): at the close of the deal's first bar and then
    every ``periodic_interval_bars`` bars, a market order for ``periodic_amount / C`` (next open). If
    ``take_profit_pct`` > 0 the take-profit of rule 3 is kept on the average entry, and rules 4-5 apply;
    with ``take_profit_pct`` = 0 (and no stop) the position only accumulates.

    Orders placed in a bar (in ``on_bar`` or on a fill) are active from the next bar (paper rules). A
    safety order the venue rejects (e.g. not enough cash) is dropped; a rejected base order is retried
    at the next close. Budget: base + Σ safety notionals is not capped here; keep it within the account
    (the defaults commit 10 % + 65.9 % of the deal-start equity).
    """

    type = "dca"
    display_name = "DCA Bot"
    description = (
        "Dollar-cost averaging: a base order, safety orders at scaled deviations with scaled sizes and a "
        "take-profit on the average entry, restarting after a cooldown; or a fixed quote amount every N bars."
    )
    version = "1.0.0"
    author = "tradengine"
    compatibility = Compatibility(market_types=("spot", "perpetual"))
    Params = DcaParams
    params: DcaParams

    def on_init(self) -> None:
        md = self.market_data
        if self.params.side == "short":
            spot = [s for s in md.symbols if not md.instrument(s).is_perpetual]
            if spot:
                raise ValueError(f"side 'short' needs perpetual instruments; spot: {', '.join(spot)}")
        self._sign = BUY if self.params.side == "long" else SELL
        self._deals: dict[str, _Deal] = {s: _Deal() for s in md.symbols}
        self._deviations = safety_deviations(
            self.params.safety_step_pct, self.params.step_scale, self.params.max_safety_orders
        )

    # ------------------------------------------------------------------ orders
    def _send(self, side: int, symbol: str, qty: float, **kw: Any) -> Order:
        send = self.orders.buy if side == BUY else self.orders.sell
        return send(symbol, qty, **kw)

    def _qty(self, symbol: str, notional: float, price: float, field: str) -> float:
        inst = self.market_data.instrument(symbol)
        qty = inst.round_qty(notional / price)
        if qty <= 0.0 or qty < inst.min_qty:
            raise ValueError(
                f"{field}: the order quantity at {price:g} ({qty:g}) is below the instrument's minimum "
                f"(lot {inst.lot_size:g}, min {inst.min_qty:g})"
            )
        return qty

    def _end_deal(self, symbol: str) -> None:
        deal = self._deals[symbol]
        self.orders.cancel_all(symbol)
        deal.open = False
        deal.closed = True
        deal.entry = None
        deal.safety = []
        deal.tp = None

    def _place_take_profit(self, symbol: str) -> None:
        deal = self._deals[symbol]
        if deal.tp is not None:
            self.orders.cancel(deal.tp.order_id)
            deal.tp = None
        pct = self.params.take_profit_pct
        pos = self.positions.position(symbol)
        if pct <= 0.0 or pos.qty == 0.0:
            return
        s = self._sign
        price = pos.avg_price * (1.0 + s * pct / 100.0)
        deal.tp = self._send(-s, symbol, abs(pos.qty), order_type="limit", price=price, reduce_only=True, tag="tp")

    # ------------------------------------------------------------------ callbacks
    def on_bar(self, bar: Bar) -> None:
        p = self.params
        symbol = bar.symbol
        deal = self._deals[symbol]
        k = bar.index
        if deal.closed:
            deal.closed = False
            deal.resume_at = k + p.cooldown_bars
        if not deal.open:
            if k >= deal.resume_at:
                self._start(symbol, deal, bar)
            return
        entry = deal.entry
        if entry is not None and not entry.is_open:  # rejected by the venue (a fill clears it)
            deal.entry = None
            if self.positions.qty(symbol) == 0.0:  # the deal never started: retry now
                deal.open = False
                self._start(symbol, deal, bar)
                return
        s = self._sign
        held = self.positions.qty(symbol)
        if p.stop_loss_pct > 0.0 and held != 0.0:
            avg = self.positions.position(symbol).avg_price
            if (bar.close - avg * (1.0 - s * p.stop_loss_pct / 100.0)) * s < 0.0:
                self.orders.cancel_all(symbol)
                deal.safety = []
                deal.tp = None
                deal.entry = None
                self.orders.close(symbol, tag="stop")
                return
        if p.mode == "periodic" and k >= deal.next_buy:
            self._periodic_buy(symbol, deal, bar)

    def _start(self, symbol: str, deal: _Deal, bar: Bar) -> None:
        p = self.params
        deal.open = True
        deal.equity = self.positions.equity()
        if p.mode == "periodic":
            self._periodic_buy(symbol, deal, bar)
            return
        qty = self._qty(symbol, deal.equity * p.base_order_pct / 100.0, bar.close, "base_order_pct")
        deal.entry = self._send(self._sign, symbol, qty, tag="base")

    def _periodic_buy(self, symbol: str, deal: _Deal, bar: Bar) -> None:
        p = self.params
        qty = self._qty(symbol, p.periodic_amount, bar.close, "periodic_amount")
        deal.entry = self._send(self._sign, symbol, qty, tag="periodic")
        deal.next_buy = bar.index + p.periodic_interval_bars

    def on_order_filled(self, fill: Fill) -> None:
        symbol = fill.symbol
        deal = self._deals[symbol]
        if self.positions.qty(symbol) == 0.0:  # take-profit, stop or liquidation closed the deal
            if deal.open:
                self._end_deal(symbol)
            return
        if fill.side != self._sign:
            return
        if fill.tag == "base":
            deal.entry = None
            p = self.params
            s = self._sign
            notional = deal.equity * p.safety_order_pct / 100.0
            for k, dev in enumerate(self._deviations):
                price = fill.price * (1.0 - s * dev / 100.0)
                qty = self._qty(symbol, notional * p.volume_scale**k, price, "safety_order_pct")
                order = self._send(s, symbol, qty, order_type="limit", price=price, tag=f"safety:{k + 1}")
                deal.safety.append(order)
        elif fill.tag == "periodic":
            deal.entry = None
        self._place_take_profit(symbol)


__all__ = ["DcaParams", "DcaStrategy", "safety_deviations"]
