"""Mean-reversion scalper (seed 004, Phase 4.3): fade 15-minute Bollinger-band extremes confirmed by
RSI, Stochastic RSI and a volume spike, with the 1-hour EMA as trend filter; partial take-profit at
the middle band, trailing remainder, RSI and time exits."""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import ValidationInfo, field_validator

from engine.strategy import (
    Bar,
    Compatibility,
    Field,
    Fill,
    Order,
    Series,
    Strategy,
    StrategyParams,
    timeframe_ns,
    timeframe_str,
)


def _seconds(timeframe: str) -> int:
    """Length of a timeframe string such as "15m", "4h" or "1d", in seconds (ValueError if malformed)."""
    try:
        return timeframe_ns(timeframe) // 1_000_000_000
    except ValueError as exc:  # the engine's ParameterError names a generic field: keep only the rule
        raise ValueError(getattr(exc, "rule", str(exc))) from None


def _canonical(seconds: int) -> str:
    """The engine's spelling of a timeframe ("240m" → "4h")."""
    return timeframe_str(seconds * 1_000_000_000)


class MeanReversionScalpParams(StrategyParams):
    entry_timeframe: str = Field(
        "15m",
        min_length=2,
        max_length=8,
        description="timeframe of the entry indicators (bands, RSI, StochRSI, ATR, volume), e.g. 15m; equal to "
        "the run's timeframe or a whole multiple of it",
    )
    filter_timeframe: str = Field(
        "1h",
        min_length=2,
        max_length=8,
        validate_default=True,
        description="timeframe of the trend-filter EMA, e.g. 1h; a whole multiple of entry_timeframe",
    )
    filter_ema_period: int = Field(50, ge=1, le=1000, description="filter-timeframe EMA period, bars")
    bb_period: int = Field(20, ge=2, le=1000, description="Bollinger band period (SMA middle band), bars")
    bb_k: float = Field(2.0, gt=0.0, le=10.0, description="Bollinger band width, population standard deviations")
    bb_width_max: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="optional regime filter: enter only when the band width (upper − lower) / middle is at most "
        "this fraction; 0 = off",
    )
    rsi_period: int = Field(7, ge=1, le=1000, description="RSI period, bars (Wilder)")
    rsi_oversold: float = Field(25.0, ge=0.0, le=100.0, description="long entries need RSI below this")
    rsi_overbought: float = Field(
        75.0, ge=0.0, le=100.0, validate_default=True, description="short entries need RSI above this"
    )
    stoch_rsi_period: int = Field(14, ge=1, le=1000, description="RSI period inside the Stochastic RSI, bars")
    stoch_period: int = Field(14, ge=1, le=1000, description="Stochastic RSI min/max window, bars")
    stoch_k: int = Field(3, ge=1, le=100, description="Stochastic RSI K smoothing (SMA), bars")
    stoch_d: int = Field(3, ge=1, le=100, description="Stochastic RSI D smoothing (SMA of K), bars")
    stoch_oversold: float = Field(
        20.0, ge=0.0, le=100.0, description="long entries need K crossing above D from below this (previous K)"
    )
    stoch_overbought: float = Field(
        80.0,
        ge=0.0,
        le=100.0,
        validate_default=True,
        description="short entries need K crossing below D from above this (previous K)",
    )
    volume_period: int = Field(20, ge=1, le=1000, description="period of the volume SMA, bars")
    volume_mult: float = Field(
        2.0, ge=0.0, le=100.0, description="enter only when the bar's volume exceeds this multiple of its SMA"
    )
    atr_period: int = Field(14, ge=1, le=1000, description="ATR period, bars (Wilder)")
    stop_atr: float = Field(1.5, gt=0.0, le=50.0, description="initial stop distance from the entry fill, in ATRs")
    partial_pct: float = Field(
        50.0,
        gt=0.0,
        le=100.0,
        description="percent of the entry quantity taken off when the close reaches the middle band; 100 = all",
    )
    trail_atr: float = Field(
        0.5,
        gt=0.0,
        le=50.0,
        description="after the partial take-profit, the stop trails this many ATRs behind the best high/low",
    )
    rsi_exit_low: float = Field(
        40.0, ge=0.0, le=100.0, description="a long is closed when RSI is back at or above this"
    )
    rsi_exit_high: float = Field(
        60.0, ge=0.0, le=100.0, validate_default=True, description="a short is closed when RSI is back at or below this"
    )
    rsi_exit_after_partial: bool = Field(
        False,
        description="also apply the RSI exit to the remainder after the partial take-profit (default: the "
        "remainder is left to the trailing stop and the time stop)",
    )
    max_bars: int = Field(
        12, ge=1, le=10_000, description="time stop: close after this many entry-timeframe candles held"
    )
    risk_pct: float = Field(
        1.0, gt=0.0, le=100.0, description="equity percent lost if the initial stop is hit (position sizing)"
    )
    margin_headroom_pct: float = Field(
        1.0,
        ge=0.0,
        lt=100.0,
        description="when the risk size is more than cash / free margin allows, buy this percent less than the "
        "affordable quantity at the signal close, so a slightly higher next-open fill is not rejected",
    )
    allow_short: bool = Field(True, description="also take short entries (ignored on spot instruments)")

    @field_validator("entry_timeframe", "filter_timeframe")
    @classmethod
    def _timeframe(cls, value: str, info: ValidationInfo) -> str:
        seconds = _seconds(value)
        if info.field_name == "filter_timeframe" and "entry_timeframe" in info.data:
            entry = _seconds(info.data["entry_timeframe"])
            if seconds <= entry or seconds % entry:
                raise ValueError(
                    f"must be longer than and a whole multiple of entry_timeframe "
                    f"({info.data['entry_timeframe']}), got {value!r}"
                )
        return _canonical(seconds)

    @field_validator("rsi_overbought", "stoch_overbought")
    @classmethod
    def _above_oversold(cls, value: float, info: ValidationInfo) -> float:
        low_name = "rsi_oversold" if info.field_name == "rsi_overbought" else "stoch_oversold"
        low = info.data.get(low_name)
        if low is not None and value <= low:
            raise ValueError(f"must be greater than {low_name} ({low}), got {value}")
        return value

    @field_validator("rsi_exit_high")
    @classmethod
    def _exit_band(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("rsi_exit_low")
        if low is not None and value < low:
            raise ValueError(f"must be at least rsi_exit_low ({low}), got {value}")
        return value


class _Feeds:
    """The series one symbol reads (entry timeframe unless named filter_*)."""

    __slots__ = (
        "atr",
        "bb_lower",
        "bb_middle",
        "bb_upper",
        "close",
        "filter_ema",
        "rsi",
        "stoch_d",
        "stoch_k",
        "tf_ts",
        "vol_sma",
        "volume",
    )

    def __init__(self, values: dict[str, Series], tf_ts: Series | None) -> None:
        self.close = values["close"]
        self.volume = values["volume"]
        self.vol_sma = values["vol_sma"]
        self.bb_upper = values["bb_upper"]
        self.bb_middle = values["bb_middle"]
        self.bb_lower = values["bb_lower"]
        self.rsi = values["rsi"]
        self.stoch_k = values["stoch_k"]
        self.stoch_d = values["stoch_d"]
        self.atr = values["atr"]
        self.filter_ema = values["filter_ema"]
        #: open time of the last closed entry-timeframe bar (None when it is the run's own timeframe)
        self.tf_ts = tf_ts


class _Trade:
    """Per-symbol trade state. Prices in quote currency, quantities in base units."""

    __slots__ = (
        "atr",
        "bars",
        "best",
        "can_short",
        "entry",
        "partial_done",
        "pending",
        "placed",
        "round_qty",
        "side",
        "sig_atr",
        "sig_stop",
        "stop",
        "stop_order",
    )

    def __init__(self, can_short: bool, round_qty: Callable[[float], float]) -> None:
        self.can_short = can_short
        self.round_qty = round_qty  # the instrument's lot rounding (down)
        self.pending: Order | None = None  # entry order not yet filled
        self.sig_atr = math.nan  # ATR of the signal bar of the pending entry
        self.sig_stop = 0.0  # bracket stop of the pending entry (signal close ∓ stop_atr × ATR)
        self.reset()

    def reset(self) -> None:
        self.side = 0  # +1 long, -1 short, 0 flat
        self.entry = 0.0  # entry fill price
        self.atr = math.nan  # ATR frozen at the signal bar
        self.stop = 0.0  # wanted stop level
        self.placed = 0.0  # level of the live stop order
        self.best = 0.0  # highest high (long) / lowest low (short) since the entry fill
        self.bars = 0  # entry-timeframe candles held (the entry candle is the first)
        self.partial_done = False  # middle band reached: partial taken, stop trailing
        self.stop_order: Order | None = None


class MeanReversionScalp(Strategy):
    """Mean-reversion scalper (seed 004, Phase 4.3), one position per symbol, many symbols.

    Units: prices in quote currency, quantities in base units, timestamps ns UTC. Defaults are the
    seed's numbers; every number is a parameter. "Entry timeframe" bars are 15m by default: when the
    run's timeframe is shorter, signals and candle counts use each close of an entry-timeframe bar and
    stops are managed on every base bar. The filter EMA (1h by default) is that of the last *closed*
    filter bar.

    Entry, at the close of an entry-timeframe bar, filled by a market order at the next open:

    * long: close < lower BB(20, 2), RSI(7) < 25, Stochastic RSI(14, 14, 3, 3) K crosses above D
      (previous K ≤ previous D, K > D now) with the previous K < 20, volume > 2 × SMA(volume, 20) (the
      SMA includes this bar), close > filter EMA(50);
    * short (``allow_short``, perpetuals only): close > upper BB, RSI(7) > 75, K crosses below D with
      the previous K > 80, the same volume rule, close < filter EMA(50);
    * optional regime filter (off by default): band width (upper − lower) / middle ≤ ``bb_width_max``.

    Size: ``risk.size_for_risk(symbol, close, stop, risk_pct)`` with the signal close as the entry
    estimate and stop = close ∓ 1.5 × ATR(14); when that is not affordable, 99 % of
    ``risk.max_qty(symbol, close)`` (``margin_headroom_pct``). ATR is that of the signal bar, frozen
    for the trade.

    Stop: a bracket stop at signal close ∓ 1.5 ATR is live from the fill; after the entry bar the
    stop sits at entry fill ∓ 1.5 ATR. Stops are reduce-only stop-market orders (cancelled and
    replaced when the level moves, never loosened once trailing; a level the close has already
    crossed fills at the next open).

    Management, at each entry-timeframe close, first rule that applies (exit orders are market
    orders filled at the next open):

    1. time stop: the position has been held for 12 candles (the entry candle counts as the first)
       → close all;
    2. take-profit: the close is at or beyond the middle band (≥ for a long, ≤ for a short) for the
       first time → reduce-only market order for 50 % of the position, i.e. of the entry quantity
       (rounded down to the lot; skipped if that is 0; a full close at 100 %), and from then on the
       stop (a reduce-only stop for whatever remains) trails 0.5 ATR behind the best high (long) /
       low (short) since the fill, updated at each base bar's close;
    3. RSI exit: RSI(7) is back at the 40–60 band from the entry side — RSI ≥ 40 for a long, ≤ 60
       for a short (a jump through the band counts) → close all. By default this applies only
       before the take-profit; the remainder is then left to the trailing stop and the time stop
       (``rsi_exit_after_partial`` extends it to the remainder).
    """

    type = "mean_reversion_scalp"
    display_name = "Mean Reversion Scalper"
    description = (
        "Fades 15-minute closes beyond the Bollinger bands when RSI(7), a Stochastic-RSI cross and a 2× volume "
        "spike agree and the 1-hour EMA(50) trend allows; 1.5 ATR stop, half off at the middle band with the "
        "rest trailing 0.5 ATR, RSI and 12-candle time exits. Risk-based sizing, long and short."
    )
    version = "1.0.0"
    author = "tradengine"
    compatibility = Compatibility(market_types=("spot", "perpetual"))
    Params = MeanReversionScalpParams
    params: MeanReversionScalpParams

    def on_init(self) -> None:
        p = self.params
        md = self.market_data
        htf = None if _seconds(md.timeframe) == _seconds(p.entry_timeframe) else p.entry_timeframe
        self._feeds: dict[str, _Feeds] = {}
        self._state: dict[str, _Trade] = {}
        for symbol in md.symbols:
            values: dict[str, Series] = {
                "close": md.series("close", symbol, timeframe=htf),
                "volume": md.series("volume", symbol, timeframe=htf),
            }
            for key, name, period in (
                ("vol_sma", "volume_sma", p.volume_period),
                ("rsi", "rsi", p.rsi_period),
                ("atr", "atr", p.atr_period),
            ):
                series = md.indicator(name, symbol, timeframe=htf, period=period)
                assert isinstance(series, Series)
                values[key] = series
            bands = md.indicator("bbands", symbol, timeframe=htf, period=p.bb_period, k=p.bb_k)
            stoch = md.indicator(
                "stochrsi",
                symbol,
                timeframe=htf,
                period=p.stoch_rsi_period,
                stoch_period=p.stoch_period,
                k_smooth=p.stoch_k,
                d_smooth=p.stoch_d,
            )
            trend = md.indicator("ema", symbol, timeframe=p.filter_timeframe, period=p.filter_ema_period)
            assert isinstance(bands, tuple) and isinstance(stoch, tuple) and isinstance(trend, Series)
            values["bb_upper"], values["bb_middle"], values["bb_lower"] = bands
            values["stoch_k"], values["stoch_d"] = stoch
            values["filter_ema"] = trend
            tf_ts = md.series("ts", symbol, timeframe=htf) if htf is not None else None
            self._feeds[symbol] = _Feeds(values, tf_ts)
            inst = md.instrument(symbol)
            self._state[symbol] = _Trade(inst.is_perpetual, inst.round_qty)

    # ------------------------------------------------------------------ callbacks
    def on_bar(self, bar: Bar) -> None:
        symbol = bar.symbol
        st = self._state[symbol]
        f = self._feeds[symbol]
        if st.pending is not None and not st.pending.is_open:
            st.pending = None  # rejected (e.g. margin): it never filled
        tf_ts = f.tf_ts
        new = tf_ts is None or tf_ts.value != tf_ts.prev
        if st.side:
            self._manage(bar, st, f, new)
        elif new and st.pending is None:
            self._enter(symbol, st, f)

    def on_order_filled(self, fill: Fill) -> None:
        symbol = fill.symbol
        st = self._state[symbol]
        pending = st.pending
        if pending is not None and fill.order_id == pending.order_id:
            st.pending = None
            st.reset()
            st.side = fill.side
            st.entry = st.best = fill.price
            st.atr = st.sig_atr
            st.stop = fill.price - fill.side * self.params.stop_atr * st.atr
            st.placed = st.sig_stop
            for order in self.orders.open_orders(symbol):
                if order.parent_id == fill.order_id:
                    st.stop_order = order  # the bracket stop, live from the fill
            return
        if st.side and self.positions.qty(symbol) == 0.0:
            if st.stop_order is not None:
                self.orders.cancel(st.stop_order.order_id)
            st.reset()

    # ------------------------------------------------------------------ rules
    def _manage(self, bar: Bar, st: _Trade, f: _Feeds, new: bool) -> None:
        p = self.params
        side = st.side
        if side > 0:
            if bar.high > st.best:
                st.best = bar.high
        elif bar.low < st.best:
            st.best = bar.low
        if new:
            st.bars += 1
            close = f.close.value
            if st.bars >= p.max_bars:
                self._exit(bar.symbol, st, "time_exit")
                return
            if not st.partial_done and (close - f.bb_middle.value) * side >= 0.0:
                st.partial_done = True
                held = abs(self.positions.qty(bar.symbol))
                qty = st.round_qty(held * (p.partial_pct / 100.0))
                if p.partial_pct >= 100.0 or qty >= held:
                    self._exit(bar.symbol, st, "tp_exit")
                    return
                if qty > 0.0:
                    send = self.orders.sell if side > 0 else self.orders.buy
                    send(bar.symbol, qty, reduce_only=True, tag="tp_partial")
            elif not st.partial_done or p.rsi_exit_after_partial:
                rsi = f.rsi.value
                if (rsi >= p.rsi_exit_low) if side > 0 else (rsi <= p.rsi_exit_high):
                    self._exit(bar.symbol, st, "rsi_exit")
                    return
        if st.partial_done:
            level = st.best - side * p.trail_atr * st.atr
            if (level - st.stop) * side > 0.0:
                st.stop = level
        if st.stop != st.placed and st.stop > 0.0:
            if st.stop_order is not None:
                self.orders.cancel(st.stop_order.order_id)
            send = self.orders.sell if side > 0 else self.orders.buy
            tag = "trail" if st.partial_done else "stop"
            st.stop_order = send(bar.symbol, 0.0, order_type="stop", stop_price=st.stop, reduce_only=True, tag=tag)
            st.placed = st.stop

    def _exit(self, symbol: str, st: _Trade, reason: str) -> None:
        if st.stop_order is not None:
            self.orders.cancel(st.stop_order.order_id)
            st.stop_order = None
        self.orders.close(symbol, tag=reason)

    def _enter(self, symbol: str, st: _Trade, f: _Feeds) -> None:
        p = self.params
        if not f.volume.value > p.volume_mult * f.vol_sma.value:
            return
        close = f.close.value
        k, d, kp, dp = f.stoch_k.value, f.stoch_d.value, f.stoch_k.prev, f.stoch_d.prev
        if close < f.bb_lower.value:
            if not (
                f.rsi.value < p.rsi_oversold
                and kp <= dp
                and k > d
                and kp < p.stoch_oversold
                and close > f.filter_ema.value
            ):
                return
            side = 1
        elif close > f.bb_upper.value:
            if not (
                p.allow_short
                and st.can_short
                and f.rsi.value > p.rsi_overbought
                and kp >= dp
                and k < d
                and kp > p.stoch_overbought
                and close < f.filter_ema.value
            ):
                return
            side = -1
        else:
            return
        if p.bb_width_max > 0.0:
            middle = f.bb_middle.value
            if not (middle > 0.0 and (f.bb_upper.value - f.bb_lower.value) / middle <= p.bb_width_max):
                return
        atr = f.atr.value
        stop = close - side * p.stop_atr * atr
        if not (atr > 0.0 and stop > 0.0):
            return
        qty = self.risk.size_for_risk(symbol, close, stop, p.risk_pct)
        cap = self.risk.max_qty(symbol, close)
        if qty >= cap:  # the risk size is not affordable: keep some headroom below the cap
            qty = cap * (1.0 - p.margin_headroom_pct / 100.0)
        if not qty > 0.0:
            return
        send = self.orders.buy if side > 0 else self.orders.sell
        st.pending = send(symbol, qty, stop_loss=stop, tag="long" if side > 0 else "short")
        st.sig_atr = atr
        st.sig_stop = stop
