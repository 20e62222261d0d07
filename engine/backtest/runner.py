"""The bar-driven backtest loop.

One strategy instance trades one or many symbols on a base timeframe (and may read higher
timeframes). Per bar of a symbol, in this order:

1. funding events that settled since the previous bar (funding time ≤ this bar's open) are paid on
   the position held at that moment, at the mark price (the mark series' open of the mark bar
   containing the funding time, or the last close when no mark series is given);
2. open orders are matched against the bar (:mod:`engine.execution.paper`); fills are reported to
   ``on_order_filled`` while the bar is still incomplete;
3. the bar completes and ``on_bar`` runs (after the warm-up);
4. equity is recorded at the close of the last symbol of each timestamp.

Indicators are computed once, vectorized, when the strategy requests them in ``on_init``; the loop
only indexes Python lists and creates no object per bar.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.backtest.metrics import compute_metrics
from engine.backtest.result import (
    EQUITY_SCHEMA,
    FILLS_SCHEMA,
    FUNDING_SCHEMA,
    TRADES_SCHEMA,
    TS,
    BacktestResult,
)
from engine.errors import ParameterError, StrategyRuntimeError
from engine.execution.account import Account
from engine.execution.paper import PaperExchange
from engine.execution.services import AccountPositions, CallableClock, ExchangeOrders, ExchangeRisk
from engine.instruments import Instrument
from engine.strategy.base import Strategy, StrategyParams
from engine.strategy.feed import BAR_FIELDS, BarMarketData, SymbolFeed
from engine.strategy.funding import funding_by_symbol
from engine.strategy.services import StrategyServices

#: per-symbol funding events: bar index at whose start it settles, funding time, rate, mark price
Funding = tuple[list[int], list[int], list[float], list[float]]


@dataclass
class BacktestSettings:
    """Run settings (validated by the caller's config model; plain values here).

    Attributes:
        cash: initial cash, quote currency.
        start_ns: first bar (open time, ns UTC) that may trade; earlier bars only warm up indicators.
        slippage_bps: adverse slippage on market and stop fills, basis points.
        warmup: minimum bars before ``on_bar`` (on top of the strategy's own needs).
        progress: called as progress(done_bars, total_bars) every ``progress_every`` bars.
    """

    cash: float = 100_000.0
    start_ns: int | None = None
    slippage_bps: float = 0.0
    warmup: int = 0
    progress: Callable[[int, int], None] | None = None
    progress_every: int = 65_536
    extra: dict[str, Any] = field(default_factory=dict)


def split_bars(bars: pa.Table) -> dict[str, dict[str, np.ndarray]]:
    """Split a bars table (symbol, ts, OHLCV; sorted by symbol, ts) into numpy arrays per symbol.

    Symbols keep their order of first appearance. ``ts`` becomes int64 ns UTC.
    """
    if bars.num_rows == 0:
        raise ParameterError("data", "no bars in the selected symbols and time range")
    symbols = bars.column("symbol").combine_chunks()
    encoded = pc.dictionary_encode(symbols)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    names = encoded.dictionary.to_pylist()
    ts = bars.column("ts").cast(pa.int64()).to_numpy()
    cols = {f: bars.column(f).to_numpy() for f in BAR_FIELDS}
    out: dict[str, dict[str, np.ndarray]] = {}
    change = np.flatnonzero(np.diff(codes)) + 1
    bounds = [0, *change.tolist(), len(codes)]
    for a, b in itertools.pairwise(bounds):
        name = names[codes[a]]
        out[name] = {
            "ts": np.ascontiguousarray(ts[a:b]),
            **{f: np.ascontiguousarray(v[a:b]) for f, v in cols.items()},
        }
    return out


def funding_events(feed: SymbolFeed, funding: pa.Table | None, marks: pa.Table | None, symbol: str) -> Funding:
    """Funding settlements of ``symbol`` mapped to the bars at whose start they are settled.

    An event at time t settles at the first bar whose open is ≥ t (so an event at 00:00:00.017 is
    paid on the position held through the 00:00 bar's open fills); events after the last bar are
    dropped. Mark price: the open of the last mark bar starting at or before t, else the close of
    the bar before the settlement bar.
    """
    empty: Funding = ([], [], [], [])
    if funding is None:
        return empty
    rows = funding.filter(pc.equal(funding.column("symbol"), symbol))
    if rows.num_rows == 0:
        return empty
    ft = rows.column("ts").cast(pa.int64()).to_numpy()
    rate = rows.column("rate").to_numpy()
    ts = feed.arrays["ts"]
    k = np.searchsorted(ts, ft, side="left")
    keep = (k >= 1) & (k < feed.n)
    ft, rate, k = ft[keep], rate[keep], k[keep]
    mark = feed.arrays["close"][k - 1]
    if marks is not None:
        mrows = marks.filter(pc.equal(marks.column("symbol"), symbol))
        if mrows.num_rows:
            mts = mrows.column("ts").cast(pa.int64()).to_numpy()
            mopen = mrows.column("open").to_numpy()
            j = np.searchsorted(mts, ft, side="right") - 1
            has = j >= 0
            mark = np.where(has, mopen[np.maximum(j, 0)], mark)
    return k.tolist(), ft.tolist(), rate.tolist(), mark.tolist()


def open_interest_by_symbol(table: pa.Table | None, symbols: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Split an open-interest table (symbol, ts, open_interest) into (ts ns, values) per symbol."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if table is None:
        return out
    for symbol in symbols:
        rows = table.filter(pc.equal(table.column("symbol"), symbol))
        if rows.num_rows:
            ts = rows.column("ts").cast(pa.int64()).to_numpy()
            out[symbol] = (ts, rows.column("open_interest").to_numpy())
    return out


def trade_hash(fills: pa.Table) -> str:
    """SHA-256 of the fill list: one line per fill with ts (ns), symbol, side and the exact float
    reprs of qty, price and fee, in execution order."""
    h = hashlib.sha256()
    ts = fills.column("ts").cast(pa.int64()).to_numpy().tolist()
    symbol = fills.column("symbol").to_pylist()
    side = fills.column("side").to_numpy().tolist()
    qty = fills.column("qty").to_numpy().tolist()
    price = fills.column("price").to_numpy().tolist()
    fee = fills.column("fee").to_numpy().tolist()
    for row in zip(ts, symbol, side, qty, price, fee, strict=True):
        h.update("{}|{}|{}|{!r}|{!r}|{!r}\n".format(*row).encode())
    return h.hexdigest()


def _table(schema: pa.Schema, rows: list[tuple[Any, ...]]) -> pa.Table:
    """Rows (tuples in schema order; timestamps as int ns) → Arrow table of ``schema``."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema.names]
    arrays = []
    for f, values in zip(schema, columns, strict=True):
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(values, pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class Backtest:
    """One backtest of one strategy instance over prepared bars.

    Args:
        strategy_cls: the plugin class.
        params: raw parameters (validated here) or a validated ``Params`` instance.
        bars: per-symbol numpy arrays (see :func:`split_bars`) on the base timeframe.
        timeframe: base timeframe string ("1h", "1d", ...).
        instruments: symbol → :class:`Instrument`.
        settings: :class:`BacktestSettings`.
        funding, marks: optional funding-rate (symbol, ts, rate) and mark-price tables.

    Raises:
        ParameterError: invalid parameters or incompatible market type / timeframe.
        StrategyRuntimeError: a strategy callback raised.
    """

    def __init__(
        self,
        strategy_cls: type[Strategy],
        params: dict[str, Any] | StrategyParams,
        bars: dict[str, dict[str, np.ndarray]],
        timeframe: str,
        instruments: dict[str, Instrument],
        settings: BacktestSettings | None = None,
        funding: pa.Table | None = None,
        marks: pa.Table | None = None,
        data_path: str = "",
        open_interest: pa.Table | None = None,
    ) -> None:
        self.strategy_cls = strategy_cls
        self.params = params if isinstance(params, StrategyParams) else strategy_cls.validate_params(params)
        self.settings = settings or BacktestSettings()
        self.timeframe = timeframe
        self.data_path = data_path
        strategy_cls.check_compatibility(timeframe, (i.kind for i in instruments.values()))
        self.symbols = list(bars)
        self.instruments = {s: instruments[s] for s in self.symbols}
        self.feeds = {s: SymbolFeed(s, bars[s], timeframe) for s in self.symbols}
        self.account = Account(self.settings.cash)
        self._now = 0
        #: when set, the clock reads this feed's current bar close time instead of ``_now``
        self._clock_feed: SymbolFeed | None = None
        self.exchange = PaperExchange(
            self.account,
            self.instruments,
            slippage_bps=self.settings.slippage_bps,
            mark=self._mark,
            clock=self._clock,
        )
        self.market_data = BarMarketData(
            self.feeds,
            self.instruments,
            timeframe,
            funding=funding_by_symbol(funding, self.symbols),
            open_interest=open_interest_by_symbol(open_interest, self.symbols),
        )
        positions = AccountPositions(self.exchange)
        self.services = StrategyServices(
            orders=ExchangeOrders(self.exchange),
            positions=positions,
            risk=ExchangeRisk(self.exchange, positions),
            market_data=self.market_data,
            clock=CallableClock(self._clock),
        )
        self.funding = {s: funding_events(self.feeds[s], funding, marks, s) for s in self.symbols}
        self.strategy = strategy_cls(self.params, self.services)
        self.exchange.listeners.append(self._on_fill)

    # ------------------------------------------------------------------ helpers
    def _clock(self) -> int:
        """Now, in ns UTC: the close time of the bar being handed to ``on_bar``, the open time while
        orders fill, the funding time while funding settles."""
        feed = self._clock_feed
        if feed is None:
            return self._now
        i = feed.cursor.i
        return int(feed.arrays["ts"][i]) + feed.tf_ns if i >= 0 else self._now

    def _mark(self, symbol: str) -> float:
        feed = self.feeds[symbol]
        i = feed.cursor.i
        return feed.close[i] if i >= 0 else math.nan

    def _on_fill(self, fill: Any) -> None:
        try:
            self.strategy.on_order_filled(fill)
        except Exception as exc:
            raise self._failure("on_order_filled", fill.symbol, exc) from exc

    def _failure(self, callback: str, symbol: str, exc: Exception) -> StrategyRuntimeError:
        now = self._clock()
        when = " at " + str(np.datetime64(now, "ns")) + "Z" if now else ""
        return StrategyRuntimeError(
            f"strategy {self.strategy_cls.type!r} raised in {callback} ({symbol}{when}): {type(exc).__name__}: {exc}"
        )

    def _first_active(self, symbol: str) -> int:
        feed = self.feeds[symbol]
        first = max(self.settings.warmup, self.strategy_cls.warmup_bars, self.market_data.warmup_index(symbol))
        if self.settings.start_ns is not None:
            first = max(first, int(np.searchsorted(feed.arrays["ts"], self.settings.start_ns, side="left")))
        return first

    # ------------------------------------------------------------------ run
    def run(self) -> BacktestResult:
        """Run the loop and return the result (tables, metrics, trade hash).

        The cyclic garbage collector is paused during the run (the loop creates no cycles, and a
        collection pass over millions of live values costs more than the loop itself).
        """
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if was_enabled:
                gc.enable()

    def _run(self) -> BacktestResult:
        try:
            self.strategy.on_init()
        except Exception as exc:
            raise self._failure("on_init", ",".join(self.symbols), exc) from exc
        firsts = {s: self._first_active(s) for s in self.symbols}
        if all(firsts[s] >= self.feeds[s].n for s in self.symbols):
            raise ParameterError(
                "data",
                "not enough bars: the warm-up or --start leaves no bar to trade "
                f"(bars per symbol: {min(f.n for f in self.feeds.values())})",
            )
        if len(self.symbols) == 1:
            ts, cash, equity = self._loop_single(self.symbols[0], firsts[self.symbols[0]])
        else:
            ts, cash, equity = self._loop_multi(firsts)
        try:
            self.strategy.on_stop()
        except Exception as exc:
            raise self._failure("on_stop", ",".join(self.symbols), exc) from exc
        return self._result(ts, cash, equity)

    def _loop_single(self, symbol: str, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fast path for one symbol. Cash and the position change only when funding settles or an
        order fills, so the loop snapshots them after those events and the equity curve is built
        from the snapshots afterwards, vectorized: equity = cash + qty × (close − reference) × mult.
        """
        feed = self.feeds[symbol]
        n = feed.n
        cur = feed.cursor
        bar = feed.bar
        on_bar = self.strategy.on_bar
        on_bars = self.strategy.on_bars if self.strategy.wants_on_bars() else None
        tf_ns = feed.tf_ns
        book = self.exchange.book[symbol]
        process = self.exchange.process_bar
        liquidate = self.exchange.check_liquidation
        account = self.account
        settle = account.settle_funding
        pos = account.positions[symbol]
        perpetual = pos.perpetual
        arrays = feed.arrays
        T, OPEN, H, L, C = arrays["ts"], arrays["open"], arrays["high"], arrays["low"], arrays["close"]
        f_k, f_ts, f_rate, f_mark = self.funding[symbol]
        f_k = [*f_k, n]
        fi = int(np.searchsorted(np.asarray(f_k[:-1], dtype=np.int64), first, side="left")) if len(f_k) > 1 else 0
        fk = f_k[fi]
        snap_k, snap_cash, snap_qty, snap_ref = [first], [account.cash], [pos.qty], [pos.ref]
        progress = self.settings.progress
        size = n - first
        step = self.settings.progress_every if progress else size
        self._clock_feed = feed
        cur.i = first - 1
        for chunk in range(first, n, step):
            for k in range(chunk, min(chunk + step, n)):
                if k == fk:
                    self._clock_feed = None
                    while k == fk:
                        self._now = f_ts[fi]
                        settle(symbol, f_rate[fi], f_mark[fi], f_ts[fi])
                        fi += 1
                        fk = f_k[fi]
                    self._clock_feed = feed
                    snap_k.append(k)
                    snap_cash.append(account.cash)
                    snap_qty.append(pos.qty)
                    snap_ref.append(pos.ref)
                if book:
                    self._clock_feed = None
                    self._now = t = int(T[k])
                    process(symbol, t, float(OPEN[k]), float(H[k]), float(L[k]), float(C[k]), k)
                    self._clock_feed = feed
                    snap_k.append(k)
                    snap_cash.append(account.cash)
                    snap_qty.append(pos.qty)
                    snap_ref.append(pos.ref)
                if perpetual and pos.qty:
                    self._clock_feed = None
                    self._now = t = int(T[k])
                    if liquidate(symbol, t, float(OPEN[k]), float(H[k]), float(L[k]), k):
                        snap_k.append(k)
                        snap_cash.append(account.cash)
                        snap_qty.append(pos.qty)
                        snap_ref.append(pos.ref)
                    self._clock_feed = feed
                cur.i = k
                try:
                    on_bar(bar)
                    if on_bars is not None:
                        on_bars(int(T[k]) + tf_ns)
                except Exception as exc:
                    raise self._failure("on_bar", symbol, exc) from exc
            if progress:
                progress(min(chunk + step, n) - first, size)
        self._clock_feed = None
        at = np.searchsorted(np.asarray(snap_k, dtype=np.int64), np.arange(first, n), side="right") - 1
        cash = np.asarray(snap_cash)[at]
        qty = np.asarray(snap_qty)[at]
        ref = np.asarray(snap_ref)[at]
        equity = cash + qty * (C[first:] - ref) * pos.multiplier
        return T[first:], cash, equity

    def _loop_multi(self, firsts: dict[str, int]) -> tuple[np.ndarray, Any, Any]:
        symbols = self.symbols
        feeds = [self.feeds[s] for s in symbols]
        # global timeline: every (symbol, bar) ordered by time, then by symbol order
        all_ts = np.concatenate([f.arrays["ts"] for f in feeds])
        sym_idx = np.concatenate([np.full(f.n, i, dtype=np.int64) for i, f in enumerate(feeds)])
        bar_idx = np.concatenate([np.arange(f.n, dtype=np.int64) for f in feeds])
        order = np.lexsort((sym_idx, all_ts))
        all_ts, sym_idx, bar_idx = all_ts[order], sym_idx[order], bar_idx[order]
        start_ts = min(f.arrays["ts"][firsts[s]] for s, f in zip(symbols, feeds, strict=True) if firsts[s] < f.n)
        begin = int(np.searchsorted(all_ts, start_ts, side="left"))
        group_end = np.ones(len(all_ts), dtype=bool)
        group_end[:-1] = all_ts[1:] != all_ts[:-1]
        timeline = all_ts[begin:][group_end[begin:]]
        size = len(timeline)
        eq = [0.0] * size
        cash_out = [0.0] * size
        on_bar = self.strategy.on_bar
        on_bars = self.strategy.on_bars if self.strategy.wants_on_bars() else None
        acted = False
        process = self.exchange.process_bar
        liquidate = self.exchange.check_liquidation
        account = self.account
        open_positions = account.open_positions
        positions = account.positions
        ctx = []
        for s, f in zip(symbols, feeds, strict=True):
            f_k, f_ts, f_rate, f_mark = self.funding[s]
            fund: dict[int, list[tuple[int, float, float]]] = {}
            for k, t, r, m in zip(f_k, f_ts, f_rate, f_mark, strict=True):
                fund.setdefault(k, []).append((t, r, m))
            ctx.append(
                (
                    s,
                    f.cursor,
                    f.bar,
                    self.exchange.book[s],
                    f.ts,
                    f.open,
                    f.high,
                    f.low,
                    f.close,
                    firsts[s],
                    fund,
                    f.tf_ns,
                    self.instruments[s].is_perpetual,
                )
            )
        closes = {s: f.close for s, f in zip(symbols, feeds, strict=True)}
        cursors = {s: f.cursor for s, f in zip(symbols, feeds, strict=True)}
        settle = account.settle_funding
        S = sym_idx.tolist()
        K = bar_idx.tolist()
        G = group_end.tolist()
        progress = self.settings.progress
        total = len(S) - begin
        step = self.settings.progress_every if progress else total
        row = 0
        for chunk in range(begin, len(S), step):
            for e in range(chunk, min(chunk + step, len(S))):
                sym, cur, bar, book, T, OPEN, H, L, C, first, fund, tf, perp = ctx[S[e]]
                k = K[e]
                if fund and k in fund:
                    for t, r, m in fund[k]:
                        self._now = t
                        settle(sym, r, m, t)
                if book:
                    self._now = T[k]
                    process(sym, T[k], OPEN[k], H[k], L[k], C[k], k)
                if perp and positions[sym].qty:
                    self._now = T[k]
                    liquidate(sym, T[k], OPEN[k], H[k], L[k], k)
                cur.i = k
                if k >= first:
                    self._now = T[k] + tf
                    acted = True
                    try:
                        on_bar(bar)
                    except Exception as exc:
                        raise self._failure("on_bar", sym, exc) from exc
                if G[e]:
                    if on_bars is not None and acted:
                        self._now = T[k] + tf
                        try:
                            on_bars(T[k] + tf)
                        except Exception as exc:
                            raise self._failure("on_bars", sym, exc) from exc
                        acted = False
                    c = account.cash
                    value = 0.0
                    for s2, p in open_positions.items():
                        value += p.qty * (closes[s2][cursors[s2].i] - p.ref) * p.multiplier
                    eq[row] = c + value
                    cash_out[row] = c
                    row += 1
            if progress:
                progress(min(chunk + step, len(S)) - begin, total)
        return timeline, cash_out, eq

    # ------------------------------------------------------------------ result
    def _gross_exposure(self, ts: np.ndarray, fills: pa.Table) -> np.ndarray:
        """Σ |qty| × close × multiplier per timeline step, rebuilt from the fill list (vectorized)."""
        gross = np.zeros(len(ts))
        if fills.num_rows == 0:
            return gross
        f_sym = np.asarray(fills.column("symbol").to_pylist(), dtype=object)
        f_ts = fills.column("ts").cast(pa.int64()).to_numpy()
        f_q = fills.column("qty").to_numpy() * fills.column("side").to_numpy().astype(np.float64)
        for s in self.symbols:
            mask = f_sym == s
            if not mask.any():
                continue
            feed = self.feeds[s]
            qty_after = np.cumsum(f_q[mask])
            # position held at the close of timeline step t: all fills with fill ts <= t
            j = np.searchsorted(f_ts[mask], ts, side="right") - 1
            held = np.where(j >= 0, qty_after[np.maximum(j, 0)], 0.0)
            b = np.searchsorted(feed.arrays["ts"], ts, side="right") - 1
            close = np.where(b >= 0, feed.arrays["close"][np.maximum(b, 0)], 0.0)
            gross += np.abs(held) * close * self.instruments[s].multiplier
        return gross

    def _result(self, ts: np.ndarray, cash: Any, equity: Any) -> BacktestResult:
        x = self.exchange
        fills = _table(
            FILLS_SCHEMA,
            [
                (
                    f.fill_id,
                    f.order_id,
                    f.ts,
                    f.symbol,
                    f.side,
                    f.qty,
                    f.price,
                    f.fee,
                    f.liquidity,
                    f.realized_pnl,
                    f.tag,
                )
                for f in x.fills
            ],
        )
        trades = _table(TRADES_SCHEMA, self.account.trades)
        cash_arr = np.asarray(cash, dtype=np.float64)
        eq_arr = np.asarray(equity, dtype=np.float64)
        gross = self._gross_exposure(ts, fills)
        equity_table = pa.table(
            {
                "ts": pa.array(ts, type=pa.int64()).cast(TS),
                "cash": cash_arr,
                "position_value": eq_arr - cash_arr,
                "equity": eq_arr,
                "gross_exposure": gross,
            },
            schema=EQUITY_SCHEMA,
        )
        metrics = compute_metrics(
            ts,
            eq_arr,
            gross,
            trades.column("net_pnl").to_numpy(),
            self.account.initial_cash,
            self.account.fees_paid,
            self.account.funding_paid,
        )
        metrics["orders_rejected"] = len(x.rejected)
        settings = {
            "cash": self.settings.cash,
            "slippage_bps": self.settings.slippage_bps,
            "warmup": self.settings.warmup,
            "instruments": {s: i.model_dump(mode="json") for s, i in self.instruments.items()},
            **self.settings.extra,
        }
        funding = _table(FUNDING_SCHEMA, self.account.funding_rows)
        return BacktestResult(
            strategy_type=self.strategy_cls.type,
            params=self.params.model_dump(mode="json"),
            symbols=list(self.symbols),
            timeframe=self.timeframe,
            start_ns=int(ts[0]) if len(ts) else 0,
            end_ns=int(ts[-1]) if len(ts) else 0,
            data_path=self.data_path,
            initial_cash=self.account.initial_cash,
            metrics=metrics,
            fills=fills,
            trades=trades,
            equity=equity_table,
            trade_hash=trade_hash(fills),
            settings=settings,
            funding=funding,
        )
