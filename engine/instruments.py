"""Instrument specifications: market kind, tick and lot size, fees, multiplier, leverage.

Validated once at the edge (pydantic, unknown fields rejected); the hot path reads plain attributes.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MarketKind = Literal["spot", "perpetual"]


def _decimals(step: float) -> int:
    """Number of decimal places of ``step`` (0.001 → 3, 1 → 0, 0.5 → 1)."""
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    return max(0, -int(exponent))


class Instrument(BaseModel):
    """A tradable instrument.

    Attributes:
        symbol: venue symbol, e.g. "BTCUSDT".
        kind: "spot" (cash settled: buying pays the notional, no shorting, no leverage) or
            "perpetual" (margin account: cash is the wallet balance, P&L is realised on closing,
            funding is settled on open positions, shorting and leverage allowed).
        tick_size: price increment in quote currency; 0 disables price rounding.
        lot_size: quantity increment in base units; 0 disables quantity rounding.
        min_qty: smallest order quantity in base units after rounding.
        maker_fee, taker_fee: fee rates as fractions of traded notional (0.001 = 0.1 %).
        multiplier: contract multiplier (quote value of one unit per unit of price).
        leverage: maximum leverage for perpetuals (initial margin = notional / leverage); 1 for spot.
        maintenance_margin: maintenance margin rate as a fraction of notional (perpetuals).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str = Field(min_length=1)
    kind: MarketKind = "spot"
    tick_size: float = Field(default=0.0, ge=0.0)
    lot_size: float = Field(default=0.0, ge=0.0)
    min_qty: float = Field(default=0.0, ge=0.0)
    maker_fee: float = Field(default=0.0, ge=0.0, lt=0.1)
    taker_fee: float = Field(default=0.0, ge=0.0, lt=0.1)
    multiplier: float = Field(default=1.0, gt=0.0)
    leverage: float = Field(default=1.0, ge=1.0, le=125.0)
    maintenance_margin: float = Field(default=0.005, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _spot_has_no_leverage(self) -> Instrument:
        if self.kind == "spot" and self.leverage != 1.0:
            raise ValueError("leverage must be 1 for spot instruments")
        return self

    @property
    def is_perpetual(self) -> bool:
        return self.kind == "perpetual"

    def round_qty(self, qty: float) -> float:
        """Round a quantity (base units, >= 0) DOWN to the lot size; unchanged when lot_size is 0."""
        lot = self.lot_size
        if lot <= 0.0:
            return qty
        units = math.floor(qty / lot * (1.0 + 1e-12))
        return round(units * lot, _decimals(lot))

    def round_price(self, price: float, direction: int = 0) -> float:
        """Round a price to the tick size: 0 = nearest, +1 = up, -1 = down; unchanged when tick is 0."""
        tick = self.tick_size
        if tick <= 0.0:
            return price
        ticks = price / tick
        if direction > 0:
            n = math.ceil(ticks * (1.0 - 1e-12))
        elif direction < 0:
            n = math.floor(ticks * (1.0 + 1e-12))
        else:
            n = round(ticks)
        return round(n * tick, _decimals(tick))
