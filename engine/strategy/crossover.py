"""A reusable moving-average crossover template for plugins (``sma_crossover``, ``ema_crossover``).

Signal (per symbol, on completed bars): with d = fast − slow,
* cross up when d > 0 and the previous bar's d ≤ 0 → go long (closing a short first);
* cross down when d < 0 and the previous bar's d ≥ 0 → close the long (and go short if allowed).
The first bar with both averages defined never signals (it has no previous d).
Entries are market orders sized by ``size_pct`` of available cash at the next bar's open, with the
entry fee reserved; optional stop-loss / take-profit brackets are set as percentages of the signal
bar's close.
"""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import Field, model_validator

__all__ = ["CrossoverParams", "Field", "MovingAverageCrossover"]

from engine.strategy.base import Strategy, StrategyParams
from engine.strategy.series import Bar, Series


class CrossoverParams(StrategyParams):
    fast: int = Field(10, ge=1, le=10_000, description="fast moving-average period, bars")
    slow: int = Field(30, ge=2, le=10_000, description="slow moving-average period, bars")
    size_pct: float = Field(100.0, gt=0.0, le=100.0, description="percent of available cash per entry")
    allow_short: bool = Field(False, description="go short on a cross down (perpetuals)")
    stop_loss_pct: float = Field(0.0, ge=0.0, lt=100.0, description="stop loss below/above entry, percent; 0 = none")
    take_profit_pct: float = Field(0.0, ge=0.0, le=1000.0, description="take profit, percent; 0 = none")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> CrossoverParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")
        return self


class _Leg:
    __slots__ = ("fast", "prev", "slow")

    def __init__(self, fast: Series, slow: Series) -> None:
        self.fast = fast
        self.slow = slow
        self.prev = math.nan


class MovingAverageCrossover(Strategy):
    """Template: subclasses set ``average`` to an indicator name ("sma" or "ema") and the metadata."""

    average: ClassVar[str] = "sma"
    Params = CrossoverParams
    params: CrossoverParams

    def on_init(self) -> None:
        p = self.params
        md = self.market_data
        self._legs: dict[str, _Leg] = {}
        for symbol in md.symbols:
            fast = md.indicator(self.average, symbol, period=p.fast)
            slow = md.indicator(self.average, symbol, period=p.slow)
            assert isinstance(fast, Series) and isinstance(slow, Series)
            self._legs[symbol] = _Leg(fast, slow)

    def on_bar(self, bar: Bar) -> None:
        leg = self._legs[bar.symbol]
        d = leg.fast.value - leg.slow.value
        prev = leg.prev
        leg.prev = d
        if d > 0.0 >= prev:
            self._cross(bar, 1)
        elif d < 0.0 <= prev:
            self._cross(bar, -1)

    def _cross(self, bar: Bar, direction: int) -> None:
        p = self.params
        symbol = bar.symbol
        held = self.positions.qty(symbol)
        if held * direction < 0:
            self.orders.close(symbol, tag="exit")
        if direction < 0 and not p.allow_short:
            return
        if held * direction > 0:
            return
        close = bar.close
        sl = close * (1.0 - direction * p.stop_loss_pct / 100.0) if p.stop_loss_pct else 0.0
        tp = close * (1.0 + direction * p.take_profit_pct / 100.0) if p.take_profit_pct else 0.0
        submit = self.orders.buy if direction > 0 else self.orders.sell
        submit(symbol, size_pct=p.size_pct, stop_loss=sl, take_profit=tp, tag="entry")
