"""Donchian channel breakout with an ATR protective stop (turtle-style trend following)."""

from __future__ import annotations

from pydantic import model_validator

from engine.strategy import Bar, Compatibility, Field, Series, Strategy, StrategyParams


class BreakoutParams(StrategyParams):
    entry_period: int = Field(20, ge=2, le=1000, description="bars of the entry channel")
    exit_period: int = Field(10, ge=2, le=1000, description="bars of the exit channel")
    atr_period: int = Field(14, ge=1, le=1000, description="ATR period for the stop, bars")
    atr_stop: float = Field(2.0, ge=0.0, le=50.0, description="stop distance in ATRs from the signal close; 0 = none")
    size_pct: float = Field(100.0, gt=0.0, le=100.0, description="percent of available cash per entry")
    allow_short: bool = Field(False, description="also trade downside breakouts (perpetuals)")

    @model_validator(mode="after")
    def _exit_not_longer(self) -> BreakoutParams:
        if self.exit_period > self.entry_period:
            raise ValueError(f"exit_period ({self.exit_period}) must not exceed entry_period ({self.entry_period})")
        return self


class _Channels:
    __slots__ = ("atr", "entry_lower", "entry_upper", "exit_lower", "exit_upper")

    def __init__(self, entry: tuple[Series, ...], exit_: tuple[Series, ...], atr: Series) -> None:
        self.entry_upper, self.entry_lower = entry
        self.exit_upper, self.exit_lower = exit_
        self.atr = atr


class Breakout(Strategy):
    """Long when the close breaks above the highest high of the previous ``entry_period`` bars;
    the long is closed when the close breaks below the lowest low of the previous ``exit_period``
    bars, or by a stop ``atr_stop`` ATRs below the signal close. Shorts mirror it when allowed."""

    type = "breakout"
    display_name = "Donchian Breakout"
    description = (
        "Enters on a close beyond the prior N-bar high (or low, when shorting is allowed), exits on a "
        "close beyond the prior M-bar opposite extreme, with an ATR-based protective stop."
    )
    version = "1.0.0"
    author = "tradengine"
    compatibility = Compatibility(market_types=("spot", "perpetual"))
    Params = BreakoutParams
    params: BreakoutParams

    def on_init(self) -> None:
        p = self.params
        md = self.market_data
        self._ch: dict[str, _Channels] = {}
        for symbol in md.symbols:
            entry = md.indicator("donchian", symbol, period=p.entry_period)
            exit_ = md.indicator("donchian", symbol, period=p.exit_period)
            atr = md.indicator("atr", symbol, period=p.atr_period)
            assert isinstance(entry, tuple) and isinstance(exit_, tuple) and isinstance(atr, Series)
            self._ch[symbol] = _Channels(entry, exit_, atr)

    def on_bar(self, bar: Bar) -> None:
        p = self.params
        ch = self._ch[bar.symbol]
        close = bar.close
        held = self.positions.qty(bar.symbol)
        if held > 0:
            if close < ch.exit_lower.prev:
                self.orders.close(bar.symbol, tag="exit")
        elif held < 0:
            if close > ch.exit_upper.prev:
                self.orders.close(bar.symbol, tag="exit")
        elif close > ch.entry_upper.prev:
            stop = close - p.atr_stop * ch.atr.value if p.atr_stop else 0.0
            self.orders.buy(bar.symbol, size_pct=p.size_pct, stop_loss=max(stop, 0.0), tag="entry")
        elif p.allow_short and close < ch.entry_lower.prev:
            stop = close + p.atr_stop * ch.atr.value if p.atr_stop else 0.0
            self.orders.sell(bar.symbol, size_pct=p.size_pct, stop_loss=stop, tag="entry")
