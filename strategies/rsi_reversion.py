"""RSI mean reversion: buy oversold dips, exit when RSI recovers to its middle level."""

from __future__ import annotations

import math

from pydantic import model_validator

from engine.strategy import Bar, Compatibility, Field, Series, Strategy, StrategyParams


class RsiReversionParams(StrategyParams):
    period: int = Field(14, ge=2, le=1000, description="RSI period, bars (Wilder smoothing)")
    oversold: float = Field(30.0, gt=0.0, lt=100.0, description="enter long when RSI falls below this")
    overbought: float = Field(70.0, gt=0.0, lt=100.0, description="enter short when RSI rises above this")
    exit_level: float = Field(50.0, gt=0.0, lt=100.0, description="exit when RSI crosses back through this")
    size_pct: float = Field(100.0, gt=0.0, le=100.0, description="percent of available cash per entry")
    allow_short: bool = Field(False, description="also fade overbought readings (perpetuals)")
    stop_loss_pct: float = Field(
        0.0, ge=0.0, lt=100.0, description="protective stop from the signal close, percent; 0 = none"
    )

    @model_validator(mode="after")
    def _ordered_levels(self) -> RsiReversionParams:
        if not self.oversold < self.exit_level < self.overbought:
            raise ValueError(
                f"levels must satisfy oversold < exit_level < overbought, got {self.oversold}, "
                f"{self.exit_level}, {self.overbought}"
            )
        return self


class RsiReversion(Strategy):
    """Long when RSI crosses below ``oversold`` (previous bar at or above it); the long is closed when
    RSI rises above ``exit_level``. With ``allow_short``, the mirror image on ``overbought``. Orders
    are market orders filled at the next bar's open."""

    type = "rsi_reversion"
    display_name = "RSI Mean Reversion"
    description = (
        "Buys when RSI drops below the oversold level and exits when it recovers above the exit level; "
        "optionally shorts overbought readings. Optional percentage stop loss."
    )
    version = "1.0.0"
    author = "tradengine"
    compatibility = Compatibility(market_types=("spot", "perpetual"))
    Params = RsiReversionParams
    params: RsiReversionParams

    def on_init(self) -> None:
        self._rsi: dict[str, Series] = {}
        self._prev: dict[str, float] = {}
        for symbol in self.market_data.symbols:
            series = self.market_data.indicator("rsi", symbol, period=self.params.period)
            assert isinstance(series, Series)
            self._rsi[symbol] = series
            self._prev[symbol] = math.nan

    def on_bar(self, bar: Bar) -> None:
        p = self.params
        symbol = bar.symbol
        r = self._rsi[symbol].value
        prev = self._prev[symbol]
        self._prev[symbol] = r
        held = self.positions.qty(symbol)
        if held > 0:
            if r > p.exit_level:
                self.orders.close(symbol, tag="exit")
        elif held < 0:
            if r < p.exit_level:
                self.orders.close(symbol, tag="exit")
        elif r < p.oversold <= prev:
            stop = bar.close * (1.0 - p.stop_loss_pct / 100.0) if p.stop_loss_pct else 0.0
            self.orders.buy(symbol, size_pct=p.size_pct, stop_loss=stop, tag="entry")
        elif p.allow_short and r > p.overbought >= prev:
            stop = bar.close * (1.0 + p.stop_loss_pct / 100.0) if p.stop_loss_pct else 0.0
            self.orders.sell(symbol, size_pct=p.size_pct, stop_loss=stop, tag="entry")
