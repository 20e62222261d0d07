"""Cross-sectional momentum rotation on perpetuals (seed 004, Phase 4.5, "Cross-Sectional Momentum")."""

from __future__ import annotations

import math

from pydantic import ValidationInfo, field_validator

from engine.strategy import Bar, Compatibility, Field, Series, Strategy, StrategyParams

DAY_NS = 86_400_000_000_000


class CrossSectionalMomentumParams(StrategyParams):
    roc_fast_period: int = Field(7, ge=1, le=1000, description="period of the first ROC of the score, days")
    roc_mid_period: int = Field(14, ge=1, le=1000, description="period of the second ROC of the score, days")
    roc_slow_period: int = Field(30, ge=1, le=1000, description="period of the third ROC of the score, days")
    weight_fast: float = Field(0.40, ge=0.0, le=1.0, description="weight of the first ROC in the composite score")
    weight_mid: float = Field(0.35, ge=0.0, le=1.0, description="weight of the second ROC in the composite score")
    weight_slow: float = Field(0.25, ge=0.0, le=1.0, description="weight of the third ROC in the composite score")
    vol_period: int = Field(
        14, ge=2, le=1000, description="realized volatility window dividing the score, days (daily log returns)"
    )
    volume_period: int = Field(14, ge=1, le=1000, description="window of the average daily quote volume, days")
    min_quote_volume: float = Field(
        10_000_000.0, ge=0.0, le=1e15, description="universe floor: average daily quote volume, quote currency"
    )
    universe_size: int = Field(30, ge=1, le=1000, description="universe: this many most-traded eligible symbols")
    long_count: int = Field(5, ge=0, le=500, description="symbols in the long basket (highest scores)")
    short_count: int = Field(5, ge=0, le=500, description="symbols in the short basket (lowest scores)")
    regime_symbol: str = Field(
        "BTCUSDT", max_length=64, description="no shorts while its close is above its EMA; empty disables the filter"
    )
    regime_ema_period: int = Field(50, ge=1, le=1000, description="EMA period of the regime filter, days")
    drawdown_window: int = Field(30, ge=1, le=1000, description="window of the high for the drawdown filter, days")
    max_drawdown_pct: float = Field(
        60.0, gt=0.0, le=100.0, description="longs exclude symbols more than this far below their window high, %"
    )
    atr_period: int = Field(14, ge=1, le=1000, description="ATR period of the volatility weights, days (Wilder)")
    gross_leverage: float = Field(
        2.0, gt=0.0, le=20.0, description="target gross notional of both books as a multiple of equity"
    )
    rebalance_weekday: int = Field(
        0, ge=0, le=6, description="rebalance at 00:00 UTC of this weekday (0 = Monday … 6 = Sunday)"
    )
    rebalance_tolerance_pct: float = Field(
        25.0, ge=0.0, le=1000.0, description="resize a held position only when it is off target by more than this, %"
    )

    @field_validator("regime_symbol")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("weight_slow")
    @classmethod
    def _some_weight(cls, value: float, info: ValidationInfo) -> float:
        fast, mid = info.data.get("weight_fast"), info.data.get("weight_mid")
        if fast is not None and mid is not None and fast + mid + value <= 0.0:
            raise ValueError("the ROC weights (weight_fast, weight_mid, weight_slow) must not all be 0")
        return value

    @field_validator("short_count")
    @classmethod
    def _some_basket(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("long_count") == 0 and value == 0:
            raise ValueError("long_count and short_count must not both be 0")
        return value


class _Metrics:
    """Per-symbol series read at a rebalance (all on the 1d base bars)."""

    __slots__ = ("atr", "high", "order", "qvol", "roc_fast", "roc_mid", "roc_slow", "vol")

    def __init__(
        self,
        order: int,
        roc: tuple[Series, Series, Series],
        vol: Series,
        qvol: Series,
        atr: Series,
        high: Series,
    ) -> None:
        self.order = order  # position of the symbol in the run (deterministic tie-break)
        self.roc_fast, self.roc_mid, self.roc_slow = roc
        self.vol = vol  # realized volatility, fraction per day
        self.qvol = qvol  # mean daily quote volume
        self.atr = atr  # ATR, quote currency
        self.high = high  # highest high of the drawdown window, quote currency


class CrossSectionalMomentum(Strategy):
    """Weekly cross-sectional momentum rotation (seed 004, Phase 4.5) on daily perpetual bars.

    Units: prices in quote currency, quantities in base units, volumes: quote volume = volume × close
    of each daily bar (quote currency per day), ts in ns UTC.

    At each close time that is 00:00 UTC of ``rebalance_weekday`` (default Monday: the Sunday daily
    bar has just closed), in ``on_bars``, over the symbols whose daily bar closed then and whose
    indicators are warmed up (symbols without enough history are skipped):

    1. **Universe**: symbols whose ``volume_period``-day mean quote volume ≥ ``min_quote_volume``;
       the ``universe_size`` largest by that mean.
    2. **Score** (volatility-adjusted momentum): ``(w_fast·ROC(fast) + w_mid·ROC(mid) +
       w_slow·ROC(slow)) / RV`` with ROCs in percent (default 0.40·ROC7 + 0.35·ROC14 + 0.25·ROC30)
       and RV the sample standard deviation of the last ``vol_period`` daily log returns (a
       fraction per day). Symbols with RV = 0 are skipped.
    3. **Long basket**: the ``long_count`` highest scores, excluding symbols whose close is more than
       ``max_drawdown_pct`` % below the highest high of the last ``drawdown_window`` days.
       **Short basket**: the ``short_count`` lowest scores among the rest, only while the
       ``regime_symbol``'s close is at or below its ``regime_ema_period``-day EMA (no shorts in a
       bull market, nor while that EMA is not yet known).
    4. **Sizing**: gross notional ``gross_leverage × equity`` is split evenly between the books the
       parameters enable (long_count > 0, short_count > 0); a book switched off by the regime
       filter leaves its share in cash. Within a book, weights are equal-volatility by ATR:
       weight ∝ close / ATR(``atr_period``), so each name carries the same ATR-move of notional;
       target qty = book notional × weight / (close × multiplier).
    5. **Orders** (market, filled at the next bar's open): close positions that left the baskets
       (including a long that moves to the short basket, which is then opened), open new names, and
       resize a held name only when |held − target| > ``rebalance_tolerance_pct`` % of the target.

    Nothing is ordered at any other close time. The regime symbol must be in the run unless
    ``regime_symbol`` is empty; its EMA is requested on it, so it joins the ranking only once that
    EMA is warmed up.
    """

    type = "cross_sectional_momentum"
    display_name = "Cross-Sectional Momentum"
    description = (
        "Weekly rotation: longs the top and shorts the bottom of a liquid universe ranked by "
        "volatility-adjusted multi-horizon momentum, ATR-weighted, with a BTC bull-market short filter."
    )
    version = "1.0.0"
    author = "tradengine"
    compatibility = Compatibility(market_types=("perpetual",), timeframes=("1d",))
    Params = CrossSectionalMomentumParams
    params: CrossSectionalMomentumParams

    def on_init(self) -> None:
        p = self.params
        md = self.market_data
        symbols = md.symbols
        if p.regime_symbol and p.regime_symbol not in symbols:
            raise ValueError(
                f"parameter 'regime_symbol': {p.regime_symbol!r} is not in this run "
                f"(symbols: {', '.join(symbols)}); add it or set regime_symbol to '' to disable the filter"
            )
        self._metrics: dict[str, _Metrics] = {}
        for order, symbol in enumerate(symbols):
            fast = md.indicator("roc", symbol, period=p.roc_fast_period)
            mid = md.indicator("roc", symbol, period=p.roc_mid_period)
            slow = md.indicator("roc", symbol, period=p.roc_slow_period)
            vol = md.indicator("realized_vol", symbol, period=p.vol_period)
            qvol = md.indicator("sma", symbol, source="quote_volume", period=p.volume_period)
            atr = md.indicator("atr", symbol, period=p.atr_period)
            channel = md.indicator("donchian", symbol, period=p.drawdown_window)
            assert isinstance(channel, tuple)
            high = channel[0]
            assert isinstance(fast, Series) and isinstance(mid, Series) and isinstance(slow, Series)
            assert isinstance(vol, Series) and isinstance(qvol, Series) and isinstance(atr, Series)
            self._metrics[symbol] = _Metrics(order, (fast, mid, slow), vol, qvol, atr, high)
        self._regime_close: Series | None = None
        self._regime_ema: Series | None = None
        if p.regime_symbol:
            ema = md.indicator("ema", p.regime_symbol, period=p.regime_ema_period)
            assert isinstance(ema, Series)
            self._regime_ema = ema
            self._regime_close = md.series("close", p.regime_symbol)
        self._fresh: list[str] = []  # symbols whose (warmed-up) bar closed at the current close time

    def on_bar(self, bar: Bar) -> None:
        self._fresh.append(bar.symbol)

    def is_rebalance_time(self, ts_ns: int) -> bool:
        """True when ``ts_ns`` is 00:00 UTC of ``rebalance_weekday`` (1970-01-01 was a Thursday)."""
        return ts_ns % DAY_NS == 0 and (ts_ns // DAY_NS + 3) % 7 == self.params.rebalance_weekday

    def on_bars(self, ts_ns: int) -> None:
        fresh = self._fresh
        self._fresh = []
        if not self.is_rebalance_time(ts_ns):
            return
        targets = self.targets(fresh)
        self._rebalance(targets)

    # ------------------------------------------------------------------ ranking and sizing
    def shorts_allowed(self, fresh: list[str]) -> bool:
        """The regime filter: shorts only while the regime symbol closes at or below its EMA."""
        p = self.params
        if not p.regime_symbol:
            return True
        if p.regime_symbol not in fresh or self._regime_ema is None or self._regime_close is None:
            return False
        return self._regime_close.value <= self._regime_ema.value

    def targets(self, fresh: list[str]) -> dict[str, float]:
        """Signed target quantities (base units) of the baskets at the current close."""
        p = self.params
        md = self.market_data
        eligible: list[tuple[float, int, str]] = []
        for symbol in fresh:
            m = self._metrics[symbol]
            qvol = m.qvol.value
            if qvol >= p.min_quote_volume:
                eligible.append((-qvol, m.order, symbol))
        eligible.sort()
        ranked: list[tuple[float, int, str]] = []
        for _, order, symbol in eligible[: p.universe_size]:
            m = self._metrics[symbol]
            vol = m.vol.value
            if not (vol > 0.0 and math.isfinite(vol)):
                continue
            momentum = p.weight_fast * m.roc_fast.value + p.weight_mid * m.roc_mid.value
            momentum += p.weight_slow * m.roc_slow.value
            score = momentum / vol
            if math.isfinite(score):
                ranked.append((-score, order, symbol))
        ranked.sort()  # best first; ties by run order
        longs: list[str] = []
        if p.long_count:
            floor = 1.0 - p.max_drawdown_pct / 100.0
            for _, _, symbol in ranked:
                if len(longs) == p.long_count:
                    break
                m = self._metrics[symbol]
                if md.ltp(symbol) >= floor * m.high.value:
                    longs.append(symbol)
        shorts: list[str] = []
        if p.short_count and self.shorts_allowed(fresh):
            taken = set(longs)
            for _, _, symbol in reversed(ranked):
                if len(shorts) == p.short_count:
                    break
                if symbol not in taken:
                    shorts.append(symbol)
        equity = self.positions.equity()
        if not equity > 0.0:
            return {}  # nothing left to allocate: every position is closed
        books = (p.long_count > 0) + (p.short_count > 0)
        book_notional = p.gross_leverage * equity / books
        out: dict[str, float] = {}
        for side, basket in ((1.0, longs), (-1.0, shorts)):
            weights = {}
            for symbol in basket:
                atr = self._metrics[symbol].atr.value
                if atr > 0.0 and math.isfinite(atr):
                    weights[symbol] = md.ltp(symbol) / atr
            total = sum(weights.values())
            for symbol, w in weights.items():
                price = md.ltp(symbol)
                out[symbol] = side * book_notional * w / total / (price * md.instrument(symbol).multiplier)
        return out

    def _rebalance(self, targets: dict[str, float]) -> None:
        """Orders moving the positions to ``targets``: exits and reductions first, then additions."""
        p = self.params
        md = self.market_data
        tolerance = p.rebalance_tolerance_pct / 100.0
        adds: list[tuple[str, float, str]] = []
        for symbol in md.symbols:
            held = self.positions.qty(symbol)
            target = targets.get(symbol, 0.0)
            if held and (target == 0.0 or (held > 0) != (target > 0)):
                self.orders.close(symbol, tag="rebalance_exit")
                held = 0.0
            if target == 0.0:
                continue
            if held == 0.0:
                adds.append((symbol, target, "rebalance_entry"))
                continue
            delta = target - held
            if abs(delta) <= tolerance * abs(target):
                continue
            if abs(target) < abs(held):  # reduce
                qty = md.instrument(symbol).round_qty(abs(delta))
                if qty > 0.0:
                    if delta > 0:
                        self.orders.buy(symbol, qty, reduce_only=True, tag="rebalance_reduce")
                    else:
                        self.orders.sell(symbol, qty, reduce_only=True, tag="rebalance_reduce")
            else:
                adds.append((symbol, delta, "rebalance_add"))
        for symbol, delta, tag in adds:
            qty = md.instrument(symbol).round_qty(abs(delta))
            if qty <= 0.0:
                continue
            if delta > 0:
                self.orders.buy(symbol, qty, tag=tag)
            else:
                self.orders.sell(symbol, qty, tag=tag)
