"""The portfolio backtest: every strategy instance at once on shared capital.

Sleeves (:mod:`engine.portfolio.sleeve`) may trade different symbols on different base timeframes
(15m, 1h, 4h, 1d) and read higher timeframes. The loop merges all sleeves' bars into one timeline
ordered by bar **close** time (then sleeve order, then symbol order): a bar's orders are matched,
and its strategy called, when the bar has closed. Per bar, as in :mod:`engine.backtest.runner`:

1. funding settled since the previous bar of that sleeve is paid on its position (at the mark);
2. the sleeve's open orders are matched against the bar, then perpetual liquidation is checked;
3. the symbol's mark becomes the bar's close and ``on_bar`` runs (after the warm-up).

After the last bar closing at a time t: ``on_bars(t)`` runs for the sleeves that want it, every
sleeve's equity is taken at the current marks, and the portfolio manager updates drawdowns,
breakers, alerts and snapshots. Orders opening exposure pass the risk manager when submitted.

Accounting identity, checked by the tests at every step: portfolio equity = reserve +
Σ_sleeves (cash + Σ positions qty × (mark − reference) × multiplier).
"""

from __future__ import annotations

import gc
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.backtest.metrics import compute_metrics, drawdown_series
from engine.backtest.result import EQUITY_SCHEMA, FILLS_SCHEMA, FUNDING_SCHEMA, TRADES_SCHEMA, TS, BacktestResult
from engine.backtest.runner import _table, trade_hash
from engine.errors import ParameterError, StrategyRuntimeError
from engine.execution.orders import Fill
from engine.instruments import Instrument
from engine.portfolio.events import FUNDING_SETTLEMENT, POSITION_CLOSED, EventLog, position_events
from engine.portfolio.manager import BreakerSettings, PortfolioManager
from engine.portfolio.sleeve import PortfolioContext, Sleeve
from engine.risk.limits import RiskLimits
from engine.risk.manager import REJECTIONS_SCHEMA, RiskManager
from engine.strategy.base import Strategy, StrategyParams
from engine.timeframes import NS_PER_DAY

STRATEGY_FIELD = pa.field("strategy", pa.string())
PORTFOLIO_EQUITY_SCHEMA = pa.schema(
    [
        ("ts", TS),
        ("cash", pa.float64()),
        ("position_value", pa.float64()),
        ("equity", pa.float64()),
        ("gross_exposure", pa.float64()),
        ("drawdown_pct", pa.float64()),
    ]
)
STRATEGY_EQUITY_SCHEMA = pa.schema(
    [
        ("ts", TS),
        STRATEGY_FIELD,
        ("cash", pa.float64()),
        ("equity", pa.float64()),
        ("gross_exposure", pa.float64()),
        ("drawdown_pct", pa.float64()),
    ]
)
SNAPSHOT_SCHEMA = pa.schema(
    [
        ("ts", TS),
        STRATEGY_FIELD,
        ("equity", pa.float64()),
        ("peak", pa.float64()),
        ("drawdown_pct", pa.float64()),
        ("state", pa.string()),
    ]
)


@dataclass
class SleeveSpec:
    """What one strategy instance of a portfolio backtest needs (data already loaded).

    ``allocation`` is in percent of the portfolio capital (> 0).
    """

    name: str
    strategy_cls: type[Strategy]
    params: dict[str, Any] | StrategyParams
    bars: dict[str, dict[str, np.ndarray]]
    timeframe: str
    instruments: dict[str, Instrument]
    allocation: float
    funding: pa.Table | None = None
    marks: pa.Table | None = None
    open_interest: pa.Table | None = None
    warmup: int = 0
    data_path: str = ""


@dataclass
class PortfolioResult:
    """Outcome of a portfolio backtest.

    Attributes:
        metrics: portfolio metrics (the keys of ``tradectl backtest --json``).
        strategy_metrics: strategy name → its metrics, computed on its own sub-ledger equity.
        correlation: strategy → strategy → Pearson correlation of daily returns.
        equity: the combined curve (:data:`PORTFOLIO_EQUITY_SCHEMA`), one row per timeline step.
        strategy_equity: per-strategy curves (:data:`STRATEGY_EQUITY_SCHEMA`), long format.
        fills, trades, funding: the engine's tables with a leading ``strategy`` column.
        rejections: risk and venue rejections (:data:`REJECTIONS_SCHEMA`).
        events: the event log (:data:`engine.portfolio.events.EVENTS_SCHEMA`).
        snapshots: equity snapshots (:data:`SNAPSHOT_SCHEMA`).
        trade_hash: SHA-256 over the fills of all strategies in execution order.
    """

    name: str
    capital: float
    allocations: dict[str, float]
    strategies: dict[str, dict[str, Any]]
    metrics: dict[str, Any]
    strategy_metrics: dict[str, dict[str, Any]]
    correlation: dict[str, dict[str, float]]
    equity: pa.Table
    strategy_equity: pa.Table
    fills: pa.Table
    trades: pa.Table
    funding: pa.Table
    rejections: pa.Table
    events: pa.Table
    snapshots: pa.Table
    trade_hash: str
    settings: dict[str, Any] = field(default_factory=dict)

    def sleeve_result(self, name: str) -> BacktestResult:
        """One strategy instance's part of the run as a :class:`BacktestResult` (its sub-ledger:
        fills, trades, funding and equity curve, with its own metrics and trade hash).

        Raises:
            ParameterError: unknown strategy name.
        """
        if name not in self.strategies:
            raise ParameterError("strategy", f"unknown strategy {name!r} (known: {', '.join(self.strategies)})")

        def own(table: pa.Table) -> pa.Table:
            return table.filter(pc.equal(table.column("strategy"), name)).drop_columns(["strategy"])

        curve = own(self.strategy_equity)
        cash = curve.column("cash")
        equity = pa.table(
            {
                "ts": curve.column("ts"),
                "cash": cash,
                "position_value": pc.subtract(curve.column("equity"), cash),
                "equity": curve.column("equity"),
                "gross_exposure": curve.column("gross_exposure"),
            },
            schema=EQUITY_SCHEMA,
        )
        fills = own(self.fills).cast(FILLS_SCHEMA)
        info = self.strategies[name]
        ts = equity.column("ts").cast(pa.int64())
        return BacktestResult(
            strategy_type=info["type"],
            params=info["params"],
            symbols=list(info["symbols"]),
            timeframe=info["timeframe"],
            start_ns=int(ts[0].as_py()) if len(ts) else 0,
            end_ns=int(ts[-1].as_py()) if len(ts) else 0,
            data_path=str(info.get("data_path", "")),
            initial_cash=self.capital * self.allocations[name] / 100.0,
            metrics=self.strategy_metrics[name],
            fills=fills,
            trades=own(self.trades).cast(TRADES_SCHEMA),
            equity=equity,
            trade_hash=trade_hash(fills),
            settings={"portfolio": self.name, "strategy": name, "allocation_pct": self.allocations[name]},
            funding=own(self.funding).cast(FUNDING_SCHEMA),
        )


class PortfolioBacktest:
    """Runs sleeves together on one capital (see the module docstring).

    Args:
        specs: the strategy instances, in order (their order breaks ties within a close time).
        capital: initial portfolio capital, quote currency.
        risk_limits: the risk manager's limits.
        breakers: circuit breakers, alerts and the snapshot interval.
        slippage_bps: adverse slippage on market and stop fills.
        start_ns: first bar open time that may trade; earlier bars only warm up.
        name: the portfolio's name (reports).

    Raises:
        ParameterError: bad allocations, names, parameters, or no bar left after the warm-up.
        StrategyRuntimeError: a strategy callback raised (names the strategy instance).
    """

    def __init__(
        self,
        specs: list[SleeveSpec],
        capital: float,
        risk_limits: RiskLimits | None = None,
        breakers: BreakerSettings | None = None,
        slippage_bps: float = 0.0,
        start_ns: int | None = None,
        name: str = "portfolio",
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ParameterError("strategies", f"strategy instance names must be unique, got {names}")
        for spec in specs:
            if not spec.allocation > 0:
                raise ParameterError(
                    f"strategies.{spec.name}.allocation", f"must be > 0 percent, got {spec.allocation}"
                )
        self.name = name
        self.start_ns = start_ns
        self.slippage_bps = slippage_bps
        self.events = EventLog()
        self.manager = PortfolioManager(capital, {s.name: s.allocation for s in specs}, breakers, self.events)
        self.risk = RiskManager(risk_limits or RiskLimits())
        self.context = ctx = PortfolioContext(self.manager, self.risk, self.events)
        for spec in specs:
            sleeve = Sleeve(
                spec.name,
                spec.strategy_cls,
                spec.params,
                spec.bars,
                spec.timeframe,
                spec.instruments,
                self.manager.initial_capital(spec.name),
                ctx,
                slippage_bps=slippage_bps,
                funding=spec.funding,
                marks=spec.marks,
                open_interest=spec.open_interest,
                warmup=spec.warmup,
            )
            ctx.sleeves.append(sleeve)
            sleeve.exchange.listeners.append(self._fill_listener(sleeve))
        self.sleeves = ctx.sleeves
        self._data_paths = {spec.name: spec.data_path for spec in specs}
        self._trade_closed = False
        self._sleeve_cash: list[list[float]] = []

    # ------------------------------------------------------------------ callbacks
    def _failure(self, sleeve: Sleeve, callback: str, symbol: str, exc: Exception) -> StrategyRuntimeError:
        when = str(np.datetime64(self.context.time_ns, "ns")) + "Z"
        return StrategyRuntimeError(
            f"strategy {sleeve.name!r} ({sleeve.strategy_cls.type}) raised in {callback} ({symbol} at {when}): "
            f"{type(exc).__name__}: {exc}"
        )

    def _fill_listener(self, sleeve: Sleeve) -> Any:
        events = self.events
        positions = sleeve.account.positions
        strategy = sleeve.strategy

        def on_fill(fill: Fill) -> None:
            for kind, data in position_events(fill, positions[fill.symbol], sleeve.account.trades):
                events.emit(fill.ts, kind, sleeve.name, fill.symbol, **data)
                if kind == POSITION_CLOSED:
                    self._trade_closed = True
            try:
                strategy.on_order_filled(fill)
            except Exception as exc:
                raise self._failure(sleeve, "on_order_filled", fill.symbol, exc) from exc

        return on_fill

    # ------------------------------------------------------------------ run
    def run(self) -> PortfolioResult:
        """Run every sleeve over the merged timeline and return the result."""
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if was_enabled:
                gc.enable()

    def _run(self) -> PortfolioResult:
        for sleeve in self.sleeves:
            try:
                sleeve.strategy.on_init()
            except Exception as exc:
                raise self._failure(sleeve, "on_init", ",".join(sleeve.symbols), exc) from exc
        close_ts, ctx_idx, bar_idx, ctxs = self._timeline()
        if len(close_ts) == 0:
            raise ParameterError("data", "not enough bars: the warm-up or start leaves no bar to trade")
        ts_out, cash_out, eq_out, gross_out = self._loop(close_ts, ctx_idx, bar_idx, ctxs)
        for sleeve in self.sleeves:
            try:
                sleeve.strategy.on_stop()
            except Exception as exc:
                raise self._failure(sleeve, "on_stop", ",".join(sleeve.symbols), exc) from exc
        return self._result(ts_out, cash_out, eq_out, gross_out)

    def _timeline(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[Any, ...]]]:
        """Every active (sleeve, symbol, bar) ordered by close time, sleeve, symbol."""
        closes: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        bars: list[np.ndarray] = []
        ctxs: list[tuple[Any, ...]] = []
        for si, sleeve in enumerate(self.sleeves):
            for symbol in sleeve.symbols:
                feed = sleeve.feeds[symbol]
                first = sleeve.first_active(symbol, self.start_ns)
                if first >= feed.n:
                    continue
                f_k, f_ts, f_rate, f_mark = sleeve.funding[symbol]
                fund: dict[int, list[tuple[int, float, float]]] = {}
                for k, t, r, m in zip(f_k, f_ts, f_rate, f_mark, strict=True):
                    if k >= first:
                        fund.setdefault(k, []).append((t, r, m))
                ci = len(ctxs)
                ctxs.append(
                    (
                        si,
                        sleeve,
                        symbol,
                        feed.cursor,
                        feed.bar,
                        sleeve.exchange.book[symbol],
                        feed.ts,
                        feed.open,
                        feed.high,
                        feed.low,
                        feed.close,
                        fund,
                        sleeve.instruments[symbol].is_perpetual,
                        sleeve.account.positions[symbol],
                    )
                )
                idx = np.arange(first, feed.n, dtype=np.int64)
                closes.append(feed.arrays["ts"][first:] + feed.tf_ns)
                owners.append(np.full(len(idx), ci, dtype=np.int64))
                bars.append(idx)
        if not closes:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), ctxs
        close_ts = np.concatenate(closes)
        owner = np.concatenate(owners)
        bar = np.concatenate(bars)
        order = np.lexsort((owner, close_ts))  # ctx index encodes sleeve then symbol order
        return close_ts[order], owner[order], bar[order], ctxs

    def _loop(
        self, close_ts: np.ndarray, ctx_idx: np.ndarray, bar_idx: np.ndarray, ctxs: list[tuple[Any, ...]]
    ) -> tuple[list[int], list[float], list[list[float]], list[list[float]]]:
        context = self.context
        marks = context.marks
        manager = self.manager
        events = self.events
        sleeves = self.sleeves
        reserve = manager.reserve
        wants = [s.strategy.on_bars if s.strategy.wants_on_bars() else None for s in sleeves]
        accounts = [s.account for s in sleeves]
        names = [s.name for s in sleeves]
        ends = np.ones(len(close_ts), dtype=bool)
        ends[:-1] = close_ts[1:] != close_ts[:-1]
        E = ends.tolist()
        CT = close_ts.tolist()
        CI = ctx_idx.tolist()
        K = bar_idx.tolist()
        ts_out: list[int] = []
        cash_out: list[float] = []
        eq_out: list[list[float]] = [[] for _ in sleeves]
        sleeve_cash: list[list[float]] = [[] for _ in sleeves]
        gross_out: list[list[float]] = [[] for _ in sleeves]
        acted = [False] * len(sleeves)
        for e in range(len(CT)):
            si, sleeve, sym, cur, bar, book, T, OPEN, H, L, C, fund, perp, pos = ctxs[CI[e]]
            k = K[e]
            if fund and k in fund:
                account = sleeve.account
                for t, r, m in fund[k]:
                    context.time_ns = t
                    paid = account.settle_funding(sym, r, m, t)
                    if paid:
                        events.emit(t, FUNDING_SETTLEMENT, sleeve.name, sym, rate=r, mark=m, qty=pos.qty, payment=paid)
            if book:
                context.time_ns = T[k]
                sleeve.exchange.process_bar(sym, T[k], OPEN[k], H[k], L[k], C[k], k)
            if perp and pos.qty:
                context.time_ns = T[k]
                sleeve.exchange.check_liquidation(sym, T[k], OPEN[k], H[k], L[k], k)
            marks[sym] = C[k]
            cur.i = k
            now = CT[e]
            context.time_ns = now
            acted[si] = True
            try:
                sleeve.strategy.on_bar(bar)
            except Exception as exc:
                raise self._failure(sleeve, "on_bar", sym, exc) from exc
            if not E[e]:
                continue
            for i, hook in enumerate(wants):
                if hook is not None and acted[i]:
                    try:
                        hook(now)
                    except Exception as exc:
                        raise self._failure(sleeves[i], "on_bars", "*", exc) from exc
            equities: dict[str, float] = {}
            cash_total = reserve
            for i, account in enumerate(accounts):
                cash = account.cash
                value = 0.0
                gross = 0.0
                for s2, p in account.open_positions.items():
                    m = marks[s2]
                    value += p.qty * (m - p.ref) * p.multiplier
                    gross += abs(p.qty) * m * p.multiplier
                equities[names[i]] = cash + value
                cash_total += cash
                eq_out[i].append(cash + value)
                sleeve_cash[i].append(cash)
                gross_out[i].append(gross)
                acted[i] = False
            ts_out.append(now)
            cash_out.append(cash_total)
            snaps = len(manager.snapshots)
            manager.update(now, equities)
            if self._trade_closed:
                self._trade_closed = False
                if len(manager.snapshots) == snaps:
                    manager.snapshot(now, reason="trade_close")
        self._sleeve_cash = sleeve_cash
        return ts_out, cash_out, eq_out, gross_out

    # ------------------------------------------------------------------ result
    def _result(
        self, ts_list: list[int], cash_list: list[float], eq_lists: list[list[float]], gross_lists: list[list[float]]
    ) -> PortfolioResult:
        ts = np.asarray(ts_list, dtype=np.int64)
        eq = np.asarray(eq_lists, dtype=np.float64).reshape(len(self.sleeves), len(ts))
        gross = np.asarray(gross_lists, dtype=np.float64).reshape(len(self.sleeves), len(ts))
        total = eq.sum(axis=0) + self.manager.reserve
        total_gross = gross.sum(axis=0)
        cash = np.asarray(cash_list, dtype=np.float64)
        dd_total = -drawdown_series(total, self.manager.capital) if len(total) else total
        grid = self._metric_grid(ts)
        equity = pa.table(
            {
                "ts": pa.array(ts, pa.int64()).cast(TS),
                "cash": cash,
                "position_value": total - cash,
                "equity": total,
                "gross_exposure": total_gross,
                "drawdown_pct": dd_total,
            },
            schema=PORTFOLIO_EQUITY_SCHEMA,
        )
        fills_rows: list[tuple[Any, ...]] = []
        trades_rows: list[tuple[Any, ...]] = []
        funding_rows: list[tuple[Any, ...]] = []
        strategy_metrics: dict[str, dict[str, Any]] = {}
        curves = []
        for i, sleeve in enumerate(self.sleeves):
            acc = sleeve.account
            fills_rows.extend(
                (
                    sleeve.name,
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
                for f in sleeve.exchange.fills
            )
            trades_rows.extend((sleeve.name, *row) for row in acc.trades)
            funding_rows.extend((sleeve.name, *row) for row in acc.funding_rows)
            net = np.asarray([row[11] for row in acc.trades], dtype=np.float64)
            m = compute_metrics(
                ts[grid], eq[i][grid], gross[i][grid], net, acc.initial_cash, acc.fees_paid, acc.funding_paid
            )
            m["orders_rejected"] = len(sleeve.exchange.rejected)
            strategy_metrics[sleeve.name] = m
            curves.append(
                pa.table(
                    {
                        "ts": pa.array(ts, pa.int64()).cast(TS),
                        "strategy": pa.array([sleeve.name] * len(ts), pa.string()),
                        "cash": np.asarray(self._sleeve_cash[i], dtype=np.float64),
                        "equity": eq[i],
                        "gross_exposure": gross[i],
                        "drawdown_pct": -drawdown_series(eq[i], acc.initial_cash) if len(ts) else eq[i],
                    },
                    schema=STRATEGY_EQUITY_SCHEMA,
                )
            )
        fills_rows.sort(key=lambda r: (r[3], r[0], r[1]))
        fills = _table(pa.schema([STRATEGY_FIELD, *FILLS_SCHEMA]), fills_rows)
        trades = _table(pa.schema([STRATEGY_FIELD, *TRADES_SCHEMA]), trades_rows)
        funding = _table(pa.schema([STRATEGY_FIELD, *FUNDING_SCHEMA]), funding_rows)
        all_net = trades.column("net_pnl").to_numpy()
        fees = sum(s.account.fees_paid for s in self.sleeves)
        paid = sum(s.account.funding_paid for s in self.sleeves)
        metrics = compute_metrics(ts[grid], total[grid], total_gross[grid], all_net, self.manager.capital, fees, paid)
        metrics["orders_rejected"] = sum(len(s.exchange.rejected) for s in self.sleeves)
        metrics["risk_rejections"] = len(self.risk.rejections)
        metrics["breaker_trips"] = sum(
            1 for e in self.events.events if e.kind == "portfolio:circuit_breaker" and e.data.get("action") == "trip"
        )
        return PortfolioResult(
            name=self.name,
            capital=self.manager.capital,
            allocations={s.name: self.manager.weights[s.name] * 100.0 for s in self.sleeves},
            strategies={
                s.name: {
                    "type": s.strategy_cls.type,
                    "timeframe": s.timeframe,
                    "symbols": list(s.symbols),
                    "params": s.params.model_dump(mode="json"),
                    "data_path": self._data_paths[s.name],
                }
                for s in self.sleeves
            },
            metrics=metrics,
            strategy_metrics=strategy_metrics,
            correlation=daily_return_correlation(ts, {s.name: eq[i] for i, s in enumerate(self.sleeves)}),
            equity=equity,
            strategy_equity=pa.concat_tables(curves) if curves else STRATEGY_EQUITY_SCHEMA.empty_table(),
            fills=fills,
            trades=trades,
            funding=funding,
            rejections=self._rejections(),
            events=self.events.to_table(),
            snapshots=_snapshots(self.manager),
            trade_hash=portfolio_trade_hash(fills),
            settings={"slippage_bps": self.slippage_bps, "start_ns": self.start_ns},
        )

    def _metric_grid(self, ts: np.ndarray) -> np.ndarray:
        """Indices of the steps metrics are computed on: the last step of each bucket of the coarsest
        base timeframe among the sleeves, so every return spans the same interval (a 15m sleeve and
        a 1d sleeve give daily returns)."""
        if len(ts) == 0:
            return np.zeros(0, dtype=np.int64)
        bucket = max(next(iter(s.feeds.values())).tf_ns for s in self.sleeves)
        key = (ts - 1) // bucket
        return np.flatnonzero(np.append(key[1:] != key[:-1], True))

    def _rejections(self) -> pa.Table:
        rows = [
            (r.ts, r.strategy, r.symbol, r.side, r.qty, r.price, r.check, r.value, r.limit, r.message)
            for r in self.risk.rejections
        ]
        for sleeve in self.sleeves:
            for order in sleeve.exchange.rejected:
                if order.reject_reason.startswith("risk check"):
                    continue
                rows.append(
                    (
                        order.created_ts,
                        sleeve.name,
                        order.symbol,
                        order.side,
                        order.qty,
                        order.price or np.nan,
                        "venue",
                        np.nan,
                        np.nan,
                        order.reject_reason,
                    )
                )
        rows.sort(key=lambda r: (r[0], r[1]))
        return _table(REJECTIONS_SCHEMA, rows)


def _snapshots(manager: PortfolioManager) -> pa.Table:
    snaps = manager.snapshots
    return _table(
        SNAPSHOT_SCHEMA,
        [(s.ts, s.strategy, s.equity, s.peak, s.drawdown_pct, s.state) for s in snaps],
    )


def daily_return_correlation(ts: np.ndarray, curves: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Pearson correlation of the strategies' daily returns (equity at the last step of each UTC day).

    A strategy whose equity never moves has an undefined correlation: NaN (None in JSON).
    """
    names = list(curves)
    if len(ts) == 0:
        return {a: dict.fromkeys(names, float("nan")) for a in names}
    day = ts // NS_PER_DAY
    last = np.flatnonzero(np.append(day[1:] != day[:-1], True))
    rets = []
    for name in names:
        daily = curves[name][last]
        rets.append(np.diff(daily) / daily[:-1] if len(daily) > 1 else np.zeros(0))
    out: dict[str, dict[str, float]] = {a: {} for a in names}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            x, y = rets[i], rets[j]
            if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
                out[a][b] = float("nan")
            else:
                out[a][b] = float(np.corrcoef(x, y)[0, 1])
    return out


def portfolio_trade_hash(fills: pa.Table) -> str:
    """SHA-256 of the fills (strategy, ts, symbol, side, exact qty/price/fee reprs) in the table's order."""
    h = hashlib.sha256()
    cols = [
        fills.column("strategy").to_pylist(),
        fills.column("ts").cast(pa.int64()).to_pylist(),
        fills.column("symbol").to_pylist(),
        fills.column("side").to_pylist(),
        fills.column("qty").to_pylist(),
        fills.column("price").to_pylist(),
        fills.column("fee").to_pylist(),
    ]
    for row in zip(*cols, strict=True):
        h.update("{}|{}|{}|{}|{!r}|{!r}|{!r}\n".format(*row).encode())
    return h.hexdigest()
