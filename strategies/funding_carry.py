"""Funding-rate carry on perpetuals: fade extreme funding (seed 004, Phase 4.4, "Funding Rate Carry")."""

from __future__ import annotations

import math

import numpy as np
from pydantic import ValidationInfo, field_validator

from engine.strategy import Bar, Compatibility, Field, Fill, FundingRates, Series, Strategy, StrategyParams

DAY_NS = 86_400_000_000_000
HOUR_NS = 3_600_000_000_000
#: a window whose standard deviation of ``rate_8h`` is at or below this is flat: its z-score is undefined.
#: Binance quotes rates to 1e-8, so any window that is not flat has a deviation far above it.
FLAT_STD = 1e-12
#: rows per block of the windowed two-pass statistics (bounds the temporary matrix)
_BLOCK = 1024


class FundingCarryParams(StrategyParams):
    z_window_days: float = Field(
        30.0, gt=0.0, le=365.0, description="window of the funding z-score, days (events settled in the last N days)"
    )
    mean_window_days: float = Field(7.0, gt=0.0, le=365.0, description="window of the mean funding rate, days")
    entry_z: float = Field(1.5, gt=0.0, le=20.0, description="enter when the funding z-score is beyond ±entry_z")
    exit_z: float = Field(
        0.5, ge=0.0, le=20.0, description="take profit when the z-score returns within ±exit_z (or crosses it)"
    )
    min_mean_rate_8h: float = Field(
        0.0001,
        ge=0.0,
        le=0.01,
        description="the mean funding rate per 8 h must be above +this (shorts) or below −this (longs); fraction",
    )
    rsi_period: int = Field(14, ge=2, le=1000, description="RSI period, bars (Wilder)")
    rsi_short_min: float = Field(60.0, gt=0.0, lt=100.0, description="shorts need RSI above this")
    rsi_long_max: float = Field(40.0, gt=0.0, lt=100.0, description="longs need RSI below this")
    atr_period: int = Field(14, ge=1, le=1000, description="ATR period for the stop, bars (Wilder)")
    atr_stop: float = Field(2.5, gt=0.0, le=50.0, description="stop distance from the signal close, in ATRs")
    max_funding_periods: int = Field(
        3, ge=1, le=1000, description="time exit after this many funding settlements since the entry fill"
    )
    risk_pct: float = Field(0.75, gt=0.0, le=10.0, description="equity risked per position (entry to stop), percent")
    max_positions: int = Field(10, ge=1, le=1000, description="most positions open (or being entered) at once")
    oi_lookback_hours: int = Field(
        24, ge=1, le=24 * 90, description="open interest must exceed its value this many hours earlier (when given)"
    )

    @field_validator("exit_z")
    @classmethod
    def _exit_inside_entry(cls, value: float, info: ValidationInfo) -> float:
        entry = info.data.get("entry_z")
        if entry is not None and not value < entry:
            raise ValueError(f"must be below entry_z ({entry}), got {value}")
        return value


def window_mean_std(ts: np.ndarray, x: np.ndarray, window_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation (ddof = 0) of ``x`` over each event's trailing time window.

    Event i's window holds the events j with ``ts[i] − window_ns < ts[j] ≤ ts[i]`` (itself included),
    so the statistic at i uses nothing settled after i. Computed in two passes per window (no running
    sums of squares, whose cancellation would invent a deviation in a flat window), vectorized in
    blocks of rows.
    """
    n = int(ts.size)
    mean = np.full(n, np.nan)
    std = np.full(n, np.nan)
    if n == 0:
        return mean, std
    lo = np.searchsorted(ts, ts - window_ns, side="right")
    count = np.arange(1, n + 1) - lo
    offsets = np.arange(int(count.max()))
    for a in range(0, n, _BLOCK):
        b = min(a + _BLOCK, n)
        idx = lo[a:b, None] + offsets[None, :]
        valid = idx <= np.arange(a, b)[:, None]
        vals = np.where(valid, x[np.minimum(idx, n - 1)], 0.0)
        cnt = count[a:b]
        m = vals.sum(axis=1) / cnt
        dev = np.where(valid, vals - m[:, None], 0.0)
        mean[a:b] = m
        std[a:b] = np.sqrt((dev * dev).sum(axis=1) / cnt)
    return mean, std


def funding_signals(fr: FundingRates, z_window_ns: int, mean_window_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Per funding event: the z-score of ``rate_8h`` over ``z_window_ns`` and the mean ``rate_8h`` over
    ``mean_window_ns`` (both causal; see :func:`window_mean_std`).

    Both are NaN until the symbol's history spans the longer window (first event at or before
    ``ts − window``), and the z-score is NaN where the window is flat (std ≤ ``FLAT_STD``).
    """
    ts, x = fr.ts, fr.rate_8h
    z_mean, z_std = window_mean_std(ts, x, z_window_ns)
    mean, _ = window_mean_std(ts, x, mean_window_ns)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(z_std > FLAT_STD, (x - z_mean) / z_std, np.nan)
    if ts.size:
        warm = ts - ts[0] >= max(z_window_ns, mean_window_ns)
        z = np.where(warm, z, np.nan)
        mean = np.where(warm, mean, np.nan)
    return z, mean


class _Book:
    """Per-symbol state: the funding statistics per event, the bar indicators and the trade state."""

    __slots__ = (
        "atr",
        "entry_event",
        "exit_event",
        "fr",
        "fts",
        "j",
        "mean",
        "n",
        "oi",
        "order",
        "rsi",
        "z",
    )

    def __init__(
        self,
        order: int,
        fr: FundingRates,
        z: np.ndarray,
        mean: np.ndarray,
        rsi: Series,
        atr: Series,
        oi: Series | None,
    ) -> None:
        self.order = order  # position of the symbol in the run (deterministic tie-break)
        self.fr = fr
        self.fts: list[int] = fr.ts.tolist()
        self.z: list[float] = z.tolist()
        self.mean: list[float] = mean.tolist()
        self.n = len(self.fts)
        self.j = -1  # index of the last funding event settled at or before the current bar's close
        self.rsi = rsi
        self.atr = atr
        self.oi = oi
        self.entry_event = -1  # last event settled at or before the entry fill
        self.exit_event = -2  # last event settled at or before the last exit fill (-2: never exited)


class FundingCarry(Strategy):
    """Funding-rate carry (seed 004, Phase 4.4): fade crowded perpetuals whose funding is extreme.

    Data per symbol (perpetuals only; base timeframe 1h): the funding history of the run
    (``market_data.funding_rates``; ts ns UTC, rate a fraction per funding interval). Rates are
    normalised to 8 h (``rate_8h = rate × 8 h / interval``) so that symbols settling every 4 h and
    every 8 h compare on one scale; every threshold below is per 8 h. Statistics are precomputed per
    funding event in ``on_init`` (vectorized) and read at the last event settled at or before the
    bar's close, so a bar never sees a later event:

    * ``z`` = (rate_8h − mean) / std over the events settled in the last ``z_window_days`` (a time
      window, the current event included, population std). Undefined until the symbol's funding
      history spans the window, and for a flat window.
    * ``mean`` = mean rate_8h of the events settled in the last ``mean_window_days`` (an event mean).

    Entry, evaluated at every bar close of a flat symbol (RSI(``rsi_period``) and
    ATR(``atr_period``) on the base bars):

    * SHORT when z > ``entry_z`` and mean > ``min_mean_rate_8h`` and RSI > ``rsi_short_min``
      (longs pay shorts: the short collects funding while the crowding unwinds);
    * LONG when z < −``entry_z`` and mean < −``min_mean_rate_8h`` and RSI < ``rsi_long_max``;
    * and, only when the run has an open-interest series for the symbol
      (``market_data.open_interest(symbol)`` is not None), open interest must be rising: above its
      value ``oi_lookback_hours`` earlier (unknown OI blocks the entry). Without OI data the OI
      condition is not applied.
    * After an exit a symbol re-enters only on a funding event settled after that exit.

    Candidates of one close time are ranked by |z| (largest first) in ``on_bars`` and entered while
    fewer than ``max_positions`` positions are open or pending. The entry is a market order (filled
    at the next bar's open) of ``risk.size_for_risk(symbol, close, stop, risk_pct)`` base units, with
    a reduce-only stop-market ``atr_stop`` × ATR from the signal close (quote currency).

    Exit, whichever first: the stop; z back within ±``exit_z`` (a short exits when z ≤ exit_z, a long
    when z ≥ −exit_z, so a jump across the band also exits: "take profit"); or
    ``max_funding_periods`` funding events of the symbol settled after the entry fill (time exit).
    Exits are market orders at the next open; the stop is cancelled with them.
    """

    type = "funding_carry"
    display_name = "Funding Rate Carry"
    description = (
        "Shorts perpetuals whose funding z-score is extreme-high (and longs extreme-low) when the 7-day "
        "mean funding and RSI agree; exits when funding normalises, after N settlements, or at an ATR stop."
    )
    version = "1.0.0"
    author = "tradengine"
    compatibility = Compatibility(market_types=("perpetual",), timeframes=("1h",))
    Params = FundingCarryParams
    params: FundingCarryParams

    def on_init(self) -> None:
        p = self.params
        md = self.market_data
        z_window = round(p.z_window_days * DAY_NS)
        mean_window = round(p.mean_window_days * DAY_NS)
        self._books: dict[str, _Book] = {}
        for order, symbol in enumerate(md.symbols):
            fr = md.funding_rates(symbol)
            if fr is None or len(fr) == 0:
                continue  # no funding history: the symbol is not traded
            rsi = md.indicator("rsi", symbol, period=p.rsi_period)
            atr = md.indicator("atr", symbol, period=p.atr_period)
            assert isinstance(rsi, Series) and isinstance(atr, Series)
            z, mean = funding_signals(fr, z_window, mean_window)
            self._books[symbol] = _Book(order, fr, z, mean, rsi, atr, md.open_interest(symbol))
        self._open: set[str] = set()  # symbols with a position
        self._pending: set[str] = set()  # symbols with an entry order not yet filled
        #: (−|z|, run order, symbol, side, close, stop) of the entry signals of the current close time
        self._candidates: list[tuple[float, int, str, int, float, float]] = []

    # ------------------------------------------------------------------ per bar
    def on_bar(self, bar: Bar) -> None:
        symbol = bar.symbol
        book = self._books.get(symbol)
        if book is None:
            return
        p = self.params
        now = self.clock.now_ns()
        j = book.j
        fts = book.fts
        while j + 1 < book.n and fts[j + 1] <= now:
            j += 1
        book.j = j
        held = self.positions.qty(symbol)
        if held:
            self._open.add(symbol)
            self._pending.discard(symbol)
            z = book.z[j]
            if (z <= p.exit_z) if held < 0 else (z >= -p.exit_z):
                self._exit(symbol, "exit_z")
            elif j - book.entry_event >= p.max_funding_periods:
                self._exit(symbol, "exit_time")
            return
        self._open.discard(symbol)
        if symbol in self._pending:
            if self.orders.open_orders(symbol):
                return
            self._pending.discard(symbol)  # the entry was rejected at its fill
        if j < 0 or j <= book.exit_event:
            return
        z = book.z[j]
        mean = book.mean[j]
        if z > p.entry_z and mean > p.min_mean_rate_8h:
            side = -1
            if not book.rsi.value > p.rsi_short_min:
                return
        elif z < -p.entry_z and mean < -p.min_mean_rate_8h:
            side = 1
            if not book.rsi.value < p.rsi_long_max:
                return
        else:
            return
        if book.oi is not None:
            lookback = max(1, round(p.oi_lookback_hours * HOUR_NS / (now - bar.ts)))
            if not book.oi.value > book.oi[lookback]:
                return
        atr = book.atr.value
        close = bar.close
        if not (atr > 0.0 and math.isfinite(atr)):
            return
        stop = close + p.atr_stop * atr if side < 0 else close - p.atr_stop * atr
        if stop <= 0.0:
            return
        self._candidates.append((-abs(z), book.order, symbol, side, close, stop))

    def on_bars(self, ts_ns: int) -> None:
        candidates = self._candidates
        if not candidates:
            return
        self._candidates = []
        slots = self.params.max_positions - len(self._open) - len(self._pending)
        if slots <= 0:
            return
        candidates.sort()
        for _, _, symbol, side, close, stop in candidates:
            if slots <= 0:
                break
            qty = self.risk.size_for_risk(symbol, close, stop, self.params.risk_pct)
            if qty <= 0.0:
                continue
            if side > 0:
                self.orders.buy(symbol, qty, stop_loss=stop, tag="entry")
            else:
                self.orders.sell(symbol, qty, stop_loss=stop, tag="entry")
            self._pending.add(symbol)
            slots -= 1

    def on_order_filled(self, fill: Fill) -> None:
        book = self._books.get(fill.symbol)
        if book is None:
            return
        if fill.tag == "entry":
            book.entry_event = book.fr.index_at(fill.ts)
            self._pending.discard(fill.symbol)
            self._open.add(fill.symbol)
        if self.positions.qty(fill.symbol) == 0.0:
            book.exit_event = book.fr.index_at(fill.ts)
            self._open.discard(fill.symbol)
            self.orders.cancel_all(fill.symbol)

    def _exit(self, symbol: str, tag: str) -> None:
        self.orders.cancel_all(symbol)
        self.orders.close(symbol, tag=tag)
