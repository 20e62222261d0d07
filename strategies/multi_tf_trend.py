"""Multi-timeframe trend following (seed 004, Phase 4.2): a daily trend filter, 4-hour EMA-cross
entries, an ATR stop that becomes a trailing stop once the trade is 3 ATR in profit."""

from __future__ import annotations

import math

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


class MultiTfTrendParams(StrategyParams):
    entry_timeframe: str = Field(
        "4h",
        min_length=2,
        max_length=8,
        description="timeframe of the entry indicators (EMAs, RSI, ATR, volume), e.g. 4h; equal to the run's "
        "timeframe or a whole multiple of it",
    )
    filter_timeframe: str = Field(
        "1d",
        min_length=2,
        max_length=8,
        validate_default=True,
        description="timeframe of the trend filter (EMA, ADX), e.g. 1d; a whole multiple of entry_timeframe",
    )
    filter_ema_period: int = Field(50, ge=1, le=1000, description="filter-timeframe EMA period, bars")
    adx_period: int = Field(14, ge=1, le=1000, description="filter-timeframe ADX period, bars (Wilder)")
    adx_entry: float = Field(25.0, ge=0.0, le=100.0, description="enter only while the filter ADX is above this")
    adx_exit: float = Field(
        20.0,
        ge=0.0,
        le=100.0,
        validate_default=True,
        description="close the position when the filter ADX falls below this",
    )
    ema_fast: int = Field(9, ge=1, le=1000, description="fast entry-timeframe EMA period, bars")
    ema_slow: int = Field(
        21, ge=2, le=1000, validate_default=True, description="slow entry-timeframe EMA period, bars (> ema_fast)"
    )
    rsi_period: int = Field(14, ge=1, le=1000, description="entry-timeframe RSI period, bars (Wilder)")
    rsi_long_min: float = Field(40.0, ge=0.0, le=100.0, description="lowest RSI at a long entry (inclusive)")
    rsi_long_max: float = Field(
        70.0, ge=0.0, le=100.0, validate_default=True, description="highest RSI at a long entry (inclusive)"
    )
    rsi_short_min: float = Field(30.0, ge=0.0, le=100.0, description="lowest RSI at a short entry (inclusive)")
    rsi_short_max: float = Field(
        60.0, ge=0.0, le=100.0, validate_default=True, description="highest RSI at a short entry (inclusive)"
    )
    volume_period: int = Field(20, ge=1, le=1000, description="period of the volume SMA, entry-timeframe bars")
    volume_mult: float = Field(
        1.2, ge=0.0, le=100.0, description="enter only when the bar's volume exceeds this multiple of its SMA"
    )
    atr_period: int = Field(14, ge=1, le=1000, description="entry-timeframe ATR period, bars (Wilder)")
    stop_atr: float = Field(2.0, gt=0.0, le=50.0, description="initial stop distance from the entry fill, in ATRs")
    trail_trigger_atr: float = Field(
        3.0,
        ge=0.0,
        le=100.0,
        description="favourable move from the entry (best high/low), in ATRs, that switches on the trailing stop",
    )
    trail_atr: float = Field(
        1.5, gt=0.0, le=50.0, description="trailing-stop distance behind the best high/low since entry, in ATRs"
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

    @field_validator("adx_exit")
    @classmethod
    def _adx_exit(cls, value: float, info: ValidationInfo) -> float:
        entry = info.data.get("adx_entry")
        if entry is not None and value > entry:
            raise ValueError(f"must not exceed adx_entry ({entry}), got {value}")
        return value

    @field_validator("ema_slow")
    @classmethod
    def _ema_slow(cls, value: int, info: ValidationInfo) -> int:
        fast = info.data.get("ema_fast")
        if fast is not None and value <= fast:
            raise ValueError(f"must be greater than ema_fast ({fast}), got {value}")
        return value

    @field_validator("rsi_long_max", "rsi_short_max")
    @classmethod
    def _rsi_band(cls, value: float, info: ValidationInfo) -> float:
        low_name = "rsi_long_min" if info.field_name == "rsi_long_max" else "rsi_short_min"
        low = info.data.get(low_name)
        if low is not None and value < low:
            raise ValueError(f"must be at least {low_name} ({low}), got {value}")
        return value


class _Feeds:
    """The series one symbol reads (entry timeframe unless named filter_*)."""

    __slots__ = ("adx", "atr", "close", "ema_fast", "ema_slow", "filter_ema", "rsi", "tf_ts", "vol_sma", "volume")

    def __init__(self, values: dict[str, Series], tf_ts: Series | None) -> None:
        self.close = values["close"]
        self.volume = values["volume"]
        self.vol_sma = values["vol_sma"]
        self.ema_fast = values["ema_fast"]
        self.ema_slow = values["ema_slow"]
        self.rsi = values["rsi"]
        self.atr = values["atr"]
        self.filter_ema = values["filter_ema"]
        self.adx = values["adx"]
        #: open time of the last closed entry-timeframe bar (None when it is the run's own timeframe)
        self.tf_ts = tf_ts


class _Trade:
    """Per-symbol trade state. Prices in quote currency, quantities in base units."""

    __slots__ = (
        "atr",
        "best",
        "can_short",
        "entry",
        "pending",
        "placed",
        "side",
        "sig_atr",
        "sig_stop",
        "stop",
        "stop_order",
        "trailing",
    )

    def __init__(self, can_short: bool) -> None:
        self.can_short = can_short
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
        self.trailing = False
        self.stop_order: Order | None = None


class MultiTfTrend(Strategy):
    """Multi-timeframe trend following (seed 004, Phase 4.2), one position per symbol, many symbols.

    Units: prices in quote currency, quantities in base units, timestamps ns UTC. Defaults are the
    seed's numbers; every number is a parameter. "Entry timeframe" bars are 4h by default: when the
    run's timeframe is shorter (e.g. 1h bars with ``entry_timeframe="4h"``), signals are evaluated at
    each close of an entry-timeframe bar and stops are managed on every base bar. The filter (1d by
    default) is the last *closed* filter-timeframe bar.

    Entry, evaluated at the close of an entry-timeframe bar, filled by a market order at the next open:

    * long: EMA(9) crosses above EMA(21) (previous bar fast ≤ slow, this bar fast > slow), RSI(14) in
      [40, 70], volume > 1.2 × SMA(volume, 20) (the SMA includes this bar), close > filter EMA(50),
      filter ADX(14) > 25;
    * short (``allow_short``, perpetuals only): EMA(9) crosses below EMA(21), RSI(14) in [30, 60],
      the same volume rule, close < filter EMA(50), filter ADX(14) > 25.

    Size: ``risk.size_for_risk(symbol, close, stop, risk_pct)`` with the signal close as the entry
    estimate and stop = close ∓ 2 × ATR(14); when that is not affordable, 99 % of
    ``risk.max_qty(symbol, close)`` (``margin_headroom_pct``).

    Stop (interpretation of "SL 2×ATR; TP 3×ATR with trailing stop at 1.5×ATR"): ATR is the ATR(14)
    of the signal bar, frozen for the trade. The entry carries a bracket stop at signal close ∓ 2 ATR,
    live from the fill; after the entry bar the stop sits at entry fill ∓ 2 ATR. The best price is the
    highest high (long) / lowest low (short) of the base bars since the fill, entry bar included. Once
    it is 3 ATR beyond the entry fill, the stop trails 1.5 ATR behind it, updated at each base bar's
    close and never loosened. There is no separate take-profit order: 3 ATR is where the trail
    starts. Stops are reduce-only stop-market orders, cancelled and replaced when the level moves;
    a level the close has already crossed fills at the next open.

    Exits (at an entry-timeframe close, market order at the next open): filter ADX < 20, or the
    opposing EMA cross; the stop fills intrabar. An opposing cross that also meets the opposite
    entry rules closes the position and opens the reverse one at the same open.
    """

    type = "multi_tf_trend"
    display_name = "Multi-Timeframe Trend Following"
    description = (
        "Daily EMA(50)/ADX(14) trend filter with 4-hour EMA(9/21) cross entries confirmed by RSI and volume; "
        "2 ATR stop that trails 1.5 ATR behind the best price once the trade is 3 ATR in profit; exits on "
        "ADX < 20 or the opposing cross. Risk-based sizing, long and short, many symbols."
    )
    version = "1.0.0"
    author = "tradengine"
    compatibility = Compatibility(market_types=("spot", "perpetual"))
    Params = MultiTfTrendParams
    params: MultiTfTrendParams

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
                ("ema_fast", "ema", p.ema_fast),
                ("ema_slow", "ema", p.ema_slow),
                ("rsi", "rsi", p.rsi_period),
                ("atr", "atr", p.atr_period),
            ):
                series = md.indicator(name, symbol, timeframe=htf, period=period)
                assert isinstance(series, Series)
                values[key] = series
            for key, name, period in (("filter_ema", "ema", p.filter_ema_period), ("adx", "adx", p.adx_period)):
                series = md.indicator(name, symbol, timeframe=p.filter_timeframe, period=period)
                assert isinstance(series, Series)
                values[key] = series
            tf_ts = md.series("ts", symbol, timeframe=htf) if htf is not None else None
            self._feeds[symbol] = _Feeds(values, tf_ts)
            self._state[symbol] = _Trade(md.instrument(symbol).is_perpetual)

    # ------------------------------------------------------------------ callbacks
    def on_bar(self, bar: Bar) -> None:
        symbol = bar.symbol
        st = self._state[symbol]
        f = self._feeds[symbol]
        if st.pending is not None and not st.pending.is_open:
            st.pending = None  # rejected (e.g. margin): it never filled
        tf_ts = f.tf_ts
        new = tf_ts is None or tf_ts.value != tf_ts.prev
        exiting = self._manage(bar, st, f, new) if st.side else False
        if new and st.pending is None and (exiting or not st.side):
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
    def _manage(self, bar: Bar, st: _Trade, f: _Feeds, new: bool) -> bool:
        """Trail the stop and apply the exit rules; True when a closing order was sent."""
        p = self.params
        atr = st.atr
        if st.side > 0:
            high = bar.high
            if high > st.best:
                st.best = high
            if not st.trailing and st.best >= st.entry + p.trail_trigger_atr * atr:
                st.trailing = True
            if st.trailing:
                level = st.best - p.trail_atr * atr
                if level > st.stop:
                    st.stop = level
        else:
            low = bar.low
            if low < st.best:
                st.best = low
            if not st.trailing and st.best <= st.entry - p.trail_trigger_atr * atr:
                st.trailing = True
            if st.trailing:
                level = st.best + p.trail_atr * atr
                if level < st.stop:
                    st.stop = level
        if new:
            reason = ""
            if f.adx.value < p.adx_exit:
                reason = "adx_exit"
            else:
                fast, slow = f.ema_fast, f.ema_slow
                fv, sv, fp, sp = fast.value, slow.value, fast.prev, slow.prev
                if (st.side > 0 and fp >= sp and fv < sv) or (st.side < 0 and fp <= sp and fv > sv):
                    reason = "cross_exit"
            if reason:
                if st.stop_order is not None:
                    self.orders.cancel(st.stop_order.order_id)
                    st.stop_order = None
                self.orders.close(bar.symbol, tag=reason)
                return True
        if st.stop != st.placed and st.stop > 0.0:
            self._place_stop(bar.symbol, st)
        return False

    def _place_stop(self, symbol: str, st: _Trade) -> None:
        if st.stop_order is not None:
            self.orders.cancel(st.stop_order.order_id)
        send = self.orders.sell if st.side > 0 else self.orders.buy
        tag = "trail" if st.trailing else "stop"
        st.stop_order = send(symbol, 0.0, order_type="stop", stop_price=st.stop, reduce_only=True, tag=tag)
        st.placed = st.stop

    def _enter(self, symbol: str, st: _Trade, f: _Feeds) -> None:
        p = self.params
        fast, slow = f.ema_fast, f.ema_slow
        fv, sv, fp, sp = fast.value, slow.value, fast.prev, slow.prev
        if fp <= sp and fv > sv:
            side = 1
        elif fp >= sp and fv < sv:
            side = -1
        else:
            return
        if not (f.adx.value > p.adx_entry and f.volume.value > p.volume_mult * f.vol_sma.value):
            return
        close = f.close.value
        rsi = f.rsi.value
        if side > 0:
            if not (close > f.filter_ema.value and p.rsi_long_min <= rsi <= p.rsi_long_max):
                return
        elif not (
            p.allow_short and st.can_short and close < f.filter_ema.value and p.rsi_short_min <= rsi <= p.rsi_short_max
        ):
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
